"""Group commit on an event loop: requests await their event's commit; one writer thread at a time commits a group.

A real event loop, real threads for the writes, a real database (SQLite and
PostgreSQL) and the real journal. Failures are real database errors: a
trigger that refuses one event's insert.
"""

from __future__ import annotations

import asyncio
import functools
import threading

import pytest
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from audit.errors import AuditStoreError
from audit.event import Actor
from audit.group_commit import LoopGroupCommit
from audit.sequencer import Sequencer
from audit.store import AuditJournal, tree_size
from tests.audit.factories import sample_event
from tests.audit.test_group_commit import HeldFirstGroup, _request_ids
from vault.storage.engine import write_on

WAIT_S = 10.0


async def _gather(group: LoopGroupCommit, events: list, thens: dict | None = None) -> list[BaseException | None]:  # type: ignore[type-arg]
    thens = thens or {}

    async def one(i: int) -> BaseException | None:
        try:
            await group.commit(events[i], then=thens.get(i))
        except Exception as exc:  # noqa: BLE001  # recorded for the test to check
            return exc
        return None

    return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(len(events)))), WAIT_S)


def test_requests_waiting_on_the_loop_share_transactions_and_every_event_becomes_durable(engine: Engine) -> None:
    group = LoopGroupCommit(AuditJournal(), engine.connect, write_on)
    events = [sample_event(i) for i in range(40)]

    outcome = asyncio.run(_gather(group, events))

    assert outcome == [None] * 40
    assert 1 <= group.groups < 40  # all forty were queued before the first write began: they shared it
    assert _request_ids(engine) == [e.request_id for e in events]  # in the order they were handed over
    assert Sequencer(engine).run_until_idle() == 40
    with engine.connect() as conn:
        assert tree_size(conn) == 40


def test_events_handed_over_during_a_write_form_the_next_group(engine: Engine) -> None:
    begin = HeldFirstGroup()
    group = LoopGroupCommit(AuditJournal(), engine.connect, begin)

    async def scenario() -> list[BaseException | None]:
        first = asyncio.ensure_future(group.commit(sample_event(0)))
        await asyncio.get_running_loop().run_in_executor(None, functools.partial(begin.entered.wait, WAIT_S))
        later = asyncio.ensure_future(_gather(group, [sample_event(i) for i in range(1, 6)]))
        await asyncio.sleep(0.05)  # the five are queued behind the held write
        assert not first.done()
        begin.release.set()
        await asyncio.wait_for(first, WAIT_S)
        return await later

    assert asyncio.run(scenario()) == [None] * 5
    assert group.groups == 2
    assert _request_ids(engine) == [f"req-{i:04d}" for i in range(6)]


def test_a_failed_group_refuses_every_request_in_it_and_keeps_none_of_its_events(engine: Engine, poison_trigger: str) -> None:
    group = LoopGroupCommit(AuditJournal(), engine.connect, write_on)
    poisoned = Actor(subject=poison_trigger, roles=("practitioner",), client_id=None, acting_staff=None)
    events = [sample_event(i) for i in range(6)]
    events[3] = sample_event(3, actor=poisoned)

    outcome = asyncio.run(_gather(group, events))

    assert group.groups == 1
    for error in outcome:
        assert isinstance(error, AuditStoreError)
        assert str(error) == "the audit journal could not be written"
        assert isinstance(error.__cause__, DBAPIError)
    assert _request_ids(engine) == []
    asyncio.run(group.commit(sample_event(7)))  # the failure does not stick
    assert _request_ids(engine) == ["req-0007"]


def test_a_failing_then_fails_only_its_own_request_and_undoes_its_event(engine: Engine) -> None:
    journal = AuditJournal()
    group = LoopGroupCommit(journal, engine.connect, write_on)

    def extra(conn: Connection) -> None:
        journal.append(conn, sample_event(100))

    def extra_then_fail(conn: Connection) -> None:
        journal.append(conn, sample_event(200))
        raise ValueError("the review could not be queued")

    outcome = asyncio.run(_gather(group, [sample_event(i) for i in range(5)], thens={2: extra, 3: extra_then_fail}))

    assert isinstance(outcome[3], ValueError)
    assert [i for i, error in enumerate(outcome) if error is not None] == [3]
    written = _request_ids(engine)
    assert sorted(written) == ["req-0000", "req-0001", "req-0002", "req-0004", "req-0100"]
    assert written.index("req-0100") == written.index("req-0002") + 1


def test_a_request_cancelled_while_it_waits_still_has_its_event_committed(engine: Engine) -> None:
    begin = HeldFirstGroup()
    group = LoopGroupCommit(AuditJournal(), engine.connect, begin)

    async def scenario() -> None:
        waiting = asyncio.ensure_future(group.commit(sample_event(1)))
        await asyncio.get_running_loop().run_in_executor(None, functools.partial(begin.entered.wait, WAIT_S))
        waiting.cancel()  # the client went away
        begin.release.set()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.wait_for(group.commit(sample_event(2)), WAIT_S)

    asyncio.run(scenario())
    assert _request_ids(engine) == ["req-0001", "req-0002"]


def test_a_write_that_fails_outside_the_database_refuses_its_group(engine: Engine) -> None:
    def broken_connect() -> Connection:
        raise OSError("no connection")

    group = LoopGroupCommit(AuditJournal(), broken_connect, write_on)  # type: ignore[arg-type]

    outcome = asyncio.run(_gather(group, [sample_event(i) for i in range(3)]))

    assert all(isinstance(e, AuditStoreError) and isinstance(e.__cause__, OSError) for e in outcome)
    assert len({id(e) for e in outcome}) == 3
    assert _request_ids(engine) == []


def test_max_group_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_group"):
        LoopGroupCommit(AuditJournal(), lambda: None, write_on, max_group=0)  # type: ignore[arg-type,return-value]


def test_a_second_loop_takes_over_once_the_first_has_closed_and_not_while_it_writes(engine: Engine) -> None:
    begin = HeldFirstGroup()
    group = LoopGroupCommit(AuditJournal(), engine.connect, begin)
    loop_a = asyncio.new_event_loop()
    first = loop_a.create_task(group.commit(sample_event(1)))
    runner = threading.Thread(target=loop_a.run_until_complete, args=(first,))
    runner.start()
    assert begin.entered.wait(WAIT_S)  # loop A's write is in flight

    async def from_b() -> None:
        await group.commit(sample_event(2))

    with pytest.raises(RuntimeError, match="one event loop"):
        asyncio.run(from_b())
    begin.release.set()
    runner.join(WAIT_S)
    assert first.result() is None
    loop_a.close()
    asyncio.run(from_b())  # loop A is closed and idle: another loop takes over
    assert _request_ids(engine) == ["req-0001", "req-0002"]
    group.close()
