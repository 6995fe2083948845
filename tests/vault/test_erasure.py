"""Crypto-shredding (H21) on real SQLite and PostgreSQL: erasure, backups, resumption, orphan sweep, retention expiry."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import make_url

from api.runtime import Runtime, open_runtime
from api.settings import Settings
from keys.models import MemberKeyRow
from tests.vault.factories import member_values, other_member_values, treatment_values
from vault import data_map as dm
from vault.erasure import ErasureReport
from vault.errors import MemberErasedError, NotFoundError, RecordIntegrityError
from vault.ids import new_id
from vault.storage.engine import make_engine
from vault.storage.schema import blind_index, erasures, field_history, members, treatments
from vault.treatments import Treatment

ALL = set(dm.categories_of(dm.Table.members))
ENCRYPTED_MEMBER_COLUMNS = [f.name for f in dm.fields_of(dm.Table.members) if f.encrypted]
OLD = {"phone": "+86 138 0013 8000", "email": "li.na@example.com", "national_id": "11010519491231002X", "card_no": "MV-0000000001"}
NOBODY: dict[str, list[str]] = {name: [] for name in OLD}
RETAINED = ("retention-2039", "retention-2040")
_mk = MemberKeyRow.__table__


def _prepare(rt: Runtime) -> tuple[str, str]:
    """A member with history, two treatments (expiring 2039 and 2040) and a ledger entry; and a bystander."""
    with rt.data_engine.begin() as conn:
        member_id = rt.members.create(conn, member_values())
        other_id = rt.members.create(conn, other_member_values(5))
        rt.members.update(conn, member_id, {"city": "杭州"})
        rt.treatments.add(conn, member_id, treatment_values(performed_at="2024-03-02T09:00:00Z", procedure="光子嫩肤", category="laser"))
        rt.treatments.add(conn, member_id, treatment_values())
        rt.treatments.add(conn, other_id, treatment_values())
        rt.ledger.append(conn, member_id, {"entry_type": "top_up", "amount": 500_000})
        rt.ledger.append(conn, other_id, {"entry_type": "top_up", "amount": 300_000})
    return member_id, other_id


def _listed(rt: Runtime, member_id: str) -> list[Treatment]:
    with rt.data_engine.connect() as conn:
        return rt.treatments.list_for_member(conn, member_id)


def _retained(rt: Runtime, member_id: str) -> list[Treatment]:
    with rt.data_engine.connect() as conn:
        return rt.treatments.list_retained(conn, member_id)


def _read(rt: Runtime, member_id: str) -> dict[dm.Category, dict[str, object]]:
    with rt.data_engine.connect() as conn:
        return rt.members.read(conn, member_id, ALL).values


def _search_all(rt: Runtime) -> dict[str, list[str]]:
    with rt.data_engine.connect() as conn:
        return {name: list(rt.members.search(conn, name, value)) for name, value in OLD.items()}


def _count(rt: Runtime, table: object, member_id: str) -> int:
    with rt.data_engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(table.c.member_id == member_id)).scalar_one())  # type: ignore[attr-defined]


# -- erasure ------------------------------------------------------------------------------


def test_erased_member_is_unreadable_and_unsearchable_while_held_treatments_stay_retained(runtime: Runtime) -> None:
    member_id, other_id = _prepare(runtime)
    treatments_before = _listed(runtime, member_id)
    other_before = _read(runtime, other_id)
    assert _search_all(runtime) == {name: [member_id] for name in OLD}

    assert runtime.eraser.erase(member_id) == ErasureReport(member_id, 1, RETAINED)

    with runtime.data_engine.connect() as conn:
        for categories in (ALL, {dm.Category.membership}, {dm.Category.contact}):
            with pytest.raises(MemberErasedError):
                runtime.members.read(conn, member_id, categories)
        with pytest.raises(MemberErasedError):
            runtime.members.update(conn, member_id, {"city": "北京"})
        assert runtime.members.exists(conn, member_id) is False
        with pytest.raises(MemberErasedError):
            runtime.treatments.list_for_member(conn, member_id)
        with pytest.raises(MemberErasedError):
            runtime.treatments.get(conn, treatments_before[0].treatment_id)
        with pytest.raises(MemberErasedError):
            runtime.ledger.balance(conn, member_id)
        with pytest.raises(MemberErasedError):
            runtime.ledger.entries(conn, member_id)
        assert runtime.members.history(conn, member_id) == []
    with runtime.data_engine.begin() as conn, pytest.raises(MemberErasedError):
        runtime.ledger.append(conn, member_id, {"entry_type": "top_up", "amount": 1_000})
    with runtime.data_engine.begin() as conn, pytest.raises(NotFoundError):
        runtime.treatments.add(conn, member_id, treatment_values())
    assert _search_all(runtime) == NOBODY
    assert _retained(runtime, member_id) == treatments_before
    assert _read(runtime, other_id) == other_before


def test_erasure_shreds_the_data_key_keeps_retention_keys_and_scrubs_the_row(runtime: Runtime) -> None:
    member_id, other_id = _prepare(runtime)
    runtime.eraser.erase(member_id)
    assert sorted(runtime.keys.scopes_of(member_id)) == list(RETAINED)
    assert runtime.keys.live_owners([member_id, other_id]) == {other_id}
    assert sorted(runtime.keys.scopes_of(other_id)) == ["data", "retention-2040"]
    with runtime.data_engine.connect() as conn:
        row = conn.execute(select(members).where(members.c.member_id == member_id)).one()._mapping
        step = conn.execute(select(erasures.c.step, erasures.c.completed_at).where(erasures.c.member_id == member_id)).one()
    assert {name: row[name] for name in ENCRYPTED_MEMBER_COLUMNS} == dict.fromkeys(ENCRYPTED_MEMBER_COLUMNS)
    assert (row["tier"], row["status"], row["home_clinic_id"]) == ("gold", "active", "sh-001")
    assert row["erased_at"] is not None
    assert step.step == "done"
    assert step.completed_at is not None
    assert (_count(runtime, blind_index, member_id), _count(runtime, field_history, member_id)) == (0, 0)
    assert (_count(runtime, blind_index, other_id), _count(runtime, treatments, member_id)) == (4, 2)


def test_erasing_twice_is_idempotent(runtime: Runtime) -> None:
    member_id, _ = _prepare(runtime)
    assert runtime.eraser.erase(member_id) == ErasureReport(member_id, 1, RETAINED)
    assert runtime.eraser.erase(member_id) == ErasureReport(member_id, 0, RETAINED)
    assert runtime.eraser.pending() == []
    assert sorted(runtime.keys.scopes_of(member_id)) == list(RETAINED)
    with runtime.data_engine.connect() as conn, pytest.raises(MemberErasedError):
        runtime.members.read(conn, member_id, ALL)


def test_erasing_an_unknown_member_is_not_found_and_records_nothing(runtime: Runtime) -> None:
    stranger = new_id()
    with pytest.raises(NotFoundError):
        runtime.eraser.erase(stranger)
    assert runtime.eraser.pending() == []
    assert _count(runtime, erasures, stranger) == 0


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_files_keep_neither_the_shredded_key_nor_the_scrubbed_ciphertexts(runtime: Runtime) -> None:
    """The key store and data files (and their WALs) no longer hold the wrapped key or the phone ciphertext."""
    member_id, _ = _prepare(runtime)
    with runtime.keys_engine.connect() as conn:
        wrapped = bytes(conn.execute(select(_mk.c.wrapped).where(_mk.c.owner_id == member_id, _mk.c.scope == "data")).scalar_one())
    with runtime.data_engine.connect() as conn:
        phone = bytes(conn.execute(select(members.c.phone).where(members.c.member_id == member_id)).scalar_one())
    runtime.eraser.erase(member_id)
    for url, needle in ((runtime.settings.keys_url, wrapped), (runtime.settings.data_url, phone)):
        path = Path(str(make_url(url).database))
        for file in (path, path.with_name(path.name + "-wal")):
            content = file.read_bytes() if file.exists() else b""
            assert needle not in content, file.name
        assert len(needle) > 40


# -- backups (H21) ------------------------------------------------------------------------


@contextmanager
def _erase_and_restore(rt: Runtime, backend: str, make_settings: Callable[..., Settings], tmp_path: Path, member_id: str) -> Iterator[Runtime]:
    """Back up the data database, erase the member, and yield a runtime on the restored data with the live key store.

    SQLite: a copy made with the sqlite3 backup API, opened by a second runtime.
    PostgreSQL: the member's rows saved before the erase and put back after it by the owner role.
    """
    if backend == "sqlite":
        copy = tmp_path / "backup-vault.db"
        with closing(sqlite3.connect(str(make_url(rt.settings.data_url).database))) as src, closing(sqlite3.connect(copy)) as dst:
            src.backup(dst)
        rt.eraser.erase(member_id)
        restored = open_runtime(make_settings(database_url=f"sqlite:///{copy}"))
        try:
            yield restored
        finally:
            restored.close()
        return
    with rt.data_engine.connect() as conn:
        saved_member = dict(conn.execute(select(members).where(members.c.member_id == member_id)).one()._mapping)
        saved = {t: [dict(r._mapping) for r in conn.execute(select(t).where(t.c.member_id == member_id))] for t in (blind_index, field_history)}
    assert [len(rows) for rows in saved.values()] == [4, 1]
    rt.eraser.erase(member_id)
    owner = make_engine(rt.settings.data_migration_url)
    try:
        with owner.begin() as conn:
            conn.execute(delete(erasures).where(erasures.c.member_id == member_id))
            conn.execute(update(members).where(members.c.member_id == member_id).values(**saved_member))
            for table, rows in saved.items():
                conn.execute(insert(table), rows)
    finally:
        owner.dispose()
    yield rt


def test_restored_backup_of_the_data_database_does_not_bring_an_erased_member_back(
    runtime: Runtime, backend: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    member_id, other_id = _prepare(runtime)
    other_before = _read(runtime, other_id)
    treatments_before = _listed(runtime, member_id)
    with _erase_and_restore(runtime, backend, make_settings, tmp_path, member_id) as restored:
        with restored.data_engine.connect() as conn:
            assert conn.execute(select(members.c.erased_at).where(members.c.member_id == member_id)).scalar_one() is None
            assert conn.execute(select(members.c.phone).where(members.c.member_id == member_id)).scalar_one() is not None
            for category in ALL:
                with pytest.raises((MemberErasedError, RecordIntegrityError)):
                    restored.members.read(conn, member_id, {category})
            with pytest.raises((MemberErasedError, RecordIntegrityError)):
                restored.members.history(conn, member_id)
            with pytest.raises(MemberErasedError):
                restored.ledger.balance(conn, member_id)
        assert _search_all(restored) == NOBODY
        assert _read(restored, other_id) == other_before
        with restored.data_engine.connect() as conn:
            assert restored.members.search(conn, "phone", "+86 139 0000 0005") == [other_id]
            assert restored.ledger.balance(conn, other_id).amount == 300_000
        assert _retained(restored, member_id) == treatments_before


def test_restored_backup_does_not_serve_an_erased_members_treatments_through_the_normal_path(
    runtime: Runtime, backend: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Held records of an erased member stay restricted to ``list_retained`` even after a restore."""
    member_id, _ = _prepare(runtime)
    with (
        _erase_and_restore(runtime, backend, make_settings, tmp_path, member_id) as restored,
        restored.data_engine.connect() as conn,
        pytest.raises(MemberErasedError),
    ):
        restored.treatments.list_for_member(conn, member_id)


# -- interrupted erasure ----------------------------------------------------------------------


def _interrupt_at(rt: Runtime, member_id: str, step: str, at: datetime) -> None:
    with rt.data_engine.begin() as conn:
        conn.execute(insert(erasures).values(member_id=member_id, step=step, started_at=at))
        conn.execute(update(members).where(members.c.member_id == member_id).values(erased_at=at))


def test_interrupted_erasure_is_pending_and_erase_completes_it(runtime: Runtime) -> None:
    member_id, other_id = _prepare(runtime)
    _interrupt_at(runtime, member_id, "tombstoned", datetime(2026, 2, 1, 12, 0, tzinfo=UTC))
    with runtime.data_engine.connect() as conn:
        tombstoned_at = conn.execute(select(members.c.erased_at).where(members.c.member_id == member_id)).scalar_one()
    assert runtime.eraser.pending() == [member_id]
    # The tombstone alone already hides the member; the key is still there.
    with runtime.data_engine.connect() as conn, pytest.raises(MemberErasedError):
        runtime.members.read(conn, member_id, ALL)
    assert _search_all(runtime) == NOBODY
    assert sorted(runtime.keys.scopes_of(member_id)) == ["data", *RETAINED]

    assert runtime.eraser.erase(member_id) == ErasureReport(member_id, 1, RETAINED)

    assert runtime.eraser.pending() == []
    assert sorted(runtime.keys.scopes_of(member_id)) == list(RETAINED)
    assert _count(runtime, blind_index, member_id) == 0
    with runtime.data_engine.connect() as conn:
        assert conn.execute(select(erasures.c.step).where(erasures.c.member_id == member_id)).scalar_one() == "done"
        assert conn.execute(select(members.c.erased_at).where(members.c.member_id == member_id)).scalar_one() == tombstoned_at
    assert runtime.keys.live_owners([other_id]) == {other_id}


def test_erasure_interrupted_after_shredding_completes_without_shredding_again(runtime: Runtime) -> None:
    member_id, _ = _prepare(runtime)
    _interrupt_at(runtime, member_id, "keys_shredded", datetime(2026, 2, 1, 12, 0, tzinfo=UTC))
    assert runtime.keys.shred(member_id, ["data"]) == 1
    assert runtime.eraser.pending() == [member_id]
    assert runtime.eraser.erase(member_id) == ErasureReport(member_id, 0, RETAINED)
    assert runtime.eraser.pending() == []
    assert sorted(runtime.keys.scopes_of(member_id)) == list(RETAINED)


# -- orphan keys ---------------------------------------------------------------------------------


def test_orphan_sweep_shreds_keys_without_a_member_row_and_leaves_members_keys(runtime: Runtime) -> None:
    member_id, other_id = _prepare(runtime)
    orphan = new_id()
    runtime.keys.create([orphan])
    assert runtime.eraser.sweep_orphan_keys() == 0  # a fresh key may belong to a create still in flight
    assert runtime.keys.scopes_of(orphan) == ["data"]
    assert runtime.eraser.sweep_orphan_keys(older_than=timedelta(0)) == 1
    assert runtime.keys.scopes_of(orphan) == []
    assert sorted(runtime.keys.scopes_of(member_id)) == ["data", *RETAINED]
    assert sorted(runtime.keys.scopes_of(other_id)) == ["data", "retention-2040"]
    assert runtime.eraser.sweep_orphan_keys(older_than=timedelta(0)) == 0
    assert set(_read(runtime, member_id)) == ALL


def test_orphan_sweep_pages_through_every_owner(runtime: Runtime) -> None:
    with runtime.data_engine.begin() as conn:
        members_ = [runtime.members.create(conn, other_member_values(n)) for n in range(1, 4)]
    orphans = [new_id() for _ in range(5)]
    runtime.keys.create(orphans)
    assert runtime.eraser.sweep_orphan_keys(older_than=timedelta(0), page=2) == 5
    assert runtime.keys.live_owners([*members_, *orphans]) == set(members_)


# -- retention expiry ----------------------------------------------------------------------------


def test_retention_expiry_shreds_the_years_key_and_deletes_its_records_only(runtime: Runtime) -> None:
    member_id, other_id = _prepare(runtime)
    early, late = _listed(runtime, member_id)
    assert (early.retention_year, late.retention_year) == (2039, 2040)

    assert runtime.eraser.expire_retention(datetime(2039, 12, 31, 23, 59, tzinfo=UTC)) == 0
    assert runtime.eraser.expire_retention(datetime(2040, 1, 1, tzinfo=UTC)) == 1

    assert sorted(runtime.keys.scopes_of(member_id)) == ["data", "retention-2040"]
    assert _listed(runtime, member_id) == [late]
    assert _count(runtime, treatments, member_id) == 1
    assert sorted(runtime.keys.scopes_of(other_id)) == ["data", "retention-2040"]
    assert len(_listed(runtime, other_id)) == 1
    assert runtime.eraser.expire_retention(datetime(2040, 6, 1, tzinfo=UTC)) == 0
    assert runtime.eraser.expire_retention(datetime(2041, 1, 1, tzinfo=UTC)) == 2
    assert (_listed(runtime, member_id), _listed(runtime, other_id)) == ([], [])
    assert (runtime.keys.scopes_of(member_id), runtime.keys.scopes_of(other_id)) == (["data"], ["data"])


def test_retention_expiry_after_erasure_leaves_only_the_later_years_retained(runtime: Runtime) -> None:
    member_id, _ = _prepare(runtime)
    _, late = _listed(runtime, member_id)
    runtime.eraser.erase(member_id)
    assert runtime.eraser.expire_retention(datetime(2040, 1, 1, tzinfo=UTC)) == 1
    assert _retained(runtime, member_id) == [late]
    assert runtime.keys.scopes_of(member_id) == ["retention-2040"]
    assert runtime.eraser.expire_retention(datetime(2041, 1, 1, tzinfo=UTC)) == 2
    assert _retained(runtime, member_id) == []
    assert runtime.keys.scopes_of(member_id) == []


def test_retention_expiry_reads_today_as_a_utc_instant(runtime: Runtime) -> None:
    """01:00 on 1 January 2041 in Shanghai is still 2040 in UTC: records expiring in 2040 are not yet due."""
    with runtime.data_engine.begin() as conn:
        member_id = runtime.members.create(conn, member_values())
        runtime.treatments.add(conn, member_id, treatment_values(performed_at="2025-12-31T23:30:00Z"))
    assert runtime.eraser.expire_retention(datetime(2041, 1, 1, 1, 0, tzinfo=ZoneInfo("Asia/Shanghai"))) == 0
    assert [t.retention_year for t in _listed(runtime, member_id)] == [2040]
