"""audit tables: journal, leaves and nodes, append-only at the database level

Revision ID: 0002_audit
Revises: 0001_data
Create Date: 2026-11-22 17:13:38.481332

Append-only, by backend:

- SQLite: BEFORE UPDATE and BEFORE DELETE triggers raise
  ``RAISE(ABORT, 'audit tables are append-only')``; BEFORE INSERT triggers
  refuse a row whose key already exists, because ``INSERT OR REPLACE`` deletes
  the old row without firing delete triggers (``recursive_triggers`` is off).
- PostgreSQL: one plpgsql trigger function raises on UPDATE and DELETE (row
  triggers) and TRUNCATE (a statement trigger); and every role other than the
  owner loses UPDATE, DELETE, TRUNCATE, REFERENCES and TRIGGER on the three
  tables (and UPDATE on the identity sequence), whoever granted them — default
  privileges usually grant the application role all four table rights. The
  application role keeps SELECT and INSERT (and USAGE on the sequence). The
  migration fails if any such privilege is left.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002_audit'
down_revision = '0001_data'
branch_labels = None
depends_on = None

TABLES = ('audit_journal', 'audit_leaves', 'audit_nodes')
MESSAGE = 'audit tables are append-only'
# Table rights no role but the owner may hold: everything beyond SELECT and INSERT.
REVOKED = ('UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER')
# For SQLite's no-replace triggers: the row's keys, as a condition on NEW.
KEYS = {
    'audit_journal': 'journal_id = NEW.journal_id',
    'audit_leaves': 'leaf_index = NEW.leaf_index OR journal_id = NEW.journal_id',
    'audit_nodes': 'level = NEW.level AND node_index = NEW.node_index',
}


def upgrade() -> None:
    op.create_table('audit_journal',
    sa.Column('journal_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('xact_id', sa.BigInteger(), nullable=True),
    sa.Column('leaf', sa.LargeBinary(), nullable=False),
    sa.Column('event_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('member_id', sa.String(length=256), nullable=True),
    sa.Column('actor_subject', sa.String(length=256), nullable=False),
    sa.Column('actor_client_id', sa.String(length=256), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('decision', sa.String(length=8), nullable=False),
    sa.CheckConstraint("decision IN ('allow', 'deny')", name=op.f('ck_audit_journal_decision')),
    sa.PrimaryKeyConstraint('journal_id', name=op.f('pk_audit_journal'))
    )
    with op.batch_alter_table('audit_journal', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_journal_action_event_time'), ['action', 'event_time'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_journal_actor_client_id_event_time'), ['actor_client_id', 'event_time'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_journal_actor_subject_event_time'), ['actor_subject', 'event_time'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_journal_event_time'), ['event_time'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_journal_member_id_event_time'), ['member_id', 'event_time'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_journal_xact_id'), ['xact_id'], unique=False)

    op.create_table('audit_nodes',
    sa.Column('level', sa.SmallInteger(), autoincrement=False, nullable=False),
    sa.Column('node_index', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
    sa.CheckConstraint('length(hash) = 32', name=op.f('ck_audit_nodes_hash')),
    sa.CheckConstraint('level >= 0 AND level < 64', name=op.f('ck_audit_nodes_level')),
    sa.CheckConstraint('node_index >= 0', name=op.f('ck_audit_nodes_node_index')),
    sa.PrimaryKeyConstraint('level', 'node_index', name=op.f('pk_audit_nodes'))
    )
    op.create_table('audit_leaves',
    sa.Column('leaf_index', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('journal_id', sa.BigInteger(), nullable=False),
    sa.Column('leaf_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('sequenced_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('leaf_index >= 0', name=op.f('ck_audit_leaves_leaf_index')),
    sa.CheckConstraint('length(leaf_hash) = 32', name=op.f('ck_audit_leaves_leaf_hash')),
    sa.ForeignKeyConstraint(['journal_id'], ['audit_journal.journal_id'], name=op.f('fk_audit_leaves_journal_id_audit_journal')),
    sa.PrimaryKeyConstraint('leaf_index', name=op.f('pk_audit_leaves')),
    sa.UniqueConstraint('journal_id', name=op.f('uq_audit_leaves_journal_id'))
    )

    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        _sqlite_triggers(bind)
    elif bind.dialect.name == 'postgresql':
        _postgres_triggers(bind)
        _postgres_revoke(bind)
    else:
        raise RuntimeError(f'no append-only triggers for {bind.dialect.name}')


def downgrade() -> None:
    op.drop_table('audit_leaves')
    op.drop_table('audit_nodes')
    with op.batch_alter_table('audit_journal', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_journal_xact_id'))
        batch_op.drop_index(batch_op.f('ix_audit_journal_member_id_event_time'))
        batch_op.drop_index(batch_op.f('ix_audit_journal_event_time'))
        batch_op.drop_index(batch_op.f('ix_audit_journal_actor_subject_event_time'))
        batch_op.drop_index(batch_op.f('ix_audit_journal_actor_client_id_event_time'))
        batch_op.drop_index(batch_op.f('ix_audit_journal_action_event_time'))
    op.drop_table('audit_journal')  # the triggers go with their tables
    if op.get_bind().dialect.name == 'postgresql':
        op.get_bind().exec_driver_sql('DROP FUNCTION audit_append_only()')


def _sqlite_triggers(bind: sa.Connection) -> None:
    for table in TABLES:
        for event in ('UPDATE', 'DELETE'):
            bind.exec_driver_sql(
                f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            )
        bind.exec_driver_sql(
            f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "
            f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {KEYS[table]}) "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
        )


def _postgres_triggers(bind: sa.Connection) -> None:
    bind.exec_driver_sql(
        "CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN RAISE EXCEPTION '{MESSAGE}' USING DETAIL = TG_OP || ' on ' || TG_TABLE_NAME || ' refused'; END $$"
    )
    for table in TABLES:
        bind.exec_driver_sql(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION audit_append_only()"
        )
        bind.exec_driver_sql(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()"
        )


def _postgres_grants(bind: sa.Connection) -> list[tuple[str, str, str, str]]:
    """(TABLE or SEQUENCE, name, grantee, right) for each forbidden right a non-owner holds on the audit relations."""
    relations = [f"'{table}'::regclass" for table in TABLES]
    relations.append("pg_get_serial_sequence('audit_journal', 'journal_id')::regclass")
    table_rights = ', '.join(f"'{right}'" for right in REVOKED)
    rows = bind.exec_driver_sql(
        "SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, c.oid::regclass::text, "
        "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, a.privilege_type "
        "FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a "
        f"WHERE c.oid IN ({', '.join(relations)}) AND a.grantee <> c.relowner "
        f"AND (c.relkind <> 'S' AND a.privilege_type IN ({table_rights}) OR c.relkind = 'S' AND a.privilege_type = 'UPDATE')"
    )
    return sorted({(str(kind), str(name), str(grantee), str(right)) for kind, name, grantee, right in rows})


def _postgres_revoke(bind: sa.Connection) -> None:
    for kind, name, grantee, right in _postgres_grants(bind):
        bind.exec_driver_sql(f'REVOKE {right} ON {kind} {name} FROM {grantee} CASCADE')
    left = _postgres_grants(bind)
    if left:
        raise RuntimeError(f'audit tables: {len(left)} UPDATE/DELETE/TRUNCATE-type grants could not be revoked by the owner; a DBA must revoke them')
