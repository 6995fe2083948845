"""Object-level authorization over HTTP (SECURITY-BAR H10, H12): who may reach which member.

Invariants: a member token reaches only its own member; staff reach members
linked to one of their clinics (home clinic, treatment, or a check-in that
presented the member's card number); a denial is the same 403 for an
existing and a made-up id, and a search never answers an id out of reach;
break-glass is a practitioner's emergency read, needs a known reason code,
and leaves a flagged audit event and a review-queue row. Each decision
journals exactly one event; a request refused before the decision none.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2 as httpx
import pytest
from sqlalchemy import select

from api import routers
from tests.api.conftest import Vault
from vault import data_map as dm
from vault.storage.schema import break_glass_reviews, treatments

MADE_UP = "0" * 32
CLINIC_X = "bola-x"  # a clinic none of the seeded members is linked to
SQLITE = pytest.mark.parametrize("backend", ["sqlite"])


def contact(vault: Vault, index: int) -> dict[str, Any]:
    with vault.runtime.data_engine.connect() as conn:
        view = vault.runtime.members.read(conn, vault.members[index].member_id, {dm.Category.contact, dm.Category.identity})
    return {**view.values[dm.Category.contact], **view.values[dm.Category.identity]}


def last_event(vault: Vault) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(vault.journal_events()[-1])
    return event


def assert_same_denial(vault: Vault, before: int, *responses: httpx.Response) -> None:
    """Every response is the same 403 problem (request id aside), and each journaled one deny event."""
    bodies = []
    for r in responses:
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body.pop("request_id") == r.headers["x-request-id"]
        bodies.append(body)
    assert all(b == bodies[0] for b in bodies)
    assert bodies[0]["type"] == "https://member-vault.example/problems/forbidden"
    events = [json.loads(e) for e in vault.journal_events()[before:]]
    assert [(e["decision"], e["outcome"]) for e in events] == [("deny", "denied")] * len(responses)


def patch(vault: Vault, member_id: str, token: str, purpose: str, body: object) -> httpx.Response:
    headers = {**vault.headers(token, purpose), "Content-Type": "application/merge-patch+json"}
    return vault.client.patch(f"/v1/members/{member_id}", content=json.dumps(body), headers=headers)


def search(vault: Vault, token: str, purpose: str, term: dict[str, str]) -> httpx.Response:
    return vault.client.post("/v1/members/search", json=term, headers=vault.headers(token, purpose))


def checkin(vault: Vault, token: str, member_id: str, card_no: str, clinic_id: str = CLINIC_X) -> httpx.Response:
    return vault.client.post(f"/v1/members/{member_id}/clinics", json={"card_no": card_no, "clinic_id": clinic_id}, headers=vault.headers(token, "care"))


@SQLITE
def test_member_a_reads_and_patches_only_their_own_record(vault: Vault) -> None:
    a, b = vault.members[0].member_id, vault.members[1].member_id
    token = vault.token("member", subject="member-a", member_id=a)
    b_email = contact(vault, 1)["email"]
    assert vault.client.get(f"/v1/members/{a}", headers=vault.headers(token, "self_service")).status_code == 200
    before = vault.journal_size()

    denied = [
        vault.client.get(f"/v1/members/{b}", headers=vault.headers(token, "self_service")),
        vault.client.get(f"/v1/members/{MADE_UP}", headers=vault.headers(token, "self_service")),
    ]
    patched = [patch(vault, target, token, "self_service", {"contact": {"email": "a.takes.b@example.cn"}}) for target in (b, MADE_UP)]

    assert_same_denial(vault, before, *denied, *patched)
    assert contact(vault, 1)["email"] == b_email


@SQLITE
@pytest.mark.parametrize(
    ("module", "path"),
    [
        ("treatments", "/v1/members/{}/treatments"),
        ("ledger", "/v1/members/{}/ledger"),
        ("audit", "/v1/members/{}/access-log"),
        ("treatments", "/v1/treatments/{}"),
    ],
)
def test_member_a_reaches_none_of_bs_records(vault: Vault, module: str, path: str) -> None:
    if not any(m.__name__ == f"api.routers.{module}" for m in routers.ALL):
        pytest.skip(f"api.routers.{module} is not mounted (api.routers.ALL)")
    a, b = vault.members[0].member_id, vault.members[1].member_id
    if path.startswith("/v1/treatments/"):
        with vault.runtime.data_engine.connect() as conn:
            a, b = (str(conn.scalars(select(treatments.c.treatment_id).where(treatments.c.member_id == m)).first()) for m in (a, b))
    token = vault.token("member", subject="member-a", member_id=vault.members[0].member_id)
    assert vault.client.get(path.format(a), headers=vault.headers(token, "self_service")).status_code == 200
    before = vault.journal_size()

    denied = [vault.client.get(path.format(target), headers=vault.headers(token, "self_service")) for target in (b, MADE_UP)]

    assert_same_denial(vault, before, *denied)


@SQLITE
@pytest.mark.parametrize("field", ["phone", "email", "national_id", "card_no"])
def test_member_a_searching_for_bs_values_finds_nothing(vault: Vault, field: str) -> None:
    a = vault.members[0].member_id
    token = vault.token("member", subject="member-a", member_id=a)
    mine, theirs = ({**contact(vault, i), "card_no": vault.members[i].card_no}[field] for i in (0, 1))
    before = vault.journal_size()

    found_theirs = search(vault, token, "self_service", {field: theirs})
    found_mine = search(vault, token, "self_service", {field: mine})

    assert (found_theirs.status_code, found_theirs.json()) == (200, {"results": []})
    assert (found_mine.status_code, found_mine.json()) == (200, {"results": [{"member_id": a}]})
    assert vault.journal_size() == before + 2


@SQLITE
@pytest.mark.parametrize("role", ["front_desk", "practitioner", "clinic_manager"])
def test_staff_of_another_clinic_get_the_same_403_for_a_real_and_a_made_up_member(vault: Vault, role: str) -> None:
    token = vault.token(role, subject=f"{role}-x", clinics=[CLINIC_X])
    member = vault.members[0]
    before = vault.journal_size()

    reads = [vault.client.get(f"/v1/members/{m}", headers=vault.headers(token, "care")) for m in (member.member_id, MADE_UP)]

    assert_same_denial(vault, before, *reads)
    hits = search(vault, token, "care", {"card_no": member.card_no})
    assert (hits.status_code, hits.json()) == (200, {"results": []})


@SQLITE
def test_a_check_in_with_the_members_card_opens_the_member_to_that_front_desk(vault: Vault) -> None:
    member = vault.members[0]
    token = vault.token("front_desk", subject="desk-x", clinics=[CLINIC_X])
    assert vault.client.get(f"/v1/members/{member.member_id}", headers=vault.headers(token, "care")).status_code == 403
    before = vault.journal_size()

    r = checkin(vault, token, member.member_id, member.card_no)

    assert (r.status_code, r.json()) == (200, {"member_id": member.member_id, "clinic_id": CLINIC_X, "linked": True})
    event = last_event(vault)
    assert vault.journal_size() == before + 1
    assert (event["decision"], event["action"], event["member_id"], event["fields"]) == ("allow", "check_in", member.member_id, ["card_no"])
    read = vault.client.get(f"/v1/members/{member.member_id}", headers=vault.headers(token, "care"))
    assert read.status_code == 200
    assert read.json()["member_id"] == member.member_id
    hits = search(vault, token, "care", {"card_no": member.card_no})
    assert hits.json() == {"results": [{"member_id": member.member_id}]}


@SQLITE
def test_a_check_in_with_a_wrong_card_is_the_same_403_as_a_made_up_member(vault: Vault) -> None:
    a, b = vault.members[0], vault.members[1]
    token = vault.token("front_desk", subject="desk-x", clinics=[CLINIC_X])
    before = vault.journal_size()

    attempts = [
        checkin(vault, token, a.member_id, b.card_no),  # another member's real card
        checkin(vault, token, a.member_id, "MV9999999999"),  # no member's card
        checkin(vault, token, MADE_UP, a.card_no),  # a made-up member with a real card
        checkin(vault, token, a.member_id, a.card_no, clinic_id="not-my-clinic"),  # the right card, a clinic not the caller's
    ]

    assert_same_denial(vault, before, *attempts)
    assert vault.client.get(f"/v1/members/{a.member_id}", headers=vault.headers(token, "care")).status_code == 403


@SQLITE
@pytest.mark.parametrize("reason", ["", "curiosity", "EMERGENCY_CARE", "emergency_care "])
def test_break_glass_without_a_known_reason_code_is_400_before_any_decision(vault: Vault, reason: str) -> None:
    token = vault.token("practitioner", subject="dr-x", clinics=[CLINIC_X])
    before = vault.journal_size()

    r = vault.client.get(f"/v1/members/{vault.members[0].member_id}", headers=vault.headers(token, "care", **{"X-Break-Glass-Reason": reason}))

    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["request_id"] == r.headers["x-request-id"]
    assert vault.journal_size() == before


@SQLITE
@pytest.mark.parametrize("role", ["front_desk", "clinic_manager"])
def test_break_glass_by_a_non_practitioner_is_403_and_queues_nothing(vault: Vault, role: str) -> None:
    token = vault.token(role, subject=f"{role}-x", clinics=[CLINIC_X])
    before = vault.journal_size()

    r = vault.client.get(f"/v1/members/{vault.members[0].member_id}", headers=vault.headers(token, "care", **{"X-Break-Glass-Reason": "emergency_care"}))

    assert_same_denial(vault, before, r)
    with vault.runtime.data_engine.connect() as conn:
        assert conn.execute(select(break_glass_reviews)).all() == []


@SQLITE
def test_break_glass_by_a_practitioner_outside_their_clinics_is_read_flagged_and_queued(vault: Vault) -> None:
    member = vault.members[0]
    token = vault.token("practitioner", subject="dr-x", clinics=[CLINIC_X])
    before = vault.journal_size()

    r = vault.client.get(f"/v1/members/{member.member_id}", headers=vault.headers(token, "care", **{"X-Break-Glass-Reason": "emergency_care"}))

    assert r.status_code == 200
    body = r.json()
    # the emergency minimum of the default policy: no contact, demographic or preference data
    assert set(body) == {"member_id", "membership", "identity", "health", "redacted"}
    assert body["redacted"] == ["contact", "demographic", "preference"]
    assert vault.journal_size() == before + 1
    event = last_event(vault)
    assert (event["decision"], event["outcome"], event["reason_code"], event["member_id"]) == ("allow", "ok", "break_glass:emergency_care", member.member_id)
    assert event["request_id"] == r.headers["x-request-id"]
    with vault.runtime.data_engine.connect() as conn:
        rows = conn.execute(select(break_glass_reviews)).all()
    assert [(row.member_id, row.subject, row.reason_code, row.request_id, row.status) for row in rows] == [
        (member.member_id, "dr-x", "emergency_care", r.headers["x-request-id"], "pending")
    ]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_moving_the_home_clinic_outside_the_callers_clinics_is_refused(vault: Vault) -> None:
    """A new home clinic links the member to it; only a clinic of the caller's may be named (else staff there could read without check-in)."""
    m = vault.members[0]
    desk = vault.token("front_desk", clinics=[m.home_clinic_id])
    headers = {**vault.headers(desk, "care"), "Content-Type": "application/merge-patch+json"}
    r = vault.client.patch(f"/v1/members/{m.member_id}", headers=headers, content=json.dumps({"membership": {"home_clinic_id": "zz-999"}}))
    assert r.status_code == 403
    assert json.loads(vault.journal_events()[-1])["reason_code"] == "clinic_outside_caller"
    outsider = vault.token("practitioner", clinics=["zz-999"])
    assert vault.client.get(f"/v1/members/{m.member_id}", headers=vault.headers(outsider, "care")).status_code == 403


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_break_glass_header_from_a_non_practitioner_does_not_open_the_break_glass_domain(vault: Vault) -> None:
    m = vault.members[0]
    desk = vault.token("front_desk", clinics=["zz-999"])
    r = vault.client.get(f"/v1/members/{m.member_id}", headers={**vault.headers(desk, "care"), "X-Break-Glass-Reason": "emergency_care"})
    assert r.status_code == 403
    assert json.loads(vault.journal_events()[-1])["reason_code"] != "break_glass:emergency_care"
