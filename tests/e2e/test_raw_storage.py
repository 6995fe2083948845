"""After demo seed, the raw storage holds no personal value in clear.

The raw database — the SQLite files' bytes (including the write-ahead log and
the key store), or a ``pg_dump`` of the PostgreSQL databases — must contain
none of the seeded names, phone numbers, e-mails, ID numbers, addresses,
WeChat ids, medical histories or clinical notes. The values to look for are
collected by reading every member back through the repositories, so the test
searches for exactly what the vault holds. Sanity checks prove the scan would
see a value written in clear, and that the scanned bytes do hold the rows.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from api.runtime import Runtime, init_vault, open_runtime
from api.settings import Settings
from keys.local import LocalKeyring
from vault import data_map as dm
from vault.demo import seed_members
from vault.storage.schema import members

if TYPE_CHECKING:
    from tests.conftest import PgServer

SEEDED = 50
NOW = datetime(2025, 6, 1, 9, 30, tzinfo=UTC)
ALL_MEMBER_CATEGORIES = frozenset(dm.categories_of(dm.Table.members))


@dataclass
class Plaintexts:
    """Every personal value the vault holds after seeding, by kind."""

    full_name: set[str] = field(default_factory=set)
    phone_e164: set[str] = field(default_factory=set)
    phone_national: set[str] = field(default_factory=set)
    email: set[str] = field(default_factory=set)
    national_id: set[str] = field(default_factory=set)
    address: set[str] = field(default_factory=set)
    wechat_id: set[str] = field(default_factory=set)
    medical_history: set[str] = field(default_factory=set)
    clinical_notes: set[str] = field(default_factory=set)
    member_ids: set[str] = field(default_factory=set)

    def personal(self) -> dict[str, set[str]]:
        return {k: v for k, v in vars(self).items() if k != "member_ids"}


def collect(rt: Runtime) -> Plaintexts:
    found = Plaintexts()
    with rt.data_engine.connect() as conn:
        for member_id in conn.scalars(select(members.c.member_id)).all():
            view = rt.members.read(conn, member_id, ALL_MEMBER_CATEGORIES)
            identity, contact = view.values[dm.Category.identity], view.values[dm.Category.contact]
            health = view.values[dm.Category.health]
            found.member_ids.add(member_id)
            found.full_name.add(str(identity["full_name"]))
            found.national_id.add(str(identity["national_id"]))
            phone = str(contact["phone"])
            assert phone.startswith("+86")
            assert len(phone) == 14
            found.phone_e164.add(phone)
            found.phone_national.add(phone.removeprefix("+86"))
            found.email.add(str(contact["email"]))
            found.address.add(str(contact["address"]))
            found.wechat_id.add(str(contact["wechat_id"]))
            found.medical_history.add(str(health["medical_history"]))
            for treatment in rt.treatments.list_for_member(conn, member_id):
                found.clinical_notes.add(str(treatment.values["clinical_notes"]))
    return found


def check_collected(found: Plaintexts) -> None:
    """The lists are real: one value per member where values are unique, some where they come from a small catalog."""
    assert len(found.member_ids) == SEEDED
    for kind in ("full_name", "phone_e164", "phone_national", "email", "national_id", "address", "wechat_id"):
        values = getattr(found, kind)
        assert len(values) >= SEEDED * 9 // 10, kind
        assert all(len(v) >= 2 for v in values), kind
    assert len(found.email) == SEEDED
    assert len(found.national_id) == SEEDED
    assert found.medical_history
    assert found.clinical_notes


def byte_forms(value: str, *, sqlite_ints: bool) -> list[bytes]:
    """How a value could sit in the raw bytes: UTF-8 (= ASCII for digits), and for digits a stored integer."""
    forms = [value.encode("utf-8")]
    if value.isdigit():
        forms.append(value.encode("ascii"))
        if sqlite_ints:
            number = int(value)
            width = 6 if number < 2**47 else 8
            if number < 2**63:
                forms.append(number.to_bytes(width, "big"))
    return forms


def leaks(blob: bytes, found: Plaintexts, *, sqlite_ints: bool) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for kind, values in found.personal().items():
        hits = sorted(v for v in values if any(form in blob for form in byte_forms(v, sqlite_ints=sqlite_ints)))
        if hits:
            out[kind] = hits
    return out


# -- SQLite --------------------------------------------------------------------


@pytest.fixture
def sqlite_vault(tmp_path: Path, clean_env: None) -> Iterator[tuple[Settings, Runtime]]:
    settings = Settings(_env_file=None, data_dir=tmp_path / "var")  # type: ignore[call-arg]
    init_vault(settings)
    rt = open_runtime(settings)
    yield settings, rt
    rt.close()


def read_files(data_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data_dir)): p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file()}


def test_sqlite_files_hold_no_personal_value_in_clear(sqlite_vault: tuple[Settings, Runtime], tmp_path: Path) -> None:
    settings, rt = sqlite_vault
    report = seed_members(rt.data_engine, rt.keys, rt.members, count=SEEDED, seed=11, now=NOW)
    assert report.members == SEEDED
    found = collect(rt)
    check_collected(found)

    # while the engines are open: the main files and their write-ahead logs
    files = read_files(settings.data_dir)
    assert {"vault.db", "keys/keystore.db", "keys/keyring.json"} <= set(files)
    assert "vault.db-wal" in files
    everything = b"".join(files.values())
    assert all(mid.encode() in everything for mid in found.member_ids), "the scanned bytes do not hold the rows"
    for name, blob in files.items():
        assert leaks(blob, found, sqlite_ints=True) == {}, name

    # after closing: the log is checkpointed into the main file
    rt.close()
    files = read_files(settings.data_dir)
    assert all(mid.encode() in files["vault.db"] for mid in found.member_ids)
    for name, blob in files.items():
        assert leaks(blob, found, sqlite_ints=True) == {}, name

    # the scan sees a value written in clear: one name in a scratch table of a copy
    copy = tmp_path / "scratch.db"
    shutil.copyfile(settings.data_dir / "vault.db", copy)
    assert leaks(copy.read_bytes(), found, sqlite_ints=True) == {}
    name = sorted(found.full_name)[0]
    with contextlib.closing(sqlite3.connect(copy)) as conn:
        conn.execute("CREATE TABLE scratch_leak (v TEXT)")
        conn.execute("INSERT INTO scratch_leak VALUES (?)", (name,))
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert leaks(copy.read_bytes(), found, sqlite_ints=True) == {"full_name": [name]}


def test_leak_scan_finds_digits_stored_as_text_or_integer() -> None:
    found = Plaintexts(phone_national={"13812345678"}, national_id={"110105199003071234"})
    assert leaks(b"..13812345678..", found, sqlite_ints=True) == {"phone_national": ["13812345678"]}
    assert leaks(b".." + (13812345678).to_bytes(6, "big") + b"..", found, sqlite_ints=True) == {"phone_national": ["13812345678"]}
    assert leaks(b".." + (110105199003071234).to_bytes(8, "big"), found, sqlite_ints=True) == {"national_id": ["110105199003071234"]}
    assert leaks(b"1381234567 110105199003071235", found, sqlite_ints=True) == {}


# -- PostgreSQL ------------------------------------------------------------------


def pg_dump(server: PgServer, database: str) -> str:
    url = make_url(server.admin_url).set(drivername="postgresql", database=database).render_as_string(hide_password=False)
    result = subprocess.run(
        [str(server.bin_dir / "pg_dump"), "--no-owner", f"--dbname={url}"],
        capture_output=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode("utf-8")


@pytest.mark.postgres
def test_pg_dump_holds_no_personal_value_in_clear(pg_server: PgServer, tmp_path: Path, clean_env: None) -> None:
    app, owner, keys_app, keys_owner = pg_server.fresh_pair()
    try:
        data_dir = tmp_path / "var"
        LocalKeyring.create(data_dir / "keys" / "keyring.json")
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            data_dir=data_dir,
            database_url=app,
            migration_database_url=owner,
            keystore_url=keys_app,
            keystore_migration_url=keys_owner,
        )
        rt = open_runtime(settings)
        try:
            report = seed_members(rt.data_engine, rt.keys, rt.members, count=SEEDED, seed=11, now=NOW)
            assert report.members == SEEDED
            found = collect(rt)
        finally:
            rt.close()
        check_collected(found)

        data_dump = pg_dump(pg_server, str(make_url(app).database))
        keys_dump = pg_dump(pg_server, str(make_url(keys_app).database))
        assert "CREATE TABLE public.members" in data_dump
        assert "COPY public.members" in data_dump
        assert all(mid in data_dump for mid in found.member_ids), "the dump does not hold the rows"
        assert leaks(data_dump.encode("utf-8"), found, sqlite_ints=False) == {}
        assert leaks(keys_dump.encode("utf-8"), found, sqlite_ints=False) == {}
        # the scan sees a value in clear in a dump
        name = sorted(found.full_name)[0]
        assert leaks((data_dump + f"\n{name}\n").encode("utf-8"), found, sqlite_ints=False) == {"full_name": [name]}
    finally:
        pg_server.drop(app)
        pg_server.drop(keys_app)
