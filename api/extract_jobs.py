"""Extract jobs started through the API: run in a background thread of the process that accepted them.

``POST /v1/extracts`` records the job (``ExtractRunner.begin``) and its
decision event in the request's transaction, then hands it to
``ExtractJobs.submit``: one job at a time per process, in a daemon thread, so
a long extract never holds a request thread. The rows go into the sealed
store (``vault.extracts.store``) and stay there until ``expires_at``.

While a job waits or runs, its heartbeat is recorded
(here while queued, by the runner while it runs). ``sweep`` (called from each process's audit pump, at most every
``SWEEP_EVERY``) marks ``failed``/``interrupted`` the running jobs that have
been silent for ``records.STALE_AFTER`` — their process died — and purges their
partial files, and purges the kept extracts past their time. With a
``StaleConsentFeed`` it then feeds the stale-consent moments that have passed
(``vault.extracts.stale``: each once, whichever process gets there first).
Every step is idempotent, so several processes sweeping the same database agree.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from keys.errors import KeysError
from vault.extracts import records
from vault.extracts.runner import ExtractAudit, ExtractRequest, ExtractRunner, ExtractSigning
from vault.extracts.stale import StaleConsentFeed
from vault.extracts.store import ExtractStore
from vault.storage.engine import write_transaction

log = structlog.get_logger("api.extract_jobs")
SWEEP_EVERY = timedelta(seconds=30)


class ExtractJobs:
    def __init__(
        self,
        engine: Engine,
        runner: ExtractRunner,
        store: ExtractStore,
        *,
        heartbeat: timedelta = records.HEARTBEAT,
        stale: StaleConsentFeed | None = None,
    ) -> None:
        self._engine = engine
        self._stale = stale
        self._heartbeat = heartbeat
        self._runner = runner
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract")
        self._last_sweep: datetime | None = None
        self._sweep_lock = threading.Lock()
        # Jobs waiting for the worker thread get heartbeats too, so no sweep takes a queued job for a dead one.
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._stop = threading.Event()
        self._beater: threading.Thread | None = None

    def submit(self, request: ExtractRequest, audit: ExtractAudit, signing: ExtractSigning) -> Future[None]:
        """Run a job ``begin`` recorded (its transaction committed)."""
        with self._pending_lock:
            self._pending.add(request.extract_id)
            if self._beater is None:
                self._beater = threading.Thread(target=self._beat_pending, name="extract-queue-heartbeat", daemon=True)
                self._beater.start()
        return self._pool.submit(self._run, request, audit, signing)

    def _beat_pending(self) -> None:
        while not self._stop.wait(self._heartbeat.total_seconds()):
            with self._pending_lock:
                pending = set(self._pending)
            try:
                with write_transaction(self._engine) as conn:
                    records.beat(conn, pending, datetime.now(UTC))
            except SQLAlchemyError as exc:
                log.warning("extract.heartbeat_failed", error=type(exc).__name__.lower())

    def _run(self, request: ExtractRequest, audit: ExtractAudit, signing: ExtractSigning) -> None:
        extract_id = request.extract_id
        status = "failed"
        try:
            with self.store.create(extract_id) as sink:
                outcome = self._runner.run(request, sink, audit=audit, signing=signing, now=datetime.now(UTC), begun=True)
            status = outcome.status
        except Exception as exc:  # noqa: BLE001 - the job's boundary: nothing above it would see the error (a worker's included)
            # The runner marked the job failed (or could not reach the database: the sweep will); nothing is served.
            log.warning("extract.failed", extract_id=extract_id, error=type(exc).__name__.lower())
        finally:
            with self._pending_lock:
                self._pending.discard(extract_id)
            if status != "done":
                self._discard(extract_id)
        log.info("extract.finished", extract_id=extract_id, outcome=status)

    def _discard(self, extract_id: str) -> None:
        try:
            self.store.purge(extract_id)
            with write_transaction(self._engine) as conn:
                records.mark_purged(conn, extract_id, datetime.now(UTC))
        except (KeysError, SQLAlchemyError, OSError) as exc:
            log.warning("extract.discard_failed", extract_id=extract_id, error=type(exc).__name__.lower())

    def sweep(self, now: datetime, *, force: bool = False) -> tuple[int, int]:
        """Interrupt silent jobs, purge kept extracts past their time, feed passed stale-consent moments (at most every ``SWEEP_EVERY``).

        Returns how many jobs were interrupted and how many extracts purged; the stale moments are logged with their counts.
        """
        with self._sweep_lock:
            if not force and self._last_sweep is not None and now - self._last_sweep < SWEEP_EVERY:
                return 0, 0
            self._last_sweep = now
        with write_transaction(self._engine) as conn:
            stale = records.interrupt_stale(conn, silent_since=now - records.STALE_AFTER, now=now)
            due = records.due_for_purge(conn, now)
        for extract_id in [*stale, *due]:
            self.store.purge(extract_id)  # the key first, then the file: unreadable from here on
            with write_transaction(self._engine) as conn:
                records.mark_purged(conn, extract_id, now)
        for extract_id in stale:
            log.warning("extract.interrupted", extract_id=extract_id)
        if self._stale is not None:
            for swept in self._stale.sweep(self._engine, now):
                # Keys the log's allowlist knows: the purpose (a name), entries fed, held members judged.
                log.info("extract.stale_fed", scope=swept.moment.purpose.value, count=swept.fed, total=swept.judged)
        return len(stale), len(due)

    def close(self) -> None:
        """Stop taking jobs: the running one finishes, queued ones are marked failed (``interrupted``) at once."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._pending_lock:
            cancelled, self._pending = set(self._pending), set()
        if cancelled:
            now = datetime.now(UTC)
            with write_transaction(self._engine) as conn:
                records.interrupt(conn, cancelled, now)
            for extract_id in sorted(cancelled):
                self._discard(extract_id)


__all__ = ["SWEEP_EVERY", "ExtractJobs"]
