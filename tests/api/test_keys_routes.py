"""Key metadata, rotation jobs and function-level authorization (BFLA), each request journaling one event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from keys.models import MemberKeyRow
from keys.signing import SigningPurpose
from tests.api.conftest import Vault

MADE_UP = "0" * 32


def admin(vault: Vault) -> dict[str, str]:
    return vault.headers(vault.token("vault_admin", subject="admin-1"))


def last_event(vault: Vault) -> dict[str, object]:
    event: dict[str, object] = json.loads(vault.journal_events()[-1])
    return event


def strip(body: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in body.items() if k != "request_id"}


def rotate(vault: Vault, body: object, headers: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    r = vault.client.post("/v1/keys/rotate", content=json.dumps(body), headers={**(headers or admin(vault)), "Content-Type": "application/json"})
    return r.status_code, r.json()


# -- metadata ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_key_metadata_names_versions_and_counts_never_material(vault: Vault) -> None:
    vault.runtime.signing.current(SigningPurpose.audit)
    before = vault.journal_size()

    r = vault.client.get("/v1/keys", headers=admin(vault))

    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"kek", "signing_keys", "member_keys"}
    assert {k: body["kek"][k] for k in ("provider", "current_version")} == {"provider": "local", "current_version": 1}
    (kek,) = body["kek"]["versions"]
    assert set(kek) == {"version", "created_at", "retired", "current", "wraps", "keys_wrapped"}
    assert (kek["version"], kek["retired"], kek["current"]) == (1, False, True)
    assert kek["keys_wrapped"] == sum(vault.runtime.keys.kek_references().values())
    assert kek["wraps"] == vault.runtime.keys.wrap_counts()[1]
    listed = {(k["purpose"], k["version"], k["current"], k["retire_after"]) for k in body["signing_keys"]}
    assert listed == {("audit", 1, True, None), ("dev-jwt", 1, True, None)}
    audit_key = vault.runtime.signing.current(SigningPurpose.audit)
    assert [k["kid"] for k in body["signing_keys"] if k["purpose"] == "audit"] == [audit_key.key_id]
    with vault.runtime.keys_engine.connect() as conn:
        member_keys = conn.execute(select(func.count()).select_from(MemberKeyRow)).scalar_one()
    assert body["member_keys"] == member_keys >= 4
    keyring = json.loads(vault.settings.keyring_path.read_text())
    assert all(entry["key"] not in r.text for entry in keyring["keks"])
    assert vault.journal_size() == before + 1
    assert (last_event(vault)["resource_type"], last_event(vault)["decision"]) == ("key", "allow")


# -- rotation jobs ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_rotating_the_jwt_key_is_a_done_job_with_the_old_key_kept_for_24_hours(vault: Vault) -> None:
    first = vault.runtime.signing.current(SigningPurpose.jwt)
    before = vault.journal_size()

    status, body = rotate(vault, {"kind": "jwt"})

    assert status == 202
    job_id = str(body["job_id"])
    assert body == {"job_id": job_id}
    listed = vault.runtime.signing.verification_keys(SigningPurpose.jwt)
    assert [k.version for k in listed] == [2, 1]
    assert listed[1].key_id == first.key_id
    assert listed[1].retire_after is not None
    assert timedelta(hours=23, minutes=59) < listed[1].retire_after - datetime.now(UTC) <= timedelta(hours=24)
    event = last_event(vault)
    assert {k: event[k] for k in ("action", "resource_type", "resource_id", "fields", "decision", "outcome")} == {
        "action": "rotate",
        "resource_type": "key",
        "resource_id": job_id,
        "fields": ["jwt"],
        "decision": "allow",
        "outcome": "ok",
    }
    job = vault.client.get(f"/v1/keys/jobs/{job_id}", headers=admin(vault))
    assert job.status_code == 200
    assert {k: v for k, v in job.json().items() if k not in ("requested_at", "index")} == {
        "job_id": job_id,
        "kind": "jwt",
        "status": "done",
        "requested_by": "admin-1",
    }
    assert job.json()["requested_at"] == event["time"]
    assert vault.journal_size() == before + 2


@pytest.mark.parametrize("backend", ["sqlite"])
def test_rotating_the_audit_key_lists_both_verifier_keys_and_signs_with_the_new_one(vault: Vault) -> None:
    old = vault.client.get("/v1/audit/checkpoints/latest", headers=admin(vault)).json()

    status, _ = rotate(vault, {"kind": "audit"})
    after = vault.client.get("/v1/audit/checkpoints/latest", headers=admin(vault)).json()

    assert status == 202
    assert len(after["verifier_keys"]) == 2
    assert after["verifier_keys"][1] == old["verifier_keys"][0]
    assert vault.runtime.signing.current(SigningPurpose.audit).version == 2


@pytest.mark.parametrize("backend", ["sqlite"])
def test_rotating_the_kek_rewraps_every_key_and_the_data_stays_readable(vault: Vault) -> None:
    status, body = rotate(vault, {"kind": "kek"})

    assert status == 202
    kek = vault.client.get("/v1/keys", headers=admin(vault)).json()["kek"]
    assert kek["current_version"] == 2
    assert [(v["version"], v["retired"], v["current"], v["keys_wrapped"]) for v in kek["versions"]] == [
        (1, True, False, 0),
        (2, False, True, sum(vault.runtime.keys.kek_references().values())),
    ]
    m = vault.members[0]
    read = vault.client.get(f"/v1/members/{m.member_id}", headers=vault.headers(vault.token("practitioner", clinics=[m.home_clinic_id]), "care"))
    assert read.status_code == 200
    job = vault.client.get(f"/v1/keys/jobs/{body['job_id']}", headers=admin(vault)).json()
    assert (job["kind"], job["status"]) == ("kek", "done")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_pseudonym_rotation_of_an_unknown_consumer_is_422_and_journaled_as_invalid(vault: Vault) -> None:
    before = vault.journal_size()

    status, body = rotate(vault, {"kind": "pseudonym", "consumer_id": "loyalty"})

    assert status == 422
    assert body["errors"] == {"consumer_id": "unknown_consumer"}
    assert vault.journal_size() == before + 1
    event = last_event(vault)
    assert (event["fields"], event["decision"], event["outcome"]) == (["pseudonym"], "allow", "invalid")
    job = vault.client.get(f"/v1/keys/jobs/{event['resource_id']}", headers=admin(vault)).json()
    assert (job["kind"], job["status"]) == ("pseudonym", "failed")


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"kind": "everything"}, {"kind": "enum"}),
        ({}, {"kind": "missing"}),
        ({"kind": "kek", "extra": 1}, {"extra": "extra_forbidden"}),
        ({"kind": "kek", "consumer_id": "loyalty"}, {"consumer_id": "only_for_pseudonym"}),
        (["kek"], {"body": "model_type"}),
    ],
)
def test_invalid_rotation_requests_are_422_after_the_decision(vault: Vault, body: object, errors: dict[str, str]) -> None:
    before = vault.journal_size()
    status, answer = rotate(vault, body)
    assert (status, answer["errors"]) == (422, errors)
    assert vault.journal_size() == before + 1
    assert (last_event(vault)["decision"], last_event(vault)["outcome"]) == ("allow", "invalid")
    assert vault.runtime.keys.provider.current_version() == 1


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_job_that_does_not_exist_is_404_and_journaled(vault: Vault) -> None:
    before = vault.journal_size()
    r = vault.client.get(f"/v1/keys/jobs/{MADE_UP}", headers=admin(vault))
    assert r.status_code == 404
    assert vault.journal_size() == before + 1
    assert (last_event(vault)["resource_type"], last_event(vault)["outcome"]) == ("key_job", "not_found")
    assert vault.client.get("/v1/keys/jobs/NOT-A-JOB", headers=admin(vault)).status_code == 400


# -- function-level authorization (H11) -----------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_loyalty_service_cannot_rotate_keys(vault: Vault) -> None:
    before = vault.journal_size()
    status, body = rotate(vault, {"kind": "kek"}, vault.headers(vault.token("loyalty_service", client_id="loyalty")))
    assert (status, body["title"]) == (403, "Forbidden")
    assert vault.journal_size() == before + 1
    event = last_event(vault)
    assert (event["action"], event["decision"], event["outcome"], event["fields"]) == ("rotate", "deny", "denied", ["kek"])
    assert vault.runtime.keys.provider.current_version() == 1


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_denied_rotation_never_reads_the_body(vault: Vault) -> None:
    status, _ = rotate(vault, {"kind": "everything", "junk": True}, vault.headers(vault.token("dpo")))
    assert status == 403
    assert last_event(vault)["fields"] == []


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_job_of_another_caller_is_403_alike_for_a_real_and_a_made_up_id_without_the_role(vault: Vault) -> None:
    _, body = rotate(vault, {"kind": "jwt"})
    headers = vault.headers(vault.token("compliance_officer"))
    real = vault.client.get(f"/v1/keys/jobs/{body['job_id']}", headers=headers)
    made_up = vault.client.get(f"/v1/keys/jobs/{MADE_UP}", headers=headers)
    assert real.status_code == made_up.status_code == 403
    assert strip(real.json()) == strip(made_up.json())
    assert vault.client.get("/v1/keys", headers=headers).status_code == 403


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("purpose", ["care", "self_service", "legal_claims"])
def test_vault_admin_cannot_read_a_member(vault: Vault, purpose: str) -> None:
    before = vault.journal_size()
    token = vault.token("vault_admin", clinics=["*"])
    r = vault.client.get(f"/v1/members/{vault.members[0].member_id}", headers=vault.headers(token, purpose))
    assert r.status_code == 403
    assert vault.journal_size() == before + 1
    assert (last_event(vault)["decision"], last_event(vault)["reason_code"]) == ("deny", "denied_by_rule")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_compliance_officer_reads_audit_events_but_not_a_member(vault: Vault) -> None:
    token = vault.token("compliance_officer")
    before = vault.journal_size()
    events = vault.client.get("/v1/audit/events", headers=vault.headers(token))
    member = vault.client.get(f"/v1/members/{vault.members[0].member_id}", headers=vault.headers(token, "legal_claims"))
    assert (events.status_code, member.status_code) == (200, 403)
    assert [json.loads(e)["decision"] for e in vault.journal_events()[before:]] == ["allow", "deny"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_front_desk_cannot_list_audit_events(vault: Vault) -> None:
    before = vault.journal_size()
    r = vault.client.get("/v1/audit/events", headers=vault.headers(vault.token("front_desk", clinics=["sh-001"])))
    assert r.status_code == 403
    assert vault.journal_size() == before + 1
    assert (last_event(vault)["resource_type"], last_event(vault)["decision"]) == ("audit_events", "deny")
