"""HKDF-SHA256 sub-keys (RFC 5869).

Sub-keys are derived from a 256-bit root under a label that names their use,
e.g. ``blind-index/members.phone/v1`` or ``pseudonym/loyalty-app/epoch-3``;
different labels give independent keys.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_SALT = b"member-vault/hkdf/v1"


def derive_key(root: bytes, label: str, length: int = 32) -> bytes:
    if len(root) < 32:
        raise ValueError("root keys are at least 256-bit")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=label.encode()).derive(root)


__all__ = ["derive_key"]
