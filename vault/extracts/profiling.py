"""The extract's first pass: each eligible member's profile as a spool line and a histogram entry, in one process or several.

``Profiler`` turns a batch of source rows into spool lines (JSON
``[member id, pseudonym, qi, sensitive, plain]``) and histogram entries
(level-0 quasi-identifiers, sensitive values). ``in_workers`` spreads member-id
ranges (``id_ranges``) over this process and spawned worker processes: a
worker opens the vault itself (the runner's ``opener``), reads its range in its
own read snapshot and sends the range's lines and entries back through a pipe
— never through a file: decrypted values reach the disk only through the
runner's encrypted spool. Results are taken in range order, so the spool is
the one a single process writes. What a worker is sent (``Profiling``,
``SourceSpec``) holds names, indices and settings, never a key or a value; a
failing worker reports its error's class name only.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.process
import queue
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection, Engine, bindparam, select

from keys.member_keys import MemberKeys
from vault.extracts import profile as pf
from vault.extracts.pseudonyms import ROOT_KEY, Pseudonymizer
from vault.extracts.source import ProfileSource, SourceRow, SourceSpec
from vault.members import MemberRepository
from vault.purposes import Purpose
from vault.storage.engine import read_snapshot
from vault.storage.schema import members


class WorkerTarget(Protocol):
    """What an extract worker process opens with the runner's ``opener``: the data engine, the key store, the member repository."""

    @property
    def data_engine(self) -> Engine: ...

    @property
    def keys(self) -> MemberKeys: ...

    @property
    def members(self) -> MemberRepository: ...

    def close(self) -> None: ...


_SPOOL_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # one encoder, not one per line (``json.dumps`` with options)
Counted = tuple[tuple[str | None, ...], tuple[str | tuple[str, ...] | None, ...] | None]  # a row's histogram entry: level-0 quasi-identifiers, sensitive values


@dataclass(frozen=True, slots=True)
class Profiling:
    """What the first pass computes for each member: names and indices only, never a key or a value (it is sent to worker processes)."""

    consumer_id: str
    purpose: Purpose
    attributes: tuple[str, ...]
    health: bool  # the consumer may receive health-derived attributes
    epoch: int
    fields: tuple[str, ...]  # the member fields the attributes read
    qi_index: tuple[int, ...]  # released quasi-identifiers, as indices into a profile's ``qi``
    sensitive_index: tuple[int, ...]  # released sensitive attributes, as indices into a profile's ``sensitive``
    now: datetime

    @property
    def want_health(self) -> bool:
        return self.health and bool(self.sensitive_index)


class Profiler:
    """One batch of source rows → their spool lines (``[member id, pseudonym, qi, sensitive, plain]`` JSON) and histogram entries."""

    def __init__(self, job: Profiling, pseudonym_root: bytes) -> None:
        self._job = job
        self._builders = {health: pf.ProfileBuilder(job.attributes, health=health) for health in (False, True)}
        self._pseudonym = Pseudonymizer(pseudonym_root, job.consumer_id, job.epoch)
        self._as_of = job.now.date()

    def profile_range(self, source: ProfileSource, conn: Connection, after: str, until: str | None) -> tuple[bytes, list[Counted]]:
        """The spool lines and histogram entries of the eligible members with ids in ``(after, until]``."""
        job = self._job
        parts: list[bytes] = []
        counted: list[Counted] = []
        for batch in source.batches(conn, job.purpose, fields=job.fields, want_health=job.want_health, now=job.now, after=after, until=until):
            lines, entries = self.profile(batch)
            parts.append(lines)
            counted.extend(entries)
        return b"".join(parts), counted

    def profile(self, batch: Sequence[SourceRow]) -> tuple[bytes, list[Counted]]:
        job, builders, pseudonym, as_of = self._job, self._builders, self._pseudonym, self._as_of
        lines = []
        counted: list[Counted] = []
        for row in batch:
            profile = builders[job.health and row.health].build(row.facts, as_of)
            qi = tuple(profile.qi[i] for i in job.qi_index)
            sensitive = tuple(hashable(profile.sensitive[i]) for i in job.sensitive_index) if job.sensitive_index else None
            counted.append((qi, sensitive))
            lines.append(_SPOOL_JSON([row.member_id, pseudonym(row.member_id), qi, sensitive, profile.plain]))
        return ("".join(line + "\n" for line in lines)).encode("utf-8"), counted


@dataclass(frozen=True, slots=True)
class _Done:
    seq: int
    lines: bytes
    counted: list[Counted]


@dataclass(frozen=True, slots=True)
class _Failed:
    error: str  # the exception's class name only: a message might quote a value


class ExtractWorkerError(RuntimeError):
    """A first-pass worker process failed or exited; names the error class only."""


def id_ranges(engine: Engine, size: int) -> Iterator[tuple[str, str | None]]:
    """Member id ranges ``(after, until]`` of ``size`` members each, in order; the last is open (``until`` None)."""
    m = members.c
    boundary = select(m.member_id).where(m.member_id > bindparam("after")).order_by(m.member_id).offset(size - 1).limit(1)
    after = ""
    while True:
        with engine.connect() as conn:
            until = conn.scalar(boundary, {"after": after})
        yield after, None if until is None else str(until)
        if until is None:
            return
        after = str(until)


def in_workers(
    opener: Callable[[], WorkerTarget],
    workers: int,
    *,
    spec: SourceSpec,
    job: Profiling,
    ranges: Iterator[tuple[str, str | None]],
    here: Callable[[str, str | None], tuple[bytes, list[Counted]]],
    emit: Callable[[bytes, Sequence[Counted]], None],
) -> None:
    """Profile ``ranges`` in this process (``here``) and ``workers - 1`` spawned ones; ``emit`` each range's result in range order.

    Each worker process has up to two ranges out; this process profiles the
    next range itself whenever no result is waiting, so ``workers`` processes
    are busy in all. At most ``4 × workers`` ranges are between being handed
    out and being emitted, which bounds the results held back for an earlier
    range. A worker that fails sends its error's class name; one that dies is
    noticed within a second; either stops the pass.
    """
    context = multiprocessing.get_context("spawn")
    tasks = context.Queue()
    results = context.Queue()
    processes = [context.Process(target=_serve, args=(opener, spec, job, tasks, results), name=f"extract-worker-{i}", daemon=True) for i in range(workers - 1)]
    for process in processes:
        process.start()
    try:
        sent = emitted = out = 0  # ranges handed out, emitted, at the worker processes
        waiting: dict[int, tuple[bytes, list[Counted]]] = {}
        task = next(ranges, None)
        while task is not None or out:
            while task is not None and out < 2 * len(processes) and sent - emitted < 4 * workers:
                tasks.put((sent, *task))
                sent, out, task = sent + 1, out + 1, next(ranges, None)
            message = _take(results, processes, wait=task is None or sent - emitted >= 4 * workers)
            if message is not None:
                waiting[message.seq] = (message.lines, message.counted)
                out -= 1
            elif task is not None:
                waiting[sent] = here(*task)
                sent, task = sent + 1, next(ranges, None)
            while emitted in waiting:
                emit(*waiting.pop(emitted))
                emitted += 1
        for _ in processes:
            tasks.put(None)
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
        tasks.cancel_join_thread()  # ranges a stopped worker never took are dropped, not waited on
        tasks.close()
        results.close()


def _take(results: multiprocessing.Queue[_Done | _Failed], processes: Sequence[multiprocessing.process.BaseProcess], *, wait: bool) -> _Done | None:
    """A worker's result: the next one waiting, else ``None`` (or, with ``wait``, the next to come)."""
    while True:
        try:
            message = results.get(timeout=1.0) if wait else results.get_nowait()
            break
        except queue.Empty:
            if any(not p.is_alive() for p in processes):
                try:
                    message = results.get(timeout=1.0)  # a worker that failed reports before it exits
                except queue.Empty:
                    raise ExtractWorkerError("an extract worker process exited") from None
                break
            if not wait:
                return None
    if isinstance(message, _Failed):
        raise ExtractWorkerError(f"an extract worker failed: {message.error}")
    return message


def _serve(
    opener: Callable[[], WorkerTarget],
    spec: SourceSpec,
    job: Profiling,
    tasks: multiprocessing.Queue[tuple[int, str, str | None] | None],
    results: multiprocessing.Queue[_Done | _Failed],
) -> None:
    """A worker process: profile each range it is given, in its own read snapshot, until told to stop (``None``)."""
    try:
        target = opener()
    except BaseException as exc:  # noqa: BLE001 — reported to the parent by class name, which stops the pass
        results.put(_Failed(type(exc).__name__))
        return
    try:
        source = ProfileSource.reopen(spec, target.keys, target.members)
        profiler = Profiler(job, target.keys.root_key(ROOT_KEY))
        while (task := tasks.get()) is not None:
            seq, after, until = task
            with read_snapshot(target.data_engine) as conn:
                results.put(_Done(seq, *profiler.profile_range(source, conn, after, until)))
    except BaseException as exc:  # noqa: BLE001 — reported to the parent by class name, which stops the pass
        results.put(_Failed(type(exc).__name__))
    finally:
        target.close()


def hashable(value: object) -> str | tuple[str, ...] | None:
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    return None if value is None else str(value)


__all__ = ["Counted", "ExtractWorkerError", "Profiler", "Profiling", "WorkerTarget", "hashable", "id_ranges", "in_workers"]
