"""access: clinic links, break-glass reviews, idempotency keys, policy versions, clients, revoked tokens, throttle

Revision ID: 0004_access
Revises: 0003_audit_checkpoints
Create Date: 2026-11-22 18:46:52.612911

``member_clinics`` is filled from the members' home clinics and the clinics of
their treatments, the two links that existed before check-ins.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004_access'
down_revision = '0003_audit_checkpoints'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('auth_throttle',
    sa.Column('bucket', sa.String(length=128), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('bucket', name=op.f('pk_auth_throttle'))
    )
    op.create_table('clients',
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('secret_digest', sa.LargeBinary(length=32), nullable=False),
    sa.Column('roles', sa.String(length=512), nullable=False),
    sa.Column('clinics', sa.String(length=2048), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('secret_rotated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('client_id', name=op.f('pk_clients'))
    )
    op.create_table('idempotency_keys',
    sa.Column('caller', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_digest', sa.LargeBinary(length=32), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('response', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('caller', 'key', name=op.f('pk_idempotency_keys'))
    )
    op.create_table('policy_versions',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('policy_hash', sa.String(length=80), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('policy', sa.Text(), nullable=False),
    sa.Column('activated_by', sa.String(length=256), nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_policy_versions'))
    )
    op.create_table('revoked_tokens',
    sa.Column('token_id', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('token_id', name=op.f('pk_revoked_tokens'))
    )
    op.create_table('break_glass_reviews',
    sa.Column('review_id', sa.String(length=32), nullable=False),
    sa.Column('member_id', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.String(length=256), nullable=False),
    sa.Column('reason_code', sa.String(length=64), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reviewed_by', sa.String(length=256), nullable=True),
    sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'reviewed')", name=op.f('ck_break_glass_reviews_status')),
    sa.ForeignKeyConstraint(['member_id'], ['members.member_id'], name=op.f('fk_break_glass_reviews_member_id_members')),
    sa.PrimaryKeyConstraint('review_id', name=op.f('pk_break_glass_reviews'))
    )
    with op.batch_alter_table('break_glass_reviews', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_break_glass_reviews_status_requested_at'), ['status', 'requested_at'], unique=False)

    op.create_table('member_clinics',
    sa.Column('member_id', sa.String(length=32), nullable=False),
    sa.Column('clinic_id', sa.String(length=32), nullable=False),
    sa.Column('via', sa.String(length=16), nullable=False),
    sa.Column('linked_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("via IN ('home', 'treatment', 'check_in')", name=op.f('ck_member_clinics_via')),
    sa.ForeignKeyConstraint(['member_id'], ['members.member_id'], name=op.f('fk_member_clinics_member_id_members')),
    sa.PrimaryKeyConstraint('member_id', 'clinic_id', name=op.f('pk_member_clinics'))
    )
    with op.batch_alter_table('member_clinics', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_member_clinics_clinic_id'), ['clinic_id'], unique=False)

    op.execute(
        "INSERT INTO member_clinics (member_id, clinic_id, via, linked_at) "
        "SELECT member_id, home_clinic_id, 'home', created_at FROM members WHERE home_clinic_id IS NOT NULL"
    )
    op.execute(
        "INSERT INTO member_clinics (member_id, clinic_id, via, linked_at) "
        "SELECT t.member_id, t.clinic_id, 'treatment', min(t.created_at) FROM treatments t "
        "WHERE NOT EXISTS (SELECT 1 FROM member_clinics m WHERE m.member_id = t.member_id AND m.clinic_id = t.clinic_id) "
        "GROUP BY t.member_id, t.clinic_id"
    )



def downgrade() -> None:
    with op.batch_alter_table('member_clinics', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_member_clinics_clinic_id'))

    op.drop_table('member_clinics')
    with op.batch_alter_table('break_glass_reviews', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_break_glass_reviews_status_requested_at'))

    op.drop_table('break_glass_reviews')
    op.drop_table('revoked_tokens')
    op.drop_table('policy_versions')
    op.drop_table('idempotency_keys')
    op.drop_table('clients')
    op.drop_table('auth_throttle')
