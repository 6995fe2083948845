"""SQLite writers queue on a process lock, then on a lock file shared by every process; neither outlives its transaction or its connection."""

from __future__ import annotations

import fcntl
import os
import stat
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from vault.storage import engine as engine_module
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


def _file_lock_is_free(path: Path) -> bool:
    """Whether another open file description can take the writers' ``flock`` right now (as another process would)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def test_writers_of_every_process_queue_on_the_lock_file_for_exactly_their_transaction(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    lock_file = tmp_path / "w.db-writer.lock"
    assert stat.S_IMODE(lock_file.stat().st_mode) == 0o600
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    assert _file_lock_is_free(lock_file)  # a plain transaction does not take it
    with write_transaction(engine) as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        assert not _file_lock_is_free(lock_file)
    assert _file_lock_is_free(lock_file)  # released at commit

    def write_then_fail() -> None:
        with write_transaction(engine) as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError, match="roll back"):
        write_then_fail()
    assert _file_lock_is_free(lock_file)  # released at rollback
    held = engine.connect()
    held.execution_options(**{SQLITE_IMMEDIATE: True})
    held.begin()
    assert not _file_lock_is_free(lock_file)
    held.invalidate()  # closed without commit or rollback
    held.close()
    assert _file_lock_is_free(lock_file)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM t")).scalars().all() == [1]
    engine.dispose()


def test_a_writer_of_another_engine_waits_for_the_lock_file_and_gives_up_as_locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two engines on one database behave as two processes: the second writer waits, and past the busy timeout fails as SQLite would."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    first, second = make_engine(url), make_engine(url)
    with first.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    with write_transaction(first) as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(OperationalError, match="database is locked"), write_transaction(second) as refused:
            refused.execute(text("INSERT INTO t VALUES (3)"))  # never reached: the transaction cannot begin
    with write_transaction(second) as conn:  # free again once the first committed
        conn.execute(text("INSERT INTO t VALUES (2)"))
    with first.connect() as conn:
        assert conn.execute(text("SELECT n FROM t ORDER BY n")).scalars().all() == [1, 2]
    first.dispose()
    second.dispose()


def test_a_writer_of_another_engine_gets_the_lock_file_as_soon_as_it_is_let_go(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    first, second = make_engine(url), make_engine(url)
    with first.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    waiting, done = threading.Event(), threading.Event()

    def write_second() -> None:
        waiting.set()
        with write_transaction(second) as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))
        done.set()

    writer = threading.Thread(target=write_second)
    with write_transaction(first) as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        writer.start()
        assert waiting.wait(10)
        assert not done.wait(0.2)  # it waits for the lock file while the first engine's transaction is open
    writer.join(10)
    assert done.is_set()
    with first.connect() as conn:
        assert conn.execute(text("SELECT n FROM t ORDER BY n")).scalars().all() == [1, 2]
    first.dispose()
    second.dispose()
