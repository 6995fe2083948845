"""The append-only, tamper-evident audit log (RFC 6962 tree, signed checkpoints).

See DESIGN.md, Audit. The modules here are pure — no database, no I/O — and
use only the standard library and ``cryptography``:

- ``audit.event``: the event model and its JSON form;
- ``audit.canonical``: RFC 8785 canonical JSON (the leaf bytes);
- ``audit.merkle``: RFC 6962 hashes, node addressing, proofs, verification;
- ``audit.checkpoint``: C2SP tlog-checkpoint bodies in Ed25519 signed notes;
- ``audit.verify``: the offline verifier of an NDJSON export.

``audit.verify`` must stay importable with nothing but those: keep anything
that needs a database or ``keys`` out of this ``__init__``
(``tests/audit/test_verify.py`` checks the import closure).

The database side (SQLAlchemy) is imported by its module names, never from here:

- ``audit.store``: the tables, ``AuditJournal.append``, roots and proofs from stored nodes;
- ``audit.sequencer``: ``Sequencer``, which numbers journal entries and stores the tree;
- ``audit.queries``: filtered events, a member's access log, breach scope, export.
"""

from audit.canonical import JsonValue, canonical_bytes
from audit.checkpoint import (
    Checkpoint,
    OpenedNote,
    VerifierKey,
    format_checkpoint,
    key_id,
    open_note,
    parse_checkpoint,
    parse_verifier_key,
    sign_note,
    verifier_key_string,
)
from audit.errors import (
    AuditError,
    CanonicalJsonError,
    CheckpointFormatError,
    EventFormatError,
    NodeStoreError,
    NoteFormatError,
    ProofRangeError,
    VerificationError,
    VerifierKeyError,
)
from audit.event import Actor, AuditEvent, Decision, event_time
from audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    Node,
    NodeReader,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    root_at,
    verify_consistency,
    verify_inclusion,
)
from audit.verify import Finding, Report, export_line, verify_export, verify_export_file

__all__ = [
    "EMPTY_ROOT",
    "Actor",
    "AuditError",
    "AuditEvent",
    "CanonicalJsonError",
    "Checkpoint",
    "CheckpointFormatError",
    "CompactRange",
    "Decision",
    "EventFormatError",
    "Finding",
    "JsonValue",
    "Node",
    "NodeReader",
    "NodeStoreError",
    "NoteFormatError",
    "OpenedNote",
    "ProofRangeError",
    "Report",
    "VerificationError",
    "VerifierKey",
    "VerifierKeyError",
    "canonical_bytes",
    "consistency_proof",
    "event_time",
    "export_line",
    "format_checkpoint",
    "inclusion_proof",
    "key_id",
    "leaf_hash",
    "node_hash",
    "open_note",
    "parse_checkpoint",
    "parse_verifier_key",
    "root",
    "root_at",
    "sign_note",
    "verifier_key_string",
    "verify_consistency",
    "verify_export",
    "verify_export_file",
    "verify_inclusion",
]
