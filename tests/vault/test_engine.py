"""SQLite writers of one engine queue on a process lock; the lock never outlives its transaction or its connection."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import text

from vault.storage.engine import SQLITE_IMMEDIATE, make_engine, write_transaction


def test_writers_of_one_engine_take_turns_and_all_commit(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))

    def write(n: int) -> None:
        for i in range(20):
            with write_transaction(engine) as conn:
                conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n * 100 + i})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 160
    engine.dispose()


def test_an_invalidated_connection_releases_the_write_lock(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    held = engine.connect()
    held.execution_options(**{SQLITE_IMMEDIATE: True})
    held.begin()
    held.execute(text("INSERT INTO t VALUES (1)"))
    held.invalidate()  # closes the DBAPI connection without commit or rollback
    held.close()

    done = threading.Event()

    def write() -> None:
        with write_transaction(engine) as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(timeout=30)
    assert done.is_set()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM t")).scalars().all() == [2]
    engine.dispose()
