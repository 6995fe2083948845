"""The live verifier: the stored log checked end to end, as an auditor would check an export of it.

``verify_stored`` runs ``audit.queries.export`` through ``audit.verify.verify_export``
against every checkpoint in ``audit_checkpoints`` and the published one (the
state file), with the verifier keys of every audit key not yet retired when the
earliest of them was made. The export runs to the largest checkpoint size,
capped at the tree size (so a tree shorter than the published checkpoint fails
as truncated); leaves sequenced after the last checkpoint are not covered.

Two checks go beyond the export, because the database holds more than an export:

- a root mismatch at checkpoint size s names the first index in the unproven
  range whose journal leaf no longer hashes to its stored leaf node, when there
  is one (an edited journal row), instead of s − 1;
- the stored nodes — which roots and proofs are served from — must give every
  verified checkpoint's root too; if not, the report is a root mismatch naming
  the first leaf whose stored leaf node disagrees with its journal leaf
  (``None`` if only an inner node was changed). Only the nodes a checkpoint's
  root is read from are compared: another changed node gives proofs that fail
  against the signed roots for whoever checks them, but is not caught here.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from sqlalchemy import Connection, select

from audit import store
from audit.checkpoints import Checkpointer, audit_checkpoints, claimed_checkpoint
from audit.merkle import leaf_hash
from audit.queries import export
from audit.verify import Finding, Report, verify_export


def verify_stored(conn: Connection, checkpointer: Checkpointer, now: datetime) -> tuple[Report, tuple[str, ...]]:
    """The report, and a label for each checkpoint by its ``Report.checkpoint_number``."""
    c = audit_checkpoints.c
    rows = conn.execute(select(c.tree_size, c.note, c.created_at).order_by(c.checkpoint_id)).all()
    notes, sizes = [str(r.note) for r in rows], [int(r.tree_size) for r in rows]
    labels = [f"stored checkpoint {n}, size {s}" for n, s in enumerate(sizes, start=1)]
    since = min([now, *(r.created_at for r in rows)])
    published = checkpointer.published_note()
    if published is not None:
        claimed = claimed_checkpoint(published)
        notes.append(published)
        sizes.append(-1 if claimed is None else claimed.size)
        labels.append(f"the published checkpoint {checkpointer.state_file}")
        since = since if claimed is None else min(since, claimed.time)
    end = min(store.tree_size(conn), max([0, *sizes]))
    report = verify_export(export(conn, 0, end), notes, checkpointer.verifier_keys(since), origin=checkpointer.origin)
    if report.finding is Finding.ROOT_MISMATCH and report.first_bad_index is not None:
        located = _locate(conn, report.proven_size, report.first_bad_index + 1)
        return dataclasses.replace(report, first_bad_index=report.first_bad_index if located is None else located), tuple(labels)
    for checkpoint in report.checkpoints if report.ok else ():
        if store.root(conn, checkpoint.size) != checkpoint.root_hash:
            located = _locate(conn, 0, checkpoint.size)
            failed = dataclasses.replace(report, finding=Finding.ROOT_MISMATCH, first_bad_index=located, checkpoint_number=sizes.index(checkpoint.size))
            return failed, tuple(labels)
    return report, tuple(labels)


def _locate(conn: Connection, start: int, end: int) -> int | None:
    """The first index in ``[start, end)`` whose journal leaf does not hash to its stored leaf node."""
    leaves, journal, nodes = store.audit_leaves.c, store.audit_journal.c, store.audit_nodes.c
    stmt = (
        select(leaves.leaf_index, journal.leaf, nodes.hash)
        .join_from(store.audit_leaves, store.audit_journal, journal.journal_id == leaves.journal_id)
        .outerjoin(store.audit_nodes, (nodes.level == 0) & (nodes.node_index == leaves.leaf_index))
        .where(leaves.leaf_index >= start, leaves.leaf_index < end)
        .order_by(leaves.leaf_index)
    )
    result = conn.execute(stmt.execution_options(yield_per=1000))
    try:
        for index, data, stored in result:
            if stored is None or leaf_hash(bytes(data)) != bytes(stored):
                return int(index)
    finally:
        result.close()
    return None


__all__ = ["verify_stored"]
