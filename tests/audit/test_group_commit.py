"""Group commit: concurrent requests' events share one durable transaction, and each request learns its own fate.

Real threads, a real database (SQLite and PostgreSQL), the real journal. To
put chosen events into one group, the first leader is held inside its
transaction's ``begin`` until the others have handed theirs over; the next
leader then takes them all at once. Failures are real database errors: a
trigger that refuses one event's insert.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, Engine, String, func, select
from sqlalchemy.exc import DBAPIError

from audit.errors import AuditStoreError
from audit.event import Actor, AuditEvent
from audit.group_commit import GroupCommit
from audit.sequencer import Sequencer
from audit.store import AuditJournal, audit_journal, tree_size
from tests.audit.factories import sample_event
from vault.storage.engine import write_on

WAIT_S = 10.0  # far above what any step here takes; a hang fails instead of blocking the suite


class HeldFirstGroup:
    """A ``begin`` whose first call waits for ``release``: the first leader is held as if waiting for the write lock, others queue meanwhile."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._first = True

    @contextmanager
    def __call__(self, conn: Connection) -> Iterator[None]:
        if self._first:
            self._first = False
            self.entered.set()
            assert self.release.wait(WAIT_S)
        with write_on(conn):
            yield


def _request_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        leaves = conn.execute(select(audit_journal.c.leaf).order_by(audit_journal.c.journal_id)).scalars()
        return [AuditEvent.from_json_obj(json.loads(bytes(leaf))).request_id for leaf in leaves]


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def _commit_in_threads(
    engine: Engine, group: GroupCommit, begin: HeldFirstGroup, events: list[AuditEvent], thens: dict[int, Callable[[Connection], None]] | None = None
) -> dict[int, BaseException | None]:
    """Event 0 leads and is held in ``begin``; events 1… are handed over meanwhile and join its group. Returns each one's error."""
    thens = thens or {}
    outcome: dict[int, BaseException | None] = {}

    def run(i: int) -> None:
        with engine.connect() as conn:
            try:
                group.commit(conn, events[i], then=thens.get(i))
                outcome[i] = None
            except BaseException as exc:  # noqa: BLE001  # recorded for the test to check
                outcome[i] = exc

    threads = [threading.Thread(target=run, args=(0,))]
    threads[0].start()
    assert begin.entered.wait(WAIT_S)
    for i in range(1, len(events)):
        threads.append(threading.Thread(target=run, args=(i,)))
        threads[-1].start()
    _until(lambda: group.waiting() == len(events))  # the held leader has not taken its group yet
    begin.release.set()
    for thread in threads:
        thread.join(WAIT_S)
        assert not thread.is_alive()
    return outcome


def test_waiting_events_share_one_transaction_and_all_become_durable(engine: Engine, backend: str) -> None:
    begin = HeldFirstGroup()
    group = GroupCommit(AuditJournal(), begin)
    events = [sample_event(i) for i in range(8)]

    outcome = _commit_in_threads(engine, group, begin, events)

    assert outcome == dict.fromkeys(range(8))
    assert group.groups == 1  # the seven handed over while the leader awaited its transaction joined it
    written = _request_ids(engine)
    assert sorted(written) == sorted(e.request_id for e in events)
    assert written[0] == "req-0000"
    if backend == "postgres":  # the inserting transaction's id is on every entry: one transaction for all
        with engine.connect() as conn:
            xacts = conn.execute(select(audit_journal.c.xact_id)).scalars().all()
        assert None not in xacts
        assert len(set(xacts)) == 1
    with engine.connect() as conn:  # a second, lone event commits in a transaction of its own
        group.commit(conn, sample_event(9))
    assert group.groups == 2
    assert Sequencer(engine).run_until_idle() == 9
    with engine.connect() as conn:
        assert tree_size(conn) == 9


def test_a_failed_group_refuses_every_request_in_it_and_keeps_none_of_its_events(engine: Engine, poison_trigger: str) -> None:
    begin = HeldFirstGroup()
    group = GroupCommit(AuditJournal(), begin)
    poisoned = Actor(subject=poison_trigger, roles=("practitioner",), client_id=None, acting_staff=None)
    events = [sample_event(i) for i in range(6)]
    events[3] = sample_event(3, actor=poisoned)

    outcome = _commit_in_threads(engine, group, begin, events)

    for i in range(6):
        error = outcome[i]
        assert isinstance(error, AuditStoreError), i
        assert str(error) == "the audit journal could not be written"
        assert isinstance(error.__cause__, DBAPIError)  # the database's refusal, chained (its message is never shown)
    assert len({id(outcome[i]) for i in range(6)}) == 6  # one exception per request: each is raised in its own thread
    assert _request_ids(engine) == []
    with engine.connect() as conn:  # the failure does not stick: the next event leads and commits
        group.commit(conn, sample_event(7))
    assert _request_ids(engine) == ["req-0007"]


def test_a_failing_then_undoes_only_its_own_event_and_writes(engine: Engine) -> None:
    begin = HeldFirstGroup()
    journal = AuditJournal()
    group = GroupCommit(journal, begin)
    events = [sample_event(i) for i in range(5)]

    def extra(conn: Connection) -> None:
        journal.append(conn, sample_event(100))

    def extra_then_fail(conn: Connection) -> None:
        journal.append(conn, sample_event(200))
        raise ValueError("the review could not be queued")

    outcome = _commit_in_threads(engine, group, begin, events, thens={2: extra, 3: extra_then_fail})

    assert isinstance(outcome[3], ValueError)
    assert [i for i, error in outcome.items() if error is not None] == [3]
    written = _request_ids(engine)
    assert sorted(written) == sorted(["req-0000", "req-0001", "req-0002", "req-0004", "req-0100"])
    assert written.index("req-0100") == written.index("req-0002") + 1  # a then's writes commit right after its event


def test_an_interrupted_leader_leaves_no_request_believing_its_event_durable(engine: Engine) -> None:
    """Even an exception that is not an ``Exception`` (an interrupt) inside the group's transaction refuses the whole group."""

    class Interrupt(BaseException):
        """Like KeyboardInterrupt: not an ``Exception``."""

    calls = {"n": 0}

    @contextmanager
    def begin(conn: Connection) -> Iterator[None]:
        calls["n"] += 1
        with write_on(conn):
            yield
            raise Interrupt

    group = GroupCommit(AuditJournal(), begin)
    with engine.connect() as conn, pytest.raises(Interrupt):
        group.commit(conn, sample_event(1))
    assert _request_ids(engine) == []
    assert group.waiting() == 0
    # The next caller leads normally once the interrupted leader let go.
    ok = GroupCommit(AuditJournal(), write_on)
    with engine.connect() as conn:
        ok.commit(conn, sample_event(2))
    assert _request_ids(engine) == ["req-0002"]
    assert calls["n"] == 1


def test_many_threads_each_get_their_events_in_the_journal_exactly_once_and_in_their_own_order(engine: Engine) -> None:
    group = GroupCommit(AuditJournal(), write_on, max_group=8)
    threads, per_thread = 12, 25
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            with engine.connect() as conn:
                for n in range(per_thread):
                    group.commit(conn, sample_event(t * 1000 + n))
        except BaseException as exc:  # noqa: BLE001  # recorded for the test to check
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert not worker.is_alive()

    assert errors == []
    written = _request_ids(engine)
    assert len(written) == len(set(written)) == threads * per_thread
    for t in range(threads):
        mine = [r for r in written if int(r.removeprefix("req-")) // 1000 == t]
        assert mine == [f"req-{t * 1000 + n:04d}" for n in range(per_thread)]
    assert group.groups <= threads * per_thread
    assert group.waiting() == 0


def test_max_group_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_group"):
        GroupCommit(AuditJournal(), write_on, max_group=0)


def test_append_many_stores_exactly_what_append_stores(engine: Engine) -> None:
    """The batched driver path writes the same column values, as stored, as one ``append`` per event (timestamps included)."""
    journal = AuditJournal()
    received = datetime(2026, 11, 22, 16, 0, 1, 123456, tzinfo=UTC)
    one = [sample_event(i, member_id=None if i == 2 else f"m-{i}") for i in range(3)]
    with engine.begin() as conn:
        for event in one:
            journal.append(conn, event, now=received)
    with engine.begin() as conn:
        journal.append_many(conn, [(event, received) for event in one])
    columns = [c for c in audit_journal.c if c.name not in ("journal_id", "xact_id")]
    with engine.connect() as conn:
        rows = conn.execute(select(*columns).order_by(audit_journal.c.journal_id)).all()
        stored = conn.execute(select(func.cast(audit_journal.c.received_at, String)).order_by(audit_journal.c.journal_id)).scalars().all()
    assert rows[:3] == rows[3:]
    assert stored[:3] == stored[3:]  # the same text (SQLite) or timestamptz (PostgreSQL) in the database, not only after reading back
    assert rows[0].received_at == received
