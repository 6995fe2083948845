"""One extract, end to end: eligible members → profiles → k-anonymous plan → streamed file → signed manifest → one audit event.

``ExtractRunner.run`` works in two passes, with memory bounded by a batch and
by the number of distinct quasi-identifier tuples:

1. every eligible member (``ProfileSource``) gets a profile and the consumer's
   pseudonym for the current epoch; its level-0 quasi-identifiers go into the
   ``Histogram`` and the whole row into an encrypted ``Spool``
   (``vault.extracts.profiling``). One read snapshot in one process, or, with
   an ``opener`` and more members than one range, one snapshot per member-id
   range spread over this process and worker processes
   (``vault.extracts._workers``); eligibility is decided at the run's ``now``
   either way;
2. ``choose`` plans the generalization (k = max(consumer's k, requested k),
   distinct l-diversity for health-derived attributes, the consumer's
   suppression cap; the epoch's fixed generalization once its first extract
   fixed one). Refused → the extract is ``refused``, nothing is written to
   ``out``. Otherwise each chunk of the spool is released through the plan
   and encoded for the format (``vault.extracts.releasing``), by the same
   processes as the first pass, and the chunks are appended to the writer in
   spool order: the file is the one a single process writes.

Then, in one transaction under the deletion feed's lock: the included members
go into ``extract_members``, the epoch's generalization is fixed, the extract
row is ``done`` with its counts, hashes, signed manifest and the feed's last
``seq`` (``feed_seq``); the deletion feed takes the members an earlier extract
of the epoch released and this one suppressed, and those this one included who
left while it ran (``vault.extracts.feed``); and the extract's one audit event is
journaled (action ``extract``, resource the extract, the released attributes
in ``fields``, the row count and the SHA-256 of the sorted included member ids
in ``details``). A refusal is journaled the same way, outcome ``refused``.
The row's ``finished_at`` and the event's time are when that transaction
runs (the runner's ``clock``); the run's ``now`` is the consent snapshot time,
which the manifest names.

An incremental extract (``since``) plans over every eligible member as a full
one does, and releases only rows whose keyed digest differs from what the
consumer holds from the extracts of the epoch up to its base.

``rfm``'s M digit is the 12-month spend: when ``spend_band`` is not released
at its finest level, the digit is masked (``M*``) so ``rfm`` cannot undo the
generalization.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import jwt
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from audit.event import Actor, AuditEvent, Decision, event_time
from audit.store import AuditJournal
from keys.member_keys import MemberKeys
from keys.signing import SigningKey
from vault.collector import cyclic_gc_paused
from vault.data_requests.spool import Spool
from vault.errors import ConflictError, ValidationError
from vault.extracts import feed
from vault.extracts import hierarchies as hi
from vault.extracts import profile as pf
from vault.extracts._workers import Chunk, ExtractWorkerError, Range, Task, WorkerPool
from vault.extracts.anonymity import AnonymityRefusedError, Histogram, Plan, choose
from vault.extracts.consumers import Consumer, ConsumerRegistry
from vault.extracts.feed import DeletionFeed, LeftReason
from vault.extracts.profiling import Profiled, Profiler, Profiling, id_ranges
from vault.extracts.pseudonyms import ROOT_KEY
from vault.extracts.records import heartbeat
from vault.extracts.releasing import ReleasedChunk, Releaser, Releasing
from vault.extracts.source import ProfileSource
from vault.extracts.writers import Column, ExtractFormat, Written, open_writer
from vault.opener import Opener
from vault.storage.engine import read_snapshot, write_transaction
from vault.storage.schema import extracts
from vault.times import rfc3339_seconds

MANIFEST_TYPE = "extract-manifest+jwt"
MANIFEST_VERSION = "member-vault/extract-manifest/1"
DEFAULT_L = 2
RESOURCE = "extract"
EXTRACT_ACTION = "extract"  # the one audit event of a run
# ``extract_members`` rows per INSERT: 3 parameters a row stay under SQLite's 32,766 and PostgreSQL's 65,535.
MEMBERS_PER_INSERT = 4000


class ExtractSink(Protocol):
    """Where the extract's file goes: a file opened for writing, or the sealed store's writer. ``flush`` makes it durable."""

    def write(self, data: bytes, /) -> object: ...

    def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ExtractRequest:
    extract_id: str
    consumer: Consumer
    fmt: ExtractFormat
    requested_k: int | None = None
    # Incremental: the id of a done extract of the same consumer and epoch; only rows new or changed since then are released.
    since: str | None = None
    # When the released data is purged (extracts kept sealed in the vault for their consumer); None: not kept.
    keep_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class ExtractAudit:
    """Who the extract's audit event names, and under which policy."""

    actor: Actor
    request_id: str
    policy_hash: str


@dataclass(frozen=True, slots=True)
class ExtractSigning:
    key: SigningKey
    issuer: str


@dataclass(frozen=True, slots=True)
class ExtractOutcome:
    extract_id: str
    status: str  # done | refused
    rows: int
    reason: str | None = None
    written: Written | None = None
    members_sha256: str | None = None
    manifest: str | None = None
    claims: dict[str, object] | None = None


class ExtractRunner:
    def __init__(
        self,
        engine: Engine,
        keys: MemberKeys,
        source: ProfileSource,
        registry: ConsumerRegistry,
        *,
        spool_dir: Path | None = None,
        opener: Opener | None = None,
        workers: int | None = None,
        worker_range: int = 5000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``opener`` (picklable, e.g. ``functools.partial(open_runtime, settings)``) lets the first pass run in ``workers`` processes.

        ``workers`` defaults to one per CPU, at most 4; without an ``opener`` the first pass runs in this process,
        as it does when the vault holds no more than ``worker_range`` members (the members a worker reads per task).
        ``clock`` tells when a run ends (``finished_at`` and the time of its audit event); a run's ``now`` is when its
        consent snapshot was taken.
        """
        self._engine = engine
        self._keys = keys
        self._source = source
        self._registry = registry
        self._spool_dir = spool_dir
        self._opener = opener
        self._workers = min(4, os.cpu_count() or 1) if workers is None else workers
        self._worker_range = worker_range
        self._journal = AuditJournal()
        self._clock = clock
        self._feed = DeletionFeed(lambda: keys.root_key(ROOT_KEY))

    def begin(self, conn: Connection, request: ExtractRequest, *, requested_by: str, now: datetime) -> None:
        """Record the extract as ``running`` in the caller's transaction; an incremental one's base must be a done extract of this epoch."""
        consumer = request.consumer
        epoch = self._registry.epoch(conn, consumer.consumer_id)
        if request.since is not None:
            base = conn.execute(select(extracts.c.consumer_id, extracts.c.epoch, extracts.c.status).where(extracts.c.extract_id == request.since)).first()
            if base is None or base.consumer_id != consumer.consumer_id or base.status != "done":
                raise ValidationError({"since": "not_a_done_extract_of_this_consumer"})
            if base.epoch != epoch.epoch:
                raise ConflictError("the base extract is from an earlier pseudonym epoch: take a full extract")
        row = {
            "extract_id": request.extract_id,
            "consumer_id": consumer.consumer_id,
            "purpose": consumer.purpose.value,
            "format": request.fmt.value,
            "epoch": epoch.epoch,
            "status": "running",
            "k": max(consumer.k, request.requested_k or 0),
            "since": request.since,
            "requested_by": requested_by,
            "created_at": now,
            "heartbeat_at": now,
            "expires_at": request.keep_until,
        }
        busy = ConflictError("an extract for this consumer is running; start the next one when it has finished")
        feed.hold(conn)  # a departure commits before this start (the snapshots see it) or finds the extract running
        if conn.execute(select(extracts.c.extract_id).where(extracts.c.consumer_id == consumer.consumer_id, extracts.c.status == "running")).first():
            raise busy
        try:
            with conn.begin_nested():
                conn.execute(insert(extracts).values(**row))
        except IntegrityError as exc:  # a concurrent start won the one-running-extract index
            raise busy from exc

    def run(
        self,
        request: ExtractRequest,
        out: ExtractSink,
        *,
        audit: ExtractAudit,
        signing: ExtractSigning,
        now: datetime,
        progress: Callable[[int], None] | None = None,
        begun: bool = False,
    ) -> ExtractOutcome:
        """Run the extract into ``out`` (``begun``: ``begin`` already recorded it); ``progress`` is told how many members were profiled so far.

        ``out`` is flushed before the extract is marked done, so a sink that
        makes its bytes durable on ``flush`` holds them all once ``done`` is
        committed.
        """
        consumer = request.consumer
        k = max(consumer.k, request.requested_k or 0)
        if not begun:
            with write_transaction(self._engine) as conn:
                self.begin(conn, request, requested_by=audit.actor.subject, now=now)
        with self._engine.connect() as conn:
            epoch = self._registry.epoch(conn, consumer.consumer_id)
        try:
            if epoch.epoch != self._epoch_of(request.extract_id):
                raise ConflictError("the consumer's pseudonym epoch changed before the extract started")
            with heartbeat(self._engine, request.extract_id):
                return self._produce(request, out, epoch.epoch, epoch.generalization, k=k, audit=audit, signing=signing, now=now, progress=progress)
        except Exception as exc:
            # Nothing was released (the caller discards ``out``): the job is marked failed with a code, never left running.
            with write_transaction(self._engine) as conn:
                failed = {"status": "failed", "reason": type(exc).__name__.lower()[:64], "finished_at": self._clock()}
                conn.execute(update(extracts).where(extracts.c.extract_id == request.extract_id, extracts.c.status == "running").values(**failed))
            raise

    def _epoch_of(self, extract_id: str) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(extracts.c.epoch).where(extracts.c.extract_id == extract_id)).scalar_one())

    def _produce(
        self,
        request: ExtractRequest,
        out: ExtractSink,
        epoch: int,
        fixed: dict[str, str] | None,
        *,
        k: int,
        audit: ExtractAudit,
        signing: ExtractSigning,
        now: datetime,
        progress: Callable[[int], None] | None,
    ) -> ExtractOutcome:
        consumer = request.consumer
        qi_names = [h.attribute for h in hi.QUASI_IDENTIFIERS if h.attribute in consumer.attributes]
        sensitive_names = [a.name for a in pf.SENSITIVE if a.name in consumer.attributes and consumer.health]
        job = _profiling(consumer, epoch, qi_names, sensitive_names, now)
        ranges = id_ranges(self._engine, self._worker_range)
        first = next(ranges)
        opener = self._opener if self._workers > 1 and first[1] is not None else None  # one range of members: no worker pays its start
        pool: AbstractContextManager[WorkerPool | None] = (
            contextlib.nullcontext() if opener is None else WorkerPool(opener, self._workers, spec=self._source.spec(), job=job)
        )
        with Spool(self._spool_dir) as rows, Spool(self._spool_dir) as included, pool as workers:
            histogram = Histogram(qi_names, sensitive_names)
            self._first_pass(job, workers, itertools.chain([first], ranges), histogram, rows, progress=progress)
            try:
                plan = choose(
                    histogram,
                    [hi.hierarchy(n) for n in qi_names],
                    k=k,
                    l=DEFAULT_L,
                    cap=Fraction(consumer.suppression_cap_permille, 1000),
                    fixed=fixed,
                )
            except AnonymityRefusedError:
                return self._refuse(request, histogram.rows, audit)
            plain = _plain_columns(consumer)
            columns = [Column("pseudonym"), *(Column(n) for n in qi_names), *(Column(n) for n in sensitive_names), *plain]
            writer = open_writer(request.fmt, columns, out)
            releasing = Releasing(plan, tuple(c.name for c in plain), writer.encode, consumer.consumer_id, epoch, request.since)
            members_sha = hashlib.sha256()
            released = 0
            withdrawn: list[str] = []  # at most the suppressed rows: bounded by the suppression cap

            def emit(chunk: ReleasedChunk) -> None:
                nonlocal released
                if chunk.member_ids:
                    writer.write_encoded(chunk.encoded)
                    members_sha.update("".join(f"{i}\n" for i in chunk.member_ids).encode("ascii"))
                    included.write("\n".join(f"{i}:{m}" for i, m in zip(chunk.member_ids, chunk.row_macs, strict=True)).encode("ascii"))
                    released += len(chunk.member_ids)
                withdrawn.extend(chunk.withdrawn)

            self._second_pass(releasing, workers, rows, emit)
            if workers is not None:
                workers.stop()  # they close the vault and exit while the extract is committed
            written = writer.close()
            out.flush()  # durable before ``done`` is committed (a sealed store fsyncs here)
            claims = _manifest(request, consumer, epoch, plan, written, k=k, columns=columns, policy_hash=audit.policy_hash, issuer=signing.issuer, now=now)
            manifest = jwt.encode(claims, signing.key.private_key, algorithm="EdDSA", headers={"typ": MANIFEST_TYPE, "kid": signing.key.key_id})
            with write_transaction(self._engine) as conn:
                at = self._clock()  # when the extract is released: its row's finished_at and its audit event
                _insert_members(conn, request.extract_id, (line.split(":") for sealed in included.read() for line in sealed.decode("ascii").split("\n")))
                if fixed is None:
                    self._registry.fix_generalization(conn, consumer.consumer_id, epoch, plan.generalization)
                # The feed's lock only now, after the long insert: on PostgreSQL every withdrawal, erasure and restriction waits
                # for it (2.3 s at 100,000 members with it taken first). Nothing above reads the feed or the departures, and
                # what follows reads them committed as of each statement (READ COMMITTED), so a departure that committed
                # while the members were inserted is seen, and one that waits for the lock sees this extract done.
                feed.hold(conn)
                finished = conn.execute(
                    update(extracts)
                    .where(extracts.c.extract_id == request.extract_id, extracts.c.status == "running")
                    .values(
                        status="done",
                        row_count=released,
                        content_sha256=written.sha256,
                        content_bytes=written.size,
                        members_sha256=members_sha.hexdigest(),
                        manifest=manifest,
                        finished_at=at,
                        feed_seq=feed.last_seq(conn),  # before this transaction's own entries: they come after the release
                    )
                )
                if finished.rowcount != 1:  # marked interrupted meanwhile: nothing is released (this transaction rolls back)
                    raise ConflictError("the extract was marked interrupted while it ran")
                withdrawn_fed = self._feed.members_left(conn, consumer.consumer_id, epoch, withdrawn, LeftReason.suppressed, now=at)
                departed_fed = self._feed.departed(conn, request.extract_id, now=at)
                event = _event(
                    request, audit, at, outcome="ok", rows=released, members_sha256=members_sha.hexdigest(), withdrawn=withdrawn_fed, departed=departed_fed
                )
                journal_id = self._journal.append(conn, event, now=at)
                conn.execute(update(extracts).where(extracts.c.extract_id == request.extract_id).values(journal_id=journal_id))
        return ExtractOutcome(request.extract_id, "done", released, None, written, members_sha.hexdigest(), manifest, claims)

    def _first_pass(
        self,
        job: Profiling,
        workers: WorkerPool | None,
        ranges: Iterator[tuple[str, str | None]],
        histogram: Histogram,
        rows: Spool,
        *,
        progress: Callable[[int], None] | None,
    ) -> None:
        """Profile every eligible member into ``histogram`` and ``rows`` (in member id order), in this process or with ``workers``.

        With workers, the member ids are cut into ``ranges`` of ``worker_range``
        members, each profiled in its own read snapshot by this process or a
        worker, and the results are taken in range order, so the spool is the
        one a single process writes.
        """

        def emit(profiled: Profiled) -> None:
            for qi, sensitive in profiled.counted:
                histogram.add(qi, sensitive)
            rows.write(profiled.spooled)
            if progress is not None:
                progress(histogram.rows)

        profiler = Profiler(job, self._keys.root_key(ROOT_KEY))
        if workers is None:
            with read_snapshot(self._engine) as conn:
                batches = self._source.batches(conn, job.purpose, fields=job.fields, want_health=job.want_health, now=job.now)
                while True:
                    with cyclic_gc_paused():  # a batch at a time, so a server's other threads see the collector between batches
                        batch = next(batches, None)
                        if batch is None:
                            return
                        profiled = profiler.profile(batch)
                    emit(profiled)

        def here(task: Task) -> Profiled:
            if not isinstance(task, Range):
                raise TypeError("the first pass profiles ranges")
            with cyclic_gc_paused(), read_snapshot(self._engine) as conn:
                return profiler.profile_range(self._source, conn, task.after, task.until)

        workers.ordered((Range(after, until) for after, until in ranges), here, emit, Profiled)

    def _second_pass(self, job: Releasing, workers: WorkerPool | None, rows: Spool, emit: Callable[[ReleasedChunk], None]) -> None:
        """Release every chunk of ``rows`` through the plan, in this process or with ``workers``; ``emit`` each chunk's rows in spool order."""
        releaser = Releaser(job, self._keys.root_key(ROOT_KEY), self._engine)
        if workers is None:
            for chunk in rows.read():
                with cyclic_gc_paused():
                    released = releaser.release(chunk)
                emit(released)
            return

        def here(task: Task) -> ReleasedChunk:
            if not isinstance(task, Chunk):
                raise TypeError("the second pass releases chunks")
            with cyclic_gc_paused():
                return releaser.release(task.data)

        workers.release_with(job)
        workers.ordered((Chunk(chunk) for chunk in rows.read()), here, emit, ReleasedChunk)

    def _refuse(self, request: ExtractRequest, rows: int, audit: ExtractAudit) -> ExtractOutcome:
        with write_transaction(self._engine) as conn:
            at = self._clock()
            journal_id = self._journal.append(conn, _event(request, audit, at, outcome="refused", rows=0, members_sha256=None), now=at)
            refused = {"status": "refused", "reason": "k_unreachable", "finished_at": at, "journal_id": journal_id}
            conn.execute(update(extracts).where(extracts.c.extract_id == request.extract_id, extracts.c.status == "running").values(**refused))
        return ExtractOutcome(request.extract_id, "refused", rows, "k_unreachable")


def _plain_columns(consumer: Consumer) -> list[Column]:
    """The plain attribute columns, named by the profile builder: the spooled values come in its order (``ProfileBuilder.released``)."""
    lists = {"interest_tags", "preferred_categories", "top_categories"}
    return [Column(name, is_list=name in lists) for name in pf.ProfileBuilder(consumer.attributes, health=consumer.health).plain_names]


def _profiling(consumer: Consumer, epoch: int, qi_names: Sequence[str], sensitive_names: Sequence[str], now: datetime) -> Profiling:
    return Profiling(
        consumer_id=consumer.consumer_id,
        purpose=consumer.purpose,
        attributes=tuple(consumer.attributes),
        health=consumer.health,
        epoch=epoch,
        fields=tuple(sorted({f for a in pf.ATTRIBUTES if a.name in consumer.attributes for f in a.source_fields})),
        qi_index=tuple(i for i, h in enumerate(hi.QUASI_IDENTIFIERS) if h.attribute in qi_names),
        sensitive_index=tuple(i for i, a in enumerate(pf.SENSITIVE) if a.name in sensitive_names),
        now=now,
    )


def _insert_members(conn: Connection, extract_id: str, held: Iterable[Sequence[str]]) -> None:
    """Insert the included members (``(member_id, row_mac)`` in order) as ``extract_members`` rows, ``MEMBERS_PER_INSERT`` a statement.

    One multi-row INSERT instead of one statement a row: on SQLite each
    statement opens a statement journal and runs the table's append-only
    trigger program afresh, which made ``executemany`` about 11 µs a row
    (4.1 s for 380,000 rows, one core, at the end of the run); a statement of
    4,000 rows takes under half of that. The driver's statement cache keeps
    the full-size statement compiled.
    """
    mark = _placeholder(conn)
    rows: list[str] = []
    for member_id, row_mac in held:
        rows += (extract_id, member_id, row_mac)
        if len(rows) == 3 * MEMBERS_PER_INSERT:
            _insert_rows(conn, mark, rows)
            rows = []
    if rows:
        _insert_rows(conn, mark, rows)


def _insert_rows(conn: Connection, mark: str, flat: list[str]) -> None:
    values = ",".join([f"({mark},{mark},{mark})"] * (len(flat) // 3))
    conn.exec_driver_sql(f"INSERT INTO extract_members (extract_id, member_id, row_mac) VALUES {values}", tuple(flat))  # noqa: S608 — placeholders only


def _placeholder(conn: Connection) -> str:
    """The driver's positional parameter marker (the insert goes straight to the driver, past SQLAlchemy's compiler)."""
    style = conn.dialect.paramstyle
    if style == "qmark":
        return "?"
    if style in ("format", "pyformat"):
        return "%s"
    raise ValueError(f"unsupported parameter style {style}")


def _manifest(
    request: ExtractRequest,
    consumer: Consumer,
    epoch: int,
    plan: Plan,
    written: Written,
    *,
    k: int,
    columns: Sequence[Column],
    policy_hash: str,
    issuer: str,
    now: datetime,
) -> dict[str, object]:
    return {
        "iss": issuer,
        "iat": int(now.timestamp()),
        "jti": request.extract_id,
        "manifest_version": MANIFEST_VERSION,
        "extract_id": request.extract_id,
        "consumer": consumer.consumer_id,
        "purpose": consumer.purpose.value,
        "epoch": epoch,
        "format": request.fmt.value,
        "attributes": [c.name for c in columns],
        "row_count": written.rows,
        "content_sha256": written.sha256,
        "content_bytes": written.size,
        "k": k,
        "since": request.since,
        "anonymity": plan.to_json(),
        "consent_snapshot_at": rfc3339_seconds(now),
        "policy_hash": policy_hash,
    }


def _event(
    request: ExtractRequest,
    audit: ExtractAudit,
    now: datetime,
    *,
    outcome: str,
    rows: int,
    members_sha256: str | None,
    withdrawn: int = 0,
    departed: int = 0,
) -> AuditEvent:
    details: dict[str, int | str] = {"rows": rows, "consumer": request.consumer.consumer_id}
    if withdrawn:
        details["withdrawn"] = withdrawn  # pseudonyms put in the deletion feed: released earlier in the epoch, suppressed now
    if departed:
        details["departed"] = departed  # pseudonyms put in the deletion feed: included, but the member left while the extract ran
    if members_sha256 is not None:
        details["members_sha256"] = members_sha256
    if request.since is not None:
        details["since"] = request.since
    return AuditEvent(
        time=event_time(now),
        request_id=audit.request_id,
        actor=audit.actor,
        action=EXTRACT_ACTION,
        resource_type=RESOURCE,
        resource_id=request.extract_id,
        member_id=None,
        fields=request.consumer.attributes,
        purpose=request.consumer.purpose.value,
        decision=Decision.ALLOW,
        reason_code="allowed" if outcome == "ok" else "k_unreachable",
        policy_hash=audit.policy_hash,
        outcome=outcome,
        details=tuple(sorted(details.items())),
    )


__all__ = [
    "DEFAULT_L",
    "EXTRACT_ACTION",
    "MANIFEST_TYPE",
    "MANIFEST_VERSION",
    "RESOURCE",
    "ExtractAudit",
    "ExtractOutcome",
    "ExtractRequest",
    "ExtractRunner",
    "ExtractSigning",
    "ExtractSink",
    "ExtractWorkerError",
]
