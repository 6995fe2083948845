"""create the signing_keys table

Revision ID: 0002_keystore
Revises: 0001_keystore
Create Date: 2026-11-23 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002_keystore'
down_revision = '0001_keystore'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('signing_keys',
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('kek_version', sa.Integer(), nullable=False),
    sa.Column('wrapped', sa.LargeBinary(length=128), nullable=False),
    sa.Column('public_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('retire_after', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('version >= 1', name='ck_signing_keys_version'),
    sa.CheckConstraint('length(public_key) = 32', name='ck_signing_keys_public_key'),
    sa.PrimaryKeyConstraint('purpose', 'version')
    )


def downgrade() -> None:
    op.drop_table('signing_keys')
