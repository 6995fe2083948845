"""Deterministic synthetic members for development, demos and benchmarks.

For a given ``seed`` the same member contents come out (ids are random, as
all ids are). Names, addresses and occupations come from Faker's ``zh_CN``
locale; phone and resident ID numbers are generated valid (E.164 mobile
numbers, GB 11643 checksums that agree with the date of birth). Each member
gets about 3 treatments at one or two clinics and about 10 card-ledger
entries whose balances never go negative.

Seeding goes in batches through the same encryption and blind-index code as
the repositories, with bulk inserts: member keys for a batch are wrapped and
committed together, then the batch's rows in one data transaction. Every
member, treatment and ledger entry is validated by ``validate_values``.
``seed_members_parallel`` spreads the batches over worker processes.
"""

from __future__ import annotations

import multiprocessing
import random
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from faker import Faker
from sqlalchemy import Engine, insert

from keys.field_cipher import FieldCipher
from keys.member_keys import MemberKeys, retention_scope
from vault import data_map as dm
from vault import value_sets as vs
from vault.codec import to_columns
from vault.demo import catalog
from vault.ids import new_id
from vault.members import MemberRepository
from vault.members.clinics import LinkVia
from vault.storage.engine import write_transaction
from vault.storage.schema import blind_index, ledger_entries, member_clinics, members, treatments
from vault.treatments import retention_year
from vault.validation import validate_values

_MEMBER_FIELDS = dm.fields_of(dm.Table.members)
_TREATMENT_FIELDS = dm.fields_of(dm.Table.treatments)
_LEDGER_FIELDS = dm.fields_of(dm.Table.ledger_entries)
_WEIGHTS_11 = [pow(2, 17 - i, 11) for i in range(17)]


@dataclass(frozen=True, slots=True)
class SeedReport:
    members: int
    treatments: int
    ledger_entries: int
    member_ids: tuple[str, ...]


class SeedTarget(Protocol):
    """What a seeding worker opens: the data engine, the key store and the member repository."""

    data_engine: Engine
    keys: MemberKeys
    members: MemberRepository

    def close(self) -> None: ...


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
    fake = Faker("zh_CN")
    ids: list[str] = []
    n_treat = n_ledger = 0
    for start in range(first, first + count, batch):
        size = min(batch, first + count - start)
        state = seed * 1_000_003 + start // batch
        rng = random.Random(state)
        fake.seed_instance(state)
        people = [_member_values(fake, rng, now, start + i) for i in range(size)]
        member_ids = [new_id() for _ in people]
        ciphers = keys.create(member_ids)
        member_rows, index_rows, treat_rows, ledger_rows = [], [], [], []
        link_rows: list[dict[str, object]] = []
        plans = [(mid, _treatments(rng, p, now), _ledger(rng, now)) for mid, p in zip(member_ids, people, strict=True)]
        retention = _retention_ciphers(keys, [(mid, t) for mid, ts, _ in plans for t in ts])
        for mid, person, (_, treats, entries) in zip(member_ids, people, plans, strict=True):
            clean = validate_values(dm.Table.members, person, partial=False)
            cipher = ciphers[mid]
            member_rows.append(
                {"member_id": mid, "key_version": cipher.key_version, "created_at": now, "updated_at": now, **to_columns(cipher, _MEMBER_FIELDS, mid, clean)}
            )
            index_rows.extend(repo.index_entries(mid, clean))
            links = {str(clean["home_clinic_id"]): LinkVia.home.value}
            for t in treats:
                tid, year = new_id(), retention_year(_as_datetime(t["performed_at"]))
                cols = to_columns(retention[(mid, year)], _TREATMENT_FIELDS, tid, validate_values(dm.Table.treatments, t, partial=False))
                treat_rows.append({"treatment_id": tid, "member_id": mid, "retention_year": year, "created_at": now, **cols})
                links.setdefault(str(t["clinic_id"]), LinkVia.treatment.value)
            link_rows.extend({"member_id": mid, "clinic_id": c, "via": via, "linked_at": now} for c, via in links.items())
            for seq, e in enumerate(entries, start=1):
                eid = new_id()
                ledger_rows.append(
                    {
                        "entry_id": eid,
                        "member_id": mid,
                        "seq": seq,
                        "key_version": cipher.key_version,
                        "created_at": now,
                        **to_columns(cipher, _LEDGER_FIELDS, eid, validate_values(dm.Table.ledger_entries, e, partial=False)),
                    }
                )
        with write_transaction(engine) as conn:
            conn.execute(insert(members), member_rows)
            if index_rows:
                conn.execute(insert(blind_index), index_rows)
            if treat_rows:
                conn.execute(insert(treatments), treat_rows)
            if ledger_rows:
                conn.execute(insert(ledger_entries), ledger_rows)
            conn.execute(insert(member_clinics), link_rows)
        ids.extend(member_ids)
        n_treat += len(treat_rows)
        n_ledger += len(ledger_rows)
        progress(len(ids))
    return SeedReport(len(ids), n_treat, n_ledger, tuple(ids))


def seed_members_parallel(
    opener: Callable[[], SeedTarget],
    *,
    count: int,
    seed: int,
    now: datetime,
    workers: int,
    batch: int = 500,
    progress: Callable[[int], None] = lambda n: None,
) -> SeedReport:
    """Seed with ``workers`` processes, each opening its own target with ``opener`` (picklable).

    The range is cut into chunks of a few batches; the database serializes the
    workers' short write transactions. Same members as ``seed_members`` for the
    same ``seed`` and ``batch``.
    """
    chunk = batch * 4
    starts = list(range(0, count, chunk))
    if workers <= 1 or len(starts) < 2:
        target = opener()
        try:
            return seed_members(target.data_engine, target.keys, target.members, count=count, seed=seed, now=now, batch=batch, progress=progress)
        finally:
            target.close()
    reports: list[SeedReport] = []
    done = 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_seed_chunk, opener, first, min(chunk, count - first), seed=seed, now=now, batch=batch) for first in starts]
        for future in as_completed(futures):
            report = future.result()
            reports.append(report)
            done += report.members
            progress(done)
    return SeedReport(
        sum(r.members for r in reports),
        sum(r.treatments for r in reports),
        sum(r.ledger_entries for r in reports),
        tuple(mid for r in reports for mid in r.member_ids),
    )


def _seed_chunk(opener: Callable[[], SeedTarget], first: int, count: int, *, seed: int, now: datetime, batch: int) -> SeedReport:
    target = opener()
    try:
        return seed_members(target.data_engine, target.keys, target.members, count=count, seed=seed, now=now, batch=batch, first=first)
    finally:
        target.close()


def resident_id(area: str, born: date, sequence: int, *, female: bool) -> str:
    """A GB 11643 resident ID number with a correct MOD 11-2 check character."""
    seq = sequence % 500 * 2 + (0 if female else 1)
    body = f"{area}{born:%Y%m%d}{seq:03d}"
    check = (12 - sum(int(c) * w for c, w in zip(body, _WEIGHTS_11, strict=True)) % 11) % 11
    return body + ("X" if check == 10 else str(check))


def _member_values(fake: Faker, rng: random.Random, now: datetime, i: int) -> dict[str, object]:
    clinic = rng.choice(list(catalog.CLINICS))
    city, area = catalog.CLINICS[clinic]
    female = rng.random() < 0.82
    born = date(rng.randint(1965, 2006), rng.randint(1, 12), rng.randint(1, 28))
    joined = (now - timedelta(days=rng.randint(10, 3000))).date()
    return {
        "card_no": f"MV{i:010d}",
        "tier": rng.choices(list(vs.Tier), weights=(40, 25, 18, 12, 5))[0],
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
        "preferred_channel": rng.choice(list(vs.Channel)),
        "city": city,
        "occupation": fake.job(),
        "education": rng.choice(list(vs.Education)),
        "income_band": rng.choice(list(vs.IncomeBand)),
        "marital_status": rng.choice(list(vs.MaritalStatus)),
        "allergies": rng.sample(catalog.ALLERGIES, rng.randint(0, 2)),
        "medical_history": rng.choice(catalog.HISTORY),
        "contraindications": rng.sample(catalog.CONTRAINDICATIONS, rng.randint(0, 1)),
        "skin_type": rng.choice(list(vs.SkinType)),
        "pregnancy_status": vs.PregnancyStatus.not_applicable if not female else rng.choice(list(vs.PregnancyStatus)),
        "interest_tags": rng.sample(catalog.INTEREST_TAGS, rng.randint(1, 4)),
        "preferred_categories": rng.sample(list(vs.TreatmentCategory), rng.randint(1, 3)),
        "preferred_clinic_id": clinic,
    }


def _treatments(rng: random.Random, person: dict[str, object], now: datetime) -> list[dict[str, object]]:
    home = str(person["home_clinic_id"])
    out = []
    for _ in range(rng.choice((2, 3, 3, 4))):
        category = rng.choice(list(catalog.TREATMENTS))
        procedure, product, dose, area = rng.choice(catalog.TREATMENTS[category])
        performed = (now - timedelta(days=rng.randint(1, 2500), minutes=rng.randint(0, 600))).replace(microsecond=0)
        out.append(
            {
                "performed_at": performed,
                "clinic_id": home if rng.random() < 0.8 else rng.choice(list(catalog.CLINICS)),
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
        balance += {"top_up": amount, "spend": -amount, "refund": -amount}.get(kind, 0)
        points += {"points_earn": pts, "points_redeem": -pts}.get(kind, 0)
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
