"""The demo seeder's bulk path on real SQLite and PostgreSQL: its rows are the rows the repositories write.

The seeder validates and seals a batch's rows with ``RowSealer`` (one cipher
call per row, ``FieldCipher.encrypt_record``) and inserts them with one
``executemany`` per table on the driver. For a seeded member, a twin is
written through ``MemberRepository``, ``TreatmentRepository`` and ``Ledger``
from the values read back at the same instant; the raw rows of the two, read
on the driver with no SQLAlchemy type processing, hold the same values column
by column (ids and ciphertexts aside, whose lengths agree). Seeding over
worker processes gives the members one process gives, in range order.
"""

from __future__ import annotations

import functools
import gc
import multiprocessing
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, Table, event
from sqlalchemy.exc import DBAPIError

from api.runtime import Runtime, open_runtime
from api.settings import Settings
from keys.field_cipher import FieldCipher, FieldContext
from vault import data_map as dm
from vault.codec import RowSealer, encode, to_columns
from vault.demo import SeedWorkerError, seed_members, seed_members_parallel
from vault.ids import new_id
from vault.ledger import Ledger
from vault.members import MemberRepository
from vault.storage.engine import make_engine
from vault.storage.schema import Ciphertext, blind_index, ledger_entries, member_clinics, members, treatments
from vault.treatments import TreatmentRepository

NOW = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC)
ALL_MEMBER_CATEGORIES = frozenset(dm.categories_of(dm.Table.members))
IDS = frozenset({"member_id", "treatment_id", "entry_id"})


class _Stream:
    """A random source reading one fixed byte stream: the same bytes however the draws are split."""

    def __init__(self) -> None:
        self._next = 0

    def __call__(self, n: int) -> bytes:
        out = bytes((self._next + i) % 251 for i in range(n))
        self._next += n
        return out


def _cipher() -> FieldCipher:
    return FieldCipher(bytes(range(32)), 3, random=_Stream())


# -- the cipher and codec additions ---------------------------------------------------


def test_encrypt_record_gives_the_ciphertexts_of_encrypt_field_by_field() -> None:
    fields, plaintexts = ["phone", "email", "address"], [b"+8613800138000", b"li@example.cn", "上海市".encode()]
    one_call, field_by_field = _cipher(), _cipher()

    sealed = one_call.encrypt_record("members", "m" * 32, fields, plaintexts)

    assert sealed == [field_by_field.encrypt(p, FieldContext("members", "m" * 32, f)) for f, p in zip(fields, plaintexts, strict=True)]
    assert [one_call.decrypt(c, FieldContext("members", "m" * 32, f)) for c, f in zip(sealed, fields, strict=True)] == plaintexts


@settings(deadline=None)  # wall-clock deadlines are not assertions we make
@given(
    key=st.binary(min_size=32, max_size=32),
    version=st.integers(min_value=0, max_value=2**32 - 1),
    table=st.text(max_size=40),
    record=st.text(max_size=40),
    fields=st.lists(st.tuples(st.text(max_size=40), st.binary(max_size=256)), max_size=8),
)
def test_encrypt_record_is_encrypt_field_by_field_for_any_record(key: bytes, version: int, table: str, record: str, fields: list[tuple[str, bytes]]) -> None:
    names, plaintexts = [f for f, _ in fields], [p for _, p in fields]
    one_call, field_by_field = FieldCipher(key, version, random=_Stream()), FieldCipher(key, version, random=_Stream())

    sealed = one_call.encrypt_record(table, record, names, plaintexts)

    assert sealed == [field_by_field.encrypt(p, FieldContext(table, record, f)) for f, p in fields]
    assert [one_call.decrypt(c, FieldContext(table, record, f)) for c, f in zip(sealed, names, strict=True)] == plaintexts


def test_encrypt_record_draws_a_fresh_nonce_for_every_field() -> None:
    sealed = FieldCipher(os.urandom(32), 1).encrypt_record("ledger_entries", "e" * 32, ["amount", "points"], [b"0", b"0"])
    assert sealed[0][5:17] != sealed[1][5:17]


def test_encrypt_record_refuses_a_short_random_source_and_unpaired_plaintexts() -> None:
    short = FieldCipher(bytes(32), 1, random=lambda n: bytes(n - 1))
    with pytest.raises(ValueError, match="short nonce"):
        short.encrypt_record("members", "m" * 32, ["phone"], [b"x"])
    with pytest.raises(ValueError, match="one plaintext per field"):
        _cipher().encrypt_record("members", "m" * 32, ["phone", "email"], [b"x"])


@pytest.mark.parametrize("table", list(dm.Table), ids=lambda t: t.value)
def test_row_sealer_stores_what_to_columns_stores(table: dm.Table) -> None:
    """Byte for byte, with the same random stream: same encodings, associated data and format; absent values are None."""
    fields = dm.fields_of(table)
    values = _sample_values(table)
    values.pop(next(f.name for f in fields if f.encrypted and not f.required))

    row = RowSealer(fields).row(_cipher(), "r" * 32, values)
    columns = to_columns(_cipher(), fields, "r" * 32, values)

    assert row == [columns.get(f.name) for f in fields]
    for f, value in zip(fields, row, strict=True):
        if f.encrypted and value is not None:
            assert isinstance(value, bytes)
            assert _cipher().decrypt(value, FieldContext(table.value, "r" * 32, f.name)) == encode(f, values[f.name])


def test_row_sealer_refuses_fields_of_two_tables() -> None:
    with pytest.raises(ValueError, match="one table"):
        RowSealer([*dm.fields_of(dm.Table.members)[:2], *dm.fields_of(dm.Table.ledger_entries)[:2]])


def _sample_values(table: dm.Table) -> dict[str, object]:
    """One value of every field of ``table``, of the types validation gives (texts with non-ASCII, lists, dates, money)."""
    by_kind: Mapping[dm.Kind, object] = {
        dm.Kind.text: "上海市黄浦区 1 号",
        dm.Kind.enum: "gold",
        dm.Kind.date: date(1990, 5, 17),
        dm.Kind.datetime: datetime(2025, 6, 15, 2, 30, tzinfo=UTC),
        dm.Kind.phone: "+8613800138000",
        dm.Kind.email: "li.na@example.cn",
        dm.Kind.card_no: "MV0000000001",
        dm.Kind.clinic_id: "sh-001",
        dm.Kind.staff_id: "dr-007",
        dm.Kind.text_list: ["青霉素", "花粉"],
        dm.Kind.enum_list: ["laser", "injectable"],
        dm.Kind.money: 380_000,
        dm.Kind.integer: -15,
        dm.Kind.document_number: "11010519491231002X",
    }
    return {f.name: by_kind[f.kind] for f in dm.fields_of(table)}


# -- seeded rows against repository rows ------------------------------------------------


@dataclass(frozen=True)
class _Repositories:
    members: MemberRepository
    treatments: TreatmentRepository
    ledger: Ledger


def _at_now(rt: Runtime) -> _Repositories:
    def clock() -> datetime:
        return NOW

    return _Repositories(MemberRepository(rt.keys, now=clock), TreatmentRepository(rt.keys, now=clock), Ledger(rt.keys, now=clock))


def _twin(rt: Runtime, repos: _Repositories, seeded: str) -> str:
    """A member written through the repositories with the seeded member's values, treatments and ledger entries."""
    with rt.data_engine.begin() as conn:
        view = repos.members.read(conn, seeded, ALL_MEMBER_CATEGORIES)
        twin = repos.members.create(conn, {k: v for group in view.values.values() for k, v in group.items()})
        for t in repos.treatments.list_for_member(conn, seeded):
            repos.treatments.add(conn, twin, t.values)
        for e in repos.ledger.entries(conn, seeded):
            repos.ledger.append(conn, twin, {k: e.values[k] for k in ("entry_type", "occurred_at", "amount", "points")})
    return twin


def _raw(conn: Connection, table: Table, member_id: str, order: str) -> list[dict[str, object]]:
    """The member's rows of ``table`` as the driver returns them (no SQLAlchemy result processing)."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    columns = [c.name for c in table.columns]
    result = conn.exec_driver_sql(f"SELECT {', '.join(columns)} FROM {table.name} WHERE member_id = {mark} ORDER BY {order}", (member_id,))
    return [dict(zip(columns, row, strict=True)) for row in result]


def _comparable(table: Table, row: Mapping[str, object]) -> dict[str, object]:
    """Ids left out; a ciphertext as its presence and length (same plaintext, same length); every other column as stored."""
    out: dict[str, object] = {}
    for column in table.columns:
        value = row[column.name]
        if column.name in IDS:
            continue
        if isinstance(column.type, Ciphertext):
            assert value is None or isinstance(value, bytes | memoryview)
            out[column.name] = None if value is None else len(value)
        else:
            out[column.name] = bytes(value) if isinstance(value, memoryview) else value
    return out


def test_seeded_rows_are_the_rows_the_repositories_write_for_the_same_values(runtime: Runtime) -> None:
    seeded = seed_members(runtime.data_engine, runtime.keys, runtime.members, count=3, seed=21, now=NOW).member_ids
    repos = _at_now(runtime)
    for member_id in seeded:
        twin = _twin(runtime, repos, member_id)
        with runtime.data_engine.connect() as conn:
            for table, order in ((members, "member_id"), (treatments, "performed_at, clinic_id"), (ledger_entries, "seq")):
                ours, theirs = _raw(conn, table, member_id, order), _raw(conn, table, twin, order)
                assert [_comparable(table, r) for r in ours] == [_comparable(table, r) for r in theirs], table.name
                assert ours
            for table, order in ((blind_index, "field"), (member_clinics, "clinic_id")):
                assert [_comparable(table, r) for r in _raw(conn, table, member_id, order)] == [
                    _comparable(table, r) for r in _raw(conn, table, twin, order)
                ], table.name


def test_seeded_members_read_back_through_the_repositories(runtime: Runtime) -> None:
    report = seed_members(runtime.data_engine, runtime.keys, runtime.members, count=12, seed=8, now=NOW, batch=5)
    assert (report.members, len(set(report.member_ids))) == (12, 12)
    with runtime.data_engine.connect() as conn:
        cards, treated, entries = [], 0, 0
        for member_id in report.member_ids:
            view = runtime.members.read(conn, member_id, ALL_MEMBER_CATEGORIES).values
            assert all(view[c] for c in ALL_MEMBER_CATEGORIES)
            cards.append(view[dm.Category.membership]["card_no"])
            treated += len(runtime.treatments.list_for_member(conn, member_id))
            history = runtime.ledger.entries(conn, member_id)
            entries += len(history)
            assert runtime.ledger.balance(conn, member_id).amount == history[-1].values["balance_after"]
    assert cards == [f"MV{i:010d}" for i in range(12)]
    assert (treated, entries) == (report.treatments, report.ledger_entries)


def test_seeded_ids_have_the_form_of_new_id_and_are_all_distinct(runtime: Runtime) -> None:
    """The seeder draws a group's ids at once; they look like ``new_id``'s and no two rows share one."""
    seed_members(runtime.data_engine, runtime.keys, runtime.members, count=7, seed=2, now=NOW, batch=3)
    with runtime.data_engine.connect() as conn:
        ids = [
            *conn.exec_driver_sql("SELECT member_id FROM members").scalars(),
            *conn.exec_driver_sql("SELECT treatment_id FROM treatments").scalars(),
            *conn.exec_driver_sql("SELECT entry_id FROM ledger_entries").scalars(),
        ]
    assert len(ids) > 7 * 10
    assert len(set(ids)) == len(ids)
    assert {(len(i), i == i.lower(), bytes.fromhex(i) != b"") for i in ids} == {(len(new_id()), True, True)}


def test_seeding_leaves_the_sqlite_connections_as_the_engine_made_them(make_settings: Callable[..., Settings]) -> None:
    """The seeder's larger page cache and rarer WAL checkpoints are for its own connection while it seeds."""
    rt = open_runtime(make_settings())
    try:
        if rt.data_engine.dialect.name != "sqlite":
            pytest.skip("SQLite connection settings")
        used: list[sqlite3.Connection] = []
        event.listen(rt.data_engine, "checkin", lambda raw, _record: used.append(raw))
        seed_members(rt.data_engine, rt.keys, rt.members, count=2, seed=1, now=NOW)
        assert used
        for raw in used:
            assert (raw.execute("PRAGMA cache_size").fetchone()[0], raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == (-2000, 1000)
    finally:
        rt.close()


@pytest.mark.parametrize("enabled", [True, False], ids=["gc-enabled", "gc-disabled"])
def test_seeding_leaves_the_garbage_collector_as_it_found_it(runtime: Runtime, enabled: bool) -> None:
    """The seeder pauses the cyclic garbage collector while it seeds, and only then."""
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        seed_members(runtime.data_engine, runtime.keys, runtime.members, count=3, seed=1, now=NOW, batch=2)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def _full_at_ten(table: str, counted: str) -> dict[str, list[str]]:
    """A trigger that refuses a row of ``table`` that matches ``counted`` once it holds 10 such rows, per dialect."""
    new_row, full = counted.format(row="NEW."), f"(SELECT count(*) FROM {table} WHERE {counted.format(row='')}) >= 10"
    return {
        "sqlite": [f"CREATE TRIGGER t_full BEFORE INSERT ON {table} WHEN {new_row} AND {full} BEGIN SELECT RAISE(ABORT, 'full'); END"],
        "postgresql": [
            "CREATE FUNCTION t_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF {new_row} AND {full} THEN RAISE EXCEPTION 'full'; END IF; RETURN NEW; END $$",
            f"CREATE TRIGGER t_full BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION t_full()",
        ],
    }


@pytest.mark.parametrize(
    ("database", "table", "counted"),
    [("data", "members", "true"), ("keys", "member_keys", "{row}scope = 'data'")],
    ids=["the-next-groups-rows", "the-next-groups-keys"],
)
def test_a_failure_stops_the_seeding_once_the_group_before_it_is_committed_and_reported(runtime: Runtime, database: str, table: str, counted: str) -> None:
    """A group is committed while the next is made: a failure writing the next group's rows or keys is raised after the committed group was reported."""
    owner = make_engine(runtime.settings.data_migration_url if database == "data" else runtime.settings.keys_migration_url)
    try:
        with owner.begin() as conn:
            for statement in _full_at_ten(table, counted)[owner.dialect.name]:
                conn.exec_driver_sql(statement)
    finally:
        owner.dispose()
    seen: list[int] = []

    with pytest.raises(DBAPIError):
        seed_members(runtime.data_engine, runtime.keys, runtime.members, count=40, seed=3, now=NOW, batch=5, progress=seen.append)

    assert seen == [5, 10]  # the first group of two batches, committed and reported; nothing of the second
    with runtime.data_engine.connect() as conn:
        member_ids = list(conn.exec_driver_sql("SELECT member_id FROM members").scalars())
        cards = sorted(str(runtime.members.read(conn, m, {dm.Category.membership}).values[dm.Category.membership]["card_no"]) for m in member_ids)
        assert all(runtime.treatments.list_for_member(conn, m) and runtime.ledger.entries(conn, m) for m in member_ids)
    assert cards == [f"MV{i:010d}" for i in range(10)]


# -- worker processes ---------------------------------------------------------------------


def _contents(rt: Runtime, member_ids: Sequence[str]) -> list[tuple[object, ...]]:
    """Each member's values, treatments and ledger entries, without ids."""
    out: list[tuple[object, ...]] = []
    with rt.data_engine.connect() as conn:
        for member_id in member_ids:
            view = rt.members.read(conn, member_id, ALL_MEMBER_CATEGORIES).values
            values = tuple(sorted((k, repr(v)) for group in view.values() for k, v in group.items()))
            treated = sorted(repr(sorted(t.values.items())) for t in rt.treatments.list_for_member(conn, member_id))
            ledger = [repr(sorted(e.values.items())) for e in rt.ledger.entries(conn, member_id)]
            out.append((values, tuple(treated), tuple(ledger)))
    return out


def test_worker_processes_seed_the_members_one_process_seeds_in_range_order(runtime: Runtime, make_settings: Callable[..., Settings]) -> None:
    alone = seed_members(runtime.data_engine, runtime.keys, runtime.members, count=23, seed=4, now=NOW, batch=5)
    seen: list[int] = []

    spread = seed_members_parallel(functools.partial(open_runtime, make_settings()), count=23, seed=4, now=NOW, workers=3, batch=5, progress=seen.append)

    assert (spread.members, spread.treatments, spread.ledger_entries) == (alone.members, alone.treatments, alone.ledger_entries)
    assert _contents(runtime, spread.member_ids) == _contents(runtime, alone.member_ids)
    assert (len(seen), seen[-1]) == (5, 23)  # once a batch


@dataclass(frozen=True)
class _FailingInWorkers:
    """Fails to open the vault in a worker; here, the target's first use waits until the workers have exited (their reports sent)."""

    settings: Settings

    def __call__(self) -> _AfterWorkers:
        if multiprocessing.parent_process() is not None:
            raise LookupError("a message that might quote a value: 13800138000")
        return _AfterWorkers(open_runtime(self.settings))


class _AfterWorkers:
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self.keys, self.members = rt.keys, rt.members

    @property
    def data_engine(self) -> Engine:
        deadline = time.monotonic() + 60
        while any(p.name.startswith("seed-worker") for p in multiprocessing.active_children()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self._rt.data_engine

    def close(self) -> None:
        self._rt.close()


def test_a_failing_worker_stops_the_seeding_naming_the_error_class_only(make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parents[2]))  # a spawned worker unpickles the opener from this module
    with pytest.raises(SeedWorkerError) as caught:
        seed_members_parallel(_FailingInWorkers(make_settings()), count=40, seed=1, now=NOW, workers=2, batch=5)
    assert str(caught.value) == "a seeding worker failed: LookupError"
