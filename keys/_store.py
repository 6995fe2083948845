"""Key-store transaction helpers shared by member keys and signing keys.

* ``write_transaction``: a writing transaction; on SQLite it takes the write
  lock up front (``BEGIN IMMEDIATE``, through the ``sqlite_immediate`` execution
  option that vault.storage.engine's SQLite engines honour).
* ``hold_kek``: serializes *using* a KEK against *retiring* one. Every
  transaction that stores a freshly wrapped key takes it shared before it
  wraps; retiring a KEK version takes it exclusive around the reference check.
  So a key wrapped under a version cannot commit after that version was found
  unreferenced and retired. On SQLite, ``BEGIN IMMEDIATE`` already serializes
  writers; on PostgreSQL it is a transaction-scoped advisory lock.
* ``count_wraps``: the per-KEK-version wrap counter (the AES-GCM nonce budget).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text, update
from sqlalchemy.dialects import postgresql, sqlite

from keys.models import KekWrapsRow, KeystoreBase

# A fixed 64-bit advisory-lock key: "mv-kek" in ASCII.
KEK_LOCK_KEY = 0x6D762D6B656B


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        conn.execution_options(sqlite_immediate=True)
        with conn.begin():
            yield conn


def hold_kek(conn: Connection, *, exclusive: bool = False) -> None:
    if conn.dialect.name == "postgresql":
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        conn.execute(text(f"SELECT {function}(:key)"), {"key": KEK_LOCK_KEY})


def insert_ignore(conn: Connection, model: type[KeystoreBase]) -> sqlite.Insert | postgresql.Insert:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing()
    return sqlite.insert(model).on_conflict_do_nothing()


def count_wraps(conn: Connection, kek_version: int, n: int) -> None:
    conn.execute(insert_ignore(conn, KekWrapsRow).values(kek_version=kek_version, wraps=0))
    conn.execute(update(KekWrapsRow).where(KekWrapsRow.kek_version == kek_version).values(wraps=KekWrapsRow.wraps + n))


__all__ = ["KEK_LOCK_KEY", "count_wraps", "hold_kek", "insert_ignore", "write_transaction"]
