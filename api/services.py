"""The app's long-lived objects, opened on first use and kept on ``app.state``.

``ServiceHolder.get()`` opens the vault (databases at the code's revision,
key provider usable) the first time a route needs it, and again after a
failure — so the app starts and answers ``/healthz`` with the database or
the key provider down, and a data route answers 503 instead of hanging.

``Services.audited_read`` serves the member, treatment and ledger reads: the
decision and the read (on the event loop when both databases are embedded
and the keyring is local; in the route pool otherwise), then the event's
durable commit through the loop's group commit, and only then the result.

``AuditPump`` is each process's background thread that sequences journal
entries into the tree and signs a checkpoint when one is due (the
sequencer's database lock keeps several processes from racing), and finishes
any erasure a crash interrupted after its request was completed, and
sweeps extract jobs (interrupted ones failed, kept data past its time purged).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from api.authn import Authenticator
from api.authz import PolicyStore
from api.caller import Caller
from api.extract_jobs import ExtractJobs
from api.idempotency import ROOT_KEY as IDEMPOTENCY_ROOT_KEY
from api.idempotency import Idempotency
from api.offload import in_read_pool
from api.problems import UNAVAILABLE, ProblemError
from api.runtime import Runtime, make_checkpointer, open_runtime
from api.settings import KeyProviderName, Settings
from audit.errors import AuditError
from audit.group_commit import LoopGroupCommit
from audit.sequencer import Sequencer
from audit.store import AuditJournal
from keys.errors import KeysError
from policies import DEFAULT_DIRECTORY
from vault.access import Gatekeeper, PendingRead, Refusal
from vault.consent import ConsentGate, ConsentService, NoticeBook
from vault.consent_check import ConsentCheck
from vault.data_requests import DataRequestGate, DataRequestService
from vault.data_requests.export import ExportBuilder
from vault.data_requests.spool import spool_directory
from vault.errors import VaultError
from vault.extracts.consumers import ConsumerRegistry
from vault.extracts.feed import DeletionFeed
from vault.extracts.pseudonyms import ROOT_KEY as PSEUDONYM_ROOT
from vault.extracts.runner import ExtractRunner
from vault.extracts.source import ProfileSource
from vault.extracts.stale import StaleConsentFeed
from vault.extracts.store import ExtractStore
from vault.ledger_gate import LedgerGate
from vault.members.gate import MemberGate
from vault.storage.engine import write_on, write_transaction
from vault.storage.readers import SqliteReader
from vault.treatments_gate import TreatmentGate

log = structlog.get_logger("api.services")
PUMP_INTERVAL_SECONDS = 1.0
_T = TypeVar("_T")
_D = TypeVar("_D")
_R = TypeVar("_R")


@dataclass
class Services:
    settings: Settings
    runtime: Runtime
    gatekeeper: Gatekeeper
    members: MemberGate
    treatments: TreatmentGate
    ledger: LedgerGate
    authenticator: Authenticator
    policies: PolicyStore
    consent: ConsentCheck
    consents: ConsentGate
    requests: DataRequestGate
    exports: ExportBuilder
    idempotency: Idempotency
    consumers: ConsumerRegistry
    feed: DeletionFeed
    extracts: ExtractRunner
    extract_jobs: ExtractJobs
    # One per process: it keeps the horizon below which the journal is known to be sequenced (audit.sequencer).
    sequencer: Sequencer
    # The events of ``audited_read``'s reads, committed in groups by one writer thread at a time.
    read_events: LoopGroupCommit
    # Embedded databases and a local keyring: a read is local and short, so ``audited_read`` runs it on the event loop.
    reads_on_loop: bool
    # The connections those reads and the token checks use, one per thread (the event loop's, or the read pool's), kept between requests.
    held_reads: HeldReads

    async def audited_read(self, read: Callable[[Connection], tuple[_D, PendingRead[_T]]]) -> tuple[_D, _T | Refusal]:
        """Run a read route's decision and read (``read`` on a read connection), then make its event durable; its result only then.

        With ``reads_on_loop`` the read runs here, on the event loop, and the
        event is queued before anything is awaited. Otherwise the read runs
        in the read pool and the rest is shielded from the request's
        cancellation: a decision once made is journaled even if the client
        has gone. Either way on the thread's held connection. ``AuditStoreError``
        (503) when the event could not be made durable; nothing of the result
        is returned then.
        """
        if self.reads_on_loop:
            decided, pending = self._read_held(read)
            return decided, await self._settle(pending)
        return await asyncio.shield(self._pooled_read(read))

    async def authenticate(self, authorization: str | None) -> Caller:
        """The verified caller, or 401: in place when everything the check may touch is local, else in the read pool."""
        if self.authenticator.answers_inline:
            return self.authenticator.authenticate(authorization)
        return await in_read_pool(functools.partial(self.authenticator.authenticate, authorization))

    async def _pooled_read(self, read: Callable[[Connection], tuple[_D, PendingRead[_T]]]) -> tuple[_D, _T | Refusal]:
        decided, pending = await in_read_pool(functools.partial(self._read_held, read))
        return decided, await self._settle(pending)

    async def _settle(self, pending: PendingRead[_T]) -> _T | Refusal:
        await self.read_events.commit(pending.event, now=pending.now, then=pending.then)
        return pending.result

    def _read_held(self, read: Callable[[Connection], _R]) -> _R:
        try:
            with self.held_reads.connection() as conn:
                return read(conn)
        except SQLAlchemyError as exc:
            raise ProblemError(UNAVAILABLE, "the vault cannot serve this request now") from exc

    @contextmanager
    def unit(self) -> Iterator[Connection]:
        """One request's transaction on the data database: its writes and its audit event commit together."""
        try:
            with write_transaction(self.runtime.data_engine) as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise ProblemError(UNAVAILABLE, "the vault cannot serve this request now") from exc

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only request's connection, in autobegin mode: reads take no write lock (SQLite).

        The request's event is committed before any data is returned: by its
        gate in a short write transaction on this connection
        (``Gatekeeper.perform_read``), or by ``audited_read``; anything left
        open is rolled back.
        """
        try:
            with self.runtime.data_engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise ProblemError(UNAVAILABLE, "the vault cannot serve this request now") from exc

    def close(self) -> None:
        self.extract_jobs.close()
        self.held_reads.close()
        self.read_events.close()
        self.authenticator.close()
        self.runtime.close()


class HeldReads:
    """One read connection per thread, kept checked out between requests; each use ends with its transaction rolled back.

    For the reads served on the event loop (embedded databases) and in the
    read pool (``api.offload.in_read_pool``; a database server): a pool
    checkout and check-in (with the pool's reset, and on a server a ping
    after idle) cost as much as the policy, restriction and member reads of
    a request together. A use that fails in the database (a
    ``SQLAlchemyError``, or an error chained from one), or whose rollback
    fails, drops the connection (closed, returned to the pool): the next use
    opens a fresh one, so no state a failure left (an unfinished ``BEGIN``,
    an invalidated driver connection) outlives the request. Any other error
    (a refusal, a missing member) only ends the transaction: a stream of
    requests for unknown ids must not cost a new server connection each.

    On PostgreSQL the connection is in autocommit: under its READ COMMITTED
    every statement takes a snapshot of its own anyway, so a transaction
    around a request's reads would add a ``BEGIN`` and a ``ROLLBACK`` round
    trip and nothing else. (SQLite keeps one snapshot for the use.)
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._autocommit = engine.dialect.name == "postgresql"
        self._local = threading.local()
        self._opened: list[Connection] = []
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._engine.connect()
            if self._autocommit:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        try:
            yield conn
            conn.rollback()  # the read snapshot ends: the next request sees the latest commit
        except BaseException as exc:
            if _from_database(exc) or not self._ended(conn):
                self._local.conn = None
                self._discard(conn)
            raise

    @staticmethod
    def _ended(conn: Connection) -> bool:
        """Roll back what the use left open; False when that failed or the connection is no longer usable."""
        try:
            conn.rollback()
        except SQLAlchemyError:
            return False
        return not (conn.closed or conn.invalidated)

    def _discard(self, conn: Connection) -> None:
        with self._lock:
            if conn in self._opened:
                self._opened.remove(conn)
        with contextlib.suppress(SQLAlchemyError):
            conn.close()

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            with contextlib.suppress(SQLAlchemyError):
                conn.close()


def _from_database(exc: BaseException) -> bool:
    """``exc`` is the database's error, or was raised because of one (an ``AuditStoreError`` chains it)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, SQLAlchemyError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def build(settings: Settings) -> Services:
    runtime = open_runtime(settings)
    try:
        local = _all_local(settings, runtime)
        held_reads = HeldReads(runtime.data_engine)
        gatekeeper = Gatekeeper(AuditJournal())
        feed = DeletionFeed(lambda: runtime.keys.root_key(PSEUDONYM_ROOT))
        consent = ConsentService(runtime.members, NoticeBook(), grace=timedelta(days=settings.consent_grace_days), feed=feed)
        exports = spool_directory(settings.data_dir / "exports")
        consumers = ConsumerRegistry()
        source = ProfileSource(runtime.keys, consent)
        extracts = ExtractRunner(runtime.data_engine, runtime.keys, source, consumers, spool_dir=exports, opener=functools.partial(open_runtime, settings))
        services = Services(
            settings=settings,
            runtime=runtime,
            gatekeeper=gatekeeper,
            members=MemberGate(runtime.members, gatekeeper),
            treatments=TreatmentGate(runtime.treatments, runtime.members, gatekeeper),
            ledger=LedgerGate(runtime.ledger, runtime.members, gatekeeper),
            authenticator=Authenticator(settings, runtime.signing, runtime.data_engine, all_local=local, held=held_reads.connection),
            policies=PolicyStore(settings.policy_dir or DEFAULT_DIRECTORY),
            consent=consent,
            consents=ConsentGate(consent, gatekeeper),
            requests=DataRequestGate(
                DataRequestService(runtime.members, periods=settings.dsr_due_periods),
                runtime.members,
                consent,
                runtime.ledger,
                gatekeeper,
                export_window=timedelta(days=settings.dsr_export_days),
                feed=feed,
            ),
            exports=ExportBuilder(runtime.members, runtime.treatments, runtime.ledger, consent, spool_dir=exports),
            idempotency=Idempotency(runtime.keys.root_key(IDEMPOTENCY_ROOT_KEY)),
            consumers=consumers,
            feed=feed,
            extracts=extracts,
            extract_jobs=ExtractJobs(runtime.data_engine, extracts, ExtractStore(exports / "extracts", runtime.keys), stale=StaleConsentFeed(consent, feed)),
            sequencer=Sequencer(runtime.data_engine),
            read_events=LoopGroupCommit(gatekeeper.journal, runtime.data_engine.connect, write_on),
            reads_on_loop=local,
            held_reads=held_reads,
        )
        with write_transaction(runtime.data_engine) as conn:
            services.policies.active(conn)  # the first process stores policy version 1; reads never write it
    except Exception:
        runtime.close()
        raise
    return services


def _all_local(settings: Settings, runtime: Runtime) -> bool:
    """Both databases embedded and the KEK in the local keyring: a read touches no network (a PKCS#11 token may be a network HSM)."""
    embedded = SqliteReader.of(runtime.data_engine) is not None and SqliteReader.of(runtime.keys_engine) is not None
    return embedded and settings.key_provider is KeyProviderName.local


class ServiceHolder:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._services: Services | None = None
        self._lock = threading.Lock()

    def get(self) -> Services:
        services = self._services
        if services is not None:
            return services
        with self._lock:
            if self._services is None:
                try:
                    self._services = build(self._settings)
                except (VaultError, KeysError, AuditError, SQLAlchemyError, OSError) as exc:
                    log.warning("services.unavailable", error=type(exc).__name__.lower())
                    raise ProblemError(UNAVAILABLE, "the vault cannot serve this request now") from exc
            return self._services

    def peek(self) -> Services | None:
        return self._services

    def close(self) -> None:
        with self._lock:
            if self._services is not None:
                self._services.close()
                self._services = None


class AuditPump:
    """Sequences the journal and signs due checkpoints, in a daemon thread, until stopped."""

    def __init__(self, holder: ServiceHolder, interval: float = PUMP_INTERVAL_SECONDS) -> None:
        self._holder = holder
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-pump", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            services = self._holder.peek()
            if services is None:
                continue
            try:
                self.pump(services)
            except (AuditError, KeysError, VaultError, SQLAlchemyError, OSError) as exc:
                log.warning("audit.pump_failed", error=type(exc).__name__.lower())

    @staticmethod
    def pump(services: Services) -> None:
        services.sequencer.run_until_idle()
        make_checkpointer(services.settings, services.runtime.data_engine, services.runtime.signing).maybe_make()
        finish_erasures(services)
        services.extract_jobs.sweep(datetime.now(UTC))


def finish_erasures(services: Services) -> int:
    """Crypto-shred the members of completed erasure requests whose shredding did not finish (idempotent); how many."""
    with services.runtime.data_engine.connect() as conn:
        unfinished = services.requests.service.unfinished_erasures(conn)
    for member_id in unfinished:
        services.runtime.eraser.erase(member_id)
    return len(unfinished)


__all__ = ["AuditPump", "HeldReads", "ServiceHolder", "Services", "build", "finish_erasures"]
