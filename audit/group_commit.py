"""Group commit of audit events: the events of concurrent requests share one durable transaction.

A read request writes nothing but its event, and must not answer before that
event is durable (the fail-closed point). Committed one by one, every read
costs a pass through the database's single write lock and an fsync; under
load the requests queue on that lock (docs/benchmarks.md). ``GroupCommit``
lets the requests of one process that are waiting at the same time share a
commit, leader and followers:

- A request hands over its event — with an optional ``then`` that writes in
  the same transaction (a break-glass review row) — and, if no group of this
  ``GroupCommit`` is being committed, becomes the leader at once: with no
  contention an event commits exactly as it would alone, without a hand-off.
- The leader opens one write transaction on its own connection — on SQLite
  that waits for the write lock, and events handed over meanwhile join the
  group — then takes every event waiting (up to ``max_group``), inserts the
  events without a ``then`` in one batched statement and each other event
  with its ``then`` in a savepoint of its own, commits, and wakes the
  requests whose events that commit held. A request waiting meanwhile
  becomes the next leader.
- ``commit`` returns only after the commit that holds the caller's event
  succeeded. If the transaction fails, every request of the group gets
  ``AuditStoreError`` (and must not answer with data); a ``then`` that raises
  undoes only its own savepoint — its event included — and the exception
  goes to its own request.

Each request keeps its own connection; only the leader's writes. Events
enter the journal in the order they were handed over within a process;
across processes the database's write lock orders the groups (indices are
given later by the sequencer, in journal order, as for any entry).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection

from audit.errors import AuditStoreError
from audit.event import AuditEvent
from audit.store import AuditJournal

Begin = Callable[[Connection], AbstractContextManager[object]]
"""Opens the write transaction on a connection (on SQLite one that takes the write lock up front)."""

DEFAULT_MAX_GROUP = 256


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(eq=False, slots=True)
class _Ticket:
    conn: Connection
    event: AuditEvent
    now: datetime | None
    then: Callable[[Connection], None] | None
    done: threading.Lock = field(default_factory=_held_lock)  # released once, when the ticket is settled or leads
    lead: bool = False  # set by the previous leader: this ticket's thread commits the next group
    error: BaseException | None = None


class GroupCommit:
    """Commits the audit events of concurrent callers together; thread-safe; one per process and database."""

    def __init__(self, journal: AuditJournal, begin: Begin, *, max_group: int = DEFAULT_MAX_GROUP) -> None:
        if max_group < 1:
            raise ValueError("max_group must be at least 1")
        self._journal = journal
        self._begin = begin
        self._max_group = max_group
        self._lock = threading.Lock()
        self._waiting: list[_Ticket] = []
        self._leading = False
        self.groups = 0  # transactions committed or attempted (for benchmarks and tests)

    def waiting(self) -> int:
        """Events handed over and not yet taken into a group."""
        with self._lock:
            return len(self._waiting)

    def commit(self, conn: Connection, event: AuditEvent, *, now: datetime | None = None, then: Callable[[Connection], None] | None = None) -> None:
        """Make ``event`` (and ``then``'s writes) durable; return once committed, or raise.

        ``conn`` is the caller's connection with no transaction open; it is used
        if this caller leads a group. Raises ``AuditStoreError`` when the group's
        transaction failed, or what ``then`` raised.
        """
        ticket = _Ticket(conn, event, now, then)
        with self._lock:
            self._waiting.append(ticket)
            if not self._leading:
                self._leading = ticket.lead = True
        if not ticket.lead:
            ticket.done.acquire()  # a plain lock is the cheapest wake-up: one release by the leader
        if ticket.lead:  # this thread commits a group that holds its own ticket (the first one taken)
            self._lead(ticket)
        if ticket.error is not None:
            raise ticket.error

    def _lead(self, mine: _Ticket) -> None:
        taken: list[_Ticket] = []

        def take() -> list[_Ticket]:
            if not taken:
                with self._lock:
                    taken.extend(self._waiting[: self._max_group])
                    del self._waiting[: self._max_group]
            return taken

        self.groups += 1
        try:
            try:
                with self._begin(mine.conn):
                    # The group is taken once the write lock is held: whoever arrived while it was awaited joins.
                    self._append(mine.conn, take())
            except Exception as exc:  # noqa: BLE001  # every request of the group is refused: none of its events is durable
                failure = exc if isinstance(exc, AuditStoreError) else AuditStoreError("the audit journal could not be written")
                if failure is not exc:
                    failure.__cause__ = exc
                _fail(take(), failure)
        except BaseException:  # an interrupt in the middle: nobody of the group may take its event as durable
            _fail(take(), AuditStoreError("the audit journal could not be written"))
            raise
        finally:
            with self._lock:
                if self._waiting:
                    successor = self._waiting[0]
                    successor.lead = True
                    successor.done.release()
                else:
                    self._leading = False
            for ticket in take():
                if ticket is not mine:
                    ticket.done.release()

    def _append(self, conn: Connection, group: list[_Ticket]) -> None:
        _write_group(self._journal, conn, group)


class _Entry(Protocol):
    event: AuditEvent
    now: datetime | None
    then: Callable[[Connection], None] | None
    error: BaseException | None


def _write_group(journal: AuditJournal, conn: Connection, group: Sequence[_Entry]) -> None:
    """Insert a group's events in ``conn``'s transaction: those without a ``then`` in one batch, each other in a savepoint with its ``then``."""
    journal.append_many(conn, [(t.event, t.now) for t in group if t.then is None])
    for entry in group:
        if entry.then is not None:
            _write_with_then(journal, conn, entry, entry.then)


def _write_with_then(journal: AuditJournal, conn: Connection, entry: _Entry, then: Callable[[Connection], None]) -> None:
    try:
        with conn.begin_nested():
            journal.append(conn, entry.event, now=entry.now)
            then(conn)
    except AuditStoreError:
        raise  # the journal failed: the whole group fails closed
    except Exception as exc:  # noqa: BLE001  # its own request only; the savepoint undid its event and writes
        entry.error = exc


class LoopGroupCommit:
    """Group commit for requests served on an event loop: they await their event's commit instead of blocking a thread.

    The same contract as ``GroupCommit`` — ``commit`` returns only once the
    transaction holding the caller's event has committed, a failed
    transaction refuses every request of its group, a failing ``then`` fails
    only its own — without a thread per waiting request. Events handed over
    on the loop queue up; one write at a time runs on this object's own
    writer thread (so a busy thread pool never holds up a commit), on a
    connection of its own (``connect``, then ``begin``), taking every event
    queued when it starts; events arriving meanwhile form the next group.
    It serves one event loop at a time (its queue is not locked): another
    loop may take over once the first has no write in flight, or has closed.
    """

    def __init__(
        self, journal: AuditJournal, connect: Callable[[], AbstractContextManager[Connection]], begin: Begin, *, max_group: int = DEFAULT_MAX_GROUP
    ) -> None:
        if max_group < 1:
            raise ValueError("max_group must be at least 1")
        self._journal = journal
        self._connect = connect
        self._begin = begin
        self._max_group = max_group
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        self._waiting: list[_Awaited] = []
        self._writer: asyncio.Task[None] | None = None
        self.groups = 0  # transactions committed or attempted (for benchmarks and tests)

    async def commit(self, event: AuditEvent, *, now: datetime | None = None, then: Callable[[Connection], None] | None = None) -> None:
        """Make ``event`` (and ``then``'s writes) durable; return once committed, or raise ``AuditStoreError`` or what ``then`` raised.

        The event is queued before anything is awaited: a request cancelled
        while it waits does not take its event back, it is committed with its
        group all the same (the decision was made), and nobody is told.
        """
        loop = asyncio.get_running_loop()
        if self._writer is not None and self._writer.get_loop() is not loop:
            if not self._writer.get_loop().is_closed():
                raise RuntimeError("a LoopGroupCommit serves one event loop at a time")
            self._writer, self._waiting = None, []  # that loop closed with its waiters: none of them is waiting any more
        entry = _Awaited(event, now, then, loop.create_future())
        self._waiting.append(entry)
        if self._writer is None:  # in a context of its own: it writes for many requests, it is none of theirs (nor their log context)
            self._writer = loop.create_task(self._write_all(), context=contextvars.Context())
        await entry.settled

    def close(self) -> None:
        """Stop the writer thread once its write in flight, if any, is done."""
        self._thread.shutdown(wait=True)

    async def _write_all(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                group = self._waiting[: self._max_group]
                del self._waiting[: self._max_group]
                self.groups += 1
                try:
                    await loop.run_in_executor(self._thread, functools.partial(self._write, group))
                except BaseException as exc:  # every request of the group is refused: none of its events is durable
                    failure = exc if isinstance(exc, AuditStoreError) else AuditStoreError("the audit journal could not be written")
                    if failure is not exc:
                        failure.__cause__ = exc
                    _fail(group, failure)
                    if not isinstance(exc, Exception):
                        _settle(group)
                        raise
                _settle(group)
        finally:
            self._writer = None
            if self._waiting:  # the loop is going down: nobody may take a queued event as durable
                _fail(self._waiting, AuditStoreError("the audit journal could not be written"))
                _settle(self._waiting)
                self._waiting = []

    def _write(self, group: list[_Awaited]) -> None:
        with self._connect() as conn, self._begin(conn):
            _write_group(self._journal, conn, group)


@dataclass(eq=False, slots=True)
class _Awaited:
    event: AuditEvent
    now: datetime | None
    then: Callable[[Connection], None] | None
    settled: asyncio.Future[None]
    error: BaseException | None = None


def _settle(group: list[_Awaited]) -> None:
    for entry in group:
        if entry.settled.done():
            continue
        if entry.error is None:
            entry.settled.set_result(None)
        else:
            entry.settled.set_exception(entry.error)


def _fail(group: Sequence[_Entry], failure: AuditStoreError) -> None:
    """Refuse every ticket of the group not already refused, each with an exception of its own (each is raised in its own thread)."""
    for ticket in group:
        if ticket.error is None:
            ticket.error = AuditStoreError(*failure.args)
            ticket.error.__cause__ = failure.__cause__


__all__ = ["DEFAULT_MAX_GROUP", "Begin", "GroupCommit", "LoopGroupCommit"]
