"""A process of the concurrency test: several threads, each appending events in its own transactions and sequencing."""

from __future__ import annotations

import sys
import threading
import traceback

from audit.sequencer import Sequencer
from audit.store import AuditJournal
from tests.audit.factories import sample_event
from vault.storage.engine import make_engine


def run(url: str, process: int, threads: int, per_thread: int) -> None:
    """Entry point of a spawned process; exits non-zero if any thread failed."""
    engine = make_engine(url, pool_size=threads + 1)
    sequencer = Sequencer(engine)
    journal = AuditJournal()
    failures: list[str] = []

    def work(thread: int) -> None:
        try:
            for i in range(per_thread):
                n = (process * threads + thread) * per_thread + i
                with engine.begin() as conn:
                    journal.append(conn, sample_event(n, request_id=f"req-p{process}-t{thread}-{i}"))
                sequencer.run_once()
        except Exception:  # noqa: BLE001  # reported to the parent through the exit status
            failures.append(traceback.format_exc())

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    engine.dispose()
    if failures:
        sys.stderr.write("\n".join(failures))
        sys.exit(1)
