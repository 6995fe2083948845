"""the deletion feed takes a pseudonym again once an extract released it after its last entry; departures during a run

Revision ID: 0012_feed_again
Revises: 0011_extract_members_by_extract
Create Date: 2026-11-23 18:00:00

Until now the feed held one entry per (consumer, epoch, pseudonym), for good:
a member who withdrew, granted again, was released again by a later extract of
the epoch and withdrew again was not fed the second time, and the consumer
kept the row. Now:

* ``deletion_feed`` loses its unique key ``(consumer_id, epoch, pseudonym)``
  and gains the index ``(consumer_id, epoch, pseudonym, seq)`` in its place (a
  pseudonym's last entry is one seek). Its no-replace trigger on SQLite looked
  a new row up by that key too; it now looks it up by ``seq`` alone, the only
  key a REPLACE could still hit. On SQLite a unique constraint cannot be
  dropped, so the table is rebuilt as 0010 did: its own ``CREATE TABLE`` text
  without the constraint, its rows copied with their ``seq``, its index and
  no-update and no-delete triggers created again from their own stored text.
  On PostgreSQL the constraint is dropped; its triggers and revoked rights are
  untouched.
* ``extracts.feed_seq``: the feed's last ``seq`` when a done extract was
  released. Extracts done before this migration get the feed's last ``seq``
  now, so a member they held who leaves again is fed again (a consumer may be
  told twice, never not at all).
* ``extract_departures`` records a member who left while an extract for a
  purpose they left was running; the extract feeds those it included when it
  is released. It is append-only like the feed (SQLite triggers incl.
  no-replace; PostgreSQL row and TRUNCATE triggers, and UPDATE, DELETE,
  TRUNCATE, REFERENCES, TRIGGER revoked from every role but the owner).

Downgrade refuses while a pseudonym has two entries for one (consumer, epoch)
(the old key could not hold them), then restores the key and the old trigger,
and drops the column and the table.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0012_feed_again"
down_revision = "0011_extract_members_by_extract"
branch_labels = None
depends_on = None

FEED = "deletion_feed"
UNIQUE = "CONSTRAINT uq_deletion_feed_consumer_id_epoch_pseudonym UNIQUE (consumer_id, epoch, pseudonym)"
PSEUDONYM_INDEX = "ix_deletion_feed_consumer_id_epoch_pseudonym_seq"
MESSAGE = "extract membership and the deletion feed are append-only"
OLD_KEY = "seq = NEW.seq OR (consumer_id = NEW.consumer_id AND epoch = NEW.epoch AND pseudonym = NEW.pseudonym)"
NEW_KEY = "seq = NEW.seq"
DEPARTURES = "extract_departures"
DEPARTURES_MESSAGE = "extract departures are append-only"
DEPARTURES_KEY = "extract_id = NEW.extract_id AND member_id = NEW.member_id"
REVOKED = ("UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(f"ALTER TABLE {FEED} DROP CONSTRAINT uq_deletion_feed_consumer_id_epoch_pseudonym")
    else:
        _sqlite_rebuild(bind, unique=False)
    op.create_index(PSEUDONYM_INDEX, FEED, ["consumer_id", "epoch", "pseudonym", "seq"], unique=False)
    op.add_column("extracts", sa.Column("feed_seq", sa.BigInteger(), nullable=True))
    bind.exec_driver_sql(f"UPDATE extracts SET feed_seq = (SELECT coalesce(max(seq), 0) FROM {FEED}) WHERE status = 'done'")
    op.create_table(
        DEPARTURES,
        sa.Column("extract_id", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("reason IN ('withdrawn', 'erased', 'restricted')", name=op.f("ck_extract_departures_reason")),
        sa.ForeignKeyConstraint(["extract_id"], ["extracts.extract_id"], name=op.f("fk_extract_departures_extract_id_extracts")),
        sa.ForeignKeyConstraint(["member_id"], ["members.member_id"], name=op.f("fk_extract_departures_member_id_members")),
        sa.PrimaryKeyConstraint("extract_id", "member_id", name=op.f("pk_extract_departures")),
    )
    if bind.dialect.name == "sqlite":
        _sqlite_departures_triggers(bind)
    else:
        _postgres_departures_triggers(bind)
        _postgres_revoke(bind)


def downgrade() -> None:
    bind = op.get_bind()
    twice = bind.exec_driver_sql(f"SELECT count(*) FROM (SELECT 1 FROM {FEED} GROUP BY consumer_id, epoch, pseudonym HAVING count(*) > 1) AS t").scalar_one()
    if twice:
        raise RuntimeError(f"{twice} pseudonyms are in the deletion feed more than once for one consumer and epoch; 0011's unique key cannot hold them")
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(f"DROP TABLE {DEPARTURES}")  # its triggers go with it
        bind.exec_driver_sql("DROP FUNCTION extract_departures_append_only()")
    else:
        op.drop_table(DEPARTURES)  # its triggers go with it
    bind.exec_driver_sql("ALTER TABLE extracts DROP COLUMN feed_seq")
    op.drop_index(PSEUDONYM_INDEX, table_name=FEED)
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(f"ALTER TABLE {FEED} ADD {UNIQUE}")
    else:
        _sqlite_rebuild(bind, unique=True)


def _sqlite_rebuild(bind: sa.Connection, *, unique: bool) -> None:
    """Rebuild the feed without (or, ``unique``, with) its unique key; its index and triggers from their stored text, the no-replace key changed."""
    stored = bind.exec_driver_sql("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL", (FEED,)).fetchall()
    tables = [str(sql) for kind, _, sql in stored if kind == "table"]
    dependents = sorted((str(kind), str(name), str(sql)) for kind, name, sql in stored if kind != "table")  # the index, then the triggers
    head = re.match(rf'CREATE TABLE "?{FEED}"? \(', tables[0]) if len(tables) == 1 else None
    replace = next((sql for _, name, sql in dependents if name == f"{FEED}_no_replace"), "")
    old_key, new_key = (NEW_KEY, OLD_KEY) if unique else (OLD_KEY, NEW_KEY)
    if head is None or tables[0].count(UNIQUE) != (0 if unique else 1) or replace.count(f"WHERE {old_key})") != 1:
        raise RuntimeError(f"{FEED} is not the table this migration expects; rebuild refused")
    body = tables[0][head.end() :]
    if unique:
        body = body.rstrip().removesuffix(")").rstrip() + f", \n\t{UNIQUE}\n)"
    else:
        body = re.sub(rf",\s*{re.escape(UNIQUE)}", "", body)
    rebuilt = f"{FEED}_rebuilt"
    columns = "seq, consumer_id, epoch, pseudonym, reason, at"
    for kind, name, _ in dependents:
        bind.exec_driver_sql(f"DROP {kind.upper()} {name}")
    bind.exec_driver_sql(f"CREATE TABLE {rebuilt} ({body}")
    bind.exec_driver_sql(f"INSERT INTO {rebuilt} ({columns}) SELECT {columns} FROM {FEED} ORDER BY seq")
    bind.exec_driver_sql(f"DROP TABLE {FEED}")
    bind.exec_driver_sql(f"ALTER TABLE {rebuilt} RENAME TO {FEED}")
    for _, name, sql in dependents:
        bind.exec_driver_sql(sql.replace(f"WHERE {old_key})", f"WHERE {new_key})") if name == f"{FEED}_no_replace" else sql)


def _sqlite_departures_triggers(bind: sa.Connection) -> None:
    for event in ("UPDATE", "DELETE"):
        bind.exec_driver_sql(
            f"CREATE TRIGGER {DEPARTURES}_no_{event.lower()} BEFORE {event} ON {DEPARTURES} BEGIN SELECT RAISE(ABORT, '{DEPARTURES_MESSAGE}'); END"
        )
    bind.exec_driver_sql(
        f"CREATE TRIGGER {DEPARTURES}_no_replace BEFORE INSERT ON {DEPARTURES} "
        f"WHEN EXISTS (SELECT 1 FROM {DEPARTURES} WHERE {DEPARTURES_KEY}) "
        f"BEGIN SELECT RAISE(ABORT, '{DEPARTURES_MESSAGE}'); END"
    )


def _postgres_departures_triggers(bind: sa.Connection) -> None:
    bind.exec_driver_sql(
        "CREATE FUNCTION extract_departures_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN RAISE EXCEPTION '{DEPARTURES_MESSAGE}' USING DETAIL = TG_OP || ' on ' || TG_TABLE_NAME || ' refused'; END $$"
    )
    bind.exec_driver_sql(
        f"CREATE TRIGGER {DEPARTURES}_append_only BEFORE UPDATE OR DELETE ON {DEPARTURES} FOR EACH ROW EXECUTE FUNCTION extract_departures_append_only()"
    )
    bind.exec_driver_sql(
        f"CREATE TRIGGER {DEPARTURES}_no_truncate BEFORE TRUNCATE ON {DEPARTURES} FOR EACH STATEMENT EXECUTE FUNCTION extract_departures_append_only()"
    )


def _postgres_grants(bind: sa.Connection) -> list[tuple[str, str, str]]:
    """(table, grantee, right) for each forbidden right a non-owner holds on the departures table."""
    rights = ", ".join(f"'{right}'" for right in REVOKED)
    rows = bind.exec_driver_sql(
        "SELECT c.oid::regclass::text, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, a.privilege_type "
        "FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a "
        f"WHERE c.oid = '{DEPARTURES}'::regclass AND a.grantee <> c.relowner AND a.privilege_type IN ({rights})"
    )
    return sorted({(str(name), str(grantee), str(right)) for name, grantee, right in rows})


def _postgres_revoke(bind: sa.Connection) -> None:
    for name, grantee, right in _postgres_grants(bind):
        bind.exec_driver_sql(f"REVOKE {right} ON TABLE {name} FROM {grantee} CASCADE")
    left = _postgres_grants(bind)
    if left:
        raise RuntimeError(f"{DEPARTURES}: {len(left)} forbidden grants could not be revoked by the owner; a DBA must revoke them")
