"""The audit queries on real SQLite and PostgreSQL: filters, cursor paging, breach scope, access log proofs, export."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

import audit.store
from audit import merkle
from audit.errors import ProofRangeError
from audit.event import Actor, AuditEvent, Decision, event_time
from audit.queries import (
    MAX_LIMIT,
    CursorError,
    LoggedEvent,
    access_log,
    decode_cursor,
    encode_cursor,
    events,
    export,
    scope,
)
from audit.sequencer import Sequencer
from audit.store import AuditJournal
from audit.verify import export_line, verify_export
from tests.audit.conftest import WriteEvents
from tests.audit.factories import sample_event, signed_checkpoint, signing_key, verifier

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
DR_LI = Actor(subject="staff:1", roles=("practitioner",), client_id="front-desk", acting_staff=None)
DESK = Actor(subject="staff:2", roles=("front_desk",), client_id="front-desk", acting_staff=None)
LOYALTY = Actor(subject="svc:loyalty", roles=("loyalty_service",), client_id="loyalty", acting_staff=None)
ACTORS = (DR_LI, DESK, LOYALTY)
MEMBERS = ("m-1", "m-2", "m_1", "mx1", None)  # "m_1" and "mx1": a LIKE with "_" would confuse them
HOSTILE = ("' OR 1=1 --", "%", "_", "m-%", "m_%", "staff:%", "*", "'; DROP TABLE audit_journal; --", "\\", "m-1' --")


def _event(n: int) -> AuditEvent:
    """Event ``n`` of the fixture log: one minute apart, actors, members, actions and decisions cycling."""
    return sample_event(
        n,
        time=event_time(T0 + timedelta(minutes=n)),
        actor=ACTORS[n % 3],
        member_id=MEMBERS[n % 5],
        action=("read", "update")[n % 2],
        decision=Decision.DENY if n % 7 == 3 else Decision.ALLOW,
    )


LOG = [_event(n) for n in range(40)]


@pytest.fixture
def log(write_events: WriteEvents, sequence_all: Callable[[], int]) -> list[AuditEvent]:
    """The 40 events, sequenced, plus 2 journaled but not sequenced yet."""
    write_events(LOG)
    sequence_all()
    write_events([_event(40), _event(41)])
    return LOG


def _all_pages(conn: object, limit: int, **filters: object) -> list[LoggedEvent]:
    items, cursor, pages = [], None, 0
    while True:
        page, cursor = events(conn, cursor=cursor, limit=limit, **filters)  # type: ignore[arg-type]
        items.extend(page)
        pages += 1
        assert len(page) <= limit
        if cursor is None:
            return items
        assert pages < 100


def _expected(log: list[AuditEvent], keep: Callable[[AuditEvent], bool]) -> list[LoggedEvent]:
    return [LoggedEvent(i, e) for i, e in enumerate(log) if keep(e)]


def test_paging_returns_every_sequenced_event_once_in_index_order(engine: Engine, log: list[AuditEvent]) -> None:
    with engine.connect() as conn:
        for limit in (1, 3, 7, 40, 41, 500):
            assert _all_pages(conn, limit) == _expected(log, lambda e: True)


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        ({"member_id": "m-1"}, lambda e: e.member_id == "m-1"),
        ({"member_id": "m_1"}, lambda e: e.member_id == "m_1"),
        ({"actor": "staff:2"}, lambda e: e.actor.subject == "staff:2"),
        ({"action": "update"}, lambda e: e.action == "update"),
        ({"decision": Decision.DENY}, lambda e: e.decision is Decision.DENY),
        ({"since": T0 + timedelta(minutes=10)}, lambda e: e.time >= "2026-11-22T08:10:00Z"),
        ({"until": T0 + timedelta(minutes=10)}, lambda e: e.time < "2026-11-22T08:10:00Z"),
        (
            {"member_id": "m-2", "action": "read", "decision": Decision.ALLOW, "since": T0 + timedelta(minutes=5), "until": T0 + timedelta(minutes=35)},
            lambda e: (e.member_id, e.action, e.decision) == ("m-2", "read", Decision.ALLOW) and "2026-11-22T08:05:00Z" <= e.time < "2026-11-22T08:35:00Z",
        ),
        ({"member_id": "m-unknown"}, lambda e: False),
    ],
)
def test_filters_select_exactly_the_matching_events(
    engine: Engine, log: list[AuditEvent], filters: dict[str, object], keep: Callable[[AuditEvent], bool]
) -> None:
    with engine.connect() as conn:
        expected = _expected(log, keep)
        assert _all_pages(conn, 4, **filters) == expected
        assert _all_pages(conn, 500, **filters) == expected


def test_sql_metacharacters_in_a_filter_are_data(engine: Engine, log: list[AuditEvent]) -> None:
    day = {"since": T0, "until": T0 + timedelta(days=1)}
    with engine.connect() as conn:
        for value in HOSTILE:
            assert events(conn, member_id=value) == ([], None), value
            assert events(conn, actor=value) == ([], None), value
            assert events(conn, action=value) == ([], None), value
            assert scope(conn, actor=value, **day) == [], value
            assert scope(conn, client_id=value, **day) == [], value
            assert access_log(conn, value, 40) == ([], None), value
    with engine.connect() as conn:  # the tables are all still there, whole
        assert len(_all_pages(conn, 500)) == 40


def test_the_page_size_is_capped(engine: Engine) -> None:
    with engine.begin() as conn:
        journal = AuditJournal()
        for n in range(MAX_LIMIT + 5):
            journal.append(conn, sample_event(n))
    assert Sequencer(engine).run_once() == MAX_LIMIT + 5
    with engine.connect() as conn:
        first, cursor = events(conn, limit=10_000)
        assert [item.index for item in first] == list(range(MAX_LIMIT))
        assert cursor is not None
        rest, end = events(conn, cursor=cursor, limit=10_000)
        assert [item.index for item in rest] == list(range(MAX_LIMIT, MAX_LIMIT + 5))
        assert end is None
        assert [item.index for item in events(conn, limit=0)[0]] == [0]


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_cursor_this_module_did_not_issue_is_refused(engine: Engine) -> None:
    forged = ["", "abc", "!!!!", "a===", "é", encode_cursor(3)[:-1], encode_cursor(3) + "=", "a!TM", encode_cursor(3).lower()]
    forged += [_b64(text) for text in ("i-1", "i01", "10", "i1 ", "i" + "9" * 20, "' OR 1=1 --")]
    with engine.connect() as conn:
        for cursor in forged:
            with pytest.raises(CursorError, match="cursor is malformed"):
                events(conn, cursor=cursor)


def test_cursors_round_trip() -> None:
    for index in (0, 1, 499, 2**40):
        assert decode_cursor(encode_cursor(index)) == index


def test_scope_names_the_members_an_actor_or_client_touched_in_the_window(engine: Engine, log: list[AuditEvent]) -> None:
    day = {"since": T0, "until": T0 + timedelta(days=1)}

    def touched(keep: Callable[[AuditEvent], bool]) -> list[str]:
        return sorted({e.member_id for e in [*log, _event(40), _event(41)] if e.member_id is not None and keep(e)})

    def allowed(e: AuditEvent) -> bool:
        return e.decision is Decision.ALLOW

    with engine.connect() as conn:
        assert scope(conn, actor="staff:1", **day) == touched(lambda e: e.actor.subject == "staff:1" and allowed(e))
        assert scope(conn, client_id="front-desk", **day) == touched(lambda e: e.actor.client_id == "front-desk" and allowed(e))
        assert scope(conn, actor="svc:loyalty", client_id="loyalty", **day) == touched(lambda e: e.actor.subject == "svc:loyalty" and allowed(e))
        assert scope(conn, actor="staff:1", client_id="loyalty", **day) == []
        assert scope(conn, actor="staff:1", include_denied=True, **day) == touched(lambda e: e.actor.subject == "staff:1")
        window = scope(conn, client_id="loyalty", since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=20))
        assert window == touched(lambda e: e.actor.client_id == "loyalty" and allowed(e) and "2026-11-22T08:10:00Z" <= e.time < "2026-11-22T08:20:00Z")
        # entries not sequenced yet count too: event 40 is staff:2 touching m-1 at 08:40, event 41 the loyalty service touching m-2
        assert scope(conn, client_id="front-desk", since=T0 + timedelta(minutes=40), until=T0 + timedelta(minutes=42)) == ["m-1"]
        assert scope(conn, actor="svc:loyalty", since=T0 + timedelta(minutes=40), until=T0 + timedelta(hours=1)) == ["m-2"]


@pytest.mark.parametrize("size", [40, 33, 1])
def test_the_access_log_proves_each_event_against_the_given_size(engine: Engine, log: list[AuditEvent], size: int) -> None:
    with engine.connect() as conn:
        root = audit.store.root(conn, size)
        items, cursor = access_log(conn, "m-1", size, limit=3)
        while cursor is not None:
            page, cursor = access_log(conn, "m-1", size, cursor=cursor, limit=3)
            items.extend(page)
    assert [(item.index, item.event) for item in items] == [(i, e) for i, e in enumerate(log[:size]) if e.member_id == "m-1"]
    for item in items:
        assert item.tree_size == size
        assert item.leaf_hash == merkle.leaf_hash(item.event.leaf_bytes())
        assert merkle.verify_inclusion(item.leaf_hash, item.index, size, item.audit_path, root)


def test_the_access_log_refuses_a_size_beyond_the_tree(engine: Engine, log: list[AuditEvent]) -> None:
    with engine.connect() as conn, pytest.raises(ProofRangeError, match="tree size 41 is beyond the current tree size 40"):
        access_log(conn, "m-1", 41)


def test_the_export_is_what_the_offline_verifier_reads(engine: Engine, log: list[AuditEvent]) -> None:
    key = signing_key("audit")
    with engine.connect() as conn:
        lines = list(export(conn, 0, 40))
        checkpoints = [signed_checkpoint(size, audit.store.root(conn, size), key) for size in (17, 40)]
        assert list(export(conn, 5, 9)) == lines[5:9]
        assert list(export(conn, 7, 7)) == []
    assert lines == [export_line(i, e.leaf_bytes()) for i, e in enumerate(log)]
    report = verify_export(lines, checkpoints, [verifier(key)])
    assert report.ok, report
    assert report.proven_size == 40


@pytest.mark.parametrize(
    ("start", "end", "reason"),
    [(0, 41, "tree size 41 is beyond the current tree size 40"), (5, 4, "export range needs 0 ≤ from ≤ to"), (-1, 3, "export range needs 0 ≤ from ≤ to")],
)
def test_an_export_range_outside_the_tree_is_refused(engine: Engine, log: list[AuditEvent], start: int, end: int, reason: str) -> None:
    with engine.connect() as conn, pytest.raises(ProofRangeError, match=reason):
        export(conn, start, end)
