"""Deterministic synthetic members for development, demos and benchmarks.

For a given ``seed`` the same member contents come out (ids are random, as
all ids are). Names, addresses and occupations come from Faker's ``zh_CN``
locale; phone and resident ID numbers are generated valid (E.164 mobile
numbers, GB 11643 checksums that agree with the date of birth). Each member
gets about 3 treatments at one or two clinics and about 10 card-ledger
entries whose balances never go negative.

Seeding goes in batches. Member keys for a batch are wrapped and committed
together, then the batch's rows go in one data transaction. Every member,
treatment and ledger entry is validated by ``validate_values`` and sealed
with ``vault.codec.RowSealer`` (what ``to_columns`` stores, one cipher call
per row); the blind index comes from ``MemberRepository.index_entries``. The
rows are inserted with one ``executemany`` per table on the driver, each
value bound by its column type's own bind processor: the stored rows are the
ones the repositories write for the same values, and read back through them.
``seed_members_parallel`` spreads the batches over this and spawned processes.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import queue
import random
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized

from faker import Faker
from sqlalchemy import Column, Connection, Engine, Table
from sqlalchemy.engine import Dialect

from keys.field_cipher import FieldCipher
from keys.member_keys import MemberKeys, retention_scope
from vault import data_map as dm
from vault import value_sets as vs
from vault.codec import RowSealer
from vault.demo import catalog
from vault.ids import new_id
from vault.members import MemberRepository
from vault.members.clinics import LinkVia
from vault.opener import Opener
from vault.storage.engine import SQLITE_IMMEDIATE
from vault.storage.schema import blind_index, ledger_entries, member_clinics, members, treatments
from vault.treatments import retention_year
from vault.validation import validate_values

_MEMBERS = RowSealer(dm.fields_of(dm.Table.members))
_TREATMENTS = RowSealer(dm.fields_of(dm.Table.treatments))
_LEDGER = RowSealer(dm.fields_of(dm.Table.ledger_entries))
SEED_PAGE_CACHE_KIB = 65_536  # SQLite's page cache while seeding (the default is 2 MiB): a third less CPU per insert at 10,000 members
_GROUP = 2  # batches whose keys and rows are written together
SEED_WAL_CHECKPOINT_PAGES = 16_000  # a WAL checkpoint every 64 MiB while seeding (the default is 1,000 pages)
_WEIGHTS_11 = [pow(2, 17 - i, 11) for i in range(17)]


@dataclass(frozen=True, slots=True)
class SeedReport:
    members: int
    treatments: int
    ledger_entries: int
    member_ids: tuple[str, ...]


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
    job = _Job(end=first + count, seed=seed, now=now, batch=batch)
    reports: list[SeedReport] = []
    seeded = 0

    def written(done: _Done) -> None:
        nonlocal seeded
        reports.append(done.report)
        seeded += done.report.members
        progress(seeded)

    starts = range(first, first + count, batch)
    _seed(engine, keys, repo, job, groups=(starts[i : i + _GROUP] for i in range(0, len(starts), _GROUP)), written=written)
    return _joined(reports)


@dataclass(frozen=True, slots=True)
class _Job:
    """Members up to ``end`` (exclusive) of one ``seed``, in batches of ``batch`` that start at multiples of it."""

    end: int
    seed: int
    now: datetime
    batch: int


@dataclass(frozen=True, slots=True)
class _Done:
    first: int
    report: SeedReport


def _seed(engine: Engine, keys: MemberKeys, repo: MemberRepository, job: _Job, *, groups: Iterable[Sequence[int]], written: Callable[[_Done], None]) -> None:
    """Seed the batches beginning at the starts in ``groups``; ``written`` hears of each batch once its rows are committed.

    A group's member keys are created together and its rows go in one data
    transaction: fewer commits, each with its fsync, than one a batch.
    """
    fake = Faker("zh_CN")
    with engine.connect() as conn, _bulk_loading(conn):
        conn.execution_options(**{SQLITE_IMMEDIATE: True})  # each group's transaction, as write_transaction opens it
        for group in groups:
            made = [_generated(fake, job, start) for start in group]
            rows = _batch_rows(engine.dialect, job.now)
            ids = _build(keys, repo, rows, [person for people, _ in made for person in people], [plan for _, plans in made for plan in plans])
            with conn.begin():
                rows.insert(conn)
            for start, (people, plans) in zip(group, made, strict=True):
                mine, ids = ids[: len(people)], ids[len(people) :]
                treated, entries = sum(len(ts) for ts, _ in plans), sum(len(es) for _, es in plans)
                written(_Done(start, SeedReport(len(mine), treated, entries, tuple(mine))))


def _generated(fake: Faker, job: _Job, start: int) -> tuple[list[dict[str, object]], list[tuple[list[dict[str, object]], list[dict[str, object]]]]]:
    """The values of the batch beginning at ``start``, from its own generator state: its members, then their treatments and ledgers."""
    state = job.seed * 1_000_003 + start // job.batch
    rng = random.Random(state)
    fake.seed_instance(state)
    people = [_member_values(fake, rng, job.now, i) for i in range(start, min(start + job.batch, job.end))]
    return people, [(_treatments(rng, p, job.now), _ledger(rng, job.now)) for p in people]


def _joined(reports: Sequence[SeedReport]) -> SeedReport:
    return SeedReport(
        sum(r.members for r in reports),
        sum(r.treatments for r in reports),
        sum(r.ledger_entries for r in reports),
        tuple(mid for r in reports for mid in r.member_ids),
    )


def _insert(conn: Connection, rows: _BatchRows) -> None:
    with conn.begin():
        rows.insert(conn)


def _build(
    keys: MemberKeys,
    repo: MemberRepository,
    rows: _BatchRows,
    people: Sequence[dict[str, object]],
    plans: Sequence[tuple[list[dict[str, object]], list[dict[str, object]]]],
) -> list[str]:
    """New members with ``people``'s values and ``plans``' treatments and ledgers: keys created and committed, rows validated and sealed."""
    member_ids = [new_id() for _ in people]
    ciphers = keys.create(member_ids)
    retention = _retention_ciphers(keys, [(mid, t) for mid, (ts, _) in zip(member_ids, plans, strict=True) for t in ts])
    for mid, person, (treats, entries) in zip(member_ids, people, plans, strict=True):
        clean = validate_values(dm.Table.members, person, partial=False)
        cipher = ciphers[mid]
        rows.members.add((mid, cipher.key_version, *_MEMBERS.row(cipher, mid, clean)))
        for e in repo.index_entries(mid, clean):
            rows.index.add((e["field"], e["digest"], mid))
        links = {str(clean["home_clinic_id"]): LinkVia.home.value}
        for t in treats:
            tid, year = new_id(), retention_year(_as_datetime(t["performed_at"]))
            treat = validate_values(dm.Table.treatments, t, partial=False)
            rows.treatments.add((tid, mid, year, *_TREATMENTS.row(retention[(mid, year)], tid, treat)))
            links.setdefault(str(treat["clinic_id"]), LinkVia.treatment.value)
        for clinic, via in links.items():
            rows.links.add((mid, clinic, via))
        for seq, e in enumerate(entries, start=1):
            eid = new_id()
            entry = validate_values(dm.Table.ledger_entries, e, partial=False)
            rows.ledger.add((eid, mid, seq, cipher.key_version, *_LEDGER.row(cipher, eid, entry)))
    return member_ids


@contextlib.contextmanager
def _bulk_loading(conn: Connection) -> Iterator[None]:
    """On SQLite, while seeding: a larger page cache on this connection, and a WAL checkpoint every 64 MiB, not every 4 MiB.

    Random ids put each batch's rows all over every index, so a batch touches
    many pages, and pages touched again by later batches are copied back to the
    database once per checkpoint. Neither setting changes what a commit makes
    durable (``synchronous`` stays as the engine set it); both are restored.
    """
    raw = conn.connection.driver_connection if conn.dialect.name == "sqlite" else None
    if not isinstance(raw, sqlite3.Connection):
        yield
        return
    settings = {"cache_size": -SEED_PAGE_CACHE_KIB, "wal_autocheckpoint": SEED_WAL_CHECKPOINT_PAGES}
    previous = {name: int(raw.execute(f"PRAGMA {name}").fetchone()[0]) for name in settings}
    try:
        for name, value in settings.items():
            raw.execute(f"PRAGMA {name} = {int(value)}")
        yield
    finally:
        for name, value in previous.items():
            raw.execute(f"PRAGMA {name} = {value}")


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
    results: multiprocessing.Queue[_Done | _Failed] = context.Queue()
    job = _Job(end=count, seed=seed, now=now, batch=batch)
    reports: dict[int, SeedReport] = {}
    seeded = 0

    def record(done: _Done) -> None:
        nonlocal seeded
        reports[done.first] = done.report
        seeded += done.report.members
        progress(seeded)

    def written(done: _Done) -> None:
        record(done)
        while (other := _poll(results)) is not None:
            record(other)

    target = opener()  # a vault that cannot be opened fails here, before any process is spawned
    try:
        helpers: list[BaseProcess] = []
        try:
            processes = min(workers, len(starts))
            for i in range(processes - 1):
                helper = context.Process(target=_serve, args=(opener, job, claims, results, processes), name=f"seed-worker-{i}", daemon=True)
                helper.start()
                helpers.append(helper)
            _seed(target.data_engine, target.keys, target.members, job, groups=_claimed(claims, job, processes), written=written)
            while len(reports) < len(starts):
                record(_wait(results, helpers))
        finally:
            _stop(claims, len(starts), results, helpers)
    finally:
        target.close()
    return _joined([reports[first] for first in starts])


class SeedWorkerError(RuntimeError):
    """A seeding worker process failed or exited; names the error class only."""


@dataclass(frozen=True, slots=True)
class _Failed:
    error: str  # the exception's class name only: a message might quote a value


def _claimed(claims: Synchronized[int], job: _Job, processes: int) -> Iterator[list[int]]:
    """The starts of the batches this process claims, ``_GROUP`` at a time but one at a time near the end (so the processes finish together)."""
    batches = -(-job.end // job.batch)
    while True:
        with claims.get_lock():
            at = claims.value
            if at >= batches:
                return
            take = _GROUP if batches - at > _GROUP * processes else 1
            claims.value = at + take
        yield [(at + k) * job.batch for k in range(take)]


def _serve(opener: Opener, job: _Job, claims: Synchronized[int], results: multiprocessing.Queue[_Done | _Failed], processes: int) -> None:
    """A worker process: seed claimed batches until none is left."""
    try:
        target = opener()
        try:
            _seed(target.data_engine, target.keys, target.members, job, groups=_claimed(claims, job, processes), written=results.put)
        finally:
            target.close()
    except BaseException as exc:  # noqa: BLE001 — reported to the parent by class name, which stops the seeding
        results.put(_Failed(type(exc).__name__))


def _poll(results: multiprocessing.Queue[_Done | _Failed]) -> _Done | None:
    """A worker's report if one is waiting."""
    try:
        return _checked(results.get_nowait())
    except queue.Empty:
        return None


def _wait(results: multiprocessing.Queue[_Done | _Failed], helpers: Sequence[BaseProcess]) -> _Done:
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


def _checked(message: _Done | _Failed) -> _Done:
    if isinstance(message, _Failed):
        raise SeedWorkerError(f"a seeding worker failed: {message.error}")
    return message


def _stop(claims: Synchronized[int], batches: int, results: multiprocessing.Queue[_Done | _Failed], helpers: Sequence[BaseProcess]) -> None:
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


class _BulkInsert:
    """Rows of one table for an ``executemany`` on the driver, in its positional parameter style.

    Each value is bound by its column type's own bind processor (on SQLite a
    ``UtcDateTime`` becomes SQLAlchemy's text form of the UTC time, a ``Date``
    its ISO date), so the stored values are what an ORM or Core insert stores;
    what is skipped is SQLAlchemy's per-row parameter handling. The ``constant``
    columns have one value for every row, bound once.
    """

    def __init__(self, dialect: Dialect, table: Table, columns: Sequence[str], constant: Mapping[str, object]) -> None:
        names = [*columns, *constant]
        quote = dialect.identifier_preparer.quote
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        columns_sql, marks = ", ".join(map(quote, names)), ", ".join([mark] * len(names))
        self.sql = f"INSERT INTO {quote(table.name)} ({columns_sql}) VALUES ({marks})"  # noqa: S608  # schema identifiers; every value is a parameter
        self._processors = [(i, p) for i, name in enumerate(columns) if (p := _bind_processor(dialect, table.c[name])) is not None]
        self._tail = tuple(_bind(dialect, table.c[name], value) for name, value in constant.items())
        self.rows: list[tuple[object, ...]] = []

    def add(self, values: Sequence[object]) -> None:
        row = list(values)
        for i, process in self._processors:
            if row[i] is not None:
                row[i] = process(row[i])
        self.rows.append((*row, *self._tail))

    def __len__(self) -> int:
        return len(self.rows)

    def insert(self, conn: Connection) -> None:
        if self.rows:
            conn.exec_driver_sql(self.sql, self.rows)


@dataclass(frozen=True, slots=True)
class _BatchRows:
    members: _BulkInsert
    index: _BulkInsert
    treatments: _BulkInsert
    ledger: _BulkInsert
    links: _BulkInsert

    def insert(self, conn: Connection) -> None:
        for table in (self.members, self.index, self.treatments, self.ledger, self.links):  # members first: the others refer to them
            table.insert(conn)


def _batch_rows(dialect: Dialect, now: datetime) -> _BatchRows:
    """A batch's empty rows: structural columns, then the data map's fields in order (what the sealers give)."""
    stamp = {"created_at": now}
    return _BatchRows(
        _BulkInsert(dialect, members, ["member_id", "key_version", *(f.name for f in _MEMBERS.fields)], {**stamp, "updated_at": now}),
        _BulkInsert(dialect, blind_index, ["field", "digest", "member_id"], {}),
        _BulkInsert(dialect, treatments, ["treatment_id", "member_id", "retention_year", *(f.name for f in _TREATMENTS.fields)], stamp),
        _BulkInsert(dialect, ledger_entries, ["entry_id", "member_id", "seq", "key_version", *(f.name for f in _LEDGER.fields)], stamp),
        _BulkInsert(dialect, member_clinics, ["member_id", "clinic_id", "via"], {"linked_at": now}),
    )


def _bind_processor(dialect: Dialect, column: Column[object]) -> Callable[[object], object] | None:
    return column.type.dialect_impl(dialect).bind_processor(dialect)


def _bind(dialect: Dialect, column: Column[object], value: object) -> object:
    process = _bind_processor(dialect, column)
    return value if process is None or value is None else process(value)


def resident_id(area: str, born: date, sequence: int, *, female: bool) -> str:
    """A GB 11643 resident ID number with a correct MOD 11-2 check character."""
    seq = sequence % 500 * 2 + (0 if female else 1)
    body = f"{area}{born:%Y%m%d}{seq:03d}"
    check = (12 - sum(int(c) * w for c, w in zip(body, _WEIGHTS_11, strict=True)) % 11) % 11
    return body + ("X" if check == 10 else str(check))


# The value sets as sequences, built once (a choice from a list of the same items in the same order draws the same).
_CLINIC_IDS = list(catalog.CLINICS)
_CATEGORIES = list(catalog.TREATMENTS)
_TIERS, _TIER_CUM_WEIGHTS = list(vs.Tier), list(itertools.accumulate((40, 25, 18, 12, 5)))  # ``choices`` accumulates weights the same way
_CHANNELS, _EDUCATION, _INCOME, _MARITAL = list(vs.Channel), list(vs.Education), list(vs.IncomeBand), list(vs.MaritalStatus)
_SKIN, _PREGNANCY, _TREATMENT_CATEGORIES = list(vs.SkinType), list(vs.PregnancyStatus), list(vs.TreatmentCategory)


def _member_values(fake: Faker, rng: random.Random, now: datetime, i: int) -> dict[str, object]:
    clinic = rng.choice(_CLINIC_IDS)
    city, area = catalog.CLINICS[clinic]
    female = rng.random() < 0.82
    born = date(rng.randint(1965, 2006), rng.randint(1, 12), rng.randint(1, 28))
    joined = (now - timedelta(days=rng.randint(10, 3000))).date()
    return {
        "card_no": f"MV{i:010d}",
        "tier": rng.choices(_TIERS, cum_weights=_TIER_CUM_WEIGHTS)[0],
        "status": vs.MemberStatus.active if rng.random() < 0.95 else vs.MemberStatus.suspended,
        "joined_at": joined,
        "home_clinic_id": clinic,
        "full_name": fake.name_female() if female else fake.name_male(),
        "id_type": vs.IdType.resident_id,
        "national_id": resident_id(area, born, i, female=female),
        "date_of_birth": born,
        "gender": vs.Gender.female if female else vs.Gender.male,
        "phone": f"+86{rng.choice(catalog.MOBILE_PREFIXES)}{rng.randint(0, 99_999_999):08d}",
        "email": f"{fake.user_name()}{i}@example.cn",
        "address": fake.address(),
        "wechat_id": f"wx_{fake.user_name()}_{i}",
        "preferred_channel": rng.choice(_CHANNELS),
        "city": city,
        "occupation": fake.job(),
        "education": rng.choice(_EDUCATION),
        "income_band": rng.choice(_INCOME),
        "marital_status": rng.choice(_MARITAL),
        "allergies": rng.sample(catalog.ALLERGIES, rng.randint(0, 2)),
        "medical_history": rng.choice(catalog.HISTORY),
        "contraindications": rng.sample(catalog.CONTRAINDICATIONS, rng.randint(0, 1)),
        "skin_type": rng.choice(_SKIN),
        "pregnancy_status": vs.PregnancyStatus.not_applicable if not female else rng.choice(_PREGNANCY),
        "interest_tags": rng.sample(catalog.INTEREST_TAGS, rng.randint(1, 4)),
        "preferred_categories": rng.sample(_TREATMENT_CATEGORIES, rng.randint(1, 3)),
        "preferred_clinic_id": clinic,
    }


def _treatments(rng: random.Random, person: dict[str, object], now: datetime) -> list[dict[str, object]]:
    home = str(person["home_clinic_id"])
    out = []
    for _ in range(rng.choice((2, 3, 3, 4))):
        category = rng.choice(_CATEGORIES)
        procedure, product, dose, area = rng.choice(catalog.TREATMENTS[category])
        performed = (now - timedelta(days=rng.randint(1, 2500), minutes=rng.randint(0, 600))).replace(microsecond=0)
        out.append(
            {
                "performed_at": performed,
                "clinic_id": home if rng.random() < 0.8 else rng.choice(_CLINIC_IDS),
                "category": category.value,
                "practitioner_id": f"dr-{rng.randint(1, 40):03d}",
                "procedure": procedure,
                "product": product,
                "lot_no": f"L{rng.randint(100000, 999999)}",
                "dose": dose,
                "body_area": area,
                "clinical_notes": rng.choice(catalog.NOTES),
                "adverse_events": rng.choice(catalog.ADVERSE) or None,
                "follow_up_at": (performed + timedelta(days=28)).date().isoformat(),
                "price": rng.randint(8, 300) * 10_000,
            }
        )
    return out


def _ledger(rng: random.Random, now: datetime) -> list[dict[str, object]]:
    balance = points = 0
    when = now - timedelta(days=rng.randint(400, 2000))
    out = []
    for _ in range(rng.randint(8, 12)):
        when += timedelta(days=rng.randint(1, 40), minutes=rng.randint(0, 600))
        kind, amount, pts = _next_entry(rng, balance, points)
        balance += _MONEY_SIGN.get(kind, 0) * amount
        points += _POINTS_SIGN.get(kind, 0) * pts
        out.append(
            {
                "entry_type": kind,
                "occurred_at": min(when, now).replace(microsecond=0),
                "amount": amount,
                "points": pts,
                "balance_after": balance,
                "points_balance_after": points,
            }
        )
    return out


_MONEY_SIGN = {"top_up": 1, "spend": -1, "refund": -1}
_POINTS_SIGN = {"points_earn": 1, "points_redeem": -1}


def _next_entry(rng: random.Random, balance: int, points: int) -> tuple[str, int, int]:
    roll = rng.random()
    if balance >= 10_000 and roll < 0.45:
        return "spend", rng.randint(1, balance // 10_000) * 10_000, 0
    if points >= 100 and roll < 0.55:
        return "points_redeem", rng.randint(1, points // 100) * 100, 0
    if roll < 0.75:
        return "top_up", rng.choice((100_000, 200_000, 500_000, 1_000_000)), 0
    return "points_earn", 0, rng.randint(1, 30) * 10


def _retention_ciphers(keys: MemberKeys, wanted: list[tuple[str, dict[str, object]]]) -> dict[tuple[str, int], FieldCipher]:
    by_year: dict[int, set[str]] = {}
    for mid, t in wanted:
        by_year.setdefault(retention_year(_as_datetime(t["performed_at"])), set()).add(mid)
    out = {}
    for year, owners in by_year.items():
        for owner, cipher in keys.create(sorted(owners), retention_scope(year)).items():
            out[(owner, year)] = cipher
    return out


def _as_datetime(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError("performed_at is a datetime")
    return value if value.tzinfo else value.replace(tzinfo=UTC)
