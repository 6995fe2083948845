"""Treatment records over HTTP: who may record and read them, paging, break-glass, and one audit event per decision."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.api.conftest import Vault
from vault import data_map as dm
from vault.storage.schema import treatments

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])
MADE_UP = "0" * 32
OTHER_CLINIC = "zz-999"


def treatment(clinic_id: str, **changes: object) -> dict[str, object]:
    body = {"performed_at": "2025-03-01T10:00:00Z", "clinic_id": clinic_id, "category": "injectable", "practitioner_id": "dr-li", "procedure": "filler"}
    return body | {"dose": "1 ml", "price": 880000} | changes


def last_events(vault: Vault, n: int) -> list[dict[str, Any]]:
    return [json.loads(e) for e in vault.journal_events()[-n:]]


def strip(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "request_id"}


def count_treatments(vault: Vault) -> int:
    with vault.runtime.data_engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(treatments)).scalar_one())


def treatment_ids(vault: Vault, member_id: str) -> list[str]:
    """A member's treatment ids in the order the API lists them (the demo seed gives each member a few)."""
    stmt = select(treatments.c.treatment_id).where(treatments.c.member_id == member_id).order_by(treatments.c.performed_at, treatments.c.treatment_id)
    with vault.runtime.data_engine.connect() as conn:
        return list(conn.scalars(stmt))


def test_a_practitioner_records_and_reads_a_treatment_of_a_member_of_their_clinic(vault: Vault) -> None:
    m = vault.members[0]
    headers = vault.headers(vault.token("practitioner", subject="dr-li", clinics=[m.home_clinic_id]), "care")
    before = vault.journal_size()

    created = vault.client.post(f"/v1/members/{m.member_id}/treatments", json=treatment(m.home_clinic_id), headers=headers)

    assert created.status_code == 201
    treatment_id = created.json()["treatment_id"]
    assert created.json() == {"treatment_id": treatment_id}
    assert created.headers["location"] == f"/v1/treatments/{treatment_id}"
    assert vault.journal_size() == before + 1
    (e,) = last_events(vault, 1)
    assert (e["action"], e["resource_type"], e["member_id"], e["decision"], e["outcome"]) == ("create", "treatment", m.member_id, "allow", "ok")
    assert e["fields"] == ["category", "clinic_id", "dose", "performed_at", "practitioner_id", "price", "procedure"]

    one = vault.client.get(f"/v1/treatments/{treatment_id}", headers=headers)

    assert one.status_code == 200
    assert one.headers["cache-control"] == "no-store"
    unset = dict.fromkeys(f.name for f in dm.fields_of(dm.Table.treatments))
    assert one.json() == {"treatment_id": treatment_id, "member_id": m.member_id} | unset | treatment(m.home_clinic_id)
    listed = vault.client.get(f"/v1/members/{m.member_id}/treatments", headers=headers)
    assert listed.status_code == 200
    assert [t["treatment_id"] for t in listed.json()["items"]] == treatment_ids(vault, m.member_id)
    assert one.json() in listed.json()["items"]
    assert listed.json()["next_cursor"] is None
    assert vault.journal_size() == before + 3
    assert [(e["action"], e["resource_id"], e["decision"], e["outcome"], e["fields"]) for e in last_events(vault, 2)] == [
        ("read", treatment_id, "allow", "ok", ["treatment"]),
        ("list", None, "allow", "ok", ["treatment"]),
    ]


def test_front_desk_can_neither_record_nor_read_treatments(vault: Vault) -> None:
    m = vault.members[0]
    practitioner = vault.headers(vault.token("practitioner", clinics=[m.home_clinic_id]), "care")
    treatment_id = vault.client.post(f"/v1/members/{m.member_id}/treatments", json=treatment(m.home_clinic_id), headers=practitioner).json()["treatment_id"]
    front_desk = vault.headers(vault.token("front_desk", clinics=[m.home_clinic_id]), "care")
    before, stored = vault.journal_size(), count_treatments(vault)

    write = vault.client.post(f"/v1/members/{m.member_id}/treatments", json=treatment(m.home_clinic_id), headers=front_desk)
    listed = vault.client.get(f"/v1/members/{m.member_id}/treatments", headers=front_desk)
    one = vault.client.get(f"/v1/treatments/{treatment_id}", headers=front_desk)

    assert [write.status_code, listed.status_code, one.status_code] == [403, 403, 403]
    assert write.headers["content-type"] == "application/problem+json"
    assert vault.journal_size() == before + 3
    assert [(e["action"], e["decision"], e["outcome"], e["reason_code"]) for e in last_events(vault, 3)] == [
        ("create", "deny", "denied", "no_matching_rule"),
        ("list", "deny", "denied", "no_matching_rule"),
        ("read", "deny", "denied", "no_matching_rule"),
    ]
    assert count_treatments(vault) == stored


def test_a_practitioner_of_another_clinic_gets_the_same_403_for_a_real_and_a_made_up_member(vault: Vault) -> None:
    headers = vault.headers(vault.token("practitioner", clinics=[OTHER_CLINIC]), "care")
    real, made_up = vault.members[0].member_id, MADE_UP
    stored = count_treatments(vault)

    for method in ("post", "get"):
        answers = [
            vault.client.request(
                method.upper(), f"/v1/members/{member_id}/treatments", json=treatment(OTHER_CLINIC) if method == "post" else None, headers=headers
            )
            for member_id in (real, made_up)
        ]
        assert [a.status_code for a in answers] == [403, 403]
        assert strip(answers[0].json()) == strip(answers[1].json())
    assert [(e["decision"], e["outcome"]) for e in last_events(vault, 4)] == [("deny", "denied")] * 4
    assert count_treatments(vault) == stored


def test_a_treatment_at_a_clinic_not_the_callers_is_refused_and_one_there_links_the_member_to_it(vault: Vault) -> None:
    m = vault.members[0]
    home = vault.headers(vault.token("practitioner", clinics=[m.home_clinic_id]), "care")
    elsewhere = vault.headers(vault.token("practitioner", clinics=[OTHER_CLINIC]), "care")
    before, stored = vault.journal_size(), count_treatments(vault)

    refused = vault.client.post(f"/v1/members/{m.member_id}/treatments", json=treatment(OTHER_CLINIC), headers=home)

    assert refused.status_code == 403
    assert vault.journal_size() == before + 1
    (event,) = last_events(vault, 1)
    assert (event["decision"], event["outcome"], event["reason_code"]) == ("deny", "denied", "clinic_outside_caller")
    assert count_treatments(vault) == stored
    assert vault.client.get(f"/v1/members/{m.member_id}/treatments", headers=elsewhere).status_code == 403
    everywhere = vault.headers(vault.token("practitioner", clinics=["*"]), "care")
    created = vault.client.post(f"/v1/members/{m.member_id}/treatments", json=treatment(OTHER_CLINIC), headers=everywhere)
    assert created.status_code == 201
    listed = vault.client.get(f"/v1/members/{m.member_id}/treatments", headers=elsewhere)
    assert listed.status_code == 200
    assert created.json()["treatment_id"] in [t["treatment_id"] for t in listed.json()["items"]]


def test_a_made_up_treatment_id_is_403_like_a_forbidden_one_for_a_practitioner_and_404_for_the_dpo(vault: Vault) -> None:
    m = vault.members[0]
    own = vault.headers(vault.token("practitioner", clinics=[m.home_clinic_id]), "care")
    treatment_id = vault.client.post(f"/v1/members/{m.member_id}/treatments", json=treatment(m.home_clinic_id), headers=own).json()["treatment_id"]
    outsider = vault.headers(vault.token("practitioner", clinics=[OTHER_CLINIC]), "care")
    dpo = vault.headers(vault.token("dpo", subject="dpo-1"), "legal_claims")

    forbidden = vault.client.get(f"/v1/treatments/{treatment_id}", headers=outsider)
    made_up_outsider = vault.client.get(f"/v1/treatments/{MADE_UP}", headers=outsider)
    made_up_own = vault.client.get(f"/v1/treatments/{MADE_UP}", headers=own)

    assert [forbidden.status_code, made_up_outsider.status_code, made_up_own.status_code] == [403, 403, 403]
    assert strip(forbidden.json()) == strip(made_up_outsider.json()) == strip(made_up_own.json())
    before = vault.journal_size()
    missing = vault.client.get(f"/v1/treatments/{MADE_UP}", headers=dpo)
    found = vault.client.get(f"/v1/treatments/{treatment_id}", headers=dpo)
    assert (missing.status_code, missing.json()["type"]) == (404, "https://member-vault.example/problems/not-found")
    assert (found.status_code, found.json()["member_id"]) == (200, m.member_id)
    assert vault.journal_size() == before + 2
    assert [(e["resource_id"], e["member_id"], e["decision"], e["outcome"], e["purpose"]) for e in last_events(vault, 2)] == [
        (MADE_UP, None, "allow", "not_found", "legal_claims"),
        (treatment_id, m.member_id, "allow", "ok", "legal_claims"),
    ]


def test_a_break_glass_list_read_is_allowed_flagged_and_queued_for_review(vault: Vault) -> None:
    m = vault.members[0]
    token = vault.token("practitioner", subject="dr-er", clinics=[OTHER_CLINIC])

    without = vault.client.get(f"/v1/members/{m.member_id}/treatments", headers=vault.headers(token, "care"))
    r = vault.client.get(
        f"/v1/members/{m.member_id}/treatments",
        headers=vault.headers(token, "care", **{"X-Break-Glass-Reason": "emergency_care", "X-Request-ID": "bg-treatments-1"}),
    )

    assert without.status_code == 403
    assert r.status_code == 200
    assert [t["treatment_id"] for t in r.json()["items"]] == treatment_ids(vault, m.member_id) != []
    (event,) = last_events(vault, 1)
    assert (event["decision"], event["outcome"], event["reason_code"], event["request_id"]) == ("allow", "ok", "break_glass:emergency_care", "bg-treatments-1")
    queue = vault.client.get("/v1/break-glass", headers=vault.headers(vault.token("dpo")))
    assert queue.status_code == 200
    (review,) = queue.json()["items"]
    assert {k: review[k] for k in ("member_id", "subject", "reason_code", "request_id", "status", "outcome")} == {
        "member_id": m.member_id,
        "subject": "dr-er",
        "reason_code": "emergency_care",
        "request_id": "bg-treatments-1",
        "status": "pending",
        "outcome": None,
    }


def test_paging_walks_every_treatment_exactly_once_in_order(vault: Vault) -> None:
    m = vault.members[0]
    headers = vault.headers(vault.token("practitioner", clinics=[m.home_clinic_id]), "care")
    for day in (5, 1, 4, 2, 3):
        vault.client.post(f"/v1/members/{m.member_id}/treatments", json=treatment(m.home_clinic_id, performed_at=f"2025-03-0{day}T10:00:00Z"), headers=headers)
    expected = treatment_ids(vault, m.member_id)
    seen: list[str] = []
    pages: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = vault.client.get(f"/v1/members/{m.member_id}/treatments", params=params, headers=headers).json()
        seen += [t["treatment_id"] for t in page["items"]]
        pages.append(len(page["items"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert len(expected) >= 5
    assert pages == [2] * (len(expected) // 2) + ([1] if len(expected) % 2 else [])
    assert seen == expected


@pytest.mark.parametrize(
    "cursor",
    ["!!!", "not-base64-at-all", base64.urlsafe_b64encode(b"x" * 32).decode(), base64.urlsafe_b64encode(b"0" * 32).decode(), "MA", "a" * 65],
)
def test_a_cursor_this_list_did_not_hand_out_is_400_and_journals_nothing(vault: Vault, cursor: str) -> None:
    m = vault.members[0]
    headers, before = vault.headers(vault.token("practitioner", clinics=[m.home_clinic_id]), "care"), vault.journal_size()

    r = vault.client.get(f"/v1/members/{m.member_id}/treatments", params={"cursor": cursor}, headers=headers)

    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert vault.journal_size() == before


def test_a_limit_over_the_cap_is_capped_and_a_limit_below_one_is_400(vault: Vault) -> None:
    m = vault.members[0]
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with vault.runtime.data_engine.begin() as conn:
        for i in range(201):
            vault.runtime.treatments.add(conn, m.member_id, treatment(m.home_clinic_id, performed_at=start + timedelta(hours=i)))
    headers = vault.headers(vault.token("practitioner", clinics=[m.home_clinic_id]), "care")

    first = vault.client.get(f"/v1/members/{m.member_id}/treatments", params={"limit": 10_000}, headers=headers)
    default = vault.client.get(f"/v1/members/{m.member_id}/treatments", headers=headers)
    zero = vault.client.get(f"/v1/members/{m.member_id}/treatments", params={"limit": 0}, headers=headers)

    assert (first.status_code, len(first.json()["items"])) == (200, 200)
    rest = vault.client.get(f"/v1/members/{m.member_id}/treatments", params={"limit": 10_000, "cursor": first.json()["next_cursor"]}, headers=headers)
    assert [t["treatment_id"] for t in first.json()["items"] + rest.json()["items"]] == treatment_ids(vault, m.member_id)
    assert rest.json()["next_cursor"] is None
    assert len(default.json()["items"]) == 50
    assert zero.status_code == 400


def test_a_retry_with_the_same_idempotency_key_records_once_and_another_body_is_409(vault: Vault) -> None:
    m = vault.members[0]
    headers = vault.headers(vault.token("practitioner", clinics=[m.home_clinic_id]), "care", **{"Idempotency-Key": "visit-42"})
    url = f"/v1/members/{m.member_id}/treatments"
    stored = count_treatments(vault)

    first = vault.client.post(url, json=treatment(m.home_clinic_id), headers=headers)
    again = vault.client.post(url, json=treatment(m.home_clinic_id), headers=headers)
    other = vault.client.post(url, json=treatment(m.home_clinic_id, dose="2 ml"), headers=headers)

    assert (first.status_code, again.status_code, other.status_code) == (201, 201, 409)
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert count_treatments(vault) == stored + 1


def test_an_invalid_treatment_is_422_naming_fields_and_journals_one_invalid_event(vault: Vault) -> None:
    m = vault.members[0]
    before, stored = vault.journal_size(), count_treatments(vault)

    r = vault.client.post(
        f"/v1/members/{m.member_id}/treatments",
        json=treatment(m.home_clinic_id, category="botox-canary", performed_at="2025-02-30T10:00:00Z", member_id=m.member_id),
        headers=vault.headers(vault.token("practitioner", clinics=[m.home_clinic_id]), "care"),
    )

    assert r.status_code == 422
    assert r.json()["errors"] == {"category": "not_in_value_set", "member_id": "unknown_field", "performed_at": "invalid_date"}
    assert "botox-canary" not in r.text
    assert vault.journal_size() == before + 1
    (event,) = last_events(vault, 1)
    assert (event["decision"], event["outcome"]) == ("allow", "invalid")
    assert count_treatments(vault) == stored


def test_a_member_reads_their_own_treatments_but_not_anothers(vault: Vault) -> None:
    m, other = vault.members[0], vault.members[1]
    token = vault.token("member", subject="card-app", member_id=m.member_id)

    own = vault.client.get(f"/v1/members/{m.member_id}/treatments", headers=vault.headers(token, "self_service"))
    theirs = vault.client.get(f"/v1/members/{other.member_id}/treatments", headers=vault.headers(token, "self_service"))
    write = vault.client.post(f"/v1/members/{m.member_id}/treatments", json=treatment(m.home_clinic_id), headers=vault.headers(token, "self_service"))

    assert own.status_code == 200
    assert [t["treatment_id"] for t in own.json()["items"]] == treatment_ids(vault, m.member_id) != []
    assert (theirs.status_code, write.status_code) == (403, 403)
