"""Blind index: HMAC-SHA256 of a normalized value under a per-field key.

The caller normalizes (E.164 phone, lower-case e-mail, upper-case document
number); this module only keys and hashes. Equal values give equal digests, so
the index supports equality search and nothing else. It reveals equality to
whoever reads the table, and to whoever holds the field key it is open to a
dictionary search over the (small) space of phone and ID numbers: the key
never leaves the key store unwrapped, and search hits count only while the
member's data key is live.
"""

from __future__ import annotations

import hashlib
import hmac

from keys.derive import derive_key


class BlindIndex:
    __slots__ = ("_key",)

    def __init__(self, root: bytes, qualified_field: str) -> None:
        self._key = derive_key(root, f"blind-index/{qualified_field}/v1")

    def digest(self, normalized: str) -> bytes:
        return hmac.new(self._key, normalized.encode(), hashlib.sha256).digest()


__all__ = ["BlindIndex"]
