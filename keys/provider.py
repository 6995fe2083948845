"""The KEK provider interface.

A KEK (key-encryption key) never leaves its provider: callers hand it a key to
wrap with associated data and get back the KEK version and an opaque blob. KEKs
are versioned; ``wrap`` always uses the current version, ``unwrap`` accepts any
version that is not retired. Providers fail closed: an unusable provider
raises :class:`keys.errors.ProviderUnavailableError`, and every unwrap failure
is one :class:`keys.errors.DecryptionError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class KekInfo:
    version: int
    created_at: str
    retired: bool


class KekProvider(Protocol):
    name: str

    def current_version(self) -> int: ...

    def versions(self) -> Sequence[KekInfo]: ...

    def wrap(self, key: bytes, aad: bytes) -> tuple[int, bytes]:
        """Wrap ``key`` under the current KEK; returns (kek_version, blob)."""
        ...

    def unwrap(self, kek_version: int, blob: bytes, aad: bytes) -> bytes: ...

    def unwrap_many(self, items: Sequence[tuple[int, bytes, bytes]]) -> list[bytes]:
        """``unwrap`` of each (kek_version, blob, aad), in order (bulk readers): the provider's state is checked once for the batch.

        All or nothing: any blob that does not unwrap fails the whole call with the one ``DecryptionError``.
        """
        ...

    def rewrap(self, items: Sequence[tuple[int, bytes, bytes]]) -> list[tuple[int, bytes]]:
        """Unwrap each (kek_version, blob, aad) and wrap it again under the current KEK, in order."""
        ...

    def rotate(self) -> int:
        """Add a KEK version and make it current; returns the new version."""
        ...

    def retire(self, version: int) -> None:
        """Destroy a KEK version that is not current; its blobs become unreadable."""
        ...

    def check(self) -> None:
        """Raise a KeysError unless the current KEK is usable now; spends no wrap (no nonce)."""
        ...

    def close(self) -> None: ...
