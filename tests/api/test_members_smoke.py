"""Members over HTTP: the happy paths and the first denials, each leaving one audit event."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import Vault


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_practitioner_reads_a_member_of_their_clinic_with_health_and_without_financial(vault: Vault) -> None:
    m = vault.members[0]
    before = vault.journal_size()

    r = vault.client.get(f"/v1/members/{m.member_id}", headers=vault.headers(vault.token("practitioner", clinics=[m.home_clinic_id]), "care"))

    assert r.status_code == 200
    body = r.json()
    assert body["member_id"] == m.member_id
    assert body["redacted"] == []  # practitioners read every member category (financial is the ledger, not a member category)
    assert set(body) == {"member_id", "membership", "identity", "contact", "demographic", "health", "preference", "redacted"}
    assert r.headers["cache-control"] == "no-store"
    assert vault.journal_size() == before + 1
    event = json.loads(vault.journal_events()[-1])
    assert (event["decision"], event["outcome"], event["member_id"], event["purpose"]) == ("allow", "ok", m.member_id, "care")


def test_front_desk_outside_the_members_clinics_gets_the_same_403_for_a_real_and_a_made_up_id(vault: Vault) -> None:
    token = vault.token("front_desk", clinics=["zz-999"])
    real = vault.client.get(f"/v1/members/{vault.members[0].member_id}", headers=vault.headers(token, "care"))
    made_up = vault.client.get(f"/v1/members/{'0' * 32}", headers=vault.headers(token, "care"))

    assert real.status_code == made_up.status_code == 403
    strip = lambda b: {k: v for k, v in b.items() if k != "request_id"}  # noqa: E731
    assert strip(real.json()) == strip(made_up.json())
    events = [json.loads(e) for e in vault.journal_events()[-2:]]
    assert [(e["decision"], e["outcome"]) for e in events] == [("deny", "denied"), ("deny", "denied")]


def test_a_request_without_a_token_is_401_and_journals_nothing(vault: Vault) -> None:
    before = vault.journal_size()
    r = vault.client.get(f"/v1/members/{vault.members[0].member_id}", headers={"X-Purpose": "care"})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert vault.journal_size() == before
