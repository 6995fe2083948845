"""The gate's common part: an access decision as a plain value, and the audited unit of work.

The edge (api/) asks the policies for a decision and hands the vault an
``Access``: who is asking, why, under which policy hash, and which
data-map categories the caller may read and write. The vault never sees a
request and never calls the policies.

``perform`` is how every gate reaches personal data, in the caller's
transaction:

* a refused decision journals one ``deny`` event and returns
  ``Refusal(denied)`` without touching any record;
* an allowed one runs the operation inside a savepoint, then journals one
  ``allow`` event whose ``outcome`` says what happened (``ok``,
  ``not_found``, ``invalid``, ``conflict``, ``integrity_error``). A domain
  error rolls the savepoint back (nothing partial is written) and comes back
  as a ``Refusal`` carrying the error, so the caller can still commit the
  event: every decision leaves exactly one event;
* any other failure — the audit journal included (``AuditStoreError``) —
  propagates, and the caller's transaction rolls back: no data is returned
  and no write commits without its event (fail closed).

``perform_read`` is the same for operations that only read. The caller's
connection is in autobegin mode with nothing written: the operation reads in
a deferred transaction (on SQLite, no write lock held), which then ends, and
the event is committed durably — the fail-closed point — before the result
leaves the gate. Concurrent reads of a process share that commit
(``audit.group_commit.GroupCommit``: one write transaction for the events
waiting together, each request answering only once its own is durable).
``then`` runs in that write transaction after an ``ok`` read (a break-glass
review row), in a savepoint with its event. ``prepare_read`` stops before the
commit and hands back a ``PendingRead`` — for a route served on the event
loop, which awaits its event's commit (``LoopGroupCommit``) instead of
blocking a thread, and only then uses the result.

Events carry ids, field and category names and codes, never values.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar

from sqlalchemy import Connection

from audit.event import Actor, AuditEvent, Decision, event_time
from audit.group_commit import GroupCommit
from audit.store import AuditJournal
from vault import data_map as dm
from vault.errors import ConflictError, MemberErasedError, NotFoundError, RecordIntegrityError, ValidationError, VaultError
from vault.storage.engine import write_on

_T = TypeVar("_T")
_Result_co = TypeVar("_Result_co", covariant=True)  # read-only: a PendingRead[Page] serves where a PendingRead[Page | Refusal] is asked for


class Outcome(StrEnum):
    ok = "ok"
    denied = "denied"
    not_found = "not_found"
    invalid = "invalid"
    conflict = "conflict"
    integrity_error = "integrity_error"
    replayed = "replayed"  # an Idempotency-Key retry answered with the first result; nothing written


@dataclass(frozen=True, slots=True)
class Access:
    """The edge's decision for one request."""

    actor: Actor
    request_id: str
    purpose: str | None
    policy_hash: str
    now: datetime
    readable: frozenset[dm.Category] = frozenset()
    writable: frozenset[dm.Category] = frozenset()
    # Why the decision came out as it did: a policy reason code, ``consent_required``, or ``break_glass:<reason>``.
    reason: str = "allowed"


@dataclass(frozen=True, slots=True)
class Refusal:
    """An expected way for a gated operation to end without its result."""

    outcome: Outcome
    error: VaultError | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """What an event is about."""

    action: str
    resource_type: str
    resource_id: str | None = None
    member_id: str | None = None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PendingRead(Generic[_Result_co]):
    """A read done and its event built, not yet durable: ``result`` must not leave before ``event`` is committed (with ``then``)."""

    result: _Result_co | Refusal
    event: AuditEvent
    now: datetime
    then: Callable[[Connection], None] | None


_OUTCOMES: tuple[tuple[type[VaultError], Outcome], ...] = (
    (NotFoundError, Outcome.not_found),
    (MemberErasedError, Outcome.not_found),
    (ValidationError, Outcome.invalid),
    (ConflictError, Outcome.conflict),
    (RecordIntegrityError, Outcome.integrity_error),
)


class Gatekeeper:
    """Runs gated operations and journals their one event."""

    def __init__(self, journal: AuditJournal) -> None:
        self._journal = journal
        self._group = GroupCommit(journal, write_on)

    @property
    def journal(self) -> AuditJournal:
        return self._journal

    def perform(self, conn: Connection, access: Access, target: Target, allowed: bool, operation: Callable[[], _T]) -> _T | Refusal:
        if not allowed:
            self.record(conn, access, target, Decision.DENY, Outcome.denied)
            return Refusal(Outcome.denied)
        try:
            with conn.begin_nested():
                result = operation()
        except VaultError as exc:
            outcome = next((o for kind, o in _OUTCOMES if isinstance(exc, kind)), None)
            if outcome is None:
                raise
            self.record(conn, access, target, Decision.ALLOW, outcome)
            return Refusal(outcome, exc)
        self.record(conn, access, target, Decision.ALLOW, Outcome.ok)
        return result

    def replay(self, conn: Connection, access: Access, target: Target, allowed: bool) -> bool:
        """Journal the decision on an ``Idempotency-Key`` retry (allow/replayed or deny); True if it may be answered."""
        self.record(conn, access, target, Decision.ALLOW if allowed else Decision.DENY, Outcome.replayed if allowed else Outcome.denied)
        return allowed

    def perform_read(
        self, conn: Connection, access: Access, target: Target, allowed: bool, operation: Callable[[], _T], *, then: Callable[[Connection], None] | None = None
    ) -> _T | Refusal:
        pending = self.prepare_read(access, target, allowed, operation, then=then)
        conn.rollback()  # the read snapshot ends (nothing was written in it)
        self._group.commit(conn, pending.event, now=pending.now, then=pending.then)
        return pending.result

    def prepare_read(
        self, access: Access, target: Target, allowed: bool, operation: Callable[[], _T], *, then: Callable[[Connection], None] | None = None
    ) -> PendingRead[_T]:
        """``perform_read`` up to its event, for a caller that commits the event itself (``LoopGroupCommit``) before using the result."""
        if not allowed:
            return PendingRead(Refusal(Outcome.denied), _event(access, target, Decision.DENY, Outcome.denied), access.now, None)
        try:
            result = operation()
        except VaultError as exc:
            outcome = next((o for kind, o in _OUTCOMES if isinstance(exc, kind)), None)
            if outcome is None:
                raise
            return PendingRead(Refusal(outcome, exc), _event(access, target, Decision.ALLOW, outcome), access.now, None)
        return PendingRead(result, _event(access, target, Decision.ALLOW, Outcome.ok), access.now, then)

    def record(self, conn: Connection, access: Access, target: Target, decision: Decision, outcome: Outcome) -> None:
        """Journal the one event of a decision in ``conn``'s transaction (also used by the edge for decisions that reach no record)."""
        self._journal.append(conn, _event(access, target, decision, outcome), now=access.now)


def _event(access: Access, target: Target, decision: Decision, outcome: Outcome) -> AuditEvent:
    return AuditEvent(
        time=event_time(access.now),
        request_id=access.request_id,
        actor=access.actor,
        action=target.action,
        resource_type=target.resource_type,
        resource_id=target.resource_id,
        member_id=target.member_id,
        fields=target.fields,
        purpose=access.purpose,
        decision=decision,
        reason_code=access.reason,
        policy_hash=access.policy_hash,
        outcome=outcome.value,
    )


def category_names(categories: Collection[dm.Category]) -> tuple[str, ...]:
    return tuple(sorted(c.value for c in categories))


__all__ = ["Access", "Gatekeeper", "Outcome", "PendingRead", "Refusal", "Target", "category_names"]
