"""Errors of the audit log.

    AuditError
    ├── EventFormatError       an event, or its JSON form, breaks the event schema
    ├── CanonicalJsonError     a value lies outside the canonical JSON subset (a float, a huge int, …)
    ├── ProofRangeError        a proof was asked for a leaf index or tree sizes that do not exist
    ├── NodeStoreError         a stored tree node is not a 32-byte hash
    ├── NoteFormatError        a signed note or a key name is malformed
    ├── VerifierKeyError       a verifier key string is malformed, or a set of them is ambiguous
    ├── CheckpointFormatError  a checkpoint body is malformed
    ├── AuditStoreError        the journal could not be written: the caller's transaction must not commit
    ├── CursorError            a paging cursor is not one the audit queries issued
    ├── CheckpointConflictError  the vault will not sign: the last published checkpoint is missing or unreadable,
    │                            or the database does not extend it (``code`` says which)
    └── VerificationError      a signature, proof or export does not verify (one message, no oracle)

The format errors are parser errors: each carries one precise reason for the
operator, naming the line, field or rule — never the offending value, since a
value might be personal data. ``VerificationError`` always says the same thing
apart from the index it may name.
"""

from __future__ import annotations


class AuditError(Exception):
    """Root of the audit log's errors."""


class EventFormatError(AuditError):
    """An audit event, or its JSON form, does not follow the event schema."""


class CanonicalJsonError(AuditError):
    """A value cannot be written as canonical JSON by this module's rules."""


class ProofRangeError(AuditError):
    """A proof was asked for numbers that do not name a leaf or tree size."""


class NodeStoreError(AuditError):
    """The node reader returned something that is not a 32-byte hash."""


class NoteFormatError(AuditError):
    """A signed note, or a key name, is malformed."""


class VerifierKeyError(AuditError):
    """A verifier key string is malformed, or two keys share a name and key id."""


class CheckpointFormatError(AuditError):
    """A checkpoint body is malformed."""


class VerificationError(AuditError):
    """Verification failed.

    The message is fixed; ``index`` names the first bad leaf index when there is one.
    """

    def __init__(self, index: int | None = None) -> None:
        self.index = index
        message = "Verification failed." if index is None else f"Verification failed at index {index}."
        super().__init__(message)


class AuditStoreError(AuditError):
    """The audit journal could not be written: the caller's transaction must not commit."""


class CursorError(AuditError):
    """A paging cursor is not one the audit queries issued."""


class CheckpointConflictError(AuditError):
    """The vault will not sign a checkpoint: it could not prove the database extends the last published one.

    ``code`` is one of ``CONFLICT_CODES`` (an audit event code, used as the reason code of the
    operator's reset); the message is the operator's one-line reason. Sizes are set when known.
    """

    def __init__(self, reason: str, *, code: str, published_size: int | None = None, tree_size: int | None = None) -> None:
        if code not in CONFLICT_CODES:
            raise ValueError("unknown checkpoint conflict code")
        super().__init__(reason)
        self.code = code
        self.published_size = published_size
        self.tree_size = tree_size


CONFLICT_CODES = frozenset(
    {
        "published_size_ahead",  # the published checkpoint is at a larger size than the stored tree (say, after a restore)
        "published_root_differs",  # the stored tree at the published size has another root
        "published_checkpoint_missing",  # no published checkpoint, yet the database holds checkpoints
        "published_checkpoint_unreadable",  # the published checkpoint is not a checkpoint of this origin signed by an audit key
    }
)


__all__ = [
    "CONFLICT_CODES",
    "AuditError",
    "AuditStoreError",
    "CanonicalJsonError",
    "CheckpointConflictError",
    "CheckpointFormatError",
    "CursorError",
    "EventFormatError",
    "NodeStoreError",
    "NoteFormatError",
    "ProofRangeError",
    "VerificationError",
    "VerifierKeyError",
]
