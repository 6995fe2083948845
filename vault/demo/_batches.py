"""One process's seeding: batches made, their keys created, their rows validated, sealed and written.

Batches go in groups. A group's member keys (data keys and retention keys of
every expiry year) are created and committed in one key-store transaction, then
its rows go in one data transaction: fewer commits, each with its fsync. Every
member, treatment and ledger entry is validated by ``validate_values`` and
sealed with ``RowSealer``; the blind index comes from
``MemberRepository.index_entries``. A group's data commit runs on a helper
thread while the next group is made (the driver releases the GIL while it
writes and syncs), and the next group's transaction begins only once it is done.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from faker import Faker
from sqlalchemy import Engine

from keys.field_cipher import FieldCipher
from keys.member_keys import DATA_SCOPE, MemberKeys, retention_scope
from vault import data_map as dm
from vault.collector import cyclic_gc_paused
from vault.demo._bulk import LEDGER, MEMBERS, TREATMENTS, BatchRows, batch_rows, bulk_loading
from vault.demo._synthetic import Plan, Values, batch_values
from vault.members import MemberRepository
from vault.members.clinics import LinkVia
from vault.storage.engine import SQLITE_IMMEDIATE
from vault.treatments import retention_year
from vault.validation import validate_values

GROUP = 2  # batches whose keys and rows are written together
_ID_BYTES = 16  # as vault.ids.new_id


@dataclass(frozen=True, slots=True)
class SeedReport:
    members: int
    treatments: int
    ledger_entries: int
    member_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Job:
    """Members up to ``end`` (exclusive) of one ``seed``, in batches of ``batch`` that start at multiples of it."""

    end: int
    seed: int
    now: datetime
    batch: int


@dataclass(frozen=True, slots=True)
class Done:
    """A batch whose rows are committed: the one beginning at ``first``."""

    first: int
    report: SeedReport


def seed_groups(
    engine: Engine, keys: MemberKeys, repo: MemberRepository, job: Job, *, groups: Iterable[Sequence[int]], written: Callable[[Done], None]
) -> None:
    """Seed the batches beginning at the starts in ``groups``; ``written`` hears of each batch once its rows are committed (before a failure too)."""
    fake = Faker("zh_CN")
    with cyclic_gc_paused(), engine.connect() as conn, bulk_loading(conn), ThreadPoolExecutor(1, thread_name_prefix="seed-commit") as committer:
        conn.execution_options(**{SQLITE_IMMEDIATE: True})  # each group's transaction, as write_transaction opens it
        committing: tuple[Future[None], list[Done]] | None = None
        try:
            for group in groups:
                made = [batch_values(fake, seed=job.seed, batch=job.batch, start=start, end=job.end, now=job.now) for start in group]
                rows = batch_rows(engine.dialect, job.now)
                ids = _build(keys, repo, rows, [person for people, _ in made for person in people], [plan for _, plans in made for plan in plans])
                if committing is not None:
                    done, committing = committing, None
                    _report(*done, written)
                transaction = conn.begin()
                try:
                    rows.insert(conn)
                except BaseException:
                    transaction.rollback()
                    raise
                committing = committer.submit(transaction.commit), _dones(group, made, ids)
        finally:
            if committing is not None:  # the last group, or the one committed before a failure: reported once committed
                _report(*committing, written)


def joined(reports: Sequence[SeedReport]) -> SeedReport:
    return SeedReport(
        sum(r.members for r in reports),
        sum(r.treatments for r in reports),
        sum(r.ledger_entries for r in reports),
        tuple(mid for r in reports for mid in r.member_ids),
    )


def _report(commit: Future[None], dones: list[Done], written: Callable[[Done], None]) -> None:
    commit.result()
    for done in dones:
        written(done)


def _dones(group: Sequence[int], made: Sequence[tuple[list[Values], list[Plan]]], ids: Sequence[str]) -> list[Done]:
    out, at = [], 0
    for start, (people, plans) in zip(group, made, strict=True):
        mine, at = tuple(ids[at : at + len(people)]), at + len(people)
        out.append(Done(start, SeedReport(len(mine), sum(len(ts) for ts, _ in plans), sum(len(es) for _, es in plans), mine)))
    return out


def _build(keys: MemberKeys, repo: MemberRepository, rows: BatchRows, people: Sequence[Values], plans: Sequence[Plan]) -> list[str]:
    """New members with ``people``'s values and ``plans``' treatments and ledgers: keys created and committed, rows validated and sealed."""
    ids = _new_ids(len(people) + sum(len(treats) + len(entries) for treats, entries in plans))
    member_ids = [next(ids) for _ in people]
    years = [[retention_year(_as_datetime(t["performed_at"])) for t in treats] for treats, _ in plans]
    ciphers, retention = _member_keys(keys, member_ids, years)
    for mid, person, (treats, entries), treat_years in zip(member_ids, people, plans, years, strict=True):
        clean = validate_values(dm.Table.members, person, partial=False)
        cipher = ciphers[mid]
        rows.members.add([mid, cipher.key_version, *MEMBERS.row(cipher, mid, clean)])
        for e in repo.index_entries(mid, clean):
            rows.index.add([e["field"], e["digest"], mid])
        links = {str(clean["home_clinic_id"]): LinkVia.home.value}
        for t, year in zip(treats, treat_years, strict=True):
            tid = next(ids)
            treat = validate_values(dm.Table.treatments, t, partial=False)
            rows.treatments.add([tid, mid, year, *TREATMENTS.row(retention[(mid, year)], tid, treat)])
            links.setdefault(str(treat["clinic_id"]), LinkVia.treatment.value)
        for clinic, via in links.items():
            rows.links.add([mid, clinic, via])
        for seq, e in enumerate(entries, start=1):
            eid = next(ids)
            entry = validate_values(dm.Table.ledger_entries, e, partial=False)
            rows.ledger.add([eid, mid, seq, cipher.key_version, *LEDGER.row(cipher, eid, entry)])
    return member_ids


def _new_ids(n: int) -> Iterator[str]:
    """``n`` ids of ``vault.ids.new_id``'s form (16 bytes from ``secrets``, in hex), drawn from the system at once: one call, not one a row."""
    drawn = secrets.token_hex(_ID_BYTES * n)
    return (drawn[at : at + 2 * _ID_BYTES] for at in range(0, len(drawn), 2 * _ID_BYTES))


def _member_keys(
    keys: MemberKeys, member_ids: Sequence[str], years: Sequence[Sequence[int]]
) -> tuple[dict[str, FieldCipher], dict[tuple[str, int], FieldCipher]]:
    """The members' new data keys, and their retention keys by (member, expiry year) for the years of their treatments: one key-store transaction."""
    by_year: dict[int, set[str]] = {}
    for mid, treat_years in zip(member_ids, years, strict=True):
        for year in treat_years:
            by_year.setdefault(year, set()).add(mid)
    made = keys.create_scopes({DATA_SCOPE: member_ids, **{retention_scope(year): sorted(owners) for year, owners in by_year.items()}})
    retention = {(owner, year): cipher for year in by_year for owner, cipher in made[retention_scope(year)].items()}
    return made[DATA_SCOPE], retention


def _as_datetime(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError("performed_at is a datetime")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


__all__ = ["GROUP", "Done", "Job", "SeedReport", "joined", "seed_groups"]
