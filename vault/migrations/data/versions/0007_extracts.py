"""pseudonymized extracts: consumers, pseudonym epochs, extract jobs, their members, the deletion feed

Revision ID: 0007_extracts
Revises: 0006_data_requests
Create Date: 2026-11-22 23:49:17.476936

``extract_members`` (which members an extract held: breach scoping and the
member's access log rely on it) and ``deletion_feed`` are append-only like the
audit tables (SQLite triggers incl. no-replace; PostgreSQL row and TRUNCATE
triggers, and UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER revoked from every
role but the owner).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0007_extracts'
down_revision = '0006_data_requests'
branch_labels = None
depends_on = None

MESSAGE = 'extract membership and the deletion feed are append-only'
# (table, no-replace key covering every unique key of the table)
APPEND_ONLY = (
    ('extract_members', 'extract_id = NEW.extract_id AND member_id = NEW.member_id'),
    ('deletion_feed', 'seq = NEW.seq OR (consumer_id = NEW.consumer_id AND epoch = NEW.epoch AND pseudonym = NEW.pseudonym)'),
)
REVOKED = ('UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER')


def upgrade() -> None:
    op.create_table('consumers',
    sa.Column('consumer_id', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('attributes', sa.String(length=1024), nullable=False),
    sa.Column('health', sa.Boolean(), nullable=False),
    sa.Column('k', sa.Integer(), nullable=False),
    sa.Column('suppression_cap_permille', sa.Integer(), nullable=False),
    sa.Column('formats', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('k >= 2 AND k <= 1000', name=op.f('ck_consumers_k')),
    sa.CheckConstraint('suppression_cap_permille >= 0 AND suppression_cap_permille <= 500', name=op.f('ck_consumers_suppression_cap')),
    sa.ForeignKeyConstraint(['consumer_id'], ['clients.client_id'], name=op.f('fk_consumers_consumer_id_clients')),
    sa.PrimaryKeyConstraint('consumer_id', name=op.f('pk_consumers'))
    )
    op.create_table('deletion_feed',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=True), nullable=False),
    sa.Column('consumer_id', sa.String(length=64), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('pseudonym', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=16), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("reason IN ('withdrawn', 'erased', 'restricted')", name=op.f('ck_deletion_feed_reason')),
    sa.ForeignKeyConstraint(['consumer_id'], ['consumers.consumer_id'], name=op.f('fk_deletion_feed_consumer_id_consumers')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_deletion_feed')),
    sa.UniqueConstraint('consumer_id', 'epoch', 'pseudonym', name=op.f('uq_deletion_feed_consumer_id_epoch_pseudonym'))
    )
    with op.batch_alter_table('deletion_feed', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deletion_feed_consumer_id_seq'), ['consumer_id', 'seq'], unique=False)

    op.create_table('extracts',
    sa.Column('extract_id', sa.String(length=32), nullable=False),
    sa.Column('consumer_id', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('k', sa.Integer(), nullable=False),
    sa.Column('since', sa.String(length=64), nullable=True),
    sa.Column('row_count', sa.BigInteger(), nullable=True),
    sa.Column('content_sha256', sa.String(length=64), nullable=True),
    sa.Column('members_sha256', sa.String(length=64), nullable=True),
    sa.Column('manifest', sa.Text(), nullable=True),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.Column('requested_by', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("format IN ('ndjson', 'csv', 'parquet')", name=op.f('ck_extracts_format')),
    sa.CheckConstraint("status IN ('running', 'done', 'refused', 'failed')", name=op.f('ck_extracts_status')),
    sa.ForeignKeyConstraint(['consumer_id'], ['consumers.consumer_id'], name=op.f('fk_extracts_consumer_id_consumers')),
    sa.PrimaryKeyConstraint('extract_id', name=op.f('pk_extracts'))
    )
    with op.batch_alter_table('extracts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_extracts_consumer_id_created_at'), ['consumer_id', 'created_at'], unique=False)

    op.create_table('pseudonym_epochs',
    sa.Column('consumer_id', sa.String(length=64), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('generalization', sa.String(length=1024), nullable=True),
    sa.CheckConstraint('epoch >= 1', name=op.f('ck_pseudonym_epochs_epoch')),
    sa.ForeignKeyConstraint(['consumer_id'], ['consumers.consumer_id'], name=op.f('fk_pseudonym_epochs_consumer_id_consumers')),
    sa.PrimaryKeyConstraint('consumer_id', 'epoch', name=op.f('pk_pseudonym_epochs'))
    )
    op.create_table('extract_members',
    sa.Column('extract_id', sa.String(length=32), nullable=False),
    sa.Column('member_id', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['extract_id'], ['extracts.extract_id'], name=op.f('fk_extract_members_extract_id_extracts')),
    sa.ForeignKeyConstraint(['member_id'], ['members.member_id'], name=op.f('fk_extract_members_member_id_members')),
    sa.PrimaryKeyConstraint('extract_id', 'member_id', name=op.f('pk_extract_members'))
    )
    with op.batch_alter_table('extract_members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_extract_members_member_id'), ['member_id'], unique=False)

    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        _sqlite_triggers(bind)
    elif bind.dialect.name == 'postgresql':
        _postgres_triggers(bind)
        _postgres_revoke(bind)
    else:
        raise RuntimeError(f'no append-only triggers for {bind.dialect.name}')


def downgrade() -> None:
    with op.batch_alter_table('extract_members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_extract_members_member_id'))

    op.drop_table('extract_members')
    op.drop_table('pseudonym_epochs')
    with op.batch_alter_table('extracts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_extracts_consumer_id_created_at'))

    op.drop_table('extracts')
    with op.batch_alter_table('deletion_feed', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deletion_feed_consumer_id_seq'))

    op.drop_table('deletion_feed')
    op.drop_table('consumers')
    if op.get_bind().dialect.name == 'postgresql':
        op.get_bind().exec_driver_sql('DROP FUNCTION extracts_append_only()')


def _sqlite_triggers(bind: sa.Connection) -> None:
    for table, key in APPEND_ONLY:
        for event in ('UPDATE', 'DELETE'):
            bind.exec_driver_sql(
                f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            )
        bind.exec_driver_sql(
            f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "
            f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {key}) "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
        )


def _postgres_triggers(bind: sa.Connection) -> None:
    bind.exec_driver_sql(
        "CREATE FUNCTION extracts_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN RAISE EXCEPTION '{MESSAGE}' USING DETAIL = TG_OP || ' on ' || TG_TABLE_NAME || ' refused'; END $$"
    )
    for table, _ in APPEND_ONLY:
        bind.exec_driver_sql(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION extracts_append_only()"
        )
        bind.exec_driver_sql(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION extracts_append_only()"
        )


def _postgres_grants(bind: sa.Connection) -> list[tuple[str, str, str]]:
    """(table, grantee, right) for each forbidden right a non-owner holds."""
    found = []
    rights = ', '.join(f"'{right}'" for right in REVOKED)
    for table, _ in APPEND_ONLY:
        rows = bind.exec_driver_sql(
            "SELECT c.oid::regclass::text, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, a.privilege_type "
            "FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a "
            f"WHERE c.oid = '{table}'::regclass AND a.grantee <> c.relowner AND a.privilege_type IN ({rights})"
        )
        found.extend((str(name), str(grantee), str(right)) for name, grantee, right in rows)
    return sorted(set(found))


def _postgres_revoke(bind: sa.Connection) -> None:
    for name, grantee, right in _postgres_grants(bind):
        bind.exec_driver_sql(f'REVOKE {right} ON TABLE {name} FROM {grantee} CASCADE')
    left = _postgres_grants(bind)
    if left:
        raise RuntimeError(f'extract tables: {len(left)} forbidden grants could not be revoked by the owner; a DBA must revoke them')
