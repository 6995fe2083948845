"""Errors of the vault domain.

    VaultError
    ├── ValidationError        a field value was refused (carries field names, never values)
    ├── NotFoundError          no such record
    ├── ConflictError          the write contradicts stored state
    ├── MemberErasedError      the member was crypto-shredded; nothing is readable
    ├── SchemaNotReadyError    the database is not migrated to the code's revision
    ├── RecordIntegrityError   a stored ciphertext failed to authenticate (where, never what)
    └── StorageError           the database refused an operation (cause chained, message generic)

Messages name ids and field names only; a library message that might quote a
value is never passed on (it is chained with ``from`` for the logs instead).
"""

from __future__ import annotations

from collections.abc import Mapping


class VaultError(Exception):
    """Root of the vault's errors."""


class ValidationError(VaultError):
    """One or more field values were refused; ``problems`` maps field → reason code."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        fields = ", ".join(f"{name} ({reason})" for name, reason in sorted(self.problems.items()))
        super().__init__(f"invalid fields: {fields}")


class NotFoundError(VaultError):
    """No such record."""


class ConflictError(VaultError):
    """The write contradicts stored state."""


class MemberErasedError(VaultError):
    """The member's keys were destroyed; the record cannot be read."""


class SchemaNotReadyError(VaultError):
    """The database is not migrated to the revision this code expects."""


class StorageError(VaultError):
    """The database refused the operation."""


class RecordIntegrityError(VaultError):
    """A stored ciphertext failed authentication: tampered, moved, truncated or its key is gone.

    Carries where (table, record id, field), never a value.
    """

    def __init__(self, table: str, record_id: str, field: str) -> None:
        self.table, self.record_id, self.field = table, record_id, field
        super().__init__(f"integrity check failed: {table}.{field} of record {record_id}")
