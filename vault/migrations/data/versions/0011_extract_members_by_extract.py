"""extract_members: no index on member_id alone; a member's extracts are found by the primary key, extract by extract

Revision ID: 0011_extract_members_by_extract
Revises: 0010_stale_feed
Create Date: 2026-11-23 12:40:00

An extract's included members were inserted into ``ix_extract_members_member_id``
all over its length: at a million members each extract dirtied nearly every
leaf page of it, so the final transaction's cost and WAL grew with every
extract the vault had ever run (7.2 million rows after 19 extracts: about
1.3 s of one core and the whole index written to the WAL again). The primary
key ``(extract_id, member_id)`` takes an extract's rows in one run of pages.
The queries that look a member up (their access log, the deletion feed,
incremental extracts) read the extracts first and seek the key once per
extract. Only an index is dropped: no table is rebuilt, no right changes, the
append-only triggers are untouched.
"""

from __future__ import annotations

from alembic import op

revision = "0011_extract_members_by_extract"
down_revision = "0010_stale_feed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_extract_members_member_id", table_name="extract_members")


def downgrade() -> None:
    op.create_index("ix_extract_members_member_id", "extract_members", ["member_id"], unique=False)
