"""Seeding worker processes: batches claimed from one shared counter, reports sent back on one queue.

Every process (the parent too) claims the next batches from the counter until
none is left. A worker sends a ``Done`` for each batch it committed, or a
``Failed`` naming its error's class only (a message might quote a value); the
parent notices a worker that died within a second. ``stop`` lets the workers
claim nothing more and waits for them. A worker whose parent was killed
ends at once; the group it was writing commits whole or not at all
(``vault.parent_process``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from typing import TypeAlias

from vault.demo._batches import GROUP, Done, Job, seed_groups
from vault.opener import Opener
from vault.parent_process import exit_with_parent


class SeedWorkerError(RuntimeError):
    """A seeding worker process failed or exited; names the error class only."""


@dataclass(frozen=True, slots=True)
class Failed:
    error: str  # the exception's class name only: a message might quote a value


Results: TypeAlias = "multiprocessing.Queue[Done | Failed]"  # what the workers send the parent


def claimed(claims: Synchronized[int], job: Job, processes: int) -> Iterator[list[int]]:
    """The starts of the batches this process claims, ``GROUP`` at a time but one at a time near the end (so the processes finish together)."""
    batches = -(-job.end // job.batch)
    while True:
        with claims.get_lock():
            at = claims.value
            if at >= batches:
                return
            take = GROUP if batches - at > GROUP * processes else 1
            claims.value = at + take
        yield [(at + k) * job.batch for k in range(take)]


def serve(opener: Opener, job: Job, claims: Synchronized[int], results: Results, processes: int) -> None:
    """A worker process: seed claimed batches until none is left, or end at once if the seeding's process dies."""
    exit_with_parent()
    try:
        target = opener()
        try:
            seed_groups(target.data_engine, target.keys, target.members, job, groups=claimed(claims, job, processes), written=results.put)
        finally:
            target.close()
    except BaseException as exc:  # noqa: BLE001 — reported to the parent by class name, which stops the seeding
        results.put(Failed(type(exc).__name__))


def poll(results: Results) -> Done | None:
    """A worker's report if one is waiting."""
    try:
        return _checked(results.get_nowait())
    except queue.Empty:
        return None


def wait(results: Results, helpers: Sequence[BaseProcess]) -> Done:
    """The next worker's report; an error once a worker died, or all exited, with none left to read."""
    while True:
        try:
            return _checked(results.get(timeout=1.0))
        except queue.Empty:
            if all(h.exitcode is not None for h in helpers) or any(h.exitcode not in (None, 0) for h in helpers):
                try:
                    return _checked(results.get(timeout=1.0))  # a worker that failed reports before it exits
                except queue.Empty:
                    raise SeedWorkerError("a seeding worker process exited") from None


def stop(claims: Synchronized[int], batches: int, results: Results, helpers: Sequence[BaseProcess]) -> None:
    """Let the workers claim nothing more and wait for them, taking what they still send (a process exits once its queue is read)."""
    with claims.get_lock():
        claims.value = batches
    for helper in helpers:
        while helper.exitcode is None:
            helper.join(timeout=0.05)
            with contextlib.suppress(queue.Empty):
                while True:
                    results.get_nowait()
    results.close()


def _checked(message: Done | Failed) -> Done:
    if isinstance(message, Failed):
        raise SeedWorkerError(f"a seeding worker failed: {message.error}")
    return message


__all__ = ["Failed", "Results", "SeedWorkerError", "claimed", "poll", "serve", "stop", "wait"]
