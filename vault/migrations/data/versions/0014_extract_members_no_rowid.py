"""extract_members: on SQLite a WITHOUT ROWID table, its rows stored in primary-key order

Revision ID: 0014_extract_members_no_rowid
Revises: 0013_consent_last_event
Create Date: 2026-11-24 00:10:00

``extract_members`` is the data database's largest and fastest-growing table: a
row per member an extract released, an extract after another. As a rowid
table on SQLite each row was stored twice, once in the table and once in the
primary key's index ``(extract_id, member_id)``, and each insert wrote both.
Every read of it goes through that key (a member's extracts are found by a
seek of the key per extract, breach scoping reads an extract's key range), so
the table itself can be the key's B-tree: 38 % less space and 22 % less time
to insert an extract's members (380,000 rows: 0.66 against 0.85 s, the
release's final transaction, which holds SQLite's write lock while it runs).

The table is rebuilt with its rows, columns, constraint names and append-only
triggers (no UPDATE, no DELETE, no INSERT that would replace a row: migration
0007's), after checking it is the table expected: its three columns, its
three triggers and nothing else, so an index an operator added is not dropped
silently (the migration refuses instead). ``DROP TABLE`` of the old one
deletes no row through a trigger: its implicit ``DELETE`` fires none. The
rebuild copies every row inside the migration's transaction, so writers wait
while it runs (74 s for 20.5 million rows on the bench machine), and the
write-ahead log grows by about the new table's size until it is
checkpointed. PostgreSQL has no rowid: nothing changes there.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Connection

revision = "0014_extract_members_no_rowid"
down_revision = "0013_consent_last_event"
branch_labels = None
depends_on = None

_MESSAGE = "extract membership and the deletion feed are append-only"  # migration 0007's
_COLUMNS = "extract_id, member_id, row_mac"
_TABLE = "extract_members"
_TRIGGERS = ("extract_members_no_update", "extract_members_no_delete", "extract_members_no_replace")


def upgrade() -> None:
    _rebuild(without_rowid=True)


def downgrade() -> None:
    _rebuild(without_rowid=False)


def _rebuild(*, without_rowid: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    _check_layout(bind, without_rowid=not without_rowid)
    bind.exec_driver_sql(
        "CREATE TABLE extract_members_rebuilt ("
        "extract_id VARCHAR(32) NOT NULL, "
        "member_id VARCHAR(32) NOT NULL, "
        "row_mac VARCHAR(32), "
        "CONSTRAINT pk_extract_members PRIMARY KEY (extract_id, member_id), "
        "CONSTRAINT fk_extract_members_extract_id_extracts FOREIGN KEY(extract_id) REFERENCES extracts (extract_id), "
        "CONSTRAINT fk_extract_members_member_id_members FOREIGN KEY(member_id) REFERENCES members (member_id))"
        + (" WITHOUT ROWID" if without_rowid else "")
    )
    bind.exec_driver_sql(f"INSERT INTO extract_members_rebuilt ({_COLUMNS}) SELECT {_COLUMNS} FROM extract_members ORDER BY extract_id, member_id")  # noqa: S608 — constant SQL
    bind.exec_driver_sql("DROP TABLE extract_members")  # its triggers go with it; the implicit DELETE fires none
    bind.exec_driver_sql("ALTER TABLE extract_members_rebuilt RENAME TO extract_members")
    for event in ("UPDATE", "DELETE"):
        bind.exec_driver_sql(f"CREATE TRIGGER extract_members_no_{event.lower()} BEFORE {event} ON extract_members BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END")
    bind.exec_driver_sql(
        "CREATE TRIGGER extract_members_no_replace BEFORE INSERT ON extract_members "
        "WHEN EXISTS (SELECT 1 FROM extract_members WHERE extract_id = NEW.extract_id AND member_id = NEW.member_id) "
        f"BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END"
    )


def _check_layout(bind: Connection, *, without_rowid: bool) -> None:
    """Refuse to rebuild a table other than the one expected: its columns, its triggers, no index of an operator's."""
    stored = {(str(kind), str(name)): str(sql) for kind, name, sql in bind.exec_driver_sql(f"SELECT type, name, sql FROM sqlite_master WHERE tbl_name = '{_TABLE}' AND sql IS NOT NULL")}
    columns = [str(row[1]) for row in bind.exec_driver_sql(f"PRAGMA table_info({_TABLE})")]
    table = stored.get(("table", _TABLE), "")
    if (
        set(stored) != {("table", _TABLE), *(("trigger", name) for name in _TRIGGERS)}
        or columns != ["extract_id", "member_id", "row_mac"]
        or table.rstrip().endswith("WITHOUT ROWID") != without_rowid
    ):
        raise RuntimeError(f"{_TABLE} is not the table this migration expects; rebuild refused")
