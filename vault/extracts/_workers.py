"""Worker processes of one extract: both passes spread over this process and spawned ones, results taken in task order.

``WorkerPool`` starts ``count - 1`` spawned processes; each opens the vault
itself (the runner's ``opener``: its own engine and key store) and serves, on
its own task queue, until told to stop:

* a member-id range ``(after, until]`` of the first pass: the range's spool
  rows and histogram entries (``Profiled``), read in its own read snapshot;
* once ``release_with`` has sent every worker the second pass's ``Releasing``,
  a chunk of the spool: the chunk's released rows (``ReleasedChunk``).

``ordered`` hands tasks out (at most two at a worker, at most ``4 × count``
between being handed out and being emitted, which bounds the results held
back for an earlier task), runs a task in this process whenever no result is
waiting, and emits results in task order, so what is emitted is what one
process computes. A task runs with the cyclic garbage collector paused
(``vault.collector``: its objects are freed by reference counting), in this
process too, one task at a time, so a server's other threads see the
collector between tasks. Everything crosses through pipes, never a file:
decrypted values reach the disk only through the runner's encrypted spool. A
worker that fails sends its error's class name only (a message might quote a
value); one that dies is noticed within a second; either stops the extract.
A worker whose parent dies (killed, with no chance to stop it) ends at once,
idle or busy (``vault.parent_process``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.process
import queue
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Self, TypeVar

from vault.collector import cyclic_gc_paused
from vault.extracts.profiling import Profiled, Profiler, Profiling
from vault.extracts.pseudonyms import ROOT_KEY
from vault.extracts.releasing import ReleasedChunk, Releaser, Releasing
from vault.extracts.source import ProfileSource, SourceSpec
from vault.opener import Opener
from vault.parent_process import exit_with_parent
from vault.storage.engine import read_snapshot


class ExtractWorkerError(RuntimeError):
    """An extract worker process failed or exited; names the error class only."""


@dataclass(frozen=True, slots=True)
class Range:
    """First pass: the members with ids in ``(after, until]`` (``until`` None: to the end)."""

    after: str
    until: str | None


@dataclass(frozen=True, slots=True)
class Chunk:
    """Second pass: one chunk of the spool."""

    data: bytes


Task = Range | Chunk
Result = Profiled | ReleasedChunk
R = TypeVar("R", Profiled, ReleasedChunk)


@dataclass(frozen=True, slots=True)
class _Done:
    worker: int
    seq: int
    result: Result


@dataclass(frozen=True, slots=True)
class _Failed:
    error: str  # the exception's class name only: a message might quote a value


class WorkerPool:
    """``count - 1`` spawned worker processes for one extract, with this process as the ``count``-th."""

    def __init__(self, opener: Opener, count: int, *, spec: SourceSpec, job: Profiling) -> None:
        context = multiprocessing.get_context("spawn")
        self._count = count
        self._stopped = False
        self._tasks = [context.Queue() for _ in range(count - 1)]
        self._results = context.Queue()
        self._processes = [
            context.Process(
                target=_serve,
                args=(opener, spec, job),
                kwargs={"worker": i, "tasks": tasks, "results": self._results},
                name=f"extract-worker-{i}",
                daemon=True,
            )
            for i, tasks in enumerate(self._tasks)
        ]

    def __enter__(self) -> Self:
        with _main_left_alone():
            for process in self._processes:
                process.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        try:
            if kind is None:
                self.stop()
                for process in self._processes:
                    process.join()
        finally:
            for process in self._processes:
                if process.is_alive():
                    process.terminate()
                process.join()
            for tasks in self._tasks:
                tasks.cancel_join_thread()  # tasks a stopped worker never took are dropped, not waited on
                tasks.close()
            self._results.close()

    def stop(self) -> None:
        """Tell the workers to finish (they close the vault and exit while this process goes on; the pool's exit waits for them)."""
        if not self._stopped:
            self._stopped = True
            for tasks in self._tasks:
                tasks.put(None)

    def release_with(self, job: Releasing) -> None:
        """Send every worker the second pass (before its first chunk: each worker's queue is in order)."""
        for tasks in self._tasks:
            tasks.put(job)

    def ordered(self, tasks: Iterator[Task], here: Callable[[Task], R], emit: Callable[[R], None], kind: type[R]) -> None:
        """Run ``tasks`` here (``here``) and at the workers; ``emit`` each result in task order."""
        window = 4 * self._count
        outstanding = [0] * len(self._processes)
        sent = emitted = 0
        waiting: dict[int, R] = {}
        task = next(tasks, None)
        while task is not None or any(outstanding):
            while task is not None and sent - emitted < window and min(outstanding) < 2:
                worker = outstanding.index(min(outstanding))
                self._tasks[worker].put((sent, task))
                outstanding[worker] += 1
                sent, task = sent + 1, next(tasks, None)
            done = self._take(wait=task is None or sent - emitted >= window)
            if done is not None:
                if not isinstance(done.result, kind):
                    raise ExtractWorkerError("an extract worker answered out of turn")
                waiting[done.seq] = done.result
                outstanding[done.worker] -= 1
            elif task is not None:
                waiting[sent] = here(task)
                sent, task = sent + 1, next(tasks, None)
            while emitted in waiting:
                emit(waiting.pop(emitted))
                emitted += 1

    def _take(self, *, wait: bool) -> _Done | None:
        """A worker's result: the next one waiting, else ``None`` (or, with ``wait``, the next to come)."""
        while True:
            try:
                message = self._results.get(timeout=1.0) if wait else self._results.get_nowait()
                break
            except queue.Empty:
                if any(not p.is_alive() for p in self._processes):
                    try:
                        message = self._results.get(timeout=1.0)  # a worker that failed reports before it exits
                    except queue.Empty:
                        raise ExtractWorkerError("an extract worker process exited") from None
                    break
                if not wait:
                    return None
        if isinstance(message, _Failed):
            raise ExtractWorkerError(f"an extract worker failed: {message.error}")
        if not isinstance(message, _Done):
            raise ExtractWorkerError("an extract worker answered out of turn")
        return message


@contextlib.contextmanager
def _main_left_alone() -> Iterator[None]:
    """While workers start, ``__main__`` is an empty module: a spawned worker does not run this process's main script again.

    ``spawn`` re-imports the parent's main module in each child, for targets
    defined there. A worker's target and arguments live in importable modules
    (this one, ``Profiling``, the opener), so it needs none of it, and
    ``vaultctl``'s main script imports the whole command line: about 0.5 s of
    CPU and 60 MB a worker.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _serve(
    opener: Opener,
    spec: SourceSpec,
    job: Profiling,
    *,
    worker: int,
    tasks: multiprocessing.Queue[tuple[int, Task] | Releasing | None],
    results: multiprocessing.Queue[_Done | _Failed],
) -> None:
    """A worker process: serve its queue until told to stop (``None``), or end at once if the extract's process dies."""
    exit_with_parent()  # before the vault is opened: a worker never holds it without a parent to serve
    try:
        target = opener()
    except BaseException as exc:  # noqa: BLE001 — reported to the parent by class name, which stops the extract
        results.put(_Failed(type(exc).__name__))
        return
    try:
        source = ProfileSource.reopen(spec, target.keys, target.members)
        root = target.keys.root_key(ROOT_KEY)
        profiler = Profiler(job, root)
        releaser: Releaser | None = None
        while (message := tasks.get()) is not None:
            if isinstance(message, Releasing):
                releaser = Releaser(message, root, target.data_engine)
                continue
            seq, task = message
            if isinstance(task, Range):
                with cyclic_gc_paused(), read_snapshot(target.data_engine) as conn:
                    results.put(_Done(worker, seq, profiler.profile_range(source, conn, task.after, task.until)))
            elif releaser is not None:
                with cyclic_gc_paused():
                    results.put(_Done(worker, seq, releaser.release(task.data)))
            else:
                raise ExtractWorkerError("a chunk before the second pass was set up")
    except BaseException as exc:  # noqa: BLE001 — reported to the parent by class name, which stops the extract
        results.put(_Failed(type(exc).__name__))
    finally:
        target.close()


__all__ = ["Chunk", "ExtractWorkerError", "Range", "Task", "WorkerPool"]
