"""The member and their treatments as FHIR R4B ``Patient`` and ``Procedure`` resources (plain dicts).

The export archive's ``fhir/bundle.json`` is a ``collection`` Bundle of one
``Patient``, a ``Procedure`` per treatment and a ``Consent`` per consent event
(``vault.consent.fhir``); the tests validate it with ``fhir.resources.R4B``.
FHIR holds what it has elements for; every value is also in the archive's
JSON and CSV files, which are complete.

Patient: ``identifier`` (card number, identity document with its type),
``name.text``, ``gender`` (``undisclosed`` → ``unknown``), ``birthDate``,
``telecom`` (phone, e-mail, WeChat id as ``other``), ``address`` (text and
city), ``maritalStatus`` (HL7 v3 codes). Procedure: ``status: completed``,
``code.text`` (the procedure), ``category`` (the vault's category code),
``performedDateTime``, ``performer`` (the practitioner id), ``location``
(the clinic id), ``bodySite``, ``usedCode`` (product, lot, dose), ``note``
(clinical notes), ``complication`` (adverse events), ``followUp``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime

from vault.times import rfc3339_seconds
from vault.treatments import Treatment

SYSTEM = "https://member-vault.example/fhir"
CARD_SYSTEM = f"{SYSTEM}/card-number"
DOCUMENT_SYSTEM = f"{SYSTEM}/identity-document"
MEMBER_SYSTEM = f"{SYSTEM}/member-id"
TREATMENT_SYSTEM = f"{SYSTEM}/treatment-id"
STAFF_SYSTEM = f"{SYSTEM}/staff-id"
CATEGORY_SYSTEM = f"{SYSTEM}/CodeSystem/treatment-category"
ID_TYPE_SYSTEM = f"{SYSTEM}/CodeSystem/id-type"
MARITAL_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"

_GENDER = {"female": "female", "male": "male", "other": "other", "undisclosed": "unknown"}
_MARITAL = {"single": ("S", "Never Married"), "married": ("M", "Married"), "divorced": ("D", "Divorced"), "widowed": ("W", "Widowed")}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _day(value: object) -> str | None:
    return value.isoformat() if isinstance(value, date) and not isinstance(value, datetime) else None


def patient(member_id: str, values: Mapping[str, object]) -> dict[str, object]:
    """``values``: the member's fields by name, decrypted."""
    resource: dict[str, object] = {"resourceType": "Patient", "id": member_id}
    identifiers: list[dict[str, object]] = [{"system": MEMBER_SYSTEM, "value": member_id}]
    if card := _text(values.get("card_no")):
        identifiers.append({"system": CARD_SYSTEM, "value": card})
    if document := _text(values.get("national_id")):
        kind = _text(values.get("id_type")) or "unknown"
        identifiers.append({"system": DOCUMENT_SYSTEM, "value": document, "type": {"coding": [{"system": ID_TYPE_SYSTEM, "code": kind}]}})
    resource["identifier"] = identifiers
    if name := _text(values.get("full_name")):
        resource["name"] = [{"text": name}]
    if gender := _text(values.get("gender")):
        resource["gender"] = _GENDER[gender]
    if born := _day(values.get("date_of_birth")):
        resource["birthDate"] = born
    telecom = [
        {"system": system, "value": value}
        for system, name in (("phone", "phone"), ("email", "email"), ("other", "wechat_id"))
        if (value := _text(values.get(name)))
    ]
    if telecom:
        resource["telecom"] = telecom
    address = {k: v for k, v in (("text", _text(values.get("address"))), ("city", _text(values.get("city")))) if v}
    if address:
        resource["address"] = [address]
    marital = _MARITAL.get(str(values.get("marital_status")))
    if marital is not None:
        resource["maritalStatus"] = {"coding": [{"system": MARITAL_SYSTEM, "code": marital[0], "display": marital[1]}]}
    return resource


def procedure(t: Treatment) -> dict[str, object]:
    v = t.values
    resource: dict[str, object] = {
        "resourceType": "Procedure",
        "id": t.treatment_id,
        "identifier": [{"system": TREATMENT_SYSTEM, "value": t.treatment_id}],
        "status": "completed",
        "category": {"coding": [{"system": CATEGORY_SYSTEM, "code": str(v["category"])}]},
        "code": {"text": str(v["procedure"])},
        "subject": {"reference": f"Patient/{t.member_id}"},
        "performer": [{"actor": {"identifier": {"system": STAFF_SYSTEM, "value": str(v["practitioner_id"])}}}],
        "location": {"display": str(v["clinic_id"])},
    }
    performed = v["performed_at"]
    if isinstance(performed, datetime):
        resource["performedDateTime"] = rfc3339_seconds(performed)
    if area := _text(v.get("body_area")):
        resource["bodySite"] = [{"text": area}]
    used = [part for part in (_text(v.get("product")), _lot(v.get("lot_no")), _text(v.get("dose"))) if part]
    if used:
        resource["usedCode"] = [{"text": " · ".join(used)}]
    if notes := _text(v.get("clinical_notes")):
        resource["note"] = [{"text": notes}]
    if adverse := _text(v.get("adverse_events")):
        resource["complication"] = [{"text": adverse}]
    if follow := _day(v.get("follow_up_at")):
        resource["followUp"] = [{"text": f"follow-up on {follow}"}]
    return resource


def _lot(value: object) -> str | None:
    lot = _text(value)
    return None if lot is None else f"lot {lot}"


def bundle_head(bundle_id: str, timestamp: datetime) -> str:
    """The Bundle's JSON up to its first entry; entries follow, comma-separated, then ``BUNDLE_TAIL``."""
    return f'{{"resourceType":"Bundle","id":"{bundle_id}","type":"collection","timestamp":"{rfc3339_seconds(timestamp)}","entry":['


BUNDLE_TAIL = "]}"

__all__ = ["BUNDLE_TAIL", "bundle_head", "patient", "procedure"]
