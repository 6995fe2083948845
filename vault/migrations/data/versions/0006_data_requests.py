"""data-subject requests and their append-only steps

Revision ID: 0006_data_requests
Revises: 0005_consent
Create Date: 2026-11-22 21:50:00.000000

``data_request_steps`` is append-only like the audit and consent tables
(SQLite triggers incl. no-replace; PostgreSQL row and TRUNCATE triggers and
UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER revoked from every role but the
owner). A request's status moves, so ``data_requests`` takes UPDATE, but
never DELETE or TRUNCATE (a trigger, and the grants revoked): a request and
its history outlive even the member's erasure, as proof of what was done.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0006_data_requests'
down_revision = '0005_consent'
branch_labels = None
depends_on = None

MESSAGE = 'data-subject request history is append-only'
OPEN = "status IN ('received', 'verified', 'in_progress')"
# (table, operations refused by trigger, rights revoked from every role but the owner, no-replace key)
# The no-replace key covers every unique key of the table: INSERT OR REPLACE through any of them would delete a row.
OPEN_STATUSES = "('received', 'verified', 'in_progress')"
RULES = (
    (
        'data_request_steps', ('UPDATE', 'DELETE'), ('UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'),
        'step_id = NEW.step_id OR (dsr_id = NEW.dsr_id AND seq = NEW.seq)',
    ),
    (
        'data_requests', ('DELETE',), ('DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'),
        f'dsr_id = NEW.dsr_id OR (NEW.status IN {OPEN_STATUSES} AND member_id = NEW.member_id AND type = NEW.type AND status IN {OPEN_STATUSES})',
    ),
)


def upgrade() -> None:
    op.create_table('data_requests',
    sa.Column('dsr_id', sa.String(length=32), nullable=False),
    sa.Column('member_id', sa.String(length=32), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('jurisdiction', sa.String(length=16), nullable=False),
    sa.Column('filed_by', sa.String(length=256), nullable=False),
    sa.Column('filed_role', sa.String(length=16), nullable=False),
    sa.Column('details', sa.LargeBinary(), nullable=True),
    sa.Column('evidence', sa.LargeBinary(), nullable=True),
    sa.Column('settlement_entry_id', sa.String(length=32), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("filed_role = 'member' OR evidence IS NOT NULL", name=op.f('ck_data_requests_evidence_off_app')),
    sa.CheckConstraint("filed_role IN ('member', 'front_desk')", name=op.f('ck_data_requests_filed_role')),
    sa.CheckConstraint("status IN ('received', 'verified', 'in_progress', 'completed', 'rejected', 'lifted')", name=op.f('ck_data_requests_status')),
    sa.CheckConstraint("type IN ('access', 'portability', 'rectification', 'erasure', 'restriction', 'objection')", name=op.f('ck_data_requests_type')),
    sa.ForeignKeyConstraint(['member_id'], ['members.member_id'], name=op.f('fk_data_requests_member_id_members')),
    sa.PrimaryKeyConstraint('dsr_id', name=op.f('pk_data_requests'))
    )
    with op.batch_alter_table('data_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_data_requests_member_id_type'), ['member_id', 'type'], unique=False)
        batch_op.create_index(batch_op.f('ix_data_requests_status_due_at'), ['status', 'due_at'], unique=False)
        batch_op.create_index('uq_data_requests_open_type', ['member_id', 'type'], unique=True, sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN))

    op.create_table('data_request_steps',
    sa.Column('step_id', sa.String(length=32), nullable=False),
    sa.Column('dsr_id', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=True),
    sa.Column('to_status', sa.String(length=16), nullable=False),
    sa.Column('actor', sa.String(length=256), nullable=False),
    sa.Column('actor_role', sa.String(length=32), nullable=False),
    sa.Column('reason_code', sa.String(length=40), nullable=False),
    sa.Column('note', sa.LargeBinary(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['dsr_id'], ['data_requests.dsr_id'], name=op.f('fk_data_request_steps_dsr_id_data_requests')),
    sa.PrimaryKeyConstraint('step_id', name=op.f('pk_data_request_steps')),
    sa.UniqueConstraint('dsr_id', 'seq', name=op.f('uq_data_request_steps_dsr_id_seq'))
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
    op.drop_table('data_request_steps')
    with op.batch_alter_table('data_requests', schema=None) as batch_op:
        batch_op.drop_index('uq_data_requests_open_type')
        batch_op.drop_index(batch_op.f('ix_data_requests_status_due_at'))
        batch_op.drop_index(batch_op.f('ix_data_requests_member_id_type'))
    op.drop_table('data_requests')
    if op.get_bind().dialect.name == 'postgresql':
        op.get_bind().exec_driver_sql('DROP FUNCTION data_requests_append_only()')


def _sqlite_triggers(bind: sa.Connection) -> None:
    for table, refused, _, key in RULES:
        for event in refused:
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
        "CREATE FUNCTION data_requests_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN RAISE EXCEPTION '{MESSAGE}' USING DETAIL = TG_OP || ' on ' || TG_TABLE_NAME || ' refused'; END $$"
    )
    for table, refused, _, _ in RULES:
        bind.exec_driver_sql(
            f"CREATE TRIGGER {table}_append_only BEFORE {' OR '.join(refused)} ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION data_requests_append_only()"
        )
        bind.exec_driver_sql(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION data_requests_append_only()"
        )


def _postgres_grants(bind: sa.Connection) -> list[tuple[str, str, str]]:
    """(table, grantee, right) for each forbidden right a non-owner holds."""
    found = []
    for table, _, revoked, _ in RULES:
        rights = ', '.join(f"'{right}'" for right in revoked)
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
        raise RuntimeError(f'data-request tables: {len(left)} forbidden grants could not be revoked by the owner; a DBA must revoke them')
