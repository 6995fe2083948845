"""The edge's own pieces: generated request ids, the embedded database's driver-level reader, held read connections."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import OperationalError

from api.http import new_request_id
from api.offload import READ_THREADS
from api.services import HeldReads
from api.settings import Settings
from tests.api.conftest import Vault
from vault.ids import new_id
from vault.storage.engine import make_engine
from vault.storage.readers import SqliteReader

_ALPHABET = set("abcdefghjkmnpqrstuvwxyz")


def test_a_generated_request_id_is_16_letters_of_the_alphabet_and_ids_do_not_repeat() -> None:
    ids = [new_request_id() for _ in range(5000)]
    assert all(len(i) == 16 and set(i) <= _ALPHABET for i in ids)
    assert len(set(ids)) == len(ids)
    # every letter turns up in every position: no position is stuck on a few letters
    for position in range(16):
        assert {i[position] for i in ids} == _ALPHABET


def test_the_reader_sees_each_commit_of_another_connection_and_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (n INTEGER)")
    reader = SqliteReader(str(path))
    assert reader.row("SELECT count(*) FROM t") == (0,)
    writer.execute("INSERT INTO t VALUES (1)")
    assert reader.row("SELECT count(*) FROM t") == (1,)
    assert reader.rows("SELECT n FROM t") == [(1,)]
    with pytest.raises(OperationalError):  # SQLAlchemy's, which the edge answers with 503
        reader.row("INSERT INTO t VALUES (2) RETURNING n")
    with pytest.raises(LookupError):
        reader.row("SELECT n FROM t WHERE n = 99")
    reader.close()
    assert reader.row("SELECT count(*) FROM t") == (1,)  # a later read opens a new connection
    reader.close()
    writer.close()


@pytest.mark.parametrize("backend", ["postgres"])
def test_held_reads_on_a_server_run_each_statement_in_autocommit(make_settings: Callable[..., Settings]) -> None:
    engine = make_engine(make_settings().data_url)
    held = HeldReads(engine)
    try:
        with held.connection() as conn:
            first = conn.execute(text("SELECT pg_current_xact_id()")).scalar_one()
            second = conn.execute(text("SELECT pg_current_xact_id()")).scalar_one()
            assert first != second  # each statement its own transaction: no BEGIN or ROLLBACK round trips
    finally:
        held.close()
        engine.dispose()


@pytest.mark.parametrize("backend", ["postgres"])
def test_token_checks_and_member_reads_on_a_server_share_the_read_pools_held_connections(vault: Vault) -> None:
    services = vault.client.app.state.services.get()  # type: ignore[attr-defined]  # the TestClient's app is our FastAPI app
    connects: list[object] = []
    event.listen(services.runtime.data_engine, "connect", lambda dbapi_connection, _record: connects.append(dbapi_connection))
    headers = vault.headers(vault.token("practitioner", clinics=["*"]), purpose="care")
    refused = vault.headers(vault.token("practitioner", clinics=["nowhere"]), purpose="care")
    before = vault.journal_size()

    def read(i: int) -> int:
        if i % 2:
            return vault.client.get(f"/v1/members/{vault.members[i % 4].member_id}", headers=headers).status_code
        return vault.client.get(f"/v1/members/{new_id()}", headers=refused).status_code  # a made-up id: refused

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(read, range(64)))
    assert codes.count(200) == 32
    assert codes.count(403) == 32
    assert vault.journal_size() == before + 64  # every decision journaled before its answer
    assert len(services.held_reads._opened) <= READ_THREADS  # one held connection per read thread, ...
    assert len(connects) <= READ_THREADS  # ... opened once: neither the refusals nor the token checks opened more


def test_only_an_sqlite_file_gets_a_reader(tmp_path: Path) -> None:
    assert SqliteReader.of(create_engine(f"sqlite:///{tmp_path / 'x.db'}")) is not None
    assert SqliteReader.of(create_engine("sqlite://")) is None
    assert SqliteReader.of(create_engine("postgresql+psycopg://u@localhost/db")) is None


def test_member_reads_run_on_the_event_loop_only_with_embedded_databases_and_a_local_keyring(vault: Vault, backend: str) -> None:
    services = vault.client.app.state.services.get()  # type: ignore[attr-defined]  # the TestClient's app is our FastAPI app
    assert services.reads_on_loop is (backend == "sqlite")
    assert services.authenticator.answers_inline is (backend == "sqlite")
    member = vault.members[0].member_id
    before = vault.journal_size()
    r = vault.client.get(f"/v1/members/{member}", headers=vault.headers(vault.token("practitioner", clinics=["*"]), purpose="care"))
    assert r.status_code == 200
    assert r.json()["member_id"] == member
    assert vault.journal_size() == before + 1  # its event was committed before the answer


def test_held_reads_keep_one_connection_per_thread_and_end_each_snapshot(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
    held = HeldReads(engine)
    with held.connection() as first:
        assert first.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
    with engine.begin() as conn:  # a commit between two requests
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    with held.connection() as again:
        assert again is first  # kept between uses on this thread
        assert again.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1  # the earlier snapshot ended
    other: list[object] = []
    thread = threading.Thread(target=lambda: other.append(held.connection().__enter__()))
    thread.start()
    thread.join()
    assert other[0] is not first  # another thread, another connection
    first.invalidate()
    with held.connection() as fresh:
        assert fresh is not first
        assert fresh.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1

    def refused_use() -> None:
        with held.connection() as used:
            assert used is fresh
            used.exec_driver_sql("SELECT count(*) FROM t")
            raise ValueError("refused")  # not the database's error: a refusal, a missing member

    with pytest.raises(ValueError, match="refused"):
        refused_use()
    with held.connection() as kept:
        assert kept is fresh  # kept: a stream of refused requests opens no connection
        assert not kept.in_transaction()  # its snapshot ended all the same

    def failing_use() -> None:
        with held.connection() as failing:
            assert failing is fresh
            failing.exec_driver_sql("SELECT * FROM no_such_table")

    with pytest.raises(OperationalError):
        failing_use()
    assert fresh.closed  # a use that failed in the database leaves nothing behind: the connection is dropped
    with held.connection() as after:
        assert after is not fresh
    held.close()
    assert after.closed
    engine.dispose()
