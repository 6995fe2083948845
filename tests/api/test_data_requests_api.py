"""Data-subject requests over HTTP: filing, the dpo's workflow, reading one request, the queue.

Invariants: the member files any type for themselves, the front desk files on
the member's behalf only with evidence; a second open request of the same
type is 409 naming the open one; only the dpo moves a request, one step of
the workflow at a time (a skipped step is 409 and changes nothing), and a
rejection needs a rejection reason; every step shows in ``GET`` with its
actor, reason code and time; the member and the dpo (stating a purpose) see
details, evidence and notes, the compliance officer (no purpose) sees the
metadata and the steps only; a member reaches neither another member's
requests nor a made-up one, with the same 403; completing an access or a
portability request is 409 "not available yet" for now (erasure:
test_erasure_request.py). Every
request that reaches a decision journals exactly one event, naming the type
or the target status, never a note, a detail or the evidence; one refused
before it (401, 400) journals none. Every answer is ``Cache-Control: no-store``.

The clock is the ``api.deps._now`` dependency, overridden (``clock``) so due
dates and step times are exact and the queue can be moved past a due date.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx
import pytest
import structlog
from sqlalchemy import func, select

from api import logging as oplog
from api.deps import _now
from tests.api.conftest import Vault
from vault import data_map as dm
from vault.storage.schema import data_request_steps, data_requests

MADE_UP = "0" * 32
PROBLEMS = "https://member-vault.example/problems/"
# Refusals that no storage difference reaches run on SQLite only (as in test_bola and test_consent_api), to keep the file
# fast on PostgreSQL; what files, moves or reads back requests runs on both.
SQLITE = pytest.mark.parametrize("backend", ["sqlite"])
OTHER_CLINIC = "zz-999"  # a clinic none of the seeded members is linked to

# 31 January: one calendar month later is clamped to the end of February (DESIGN.md: one month by default).
T0 = datetime(2027, 1, 31, 9, 30, tzinfo=UTC)
T0_TEXT = "2027-01-31T09:30:00Z"
DUE_TEXT = "2027-02-28T09:30:00Z"
DUE = datetime(2027, 2, 28, 9, 30, tzinfo=UTC)

# Free text and references that must never reach an audit leaf or the operational log.
EVIDENCE = "idcheck:desk-1/2027-0131-canary7391"
NOTE = "Ausweis am Schalter geprüft; 身份证核验 canary-note-7391"
EMAIL = "canary.rect.7391@example.cn"

VALID = {
    "access": {"type": "access"},
    "portability": {"type": "portability"},
    "rectification": {"type": "rectification", "details": {"changes": {"contact": {"email": EMAIL}}}},
    "erasure": {"type": "erasure"},
    "restriction": {"type": "restriction"},
    "objection": {"type": "objection", "details": {"purposes": ["marketing_contact", "photo_use"]}},
}


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


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    """The operational log through the real processor chain, into a buffer."""
    buffer = io.StringIO()
    structlog.configure(
        processors=oplog.PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=buffer),
        cache_logger_on_first_use=False,
    )
    yield buffer
    structlog.reset_defaults()


def filing_url(member_id: str) -> str:
    return f"/v1/members/{member_id}/requests"


def request_url(dsr_id: str, *rest: str) -> str:
    return "/".join((f"/v1/requests/{dsr_id}", *rest))


def member(vault: Vault, index: int, **extra: str) -> dict[str, str]:
    """Headers of member ``index``'s own token in the card app."""
    m = vault.members[index]
    return vault.headers(vault.token("member", subject=f"app-{index}", member_id=m.member_id), "self_service", **extra)


def desk(vault: Vault, clinic: str, **extra: str) -> dict[str, str]:
    return vault.headers(vault.token("front_desk", subject="desk-1", clinics=[clinic]), "care", **extra)


def dpo(vault: Vault, purpose: str | None = "self_service") -> dict[str, str]:
    return vault.headers(vault.token("dpo", subject="dpo-1"), purpose)


def officer(vault: Vault, purpose: str | None = None) -> dict[str, str]:
    return vault.headers(vault.token("compliance_officer", subject="co-1"), purpose)


def file(vault: Vault, index: int, body: dict[str, object], **extra: str) -> httpx.Response:
    return vault.client.post(filing_url(vault.members[index].member_id), json=body, headers=member(vault, index, **extra))


def filed(vault: Vault, index: int, kind: str) -> str:
    """File a valid request of ``kind`` as member ``index``; its id."""
    return str(ok(file(vault, index, VALID[kind]), 201)["dsr_id"])


def move(vault: Vault, dsr_id: str, to: str, **more: object) -> httpx.Response:
    return vault.client.post(request_url(dsr_id, "transitions"), json={"to": to, **more}, headers=dpo(vault))


def walk(vault: Vault, dsr_id: str, *steps: str) -> dict[str, Any]:
    """Move a request through ``steps`` (each must succeed); the last answer."""
    body: dict[str, Any] = {}
    for to in steps:
        body = ok(move(vault, dsr_id, to), 200)
    return body


def read(vault: Vault, dsr_id: str, headers: dict[str, str]) -> dict[str, Any]:
    return ok(vault.client.get(request_url(dsr_id), headers=headers), 200)


def events_since(vault: Vault, before: int) -> list[dict[str, Any]]:
    return [json.loads(e) for e in vault.journal_events()[before:]]


def summary(e: dict[str, Any]) -> tuple[object, ...]:
    return (e["action"], e["resource_type"], e["resource_id"], e["member_id"], e["fields"], e["purpose"], e["decision"], e["reason_code"], e["outcome"])


def stored(vault: Vault) -> tuple[int, int]:
    """How many requests and steps are stored."""
    with vault.runtime.data_engine.connect() as conn:
        return (
            int(conn.execute(select(func.count()).select_from(data_requests)).scalar_one()),
            int(conn.execute(select(func.count()).select_from(data_request_steps)).scalar_one()),
        )


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


def invalid(errors: dict[str, str]) -> dict[str, object]:
    return {"type": PROBLEMS + "invalid-fields", "title": "Invalid fields", "status": 422, "detail": "one or more fields are invalid", "errors": errors}


def conflict(detail: str) -> dict[str, object]:
    return {"type": PROBLEMS + "conflict", "title": "Conflict", "status": 409, "detail": detail}


FORBIDDEN = {"type": PROBLEMS + "forbidden", "title": "Forbidden", "status": 403, "detail": "the policy does not allow this request"}


def step(seq: int, before: str | None, to: str, actor: str, role: str, reason: str, at: str, note: str | None = None) -> dict[str, object]:  # noqa: PLR0917 - a step's columns, in order, read like a table row
    return {"seq": seq, "from_status": before, "to_status": to, "actor": actor, "actor_role": role, "reason_code": reason, "at": at, "note": note}


# -- filing ------------------------------------------------------------------------------


def test_a_member_files_each_type_for_themselves(vault: Vault, clock: Clock) -> None:
    m = vault.members[2]
    before, rows = vault.journal_size(), stored(vault)

    answers = {kind: file(vault, 2, body) for kind, body in VALID.items()}

    ids = {}
    for kind, r in answers.items():
        body = ok(r, 201)
        ids[kind] = body["dsr_id"]
        assert body == {"dsr_id": ids[kind], "status": "received", "due_at": DUE_TEXT}
        assert r.headers["location"] == request_url(ids[kind])
    assert len(set(ids.values())) == 6
    assert stored(vault) == (rows[0] + 6, rows[1] + 6)
    assert [summary(e) for e in events_since(vault, before)] == [
        ("file_request", "data_request", ids[kind], m.member_id, [kind], "self_service", "allow", "allowed", "ok") for kind in VALID
    ]
    own = read(vault, ids["rectification"], member(vault, 2))
    assert own == {
        "dsr_id": ids["rectification"],
        "member_id": m.member_id,
        "type": "rectification",
        "status": "received",
        "jurisdiction": "default",
        "filed_role": "member",
        "filed_by": "app-2",
        "received_at": T0_TEXT,
        "due_at": DUE_TEXT,
        "closed_at": None,
        "overdue": False,
        "details": VALID["rectification"]["details"],
        "evidence": None,
        "steps": [step(1, None, "received", "app-2", "member", "filed", T0_TEXT)],
    }
    assert read(vault, ids["objection"], member(vault, 2))["details"] == {"purposes": ["marketing_contact", "photo_use"]}
    assert EMAIL.encode() not in b"".join(vault.journal_events())


def test_the_front_desk_files_on_the_members_behalf_with_evidence_and_without_evidence_gets_422(vault: Vault, clock: Clock) -> None:
    m = vault.members[3]
    headers = desk(vault, m.home_clinic_id)
    before, rows = vault.journal_size(), stored(vault)

    created = vault.client.post(filing_url(m.member_id), json={"type": "erasure", "evidence": EVIDENCE}, headers=headers)
    missing = vault.client.post(filing_url(m.member_id), json={"type": "access"}, headers=headers)

    dsr_id = ok(created, 201)["dsr_id"]
    assert created.json() == {"dsr_id": dsr_id, "status": "received", "due_at": DUE_TEXT}
    assert problem(missing, 422, "invalid-fields") == invalid({"evidence": "required"})
    assert stored(vault) == (rows[0] + 1, rows[1] + 1)
    handled = read(vault, dsr_id, dpo(vault))
    assert (handled["filed_by"], handled["filed_role"], handled["evidence"], handled["details"]) == ("desk-1", "front_desk", EVIDENCE, None)
    assert handled["steps"] == [step(1, None, "received", "desk-1", "front_desk", "filed", T0_TEXT)]
    assert read(vault, dsr_id, officer(vault)) == handled | {"evidence": None}
    events = events_since(vault, before)
    assert [summary(e)[3:] for e in events] == [
        (m.member_id, ["erasure"], "care", "allow", "allowed", "ok"),
        (m.member_id, ["access"], "care", "allow", "allowed", "invalid"),
        (m.member_id, [], "self_service", "allow", "allowed", "ok"),
        (m.member_id, [], None, "allow", "allowed", "ok"),
    ]
    assert events[0]["resource_id"] == dsr_id
    leaves = b"".join(vault.journal_events())
    assert EVIDENCE.encode() not in leaves
    assert b"canary7391" not in leaves


@SQLITE
def test_a_second_open_request_of_the_same_type_is_409_naming_the_open_one_until_it_is_closed(vault: Vault, clock: Clock) -> None:
    m = vault.members[2]
    first = filed(vault, 2, "restriction")
    before, rows = vault.journal_size(), stored(vault)

    second = file(vault, 2, VALID["restriction"])
    other_type = file(vault, 2, VALID["access"])

    assert problem(second, 409, "conflict") == conflict(f"an open restriction request exists: {first}")
    ok(other_type, 201)
    assert stored(vault) == (rows[0] + 1, rows[1] + 1)
    assert [summary(e)[3:] for e in events_since(vault, before)] == [
        (m.member_id, ["restriction"], "self_service", "allow", "allowed", "conflict"),
        (m.member_id, ["access"], "self_service", "allow", "allowed", "ok"),
    ]

    ok(move(vault, first, "rejected", reason_code="manifestly_unfounded"), 200)
    again = file(vault, 2, VALID["restriction"])

    assert ok(again, 201)["dsr_id"] != first


def test_a_retry_with_the_same_idempotency_key_returns_the_first_answer_and_stores_one_request(vault: Vault, clock: Clock) -> None:
    """The retry comes after the dpo verified the request: it still gets the first answer (status ``received``), not a new request."""
    m = vault.members[2]
    key = {"Idempotency-Key": "app-2-restriction-1"}
    before, rows = vault.journal_size(), stored(vault)

    first = file(vault, 2, VALID["restriction"], **key)
    dsr_id = ok(first, 201)["dsr_id"]
    walk(vault, dsr_id, "verified")
    again = file(vault, 2, VALID["restriction"], **key)
    other = file(vault, 2, VALID["access"], **key)

    assert ok(again, 201) == {"dsr_id": dsr_id, "status": "received", "due_at": DUE_TEXT}
    assert again.headers["location"] == first.headers["location"] == request_url(dsr_id)
    assert problem(other, 409, "conflict") == conflict("this Idempotency-Key was used for a different request")
    assert stored(vault) == (rows[0] + 1, rows[1] + 2)
    assert [summary(e)[:5] + summary(e)[-1:] for e in events_since(vault, before)] == [
        ("file_request", "data_request", dsr_id, m.member_id, ["restriction"], "ok"),
        ("transition_request", "data_request", dsr_id, m.member_id, ["verified"], "ok"),
        ("create", "data_request", dsr_id, m.member_id, [], "replayed"),
    ]


# -- the workflow ----------------------------------------------------------------------------


def test_the_dpo_moves_a_request_step_by_step_and_every_step_shows_in_get(vault: Vault, clock: Clock) -> None:
    """Actor, role, reason code, time and note of each step; the member and the dpo see notes and details, the compliance officer does not."""
    m = vault.members[2]
    dsr_id = filed(vault, 2, "objection")
    before = vault.journal_size()

    clock.now = T0 + timedelta(days=1)
    verified = ok(move(vault, dsr_id, "verified", note=NOTE), 200)
    clock.now = T0 + timedelta(days=2)
    started = ok(move(vault, dsr_id, "in_progress"), 200)
    clock.now = T0 + timedelta(days=3, hours=4)
    completed = ok(move(vault, dsr_id, "completed", reason_code="fulfilled"), 200)

    assert (verified["status"], started["status"], completed["status"]) == ("verified", "in_progress", "completed")
    assert (verified["closed_at"], started["closed_at"], completed["closed_at"]) == (None, None, "2027-02-03T13:30:00Z")
    steps = [
        step(1, None, "received", "app-2", "member", "filed", T0_TEXT),
        step(2, "received", "verified", "dpo-1", "dpo", "identity_verified", "2027-02-01T09:30:00Z", NOTE),
        step(3, "verified", "in_progress", "dpo-1", "dpo", "work_started", "2027-02-02T09:30:00Z"),
        step(4, "in_progress", "completed", "dpo-1", "dpo", "fulfilled", "2027-02-03T13:30:00Z"),
    ]
    full = {
        "dsr_id": dsr_id,
        "member_id": m.member_id,
        "type": "objection",
        "status": "completed",
        "jurisdiction": "default",
        "filed_role": "member",
        "filed_by": "app-2",
        "received_at": T0_TEXT,
        "due_at": DUE_TEXT,
        "closed_at": "2027-02-03T13:30:00Z",
        "overdue": False,
        "details": {"purposes": ["marketing_contact", "photo_use"]},
        "evidence": None,
        "steps": steps,
    }
    assert completed == full
    assert read(vault, dsr_id, dpo(vault)) == full
    assert read(vault, dsr_id, member(vault, 2)) == full
    assert read(vault, dsr_id, officer(vault)) == full | {"details": None, "steps": [s | {"note": None} for s in steps]}
    assert read(vault, dsr_id, dpo(vault, None)) == full | {"details": None, "steps": [s | {"note": None} for s in steps]}
    assert [summary(e) for e in events_since(vault, before)] == [
        ("transition_request", "data_request", dsr_id, m.member_id, [to], "self_service", "allow", "allowed", "ok")
        for to in ("verified", "in_progress", "completed")
    ] + [("read", "data_request", dsr_id, m.member_id, [], purpose, "allow", "allowed", "ok") for purpose in ("self_service", "self_service", None, None)]
    leaves = b"".join(vault.journal_events()).decode()
    assert "canary-note" not in leaves
    assert "身份证核验" not in leaves


def test_a_rejection_needs_a_rejection_reason_and_closes_the_request(vault: Vault, clock: Clock) -> None:
    m = vault.members[3]
    dsr_id = filed(vault, 3, "erasure")
    walk(vault, dsr_id, "verified")
    before, rows = vault.journal_size(), stored(vault)

    clock.now = T0 + timedelta(days=5)
    without = move(vault, dsr_id, "rejected", note=NOTE)
    not_a_rejection_reason = move(vault, dsr_id, "rejected", reason_code="fulfilled")
    rejected = move(vault, dsr_id, "rejected", reason_code="legal_obligation_to_retain", note=NOTE)

    assert problem(without, 422, "invalid-fields") == invalid({"reason_code": "required"})
    assert problem(not_a_rejection_reason, 422, "invalid-fields") == invalid({"reason_code": "not_a_rejection_reason"})
    body = ok(rejected, 200)
    assert (body["status"], body["closed_at"], body["overdue"]) == ("rejected", "2027-02-05T09:30:00Z", False)
    assert body["steps"][-1] == step(3, "verified", "rejected", "dpo-1", "dpo", "legal_obligation_to_retain", "2027-02-05T09:30:00Z", NOTE)
    assert stored(vault) == (rows[0], rows[1] + 1)
    assert [(e["fields"], e["outcome"]) for e in events_since(vault, before)] == [(["rejected"], "invalid"), (["rejected"], "invalid"), (["rejected"], "ok")]
    assert read(vault, dsr_id, member(vault, 3))["steps"] == body["steps"]
    assert {e["member_id"] for e in events_since(vault, before)} == {m.member_id}


def test_completing_an_access_or_portability_request_closes_it_links_its_archive_and_changes_no_member_data(vault: Vault, clock: Clock) -> None:
    kinds = ("access", "portability")
    ids = {kind: filed(vault, 2, kind) for kind in kinds}
    for dsr_id in ids.values():
        walk(vault, dsr_id, "verified", "in_progress")
    before = vault.journal_size()
    with vault.runtime.data_engine.connect() as conn:
        member = vault.runtime.members.read(conn, vault.members[2].member_id, dm.categories_of(dm.Table.members)).values

    answers = {kind: move(vault, dsr_id, "completed") for kind, dsr_id in ids.items()}

    assert {kind: (r.status_code, r.headers.get("link")) for kind, r in answers.items()} == {
        kind: (200, f'</v1/requests/{ids[kind]}/export>; rel="export"') for kind in kinds
    }
    assert [(e["action"], e["resource_id"], e["fields"], e["decision"], e["outcome"]) for e in events_since(vault, before)] == [
        ("transition_request", ids[kind], ["completed"], "allow", "ok") for kind in kinds
    ]
    with vault.runtime.data_engine.connect() as conn:
        assert vault.runtime.members.read(conn, vault.members[2].member_id, dm.categories_of(dm.Table.members)).values == member
    after = [read(vault, dsr_id, dpo(vault)) for dsr_id in ids.values()]
    assert [(a["status"], [st["to_status"] for st in a["steps"]]) for a in after] == [
        ("completed", ["received", "verified", "in_progress", "completed"])
    ] * len(kinds)


# -- the queue ---------------------------------------------------------------------------------


def test_the_queue_filters_by_status_lists_overdue_requests_only_once_their_due_date_has_passed_and_pages(vault: Vault, clock: Clock) -> None:
    """Paging with ``limit=1`` walks every request once, also under a filter; each page is one ``list`` event."""
    waiting = filed(vault, 2, "access")
    started = filed(vault, 3, "portability")
    walk(vault, started, "verified", "in_progress")
    closed = filed(vault, 2, "restriction")
    walk(vault, closed, "verified", "in_progress", "completed")

    def queue(**query: str) -> list[dict[str, Any]]:
        return list(ok(vault.client.get("/v1/requests", params=query, headers=officer(vault)), 200)["items"])

    def ids(items: list[dict[str, Any]]) -> list[str]:
        return [i["dsr_id"] for i in items]

    everything = sorted([waiting, started, closed])
    assert [(i["dsr_id"], i["received_at"], i["due_at"], i["overdue"]) for i in queue()] == [(dsr_id, T0_TEXT, DUE_TEXT, False) for dsr_id in everything]
    assert ids(queue(status="received")) == [waiting]
    assert ids(queue(status="in_progress")) == [started]
    assert ids(queue(status="completed")) == [closed]
    assert ids(queue(status="rejected")) == []
    assert (ids(queue(overdue="true")), ids(queue(overdue="false"))) == ([], everything)

    clock.now = DUE  # due, not yet past due
    assert ids(queue(overdue="true")) == []
    clock.now = DUE + timedelta(seconds=1)
    late = queue(overdue="true")
    assert ids(late) == sorted([waiting, started])
    assert ids(queue(overdue="false")) == [closed]
    assert ids(queue(overdue="true", status="in_progress")) == [started]
    assert [i["overdue"] for i in late] == [True, True]
    assert {i["dsr_id"]: i["overdue"] for i in queue()} == {waiting: True, started: True, closed: False}
    item = next(i for i in late if i["dsr_id"] == started)
    assert item == {
        "dsr_id": started,
        "member_id": vault.members[3].member_id,
        "type": "portability",
        "status": "in_progress",
        "jurisdiction": "default",
        "filed_role": "member",
        "received_at": T0_TEXT,
        "due_at": DUE_TEXT,
        "closed_at": None,
        "overdue": True,
    }
    assert read(vault, started, member(vault, 3))["overdue"] is True

    def pages(**query: str) -> list[list[str]]:
        walked: list[list[str]] = []
        cursor = None
        while True:
            params = query | {"limit": "1"} | ({"cursor": cursor} if cursor else {})
            page = ok(vault.client.get("/v1/requests", params=params, headers=dpo(vault, None)), 200)
            walked.append(ids(page["items"]))
            cursor = page["next_cursor"]
            if cursor is None:
                return walked

    before = vault.journal_size()
    assert pages() == [[dsr_id] for dsr_id in everything]
    assert pages(overdue="true") == [[dsr_id] for dsr_id in sorted([waiting, started])]
    assert [(e["action"], e["resource_id"], e["member_id"], e["purpose"], e["outcome"]) for e in events_since(vault, before)] == [
        ("list", None, None, None, "ok")
    ] * 5


# -- refusals (SQLite only) -------------------------------------------------------------------


@SQLITE
def test_a_member_filing_for_another_member_is_the_same_403_for_a_real_and_a_made_up_member_and_writes_nothing(vault: Vault, clock: Clock) -> None:
    """SECURITY-BAR H10: member 2's token files neither for member 3 nor for a made-up member, and the answers cannot tell them apart."""
    headers = member(vault, 2)
    before, rows = vault.journal_size(), stored(vault)

    answers = [vault.client.post(filing_url(target), json=VALID["objection"], headers=headers) for target in (vault.members[3].member_id, MADE_UP)]

    assert [problem(r, 403, "forbidden") for r in answers] == [FORBIDDEN, FORBIDDEN]
    assert stored(vault) == rows
    assert [summary(e)[3:] for e in events_since(vault, before)] == [
        (target, ["objection"], "self_service", "deny", "no_matching_rule", "denied") for target in (vault.members[3].member_id, MADE_UP)
    ]


@SQLITE
def test_a_member_reading_another_members_request_is_the_same_403_as_for_a_made_up_id(vault: Vault, clock: Clock) -> None:
    """SECURITY-BAR H10: with or without a purpose, for reading and for moving it; nothing changes."""
    theirs = filed(vault, 3, "rectification")
    headers = member(vault, 2)
    before, rows = vault.journal_size(), stored(vault)

    answers = [
        r
        for dsr_id in (theirs, MADE_UP)
        for r in (
            vault.client.get(request_url(dsr_id), headers=headers),
            vault.client.get(request_url(dsr_id), headers={"Authorization": headers["Authorization"]}),
            vault.client.post(request_url(dsr_id, "transitions"), json={"to": "rejected", "reason_code": "excessive"}, headers=headers),
        )
    ]

    assert [problem(r, 403, "forbidden") for r in answers] == [FORBIDDEN] * 6
    assert stored(vault) == rows
    owner = vault.members[3].member_id
    assert [summary(e)[:4] + summary(e)[-3:] for e in events_since(vault, before)] == [
        (action, "data_request", dsr_id, member_id, "deny", "no_matching_rule", "denied")
        for dsr_id, member_id in ((theirs, owner), (MADE_UP, None))
        for action in ("read", "read", "transition_request")
    ]
    assert read(vault, theirs, dpo(vault))["status"] == "received"


@SQLITE
def test_only_the_dpo_handling_a_request_moves_it(vault: Vault, clock: Clock) -> None:
    """SECURITY-BAR H11: any other role, or the dpo for another purpose, gets 403, journaled as a deny, and the request stays as it was."""
    m = vault.members[2]
    dsr_id = filed(vault, 2, "restriction")
    callers = [
        ("front_desk", "care"),
        ("compliance_officer", "self_service"),
        ("practitioner", "care"),
        ("clinic_manager", "care"),
        ("vault_admin", "self_service"),
        ("dpo", "legal_claims"),
    ]
    before, rows = vault.journal_size(), stored(vault)

    answers = [
        vault.client.post(
            request_url(dsr_id, "transitions"),
            json={"to": "verified"},
            headers=vault.headers(vault.token(role, subject=f"{role}-1", clinics=[m.home_clinic_id]), purpose),
        )
        for role, purpose in callers
    ]

    assert [problem(r, 403, "forbidden") for r in answers] == [FORBIDDEN] * len(callers)
    assert stored(vault) == rows
    assert [(e["actor"]["roles"], *summary(e)) for e in events_since(vault, before)] == [
        ([role], "transition_request", "data_request", dsr_id, m.member_id, ["verified"], purpose, "deny", "no_matching_rule", "denied")
        for role, purpose in callers
    ]
    assert read(vault, dsr_id, dpo(vault))["status"] == "received"


@SQLITE
def test_the_member_cannot_move_their_own_request(vault: Vault, clock: Clock) -> None:
    """SECURITY-BAR H11: a member verifying or rejecting their own request is 403."""
    dsr_id = filed(vault, 2, "erasure")
    before, rows = vault.journal_size(), stored(vault)

    answers = [vault.client.post(request_url(dsr_id, "transitions"), json={"to": to}, headers=member(vault, 2)) for to in ("verified", "rejected")]

    assert [problem(r, 403, "forbidden") for r in answers] == [FORBIDDEN, FORBIDDEN]
    assert stored(vault) == rows
    assert [(e["fields"], e["decision"], e["outcome"]) for e in events_since(vault, before)] == [
        (["verified"], "deny", "denied"),
        (["rejected"], "deny", "denied"),
    ]


@SQLITE
def test_the_compliance_officer_sees_no_plaintext_and_staff_see_no_request(vault: Vault, clock: Clock) -> None:
    """SECURITY-BAR H11: the compliance officer stating a purpose (to see details and notes), the front desk and a member on the queue get 403."""
    dsr_id = filed(vault, 2, "rectification")
    m = vault.members[2]
    before = vault.journal_size()

    answers = [
        vault.client.get(request_url(dsr_id), headers=officer(vault, "self_service")),
        vault.client.get(request_url(dsr_id), headers=desk(vault, m.home_clinic_id)),
        vault.client.get("/v1/requests", headers=desk(vault, m.home_clinic_id)),
        vault.client.get("/v1/requests", headers=member(vault, 2)),
    ]

    assert [problem(r, 403, "forbidden") for r in answers] == [FORBIDDEN] * 4
    assert [(e["action"], e["resource_id"], e["member_id"], e["decision"], e["outcome"]) for e in events_since(vault, before)] == [
        ("read", dsr_id, m.member_id, "deny", "denied"),
        ("read", dsr_id, m.member_id, "deny", "denied"),
        ("list", None, None, "deny", "denied"),
        ("list", None, None, "deny", "denied"),
    ]


@SQLITE
def test_skipping_or_reversing_a_step_is_409_and_the_request_stays_unchanged(vault: Vault, clock: Clock) -> None:
    """SECURITY-BAR H36: received → completed, and every other move the workflow does not have; each one journaled as a conflict."""
    received = filed(vault, 2, "restriction")
    verified = filed(vault, 2, "rectification")
    walk(vault, verified, "verified")
    done = filed(vault, 2, "objection")
    walk(vault, done, "verified", "in_progress", "completed")
    rejected = filed(vault, 3, "erasure")
    ok(move(vault, rejected, "rejected", reason_code="identity_not_verified"), 200)
    illegal = [
        (received, "restriction", "received", "completed"),
        (received, "restriction", "received", "in_progress"),
        (received, "restriction", "received", "lifted"),
        (received, "restriction", "received", "received"),
        (verified, "rectification", "verified", "completed"),
        (verified, "rectification", "verified", "received"),
        (done, "objection", "completed", "lifted"),
        (done, "objection", "completed", "rejected"),
        (rejected, "erasure", "rejected", "verified"),
    ]
    snapshot = {dsr_id: read(vault, dsr_id, dpo(vault)) for dsr_id in (received, verified, done, rejected)}
    before, rows = vault.journal_size(), stored(vault)

    answers = [move(vault, dsr_id, to, reason_code="excessive") if to == "rejected" else move(vault, dsr_id, to) for dsr_id, _, _, to in illegal]

    assert [problem(r, 409, "conflict") for r in answers] == [
        conflict(f"this {kind} request cannot go from {current} to {to}") for _, kind, current, to in illegal
    ]
    assert stored(vault) == rows
    assert [(e["resource_id"], e["fields"], e["decision"], e["outcome"]) for e in events_since(vault, before)] == [
        (dsr_id, [to], "allow", "conflict") for dsr_id, _, _, to in illegal
    ]
    assert {dsr_id: read(vault, dsr_id, dpo(vault)) for dsr_id in snapshot} == snapshot


@SQLITE
def test_moving_or_reading_a_made_up_request_is_404_for_the_dpo(vault: Vault, clock: Clock) -> None:
    before, rows = vault.journal_size(), stored(vault)

    answers = [
        move(vault, MADE_UP, "verified"),
        vault.client.get(request_url(MADE_UP), headers=dpo(vault)),
        vault.client.get(request_url(MADE_UP), headers=officer(vault)),
    ]

    assert [problem(r, 404, "not-found")["detail"] for r in answers] == ["no such resource"] * 3
    assert stored(vault) == rows
    assert [(e["action"], e["resource_id"], e["member_id"], e["decision"], e["outcome"]) for e in events_since(vault, before)] == [
        ("transition_request", MADE_UP, None, "allow", "not_found"),
        ("read", MADE_UP, None, "allow", "not_found"),
        ("read", MADE_UP, None, "allow", "not_found"),
    ]


BAD_FILINGS = [
    # (case, body, errors, the event's fields)
    ("unknown type", {"type": "newsletter"}, {"type": "enum"}, []),
    ("no type", {}, {"type": "missing"}, []),
    ("details on an access request", {"type": "access", "details": {"changes": {}}}, {"details": "not_for_this_type"}, ["access"]),
    ("details on a restriction", {"type": "restriction", "details": {}}, {"details": "not_for_this_type"}, ["restriction"]),
    ("objection to care", {"type": "objection", "details": {"purposes": ["care"]}}, {"details.purposes": "not_consent_purposes"}, ["objection"]),
    (
        "objection naming a purpose twice",
        {"type": "objection", "details": {"purposes": ["photo_use", "photo_use"]}},
        {"details.purposes": "not_consent_purposes"},
        ["objection"],
    ),
    ("objection without purposes", {"type": "objection"}, {"details": "purposes_required"}, ["objection"]),
    ("rectification without changes", {"type": "rectification"}, {"details": "changes_required"}, ["rectification"]),
    (
        "rectification of an unknown field",
        {"type": "rectification", "details": {"changes": {"contact": {"shoe_size": "42"}}}},
        {"details.changes.shoe_size": "unknown_field"},
        ["rectification"],
    ),
    (
        "rectification of a field in the wrong category",
        {"type": "rectification", "details": {"changes": {"identity": {"email": EMAIL}}}},
        {"details.changes.identity.email": "wrong_category"},
        ["rectification"],
    ),
    ("unknown jurisdiction", {"type": "access", "jurisdiction": "mars"}, {"jurisdiction": "unknown"}, ["access"]),
    ("evidence with a space", {"type": "access", "evidence": "a b"}, {"evidence": "string_pattern_mismatch"}, []),
    ("a field the body does not have", {"type": "access", "note": "please"}, {"note": "extra_forbidden"}, []),
]


@SQLITE
def test_a_bad_filing_is_422_naming_the_field_journaled_invalid_and_writes_nothing(vault: Vault, clock: Clock) -> None:
    """Table-driven (one vault for every case): each case answers its own 422 and leaves one ``invalid`` event."""
    m = vault.members[2]
    before, rows = vault.journal_size(), stored(vault)

    answers = {case: file(vault, 2, body) for case, body, _, _ in BAD_FILINGS}

    assert {case: problem(r, 422, "invalid-fields") for case, r in answers.items()} == {case: invalid(errors) for case, _, errors, _ in BAD_FILINGS}
    assert stored(vault) == rows
    assert [summary(e)[3:] for e in events_since(vault, before)] == [
        (m.member_id, fields, "self_service", "allow", "allowed", "invalid") for _, _, _, fields in BAD_FILINGS
    ]


BAD_TRANSITIONS = [
    # (case, body, errors)
    ("unknown status", {"to": "archived"}, {"to": "enum"}),
    ("no status", {}, {"to": "missing"}),
    ("note with a NUL byte", {"to": "verified", "note": "ok\u0000then"}, {"note": "invalid"}),
    ("note with an escape", {"to": "verified", "note": "line\u001bescape"}, {"note": "invalid"}),
    ("blank note", {"to": "verified", "note": "   "}, {"note": "invalid"}),
    ("empty note", {"to": "verified", "note": ""}, {"note": "string_too_short"}),
    ("note over 2000 characters", {"to": "verified", "note": "x" * 2001}, {"note": "string_too_long"}),
    ("reason of another step", {"to": "verified", "reason_code": "fulfilled"}, {"reason_code": "not_for_this_step"}),
    ("unknown reason code", {"to": "verified", "reason_code": "because"}, {"reason_code": "enum"}),
    ("a field the body does not have", {"to": "verified", "assignee": "dpo-2"}, {"assignee": "extra_forbidden"}),
]


@SQLITE
def test_a_bad_transition_is_422_naming_the_field_and_the_request_stays_unchanged(vault: Vault, clock: Clock) -> None:
    """Table-driven (one vault for every case): each case answers its own 422 and leaves one ``invalid`` event."""
    dsr_id = filed(vault, 2, "access")
    unchanged = read(vault, dsr_id, dpo(vault))
    before, rows = vault.journal_size(), stored(vault)

    answers = {case: vault.client.post(request_url(dsr_id, "transitions"), json=body, headers=dpo(vault)) for case, body, _ in BAD_TRANSITIONS}

    assert {case: problem(r, 422, "invalid-fields") for case, r in answers.items()} == {case: invalid(errors) for case, _, errors in BAD_TRANSITIONS}
    assert stored(vault) == rows
    assert [(e["action"], e["resource_id"], e["decision"], e["outcome"]) for e in events_since(vault, before)] == [
        ("transition_request", dsr_id, "allow", "invalid")
    ] * len(BAD_TRANSITIONS)
    assert read(vault, dsr_id, dpo(vault)) == unchanged


@SQLITE
def test_a_bad_queue_query_is_400_and_journals_nothing(vault: Vault, clock: Clock) -> None:
    """An unknown status, a non-boolean overdue, limit 0 and a cursor this list did not hand out."""
    before = vault.journal_size()

    answers = [
        vault.client.get(f"/v1/requests?{query}", headers=officer(vault)) for query in ("status=archived", "overdue=maybe", "limit=0", "cursor=not-ours")
    ]

    assert [problem(r, 400, "bad-request")["detail"] for r in answers] == ["malformed request (query)"] * 3 + ["the cursor is not one this list handed out"]
    assert vault.journal_size() == before


@SQLITE
def test_refused_before_the_decision_nothing_is_journaled_or_written(vault: Vault, clock: Clock) -> None:
    """No token (401), a malformed id or purpose, a missing purpose where one is required (400): no event, no row."""
    m = vault.members[2]
    dsr_id = filed(vault, 2, "access")
    token = vault.token("member", subject="app-2", member_id=m.member_id)
    before, rows = vault.journal_size(), stored(vault)

    unauthorized = [
        vault.client.post(filing_url(m.member_id), json=VALID["access"]),
        vault.client.get(request_url(dsr_id)),
        vault.client.get("/v1/requests"),
        vault.client.post(request_url(dsr_id, "transitions"), json={"to": "verified"}),
        vault.client.post(filing_url(m.member_id), json=VALID["access"], headers={"Authorization": "Bearer not-a-token"}),
    ]
    bad = [
        vault.client.post(filing_url(m.member_id), json=VALID["restriction"], headers=vault.headers(token)),
        vault.client.post(filing_url(m.member_id), json=VALID["restriction"], headers=vault.headers(token, "health_data")),
        vault.client.get(request_url(dsr_id), headers=vault.headers(token, "health_data")),
        vault.client.get(request_url("XYZ"), headers=dpo(vault)),
        vault.client.post(request_url(dsr_id, "transitions"), json={"to": "verified"}, headers=dpo(vault, None)),
        vault.client.post(request_url(dsr_id, "transitions"), content=b'{"to": "verified"', headers=dpo(vault) | {"Content-Type": "application/json"}),
    ]

    assert [problem(r, 401, "unauthorized")["status"] for r in unauthorized] == [401] * 5
    assert [problem(r, 400, "bad-request")["detail"] for r in bad] == [
        "malformed request (header)",
        "malformed request (header)",
        "malformed request (header)",
        "malformed request (path)",
        "malformed request (header)",
        "the body is not acceptable JSON (malformed)",
    ]
    assert (vault.journal_size(), stored(vault)) == (before, rows)


@SQLITE
def test_no_note_detail_or_evidence_reaches_an_audit_leaf_or_the_log(
    vault: Vault, clock: Clock, log_buffer: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    """Filed, moved, refused and read with canary text in every free field, including refused bodies and a made-up key."""
    caplog.set_level(logging.INFO)
    m = vault.members[3]
    headers = desk(vault, m.home_clinic_id)
    answers = [
        vault.client.post(filing_url(m.member_id), json={**VALID["rectification"], "evidence": EVIDENCE}, headers=headers),
        vault.client.post(filing_url(m.member_id), json={"type": "erasure", "evidence": EVIDENCE, "details": {"why": NOTE}}, headers=headers),
        vault.client.post(
            filing_url(m.member_id), json={"type": "rectification", "details": {"changes": {EMAIL: NOTE}}, "evidence": EVIDENCE}, headers=headers
        ),
        vault.client.post(filing_url(m.member_id), json={"type": "objection", "details": {"purposes": [EMAIL]}, "evidence": EVIDENCE}, headers=headers),
    ]
    dsr_id = answers[0].json()["dsr_id"]
    answers += [
        move(vault, dsr_id, "verified", note=NOTE),
        move(vault, dsr_id, "in_progress", note=NOTE + "\u0000"),
        move(vault, dsr_id, "rejected", note=NOTE),
        vault.client.get(request_url(dsr_id), headers=dpo(vault)),
        vault.client.get(request_url(dsr_id), headers=officer(vault)),
    ]

    assert [r.status_code for r in answers] == [201, 422, 422, 422, 200, 422, 422, 200, 200]
    assert answers[2].json()["errors"] == {"details.changes.<invalid name>": "unknown_field"}
    assert answers[3].json()["errors"] == {"details.purposes": "not_consent_purposes"}
    assert answers[7].json()["evidence"] == EVIDENCE  # the canaries really are stored
    logged = log_buffer.getvalue()
    assert len([line for line in logged.splitlines() if json.loads(line).get("event") == "request"]) == len(answers)
    places = {
        "operational log": logged,
        "stdlib log": "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx")),
        **{f"error body {i}": r.text for i, r in enumerate(answers) if r.status_code >= 400},
        **{f"audit leaf {i}": leaf.decode("utf-8") for i, leaf in enumerate(vault.journal_events())},
    }
    canaries = ("canary7391", "canary-note-7391", "身份证核验", "Ausweis", EMAIL, json.dumps(EMAIL)[1:-1], "canary.rect")
    assert sorted({(where, c) for where, text in places.items() for c in canaries if c in text}) == []
