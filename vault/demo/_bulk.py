"""Writing a batch's rows in bulk: one ``executemany`` per table on the driver, as the repositories would write them.

``RowSealer`` gives a row's fields in data-map order (what ``to_columns`` stores,
one cipher call per row); ``BatchRows`` holds a batch's rows of the five tables
a member's creation writes, structural columns first, each value bound by its
column type's own bind processor, so the stored rows are the ones the
repositories write for the same values and read back through them. While a
process seeds, ``bulk_loading`` gives its SQLite connection a larger page cache
and rarer WAL checkpoints.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, Connection, Table
from sqlalchemy.engine import Dialect

from vault import data_map as dm
from vault.codec import RowSealer
from vault.storage.schema import blind_index, ledger_entries, member_clinics, members, treatments

MEMBERS = RowSealer(dm.fields_of(dm.Table.members))
TREATMENTS = RowSealer(dm.fields_of(dm.Table.treatments))
LEDGER = RowSealer(dm.fields_of(dm.Table.ledger_entries))
SEED_PAGE_CACHE_KIB = 65_536  # SQLite's page cache while seeding (the default is 2 MiB): a third less CPU per insert at 10,000 members
SEED_WAL_CHECKPOINT_PAGES = 16_000  # a WAL checkpoint every 64 MiB while seeding (the default is 1,000 pages)


class BulkInsert:
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

    def add(self, row: list[object]) -> None:
        """Add ``row``, the values of ``columns`` in order (bound in place), and the constants."""
        for i, process in self._processors:
            if row[i] is not None:
                row[i] = process(row[i])
        self.rows.append((*row, *self._tail))

    def insert(self, conn: Connection) -> None:
        if self.rows:
            conn.exec_driver_sql(self.sql, self.rows)


@dataclass(frozen=True, slots=True)
class BatchRows:
    members: BulkInsert
    index: BulkInsert
    treatments: BulkInsert
    ledger: BulkInsert
    links: BulkInsert

    def insert(self, conn: Connection) -> None:
        for table in (self.members, self.index, self.treatments, self.ledger, self.links):  # members first: the others refer to them
            table.insert(conn)


def batch_rows(dialect: Dialect, now: datetime) -> BatchRows:
    """A batch's empty rows: structural columns, then the data map's fields in order (what the sealers give)."""
    stamp = {"created_at": now}
    return BatchRows(
        BulkInsert(dialect, members, ["member_id", "key_version", *(f.name for f in MEMBERS.fields)], {**stamp, "updated_at": now}),
        BulkInsert(dialect, blind_index, ["field", "digest", "member_id"], {}),
        BulkInsert(dialect, treatments, ["treatment_id", "member_id", "retention_year", *(f.name for f in TREATMENTS.fields)], stamp),
        BulkInsert(dialect, ledger_entries, ["entry_id", "member_id", "seq", "key_version", *(f.name for f in LEDGER.fields)], stamp),
        BulkInsert(dialect, member_clinics, ["member_id", "clinic_id", "via"], {"linked_at": now}),
    )


def _bind_processor(dialect: Dialect, column: Column[object]) -> Callable[[object], object] | None:
    return column.type.dialect_impl(dialect).bind_processor(dialect)


def _bind(dialect: Dialect, column: Column[object], value: object) -> object:
    process = _bind_processor(dialect, column)
    return value if process is None or value is None else process(value)


@contextlib.contextmanager
def bulk_loading(conn: Connection) -> Iterator[None]:
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


__all__ = ["LEDGER", "MEMBERS", "SEED_PAGE_CACHE_KIB", "SEED_WAL_CHECKPOINT_PAGES", "TREATMENTS", "BatchRows", "BulkInsert", "batch_rows", "bulk_loading"]
