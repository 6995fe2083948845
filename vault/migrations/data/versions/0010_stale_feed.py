"""the deletion feed takes stale consent: the reason ``stale``, and the stale-consent moments already swept

Revision ID: 0010_stale_feed
Revises: 0009_extract_indexes
Create Date: 2026-11-23 12:30:00

``deletion_feed``'s reason check gains ``stale`` and ``suppressed`` (a member an
extract of the epoch released whom a later one suppressed: ``vault.extracts.runner``).
``stale``: a consent granted under a
notice that a material version replaced stops counting at that version's
``effective_at`` plus the grace period, and the members the consumer's
extracts held then are fed (``vault.extracts.stale``). On PostgreSQL the check
is dropped and added again; the table, its row and TRUNCATE triggers and its
revoked rights are untouched. On SQLite a check cannot be altered, so the table
is rebuilt: its own ``CREATE TABLE`` text with only the check replaced, the
rows copied with their ``seq``, and its index and append-only triggers
(no update, no delete, no replace) created again from their own stored text,
so they are exactly what they were.

``deletion_feed_sweeps`` records each moment swept, once, and is append-only
like the feed (SQLite triggers incl. no-replace; PostgreSQL row and TRUNCATE
triggers, and UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER revoked from every
role but the owner).

Downgrade restores the old check (it refuses while a ``stale`` entry exists)
and drops ``deletion_feed_sweeps``.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0010_stale_feed"
down_revision = "0009_extract_indexes"
branch_labels = None
depends_on = None

FEED = "deletion_feed"
CHECK_NAME = "ck_deletion_feed_reason"
OLD_CHECK = "reason IN ('withdrawn', 'erased', 'restricted')"
NEW_CHECK = "reason IN ('withdrawn', 'erased', 'restricted', 'stale', 'suppressed')"
SWEEPS = "deletion_feed_sweeps"
SWEEPS_MESSAGE = "the deletion feed sweeps are append-only"
SWEEPS_KEY = "purpose = NEW.purpose AND notice_version = NEW.notice_version"
REVOKED = ("UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def upgrade() -> None:
    bind = op.get_bind()
    _reason_check(bind, OLD_CHECK, NEW_CHECK)
    op.create_table(
        SWEEPS,
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("notice_version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("stale_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("swept_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("purpose", "notice_version", name=op.f("pk_deletion_feed_sweeps")),
    )
    if bind.dialect.name == "sqlite":
        _sqlite_sweeps_triggers(bind)
    else:
        _postgres_sweeps_triggers(bind)
        _postgres_revoke(bind)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(f"DROP TABLE {SWEEPS}")  # its triggers go with it
        bind.exec_driver_sql("DROP FUNCTION deletion_feed_sweeps_append_only()")
    else:
        op.drop_table(SWEEPS)  # its triggers go with it
    _reason_check(bind, NEW_CHECK, OLD_CHECK)


def _reason_check(bind: sa.Connection, old: str, new: str) -> None:
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(f"ALTER TABLE {FEED} DROP CONSTRAINT {CHECK_NAME}")
        bind.exec_driver_sql(f"ALTER TABLE {FEED} ADD CONSTRAINT {CHECK_NAME} CHECK ({new})")
    elif bind.dialect.name == "sqlite":
        _sqlite_rebuild(bind, old, new)
    else:
        raise RuntimeError(f"no reason check change for {bind.dialect.name}")


def _sqlite_rebuild(bind: sa.Connection, old: str, new: str) -> None:
    """Rebuild the feed with its check ``old`` replaced by ``new``; its index and triggers as they were, from their stored text."""
    stored = bind.exec_driver_sql("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL", (FEED,)).fetchall()
    tables = [str(sql) for kind, _, sql in stored if kind == "table"]
    dependents = sorted((str(kind), str(name), str(sql)) for kind, name, sql in stored if kind != "table")  # the index, then the triggers
    clause = f"CONSTRAINT {CHECK_NAME} CHECK ({old})"
    head = re.match(rf'CREATE TABLE "?{FEED}"? \(', tables[0]) if len(tables) == 1 else None
    if head is None or tables[0].count(clause) != 1:
        raise RuntimeError(f"{FEED} is not the table this migration expects; rebuild refused")
    rebuilt = f"{FEED}_rebuilt"
    columns = "seq, consumer_id, epoch, pseudonym, reason, at"
    for kind, name, _ in dependents:
        bind.exec_driver_sql(f"DROP {kind.upper()} {name}")
    body = tables[0][head.end() :].replace(clause, f"CONSTRAINT {CHECK_NAME} CHECK ({new})")
    bind.exec_driver_sql(f"CREATE TABLE {rebuilt} ({body}")
    bind.exec_driver_sql(f"INSERT INTO {rebuilt} ({columns}) SELECT {columns} FROM {FEED} ORDER BY seq")
    bind.exec_driver_sql(f"DROP TABLE {FEED}")
    bind.exec_driver_sql(f"ALTER TABLE {rebuilt} RENAME TO {FEED}")
    for _, _, sql in dependents:
        bind.exec_driver_sql(sql)


def _sqlite_sweeps_triggers(bind: sa.Connection) -> None:
    for event in ("UPDATE", "DELETE"):
        bind.exec_driver_sql(f"CREATE TRIGGER {SWEEPS}_no_{event.lower()} BEFORE {event} ON {SWEEPS} BEGIN SELECT RAISE(ABORT, '{SWEEPS_MESSAGE}'); END")
    bind.exec_driver_sql(
        f"CREATE TRIGGER {SWEEPS}_no_replace BEFORE INSERT ON {SWEEPS} "
        f"WHEN EXISTS (SELECT 1 FROM {SWEEPS} WHERE {SWEEPS_KEY}) "
        f"BEGIN SELECT RAISE(ABORT, '{SWEEPS_MESSAGE}'); END"
    )


def _postgres_sweeps_triggers(bind: sa.Connection) -> None:
    bind.exec_driver_sql(
        "CREATE FUNCTION deletion_feed_sweeps_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN RAISE EXCEPTION '{SWEEPS_MESSAGE}' USING DETAIL = TG_OP || ' on ' || TG_TABLE_NAME || ' refused'; END $$"
    )
    bind.exec_driver_sql(
        f"CREATE TRIGGER {SWEEPS}_append_only BEFORE UPDATE OR DELETE ON {SWEEPS} FOR EACH ROW EXECUTE FUNCTION deletion_feed_sweeps_append_only()"
    )
    bind.exec_driver_sql(
        f"CREATE TRIGGER {SWEEPS}_no_truncate BEFORE TRUNCATE ON {SWEEPS} FOR EACH STATEMENT EXECUTE FUNCTION deletion_feed_sweeps_append_only()"
    )


def _postgres_grants(bind: sa.Connection) -> list[tuple[str, str, str]]:
    """(table, grantee, right) for each forbidden right a non-owner holds on the sweeps table."""
    rights = ", ".join(f"'{right}'" for right in REVOKED)
    rows = bind.exec_driver_sql(
        "SELECT c.oid::regclass::text, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, a.privilege_type "
        "FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a "
        f"WHERE c.oid = '{SWEEPS}'::regclass AND a.grantee <> c.relowner AND a.privilege_type IN ({rights})"
    )
    return sorted({(str(name), str(grantee), str(right)) for name, grantee, right in rows})


def _postgres_revoke(bind: sa.Connection) -> None:
    for name, grantee, right in _postgres_grants(bind):
        bind.exec_driver_sql(f"REVOKE {right} ON TABLE {name} FROM {grantee} CASCADE")
    left = _postgres_grants(bind)
    if left:
        raise RuntimeError(f"{SWEEPS}: {len(left)} forbidden grants could not be revoked by the owner; a DBA must revoke them")
