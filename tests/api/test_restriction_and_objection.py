"""What completing a data-subject request does, over HTTP: restriction, objection, rectification.

Invariants: while a restriction request is ``completed`` (not yet
``lifted``), staff reach the member for no purpose but ``legal_claims`` —
reads and writes of the member, treatments and the ledger are 403 with audit
reason ``restricted`` — and the member keeps reading their own record; the
dpo lifts it with a transition and staff work as before. Completing an
objection withdraws each named purpose (a consent event on channel
``request``, recorded by the dpo, evidence ``dsr:<id>``), granted before or
not. Completing a rectification writes the changes through the validated
member write path (previous values kept in the field history); an invalid
value refuses the completion with 422 and changes nothing; the dpo still
cannot ``PATCH`` a member. Each completion is one journaled event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx
import pytest

from api.deps import _now
from tests.api.conftest import Vault
from vault import data_map as dm

PROBLEMS = "https://member-vault.example/problems/"
SQLITE = pytest.mark.parametrize("backend", ["sqlite"])
T0 = datetime(2027, 1, 31, 9, 30, tzinfo=UTC)
EMAIL = "corrected.7391@example.cn"
RESTRICTED = {
    "type": PROBLEMS + "forbidden",
    "title": "Forbidden",
    "status": 403,
    "detail": "the member restricted the use of their data; only legal claims may reach it",
}
FORBIDDEN = {"type": PROBLEMS + "forbidden", "title": "Forbidden", "status": 403, "detail": "the policy does not allow this request"}
TREATMENT = {"performed_at": "2026-03-01T10:00:00Z", "category": "injectable", "practitioner_id": "dr-li", "procedure": "filler"}


# -- helpers ---------------------------------------------------------------------------


@dataclass
class Clock:
    now: datetime


@pytest.fixture
def clock(vault: Vault) -> Clock:
    """The routes' clock (``api.deps._now``), set to ``T0``; tests move it by assigning ``clock.now``."""
    moved = Clock(T0)
    vault.client.app.dependency_overrides[_now] = lambda: moved.now
    return moved


def member(vault: Vault, index: int) -> dict[str, str]:
    m = vault.members[index]
    return vault.headers(vault.token("member", subject=f"app-{index}", member_id=m.member_id), "self_service")


def staff(vault: Vault, role: str, index: int) -> dict[str, str]:
    """Headers of ``role`` in member ``index``'s home clinic, for care."""
    return vault.headers(vault.token(role, subject=f"{role}-1", clinics=[vault.members[index].home_clinic_id]), "care")


def dpo(vault: Vault, purpose: str = "self_service") -> dict[str, str]:
    return vault.headers(vault.token("dpo", subject="dpo-1"), purpose)


def file(vault: Vault, index: int, body: dict[str, object]) -> str:
    r = vault.client.post(f"/v1/members/{vault.members[index].member_id}/requests", json=body, headers=member(vault, index))
    return str(ok(r, 201)["dsr_id"])


def move(vault: Vault, dsr_id: str, to: str) -> httpx.Response:
    return vault.client.post(f"/v1/requests/{dsr_id}/transitions", json={"to": to}, headers=dpo(vault))


def walk(vault: Vault, dsr_id: str, *steps: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for to in steps:
        body = ok(move(vault, dsr_id, to), 200)
    return body


def read_request(vault: Vault, dsr_id: str) -> dict[str, Any]:
    return ok(vault.client.get(f"/v1/requests/{dsr_id}", headers=dpo(vault)), 200)


def events_since(vault: Vault, before: int) -> list[dict[str, Any]]:
    return [json.loads(e) for e in vault.journal_events()[before:]]


def ok(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["cache-control"] == "no-store"
    body: dict[str, Any] = r.json()
    return body


def problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """The problem+json body of ``r`` without its request id (checked against the header)."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["cache-control"] == "no-store"
    body: dict[str, Any] = r.json()
    assert body.pop("request_id") == r.headers["x-request-id"]
    assert (body["type"], body["status"]) == (PROBLEMS + slug, status)
    return body


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# -- restriction ----------------------------------------------------------------------------


def staff_calls(vault: Vault, index: int, treatment_id: str) -> list[tuple[str, str, str, dict[str, object] | None, str]]:
    """(role, method, path, body, the audit action) of what staff do with a member of their clinic for care."""
    m = vault.members[index].member_id
    clinic = vault.members[index].home_clinic_id
    return [
        ("front_desk", "GET", f"/v1/members/{m}", None, "read"),
        ("practitioner", "GET", f"/v1/members/{m}", None, "read"),
        ("clinic_manager", "GET", f"/v1/members/{m}", None, "read"),
        ("practitioner", "GET", f"/v1/members/{m}/treatments", None, "list"),
        ("practitioner", "GET", f"/v1/treatments/{treatment_id}", None, "read"),
        ("clinic_manager", "GET", f"/v1/members/{m}/treatments", None, "list"),
        ("front_desk", "GET", f"/v1/members/{m}/ledger", None, "list"),
        ("clinic_manager", "GET", f"/v1/members/{m}/ledger", None, "list"),
        ("front_desk", "POST", f"/v1/members/{m}/ledger", {"entry_type": "top_up", "amount": 500}, "create"),
        ("practitioner", "POST", f"/v1/members/{m}/treatments", {**TREATMENT, "clinic_id": clinic}, "create"),
    ]


def call(vault: Vault, index: int, what: tuple[str, str, str, dict[str, object] | None, str]) -> httpx.Response:
    role, method, path, body, _ = what
    return vault.client.request(method, path, json=body, headers=staff(vault, role, index))


def test_a_completed_restriction_keeps_staff_out_for_care_until_the_dpo_lifts_it(vault: Vault, clock: Clock) -> None:
    """Reads and writes of the member, treatments and ledger; the member and the dpo for legal claims still read."""
    m = vault.members[0]
    treatment = vault.client.post(
        f"/v1/members/{m.member_id}/treatments", json={**TREATMENT, "clinic_id": m.home_clinic_id}, headers=staff(vault, "practitioner", 0)
    )
    treatment_id = str(ok(treatment, 201)["treatment_id"])
    ok(vault.client.post(f"/v1/members/{m.member_id}/ledger", json={"entry_type": "top_up", "amount": 10_000}, headers=staff(vault, "front_desk", 0)), 201)
    calls = staff_calls(vault, 0, treatment_id)
    dsr_id = file(vault, 0, {"type": "restriction"})
    walk(vault, dsr_id, "verified", "in_progress")

    # Not restricted before the request is carried out.
    assert [call(vault, 0, what).status_code for what in calls] == [200] * 8 + [201, 201]

    clock.now = T0 + timedelta(days=2)
    completed = walk(vault, dsr_id, "completed")
    assert (completed["status"], completed["closed_at"]) == ("completed", "2027-02-02T09:30:00Z")
    treatments_before = ok(vault.client.get(f"/v1/members/{m.member_id}/treatments", headers=member(vault, 0)), 200)["items"]
    ledger_before = ok(vault.client.get(f"/v1/members/{m.member_id}/ledger", headers=member(vault, 0)), 200)["items"]
    before = vault.journal_size()

    refused = [call(vault, 0, what) for what in calls]

    assert [problem(r, 403, "forbidden") for r in refused] == [RESTRICTED] * len(calls)
    events = events_since(vault, before)
    assert [(e["action"], e["actor"]["roles"], e["member_id"], e["purpose"], e["decision"], e["reason_code"], e["outcome"]) for e in events] == [
        (action, [role], m.member_id, "care", "deny", "restricted", "denied") for role, _, _, _, action in calls
    ]
    assert ok(vault.client.get(f"/v1/members/{m.member_id}/treatments", headers=member(vault, 0)), 200)["items"] == treatments_before
    assert ok(vault.client.get(f"/v1/members/{m.member_id}/ledger", headers=member(vault, 0)), 200)["items"] == ledger_before

    before = vault.journal_size()
    own_read = vault.client.get(f"/v1/members/{m.member_id}", headers=member(vault, 0))
    legal = vault.client.get(f"/v1/members/{m.member_id}", headers=dpo(vault, "legal_claims"))
    handling = vault.client.get(f"/v1/members/{m.member_id}", headers=dpo(vault, "self_service"))

    assert ok(own_read, 200)["member_id"] == ok(legal, 200)["member_id"] == m.member_id
    assert own_read.json()["membership"]["card_no"] == legal.json()["membership"]["card_no"] == m.card_no
    assert problem(handling, 403, "forbidden") == RESTRICTED
    assert [(e["actor"]["roles"], e["purpose"], e["decision"], e["reason_code"]) for e in events_since(vault, before)] == [
        (["member"], "self_service", "allow", "allowed"),
        (["dpo"], "legal_claims", "allow", "allowed"),
        (["dpo"], "self_service", "deny", "restricted"),
    ]

    clock.now = T0 + timedelta(days=9)
    lifted = walk(vault, dsr_id, "lifted")

    assert (lifted["status"], lifted["closed_at"]) == ("lifted", "2027-02-09T09:30:00Z")
    assert lifted["steps"][-1] == {
        "seq": 5,
        "from_status": "completed",
        "to_status": "lifted",
        "actor": "dpo-1",
        "actor_role": "dpo",
        "reason_code": "restriction_lifted",
        "at": "2027-02-09T09:30:00Z",
        "note": None,
    }
    assert [call(vault, 0, what).status_code for what in calls] == [200] * 8 + [201, 201]


@SQLITE
def test_a_restriction_in_progress_or_rejected_restricts_nothing(vault: Vault, clock: Clock) -> None:
    m = vault.members[1]
    dsr_id = file(vault, 1, {"type": "restriction"})
    walk(vault, dsr_id, "verified", "in_progress")
    desk = staff(vault, "front_desk", 1)

    assert ok(vault.client.get(f"/v1/members/{m.member_id}", headers=desk), 200)["member_id"] == m.member_id
    ok(vault.client.post(f"/v1/requests/{dsr_id}/transitions", json={"to": "rejected", "reason_code": "manifestly_unfounded"}, headers=dpo(vault)), 200)
    assert ok(vault.client.get(f"/v1/members/{m.member_id}", headers=desk), 200)["member_id"] == m.member_id


@SQLITE
def test_lifting_is_only_for_a_completed_restriction(vault: Vault, clock: Clock) -> None:
    """``lifted`` from in_progress, or for a completed objection, is 409 and changes nothing."""
    restriction = file(vault, 2, {"type": "restriction"})
    walk(vault, restriction, "verified", "in_progress")
    objection = file(vault, 2, {"type": "objection", "details": {"purposes": ["photo_use"]}})
    walk(vault, objection, "verified", "in_progress", "completed")

    early, wrong_type = move(vault, restriction, "lifted"), move(vault, objection, "lifted")

    assert problem(early, 409, "conflict")["detail"] == "this restriction request cannot go from in_progress to lifted"
    assert problem(wrong_type, 409, "conflict")["detail"] == "this objection request cannot go from completed to lifted"
    assert (read_request(vault, restriction)["status"], read_request(vault, objection)["status"]) == ("in_progress", "completed")


@SQLITE
def test_the_front_desk_cannot_read_a_restricted_members_consents_for_care(vault: Vault, clock: Clock) -> None:
    """A restricted member's consent history is their data too: staff reach it for no purpose but legal claims (issue 6, Restriction)."""
    m = vault.members[0]
    dsr_id = file(vault, 0, {"type": "restriction"})
    walk(vault, dsr_id, "verified", "in_progress", "completed")
    before = vault.journal_size()

    r = vault.client.get(f"/v1/members/{m.member_id}/consents", headers=staff(vault, "front_desk", 0))

    assert problem(r, 403, "forbidden") == RESTRICTED
    (event,) = events_since(vault, before)
    assert (event["action"], event["resource_type"], event["decision"], event["reason_code"]) == ("read", "consent", "deny", "restricted")


@SQLITE
def test_staff_no_longer_find_or_check_in_a_restricted_member_but_the_member_finds_themselves(vault: Vault, clock: Clock) -> None:
    """Search answers ids only, yet finding a member uses their data: a restriction hides them from staff until lifted."""
    m = vault.members[0]
    with vault.runtime.data_engine.connect() as conn:
        phone = vault.runtime.members.read(conn, m.member_id, {dm.Category.contact}).values[dm.Category.contact]["phone"]
    desk = staff(vault, "front_desk", 0)
    assert ok(vault.client.post("/v1/members/search", json={"phone": phone}, headers=desk), 200) == {"results": [{"member_id": m.member_id}]}
    dsr_id = file(vault, 0, {"type": "restriction"})
    walk(vault, dsr_id, "verified", "in_progress", "completed")
    other_desk = vault.headers(vault.token("front_desk", subject="desk-9", clinics=["zz-009"]), "care")
    before = vault.journal_size()

    hidden = vault.client.post("/v1/members/search", json={"phone": phone}, headers=desk)
    own = vault.client.post("/v1/members/search", json={"phone": phone}, headers=member(vault, 0))
    check_in = vault.client.post(f"/v1/members/{m.member_id}/clinics", json={"clinic_id": "zz-009", "card_no": m.card_no}, headers=other_desk)

    assert ok(hidden, 200) == {"results": []}
    assert ok(own, 200) == {"results": [{"member_id": m.member_id}]}
    assert problem(check_in, 403, "forbidden") == RESTRICTED
    assert [(e["action"], e["decision"], e["reason_code"]) for e in events_since(vault, before)] == [
        ("search", "allow", "allowed"),
        ("search", "allow", "allowed"),
        ("check_in", "deny", "restricted"),
    ]
    walk(vault, dsr_id, "lifted")
    assert ok(vault.client.post("/v1/members/search", json={"phone": phone}, headers=desk), 200) == {"results": [{"member_id": m.member_id}]}


# -- objection -------------------------------------------------------------------------------


def grant(vault: Vault, index: int, purpose: str) -> dict[str, Any]:
    body = {"purpose": purpose, "decision": "granted", "notice_version": 1, "channel": "app"}
    return ok(vault.client.post(f"/v1/members/{vault.members[index].member_id}/consents", json=body, headers=member(vault, index)), 201)


def test_completing_an_objection_withdraws_each_named_purpose_on_channel_request(vault: Vault, clock: Clock) -> None:
    m = vault.members[2]
    granted = [grant(vault, 2, purpose) for purpose in ("marketing_contact", "photo_use")]
    dsr_id = file(vault, 2, {"type": "objection", "details": {"purposes": ["marketing_contact", "photo_use"]}})
    walk(vault, dsr_id, "verified", "in_progress")
    clock.now = T0 + timedelta(days=3)
    before = vault.journal_size()

    completed = walk(vault, dsr_id, "completed")

    assert completed["status"] == "completed"
    (event,) = events_since(vault, before)
    assert (event["action"], event["resource_id"], event["member_id"], event["fields"], event["decision"], event["outcome"]) == (
        "transition_request",
        dsr_id,
        m.member_id,
        ["completed"],
        "allow",
        "ok",
    )
    overview = ok(vault.client.get(f"/v1/members/{m.member_id}/consents", headers=member(vault, 2)), 200)
    since = "2027-02-03T09:30:00Z"
    assert {p: overview["current"][p] for p in ("marketing_contact", "photo_use")} == {
        p: {"state": "withdrawn", "notice_version": None, "since": since} for p in ("marketing_contact", "photo_use")
    }
    history = overview["history"]
    assert history[:2] == granted
    withdrawals = history[2:]
    assert [{k: v for k, v in w.items() if k not in {"consent_id", "receipt"}} for w in withdrawals] == [
        {
            "purpose": purpose,
            "decision": "withdrawn",
            "notice_version": None,
            "notice_hash": None,
            "channel": "request",
            "given_by": "member",
            "evidence": f"dsr:{dsr_id}",
            "recorded_by": "dpo-1",
            "recorded_role": "dpo",
            "recorded_at": since,
        }
        for purpose in ("marketing_contact", "photo_use")
    ]
    assert all(w["receipt"].count(".") == 2 for w in withdrawals)


@SQLITE
def test_an_objection_naming_a_purpose_never_granted_still_records_its_withdrawal(vault: Vault, clock: Clock) -> None:
    m = vault.members[3]
    dsr_id = file(vault, 3, {"type": "objection", "details": {"purposes": ["third_party_sharing"]}})

    walk(vault, dsr_id, "verified", "in_progress", "completed")

    overview = ok(vault.client.get(f"/v1/members/{m.member_id}/consents", headers=member(vault, 3)), 200)
    assert overview["current"]["third_party_sharing"] == {"state": "withdrawn", "notice_version": None, "since": rfc3339(T0)}
    assert [(e["purpose"], e["decision"], e["channel"], e["recorded_role"], e["evidence"]) for e in overview["history"]] == [
        ("third_party_sharing", "withdrawn", "request", "dpo", f"dsr:{dsr_id}")
    ]
    others = ("health_data", "marketing_contact", "loyalty_profiling", "photo_use", "cross_border_transfer")
    assert {p: s["state"] for p, s in overview["current"].items() if p != "third_party_sharing"} == dict.fromkeys(others, "none")


# -- rectification ----------------------------------------------------------------------------


def contact(vault: Vault, index: int) -> dict[str, Any]:
    body = ok(vault.client.get(f"/v1/members/{vault.members[index].member_id}", headers=member(vault, index)), 200)
    return dict(body["contact"])


def patch(vault: Vault, index: int, headers: dict[str, str]) -> httpx.Response:
    return vault.client.patch(
        f"/v1/members/{vault.members[index].member_id}",
        content=json.dumps({"contact": {"email": EMAIL}}),
        headers=headers | {"Content-Type": "application/merge-patch+json"},
    )


def test_completing_a_rectification_writes_the_change_and_keeps_the_previous_value_while_the_dpo_still_cannot_patch(vault: Vault, clock: Clock) -> None:
    m = vault.members[2]
    original = contact(vault, 2)
    dsr_id = file(vault, 2, {"type": "rectification", "details": {"changes": {"contact": {"email": EMAIL}}}})
    walk(vault, dsr_id, "verified", "in_progress")

    during = patch(vault, 2, dpo(vault))
    before = vault.journal_size()
    completed = walk(vault, dsr_id, "completed")
    completion_events = events_since(vault, before)
    after = patch(vault, 2, dpo(vault))

    assert problem(during, 403, "forbidden") == problem(after, 403, "forbidden") == FORBIDDEN
    assert completed["status"] == "completed"
    assert [(e["action"], e["resource_id"], e["fields"], e["outcome"]) for e in completion_events] == [("transition_request", dsr_id, ["completed"], "ok")]
    assert contact(vault, 2) == original | {"email": EMAIL}
    with vault.runtime.data_engine.connect() as conn:
        history = vault.runtime.members.history(conn, m.member_id)
    assert [(h["field"], h["previous"]) for h in history] == [("email", original["email"])]
    assert EMAIL.encode() not in b"".join(vault.journal_events())


def test_a_rectification_with_an_invalid_value_cannot_be_completed_and_changes_nothing(vault: Vault, clock: Clock) -> None:
    """The value is validated when the dpo carries the request out: 422 naming the field, the request stays in progress."""
    m = vault.members[3]
    original = contact(vault, 3)
    dsr_id = file(vault, 3, {"type": "rectification", "details": {"changes": {"contact": {"phone": "12"}}}})
    walk(vault, dsr_id, "verified", "in_progress")
    unchanged = read_request(vault, dsr_id)
    before = vault.journal_size()

    r = move(vault, dsr_id, "completed")

    assert problem(r, 422, "invalid-fields") == {
        "type": PROBLEMS + "invalid-fields",
        "title": "Invalid fields",
        "status": 422,
        "detail": "one or more fields are invalid",
        "errors": {"phone": "invalid_phone"},
    }
    (event,) = events_since(vault, before)
    assert (event["action"], event["fields"], event["decision"], event["outcome"]) == ("transition_request", ["completed"], "allow", "invalid")
    assert read_request(vault, dsr_id) == unchanged
    assert unchanged["status"] == "in_progress"
    assert contact(vault, 3) == original
    with vault.runtime.data_engine.connect() as conn:
        assert vault.runtime.members.history(conn, m.member_id) == []
