"""audit checkpoints: the signed checkpoints, append-only like the other audit tables

Revision ID: 0003_audit_checkpoints
Revises: 0002_audit
Create Date: 2026-11-23 10:00:00.000000

Append-only exactly as in ``0002_audit``:

- SQLite: BEFORE UPDATE and BEFORE DELETE triggers raise
  ``RAISE(ABORT, 'audit tables are append-only')``, and a BEFORE INSERT
  trigger refuses a row whose key already exists (``INSERT OR REPLACE``).
- PostgreSQL: the trigger function ``audit_append_only()`` of ``0002_audit``
  refuses UPDATE and DELETE (row triggers) and TRUNCATE (a statement
  trigger); every role but the owner loses UPDATE, DELETE, TRUNCATE,
  REFERENCES and TRIGGER on the table and UPDATE on its identity sequence,
  and the migration fails if any such privilege is left. The application
  role keeps SELECT and INSERT (and USAGE on the sequence).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003_audit_checkpoints'
down_revision = '0002_audit'
branch_labels = None
depends_on = None

TABLE = 'audit_checkpoints'
MESSAGE = 'audit tables are append-only'
REVOKED = ('UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER')


def upgrade() -> None:
    op.create_table('audit_checkpoints',
    sa.Column('checkpoint_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=True), nullable=False),
    sa.Column('tree_size', sa.BigInteger(), nullable=False),
    sa.Column('root_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('signer_key_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('length(root_hash) = 32', name=op.f('ck_audit_checkpoints_root_hash')),
    sa.CheckConstraint('tree_size >= 0', name=op.f('ck_audit_checkpoints_tree_size')),
    sa.PrimaryKeyConstraint('checkpoint_id', name=op.f('pk_audit_checkpoints'))
    )
    with op.batch_alter_table('audit_checkpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_checkpoints_tree_size'), ['tree_size'], unique=False)

    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        _sqlite_triggers(bind)
    elif bind.dialect.name == 'postgresql':
        _postgres_triggers(bind)
        _postgres_revoke(bind)
    else:
        raise RuntimeError(f'no append-only triggers for {bind.dialect.name}')


def downgrade() -> None:
    with op.batch_alter_table('audit_checkpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_checkpoints_tree_size'))
    op.drop_table('audit_checkpoints')  # the triggers go with the table; audit_append_only() belongs to 0002


def _sqlite_triggers(bind: sa.Connection) -> None:
    for event in ('UPDATE', 'DELETE'):
        bind.exec_driver_sql(
            f"CREATE TRIGGER {TABLE}_no_{event.lower()} BEFORE {event} ON {TABLE} "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
        )
    bind.exec_driver_sql(
        f"CREATE TRIGGER {TABLE}_no_replace BEFORE INSERT ON {TABLE} "
        f"WHEN EXISTS (SELECT 1 FROM {TABLE} WHERE checkpoint_id = NEW.checkpoint_id) "
        f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
    )


def _postgres_triggers(bind: sa.Connection) -> None:
    bind.exec_driver_sql(
        f"CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
        "FOR EACH ROW EXECUTE FUNCTION audit_append_only()"
    )
    bind.exec_driver_sql(
        f"CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()"
    )


def _postgres_grants(bind: sa.Connection) -> list[tuple[str, str, str, str]]:
    """(TABLE or SEQUENCE, name, grantee, right) for each forbidden right a non-owner holds on the table or its sequence."""
    relations = f"'{TABLE}'::regclass, pg_get_serial_sequence('{TABLE}', 'checkpoint_id')::regclass"
    table_rights = ', '.join(f"'{right}'" for right in REVOKED)
    rows = bind.exec_driver_sql(
        "SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, c.oid::regclass::text, "
        "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, a.privilege_type "
        "FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a "
        f"WHERE c.oid IN ({relations}) AND a.grantee <> c.relowner "
        f"AND (c.relkind <> 'S' AND a.privilege_type IN ({table_rights}) OR c.relkind = 'S' AND a.privilege_type = 'UPDATE')"
    )
    return sorted({(str(kind), str(name), str(grantee), str(right)) for kind, name, grantee, right in rows})


def _postgres_revoke(bind: sa.Connection) -> None:
    for kind, name, grantee, right in _postgres_grants(bind):
        bind.exec_driver_sql(f'REVOKE {right} ON {kind} {name} FROM {grantee} CASCADE')
    left = _postgres_grants(bind)
    if left:
        raise RuntimeError(f'{TABLE}: {len(left)} UPDATE/DELETE/TRUNCATE-type grants could not be revoked by the owner; a DBA must revoke them')
