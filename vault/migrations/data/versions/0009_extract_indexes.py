"""extracts: covering indexes for a member's recent treatments by category and spends by type

Revision ID: 0009_extract_indexes
Revises: 0008_extract_jobs
Create Date: 2026-11-23 04:10:00

An extract's first pass reads, per batch of members, the treatments of each
member by category (a count of the last 12 months and the last day) and the
``spend`` entries of the last 12 months. ``treatments (member_id, category,
performed_at)`` answers the first from the index alone, and ``ledger_entries
(member_id, entry_type, occurred_at)`` narrows the second to the year's spends
before a row is read. Only indexes are added: no table is rebuilt, no right
is granted or revoked (an index has none of its own; the application role reads
through the tables it may already read).
"""

from __future__ import annotations

from alembic import op

revision = "0009_extract_indexes"
down_revision = "0008_extract_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_treatments_member_id_category_performed_at"), "treatments", ["member_id", "category", "performed_at"], unique=False)
    op.create_index(op.f("ix_ledger_entries_member_id_entry_type_occurred_at"), "ledger_entries", ["member_id", "entry_type", "occurred_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_ledger_entries_member_id_entry_type_occurred_at"), table_name="ledger_entries")
    op.drop_index(op.f("ix_treatments_member_id_category_performed_at"), table_name="treatments")
