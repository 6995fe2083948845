"""Deterministic synthetic members for development, demos and benchmarks.

For a given ``seed`` the same member contents come out (ids are random, as
all ids are). Names, addresses and occupations come from Faker's ``zh_CN``
locale; phone and resident ID numbers are generated valid (E.164 mobile
numbers, GB 11643 checksums that agree with the date of birth). Each member
gets about 3 treatments at one or two clinics and about 10 card-ledger
entries whose balances never go negative (``vault.demo._synthetic``).

Seeding goes in batches, two at a time. A group's member keys are wrapped and
committed together, then its rows go in one data transaction. Every member,
treatment and ledger entry is validated by ``validate_values`` and sealed
with ``vault.codec.RowSealer`` (what ``to_columns`` stores, one cipher call
per row); the blind index comes from ``MemberRepository.index_entries``
(``vault.demo._batches``). The rows are inserted with one ``executemany`` per
table on the driver, each value bound by its column type's own bind
processor: the stored rows are the ones the repositories write for the same
values, and read back through them (``vault.demo._bulk``).
``seed_members_parallel`` spreads the batches over this and spawned processes
(``vault.demo._workers``).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from datetime import datetime
from multiprocessing.process import BaseProcess

from sqlalchemy import Engine

from keys.member_keys import MemberKeys
from vault.demo._batches import GROUP, Done, Job, SeedReport, joined, seed_groups
from vault.demo._synthetic import resident_id
from vault.demo._workers import Results, SeedWorkerError, claimed, poll, serve, stop, wait
from vault.members import MemberRepository
from vault.opener import Opener


def seed_members(
    engine: Engine,
    keys: MemberKeys,
    repo: MemberRepository,
    *,
    count: int,
    seed: int,
    now: datetime,
    batch: int = 500,
    first: int = 0,
    progress: Callable[[int], None] = lambda n: None,
) -> SeedReport:
    """Seed members ``first`` to ``first + count - 1`` in this process.

    Member ``i``'s contents depend only on ``seed``, ``i`` and ``batch`` (each batch
    has its own generator state), so any split of the range over workers gives
    the same members.
    """
    if first % batch:
        raise ValueError("first must be a multiple of batch")
    job = Job(end=first + count, seed=seed, now=now, batch=batch)
    reports: list[SeedReport] = []
    seeded = 0

    def written(done: Done) -> None:
        nonlocal seeded
        reports.append(done.report)
        seeded += done.report.members
        progress(seeded)

    starts = range(first, first + count, batch)
    seed_groups(engine, keys, repo, job, groups=(starts[i : i + GROUP] for i in range(0, len(starts), GROUP)), written=written)
    return joined(reports)


def seed_members_parallel(
    opener: Opener,
    *,
    count: int,
    seed: int,
    now: datetime,
    workers: int,
    batch: int = 500,
    progress: Callable[[int], None] = lambda n: None,
) -> SeedReport:
    """Seed with ``workers`` processes: this one and ``workers - 1`` spawned ones, each opening its own target with ``opener`` (picklable).

    Every process claims the next batches (two at a time, one at a time near
    the end) from one shared counter until none is left, so this process, which
    needs no start-up, seeds from the start and no process idles while batches
    remain. The database serializes their short
    write transactions. Same members as ``seed_members`` for the same ``seed``
    and ``batch``; the report lists them in range order. A worker that fails
    reports its error's class name only (a message might quote a value); one
    that dies is noticed within a second; either stops the seeding.
    """
    starts = list(range(0, count, batch))
    if workers <= 1 or len(starts) < 2:
        target = opener()
        try:
            return seed_members(target.data_engine, target.keys, target.members, count=count, seed=seed, now=now, batch=batch, progress=progress)
        finally:
            target.close()
    context = multiprocessing.get_context("spawn")
    claims = context.Value("q", 0)  # the index in ``starts`` of the next batch nobody has claimed
    results: Results = context.Queue()
    job = Job(end=count, seed=seed, now=now, batch=batch)
    reports: dict[int, SeedReport] = {}
    seeded = 0

    def record(done: Done) -> None:
        nonlocal seeded
        reports[done.first] = done.report
        seeded += done.report.members
        progress(seeded)

    def written(done: Done) -> None:
        record(done)
        while (other := poll(results)) is not None:
            record(other)

    target = opener()  # a vault that cannot be opened fails here, before any process is spawned
    try:
        helpers: list[BaseProcess] = []
        try:
            processes = min(workers, len(starts))
            for i in range(processes - 1):
                helper = context.Process(target=serve, args=(opener, job, claims, results, processes), name=f"seed-worker-{i}", daemon=True)
                helper.start()
                helpers.append(helper)
            seed_groups(target.data_engine, target.keys, target.members, job, groups=claimed(claims, job, processes), written=written)
            while len(reports) < len(starts):
                record(wait(results, helpers))
        finally:
            stop(claims, len(starts), results, helpers)
    finally:
        target.close()
    return joined([reports[first] for first in starts])


__all__ = ["SeedReport", "SeedWorkerError", "resident_id", "seed_members", "seed_members_parallel"]
