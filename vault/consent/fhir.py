"""A consent event as a FHIR R4B ``Consent`` resource (a plain dict; the tests validate it with ``fhir.resources.R4B``).

Mapping:

* ``id`` and ``identifier``: the consent id; ``patient``: ``Patient/<member id>``;
* ``status``: ``active`` — each event is the member's directive as recorded
  (a later event supersedes it; the consent history says which is current);
* ``scope``: ``patient-privacy``; ``category``: LOINC 59284-0 (patient consent);
* ``dateTime``: when it was recorded; ``performer``: the patient, or a
  guardian (``RelatedPerson``, by display only) for a member under 14;
* ``organization``: the controller; ``policy``: the notice version and hash
  as a URN (a grant's); ``policyRule``: the legal basis;
* ``provision``: ``permit`` for a grant, ``deny`` for a withdrawal, with the
  purpose as a coding of the vault's purpose catalog and the period starting
  at the event.

No personal value besides the member id; the evidence reference stays out.
"""

from __future__ import annotations

from vault.consent.model import ConsentDecision, ConsentEvent, GivenBy
from vault.times import rfc3339_seconds

PURPOSE_SYSTEM = "https://member-vault.example/fhir/CodeSystem/purpose"
LEGAL_BASIS_SYSTEM = "https://member-vault.example/fhir/CodeSystem/legal-basis"
CONSENT_ID_SYSTEM = "https://member-vault.example/fhir/consent-id"
CHANNEL_SYSTEM = "https://member-vault.example/fhir/CodeSystem/consent-channel"


def to_fhir_consent(event: ConsentEvent, *, controller: str) -> dict[str, object]:
    when = rfc3339_seconds(event.recorded_at)
    performer = (
        {"reference": f"Patient/{event.member_id}"}
        if event.given_by is GivenBy.member
        else {"type": "RelatedPerson", "display": "guardian of the member (PIPL Art. 31)"}
    )
    resource: dict[str, object] = {
        "resourceType": "Consent",
        "id": event.consent_id,
        "identifier": [{"system": CONSENT_ID_SYSTEM, "value": event.consent_id}],
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]}],
        "patient": {"reference": f"Patient/{event.member_id}"},
        "dateTime": when,
        "performer": [performer],
        "organization": [{"display": controller}],
        "policyRule": {"coding": [{"system": LEGAL_BASIS_SYSTEM, "code": event.purpose.legal_basis.value}]},
        "provision": {
            "type": "permit" if event.decision is ConsentDecision.granted else "deny",
            "period": {"start": when},
            "purpose": [{"system": PURPOSE_SYSTEM, "code": event.purpose.value}],
        },
        "extension": [{"url": CHANNEL_SYSTEM, "valueCode": event.channel.value}],
    }
    if event.notice_version is not None:
        resource["policy"] = [{"uri": f"urn:member-vault:notice:{event.purpose.value}:{event.notice_version}:sha256:{event.notice_hash}"}]
    return resource


__all__ = ["to_fhir_consent"]
