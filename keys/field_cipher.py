"""Field-level encryption: AES-256-GCM with bound associated data.

Ciphertext format, version 1 (all integers big-endian)::

    0      1            5                 17
    +------+------------+-----------------+---------------------------+
    | 0x01 | key version| nonce (12 bytes)| ciphertext ‖ tag (16)     |
    +------+------------+-----------------+---------------------------+

The associated data is not stored; it is rebuilt from where the ciphertext is
read, so a ciphertext moved to another table, record, field or key version
fails to decrypt::

    b"member-vault/field/v1" ‖ for each of (table, record id, field): u16 length ‖ utf-8
    ‖ u32 key version

Every encryption draws a fresh 96-bit nonce from the injected random source
(``os.urandom`` by default). Every failure — unknown format, wrong key version,
tampering, truncation — raises the one :class:`DecryptionError`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keys.errors import CiphertextFormatError, DecryptionError

FORMAT_V1 = 1
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER = struct.Struct(">BI")
_OVERHEAD = _HEADER.size + NONCE_BYTES + TAG_BYTES
_AAD_LABEL = b"member-vault/field/v1"

RandomSource = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class FieldContext:
    """Where a ciphertext lives: what the associated data binds it to."""

    table: str
    record_id: str
    field: str

    def aad(self, key_version: int) -> bytes:
        parts = [_AAD_LABEL]
        for text in (self.table, self.record_id, self.field):
            raw = text.encode()
            parts.append(struct.pack(">H", len(raw)))
            parts.append(raw)
        parts.append(struct.pack(">I", key_version))
        return b"".join(parts)


class FieldCipher:
    """AES-256-GCM under one data key of a known version."""

    __slots__ = ("_aead", "_random", "key_version")

    def __init__(self, key: bytes, key_version: int, random: RandomSource = os.urandom) -> None:
        if len(key) != 32:
            raise ValueError("field keys are 256-bit")
        self._aead = AESGCM(key)
        self._random = random
        self.key_version = key_version

    def encrypt(self, plaintext: bytes, where: FieldContext) -> bytes:
        nonce = self._random(NONCE_BYTES)
        if len(nonce) != NONCE_BYTES:
            raise ValueError("random source returned a short nonce")
        sealed = self._aead.encrypt(nonce, plaintext, where.aad(self.key_version))
        return _HEADER.pack(FORMAT_V1, self.key_version) + nonce + sealed

    def decrypt(self, ciphertext: bytes, where: FieldContext) -> bytes:
        fmt, version = read_header(ciphertext)
        if fmt != FORMAT_V1 or version != self.key_version:
            raise DecryptionError
        nonce = ciphertext[_HEADER.size : _HEADER.size + NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, ciphertext[_HEADER.size + NONCE_BYTES :], where.aad(version))
        except InvalidTag:
            raise DecryptionError from None


def read_header(ciphertext: bytes) -> tuple[int, int]:
    """Return (format version, key version) of a ciphertext, refusing unknown formats."""
    if len(ciphertext) < _OVERHEAD:
        raise DecryptionError
    fmt, version = _HEADER.unpack_from(ciphertext)
    if fmt != FORMAT_V1:
        raise CiphertextFormatError
    return fmt, version


__all__ = ["FORMAT_V1", "FieldCipher", "FieldContext", "RandomSource", "read_header"]
