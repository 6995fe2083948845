"""extract jobs through the API: their data's size and time limit, a heartbeat, the purge, and per-row digests for incremental extracts

Revision ID: 0008_extract_jobs
Revises: 0007_extracts
Create Date: 2026-11-23 01:40:00

``extracts`` gains ``content_bytes`` (what the sealed data file must hold),
``heartbeat_at`` (a running job's last sign of life: a job whose process died
is marked failed by a sweep), ``expires_at`` and ``purged_at`` (the data is
kept sealed until then, then its key is shredded) and ``journal_id`` (its audit
event: the member's access log proves it). ``extract_members`` gains
``row_mac``: a keyed digest of the row the member was released as, so an
incremental extract releases only rows that are new or changed since its base.
A partial unique index allows one running extract per consumer.
Columns are added, never a table rebuilt, so the append-only triggers of
``extract_members`` stay as they are.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0008_extract_jobs'
down_revision = '0007_extracts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('extracts', sa.Column('content_bytes', sa.BigInteger(), nullable=True))
    op.add_column('extracts', sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('extracts', sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('extracts', sa.Column('purged_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('extracts', sa.Column('journal_id', sa.BigInteger(), nullable=True))
    op.add_column('extract_members', sa.Column('row_mac', sa.String(length=32), nullable=True))
    running = sa.text("status = 'running'")
    op.create_index('uq_extracts_running', 'extracts', ['consumer_id'], unique=True, sqlite_where=running, postgresql_where=running)


def downgrade() -> None:
    op.drop_index('uq_extracts_running', table_name='extracts')
    with op.batch_alter_table('extracts', schema=None) as batch_op:
        batch_op.drop_column('journal_id')
        batch_op.drop_column('purged_at')
        batch_op.drop_column('expires_at')
        batch_op.drop_column('heartbeat_at')
        batch_op.drop_column('content_bytes')
    # Not batch mode: a SQLite table rebuild would drop extract_members' append-only triggers.
    op.get_bind().exec_driver_sql('ALTER TABLE extract_members DROP COLUMN row_mac')
