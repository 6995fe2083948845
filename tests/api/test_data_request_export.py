"""The archive of an access or portability request over HTTP, checked from the outside.

Invariants: the archive of a completed request holds every value the test
wrote for that member — member fields by category, treatments, ledger
entries, the previous value of a rectified field, consent events with
receipts — in JSON, CSV and a FHIR R4B Bundle that ``fhir.resources``
validates; its manifest is a JWS (``typ: export-manifest+jwt``) that jwcrypto
verifies against the JWKS, whose payload is ``manifest.json`` and whose
SHA-256s match every other file; each access-log event's inclusion proof
verifies against the signed checkpoint in the archive, which covers the
download's own ``export`` event. Only the member and the dpo download it,
each download is audited, and there is no archive for a request that is not
a completed access or portability request, after the download window, or for
an erased member.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from jwcrypto import jwk, jws

import api.deps
from audit.checkpoint import open_note, parse_checkpoint, parse_verifier_key
from audit.merkle import leaf_hash, verify_inclusion
from tests.api.conftest import Vault
from tests.vault.factories import other_member_values, treatment_values
from vault import data_map as dm
from vault.consent import ConsentChannel, ConsentDecision, ConsentRequest, ConsentService, NoticeBook, Recorder, RecorderRole
from vault.ids import new_id
from vault.purposes import Purpose
from vault.storage.engine import write_transaction
from vault.validation import validate_values

TREATMENTS = 3
LEDGER = ({"entry_type": "top_up", "amount": 500_000}, {"entry_type": "spend", "amount": 123_456}, {"entry_type": "points_earn", "amount": 0, "points": 77})
METADATA = {"README.txt", "manifest.json", "manifest.jws"}


def _api(value: object) -> object:
    """A validated value as the API (and the archive's JSON) writes it."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return list(value) if isinstance(value, tuple) else value


class Written:
    """A member the test created, with everything it wrote for them."""

    def __init__(self, vault: Vault, n: int) -> None:
        runtime = vault.runtime
        self.values = other_member_values(n, city="杭州", home_clinic_id="hz-001")
        self.treatments = [
            treatment_values(performed_at=f"2025-0{i + 1}-15T10:30:00+08:00", lot_no=f"LOT-{n}-{i}", clinical_notes=f"note {n}-{i}") for i in range(TREATMENTS)
        ]
        with write_transaction(runtime.data_engine) as conn:
            self.member_id = runtime.members.create(conn, self.values)
            self.treatment_ids = [runtime.treatments.add(conn, self.member_id, t) for t in self.treatments]
            self.entries = [runtime.ledger.append(conn, self.member_id, e) for e in LEDGER]
            runtime.members.update(conn, self.member_id, {"city": "成都"})
            ConsentService(runtime.members, NoticeBook()).record(
                conn,
                self.member_id,
                ConsentRequest(Purpose.loyalty_profiling, ConsentDecision.granted, ConsentChannel.app, notice_version=1),
                Recorder("app", RecorderRole.member),
                consent_id=new_id(),
                request_id="test",
                now=datetime.now(UTC),
            )
        self.values["city"] = "成都"

    def headers(self, vault: Vault) -> dict[str, str]:
        return vault.headers(vault.token("member", subject="app-x", member_id=self.member_id), "self_service")


def _dpo(vault: Vault) -> dict[str, str]:
    return vault.headers(vault.token("dpo", subject="dpo-1"), "self_service")


def _completed(vault: Vault, who: Written, kind: str = "access") -> str:
    r = vault.client.post(f"/v1/members/{who.member_id}/requests", json={"type": kind}, headers=who.headers(vault))
    assert r.status_code == 201, r.text
    dsr_id = str(r.json()["dsr_id"])
    for to in ("verified", "in_progress", "completed"):
        moved = vault.client.post(f"/v1/requests/{dsr_id}/transitions", json={"to": to}, headers=_dpo(vault))
        assert moved.status_code == 200, moved.text
    if kind in ("access", "portability"):
        assert moved.headers["link"] == f'</v1/requests/{dsr_id}/export>; rel="export"'
    return dsr_id


def _download(vault: Vault, dsr_id: str, headers: dict[str, str]) -> zipfile.ZipFile:
    r = vault.client.get(f"/v1/requests/{dsr_id}/export", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-disposition"] == f'attachment; filename="member-vault-export-{dsr_id}.zip"'
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    assert archive.testzip() is None
    return archive


def _verified_manifest(vault: Vault, archive: zipfile.ZipFile) -> dict[str, Any]:
    keys = jwk.JWKSet.from_json(vault.client.get("/.well-known/jwks.json").text)
    token = jws.JWS()
    token.deserialize(archive.read("manifest.jws").decode("ascii"))
    key = keys.get_key(token.jose_header["kid"])
    assert key is not None
    token.verify(key, alg="EdDSA")
    assert token.jose_header["typ"] == "export-manifest+jwt"
    claims: dict[str, Any] = json.loads(token.payload)
    assert claims == json.loads(archive.read("manifest.json"))
    listed = {f["path"]: f for f in claims["files"]}
    assert set(listed) | {"manifest.json", "manifest.jws"} == set(archive.namelist())
    for path, f in listed.items():
        data = archive.read(path)
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (f["sha256"], f["size"]), path
    return claims


def test_an_access_archive_holds_every_written_value_and_its_manifest_and_proofs_verify(vault: Vault) -> None:
    who = Written(vault, 41)
    dsr_id = _completed(vault, who)

    archive = _download(vault, dsr_id, who.headers(vault))

    claims = _verified_manifest(vault, archive)
    assert (claims["request_id"], claims["request_type"], claims["member_id"]) == (dsr_id, "access", who.member_id)
    clean = validate_values(dm.Table.members, who.values, partial=False)
    for category, fields in dm.member_fields_by_category().items():
        stored = json.loads(archive.read(f"json/{category.value}.json"))
        assert stored["fields"] == {f.name: _api(clean.get(f.name)) for f in fields}, category
    treatments = json.loads(archive.read("json/treatment.json"))
    assert [t["treatment_id"] for t in treatments] == who.treatment_ids
    for written, stored in zip(who.treatments, treatments, strict=True):
        assert {k: stored[k] for k in written} == {k: _api(v) for k, v in validate_values(dm.Table.treatments, written, partial=False).items()}
    ledger = json.loads(archive.read("json/financial.json"))
    assert [(e["entry_id"], e["entry_type"], e["amount"], e["points"], e["balance_after"]) for e in ledger] == [
        (e.entry_id, e.values["entry_type"], e.values["amount"], e.values["points"], e.values["balance_after"]) for e in who.entries
    ]
    history = json.loads(archive.read("json/field_history.json"))
    assert [(h["field"], h["previous"]) for h in history] == [("city", "杭州")]
    consents = json.loads(archive.read("json/consents.json"))
    assert [(c["purpose"], c["decision"]) for c in consents] == [("loyalty_profiling", "granted")]
    assert consents[0]["receipt"].count(".") == 2

    rows = list(csv.DictReader(io.StringIO(archive.read("csv/treatments.csv").decode("utf-8-sig"))))
    assert [(r["treatment_id"], r["lot_no"], r["clinical_notes"]) for r in rows] == [
        (i, t["lot_no"], t["clinical_notes"]) for i, t in zip(who.treatment_ids, who.treatments, strict=True)
    ]
    member_rows = {(r["category"], r["field"]): r["value"] for r in csv.DictReader(io.StringIO(archive.read("csv/member.csv").decode("utf-8-sig")))}
    assert member_rows[("identity", "full_name")] == who.values["full_name"]
    assert member_rows[("contact", "phone")] == "'" + str(clean["phone"])  # a leading + would be a formula in a spreadsheet
    assert len(list(csv.DictReader(io.StringIO(archive.read("csv/ledger.csv").decode("utf-8-sig"))))) == len(LEDGER)

    bundle = Bundle.model_validate_json(archive.read("fhir/bundle.json"))
    kinds = [e.resource.get_resource_type() for e in bundle.entry or []]
    assert kinds == ["Patient", *["Procedure"] * TREATMENTS, "Consent"]
    patient = json.loads(archive.read("fhir/bundle.json"))["entry"][0]["resource"]
    assert (patient["name"][0]["text"], patient["birthDate"]) == (who.values["full_name"], who.values["date_of_birth"])


def test_the_access_log_in_the_archive_proves_each_event_and_includes_the_download(vault: Vault) -> None:
    who = Written(vault, 42)
    dsr_id = _completed(vault, who)

    archive = _download(vault, dsr_id, _dpo(vault))

    log = json.loads(archive.read("json/access_log.json"))
    head = log["checkpoint"]
    opened = parse_checkpoint(open_note(head["checkpoint"], [parse_verifier_key(k) for k in head["verifier_keys"]]).body)
    assert (opened.size, opened.root_hash.hex()) == (head["tree_size"], head["root_hash"])
    assert log["events"], "the member's request and its steps were audited"
    for item in log["events"]:
        leaf = json.dumps(item["event"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        assert leaf_hash(leaf).hex() == item["leaf_hash"]
        proof = [bytes.fromhex(h) for h in item["audit_path"]]
        assert verify_inclusion(bytes.fromhex(item["leaf_hash"]), item["index"], opened.size, proof, opened.root_hash)
        assert item["event"]["member_id"] == who.member_id
    actions = [(e["event"]["action"], e["event"]["decision"], e["event"]["resource_id"]) for e in log["events"]]
    assert ("export", "allow", dsr_id) in actions  # this very download


def test_a_portability_request_has_the_same_archive(vault: Vault) -> None:
    who = Written(vault, 43)
    dsr_id = _completed(vault, who, "portability")

    claims = _verified_manifest(vault, _download(vault, dsr_id, who.headers(vault)))

    assert claims["request_type"] == "portability"


def test_only_the_member_and_the_dpo_download_and_every_attempt_is_audited(vault: Vault) -> None:
    who = Written(vault, 44)
    dsr_id = _completed(vault, who)
    other = vault.members[1]
    refused = {
        "another member": vault.headers(vault.token("member", subject="app-1", member_id=other.member_id), "self_service"),
        "front desk": vault.headers(vault.token("front_desk", subject="desk-1", clinics=["hz-001"]), "care"),
        "compliance officer": vault.headers(vault.token("compliance_officer", subject="co-1"), "self_service"),
        "practitioner": vault.headers(vault.token("practitioner", subject="dr-1", clinics=["hz-001"]), "care"),
    }
    before = vault.journal_size()
    for who_asks, headers in refused.items():
        r = vault.client.get(f"/v1/requests/{dsr_id}/export", headers=headers)
        assert r.status_code == 403, who_asks
        assert r.headers["content-type"].startswith("application/problem+json")
    made_up = vault.client.get(f"/v1/requests/{new_id()}/export", headers=refused["another member"])
    assert made_up.status_code == 403  # the same answer for an id that does not exist

    events = [json.loads(e) for e in vault.journal_events()[before:]]
    assert [(e["action"], e["decision"]) for e in events] == [("export", "deny")] * (len(refused) + 1)
    assert all(e["fields"] == [] or "access_log" in e["fields"] for e in events)


@pytest.mark.parametrize("kind", ["erasure", "restriction", "rectification"])
def test_only_access_and_portability_requests_have_an_archive(vault: Vault, kind: str) -> None:
    who = Written(vault, 45)
    r = vault.client.post(
        f"/v1/members/{who.member_id}/requests",
        json={"type": kind, **({"details": {"changes": {"demographic": {"city": "北京"}}}} if kind == "rectification" else {})},
        headers=who.headers(vault),
    )
    assert r.status_code == 201, r.text
    dsr_id = r.json()["dsr_id"]

    answer = vault.client.get(f"/v1/requests/{dsr_id}/export", headers=_dpo(vault))

    assert answer.status_code == 409
    assert who.values["full_name"] not in answer.text


def test_no_archive_before_completion_after_the_window_or_for_an_erased_member(vault: Vault) -> None:
    who = Written(vault, 46)
    r = vault.client.post(f"/v1/members/{who.member_id}/requests", json={"type": "access"}, headers=who.headers(vault))
    dsr_id = r.json()["dsr_id"]
    assert vault.client.get(f"/v1/requests/{dsr_id}/export", headers=who.headers(vault)).status_code == 409  # received, not completed
    for to in ("verified", "in_progress", "completed"):
        assert vault.client.post(f"/v1/requests/{dsr_id}/transitions", json={"to": to}, headers=_dpo(vault)).status_code == 200

    later = datetime.now(UTC) + timedelta(days=vault.settings.dsr_export_days, minutes=5)
    vault.client.app.dependency_overrides[api.deps._now] = lambda: later  # type: ignore[attr-defined]
    try:
        closed = vault.client.get(f"/v1/requests/{dsr_id}/export", headers=who.headers(vault))
    finally:
        vault.client.app.dependency_overrides.clear()  # type: ignore[attr-defined]
    assert closed.status_code == 409
    assert "window" in closed.json()["detail"]

    vault.runtime.eraser.erase(who.member_id)
    assert vault.client.get(f"/v1/requests/{dsr_id}/export", headers=_dpo(vault)).status_code == 404
