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

import functools
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keys.errors import CiphertextFormatError, DecryptionError

FORMAT_V1 = 1
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER = struct.Struct(">BI")
_BODY = _HEADER.size + NONCE_BYTES
_OVERHEAD = _BODY + TAG_BYTES
_AAD_LABEL = b"member-vault/field/v1"
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")

RandomSource = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class FieldContext:
    """Where a ciphertext lives: what the associated data binds it to."""

    table: str
    record_id: str
    field: str

    def aad(self, key_version: int) -> bytes:
        record = self.record_id.encode()
        return _aad_table(self.table) + _U16.pack(len(record)) + record + _aad_field(self.field) + _U32.pack(key_version)


@functools.lru_cache(maxsize=64)
def _aad_table(table: str) -> bytes:
    raw = table.encode()
    return _AAD_LABEL + _U16.pack(len(raw)) + raw


@functools.lru_cache(maxsize=256)
def _aad_field(field: str) -> bytes:
    raw = field.encode()
    return _U16.pack(len(raw)) + raw


class FieldCipher:
    """AES-256-GCM under one data key of a known version."""

    __slots__ = ("_aead", "_header", "_random", "key_version")

    def __init__(self, key: bytes, key_version: int, random: RandomSource = os.urandom) -> None:
        if len(key) != 32:
            raise ValueError("field keys are 256-bit")
        self._aead = AESGCM(key)
        self._random = random
        self.key_version = key_version
        self._header = _HEADER.pack(FORMAT_V1, key_version)

    def encrypt(self, plaintext: bytes, where: FieldContext) -> bytes:
        nonce = self._random(NONCE_BYTES)
        if len(nonce) != NONCE_BYTES:
            raise ValueError("random source returned a short nonce")
        return self._header + nonce + self._aead.encrypt(nonce, plaintext, where.aad(self.key_version))

    def encrypt_record(self, table: str, record_id: str, fields: Sequence[str], plaintexts: Sequence[bytes]) -> list[bytes]:
        """Encrypt several fields of one record (bulk writers): ``encrypt`` of each under ``FieldContext(table, record_id, field)``.

        The nonces, one fresh 96-bit nonce per field as in ``encrypt``, are drawn
        from the random source in one call; the record's part of the associated
        data is built once.
        """
        if len(fields) != len(plaintexts):
            raise ValueError("one plaintext per field")
        nonces = self._random(NONCE_BYTES * len(fields))
        if len(nonces) != NONCE_BYTES * len(fields):
            raise ValueError("random source returned a short nonce")
        record = record_id.encode()
        prefix, suffix = _aad_table(table) + _U16.pack(len(record)) + record, _U32.pack(self.key_version)
        header, seal = self._header, self._aead.encrypt
        return [
            header + nonce + seal(nonce, plaintext, prefix + _aad_field(field) + suffix)
            for nonce, field, plaintext in zip(_split(nonces), fields, plaintexts, strict=True)
        ]

    def decrypt_record(self, table: str, record_id: str, fields: Sequence[str], ciphertexts: Sequence[bytes]) -> list[bytes]:
        """Decrypt several fields of one record (bulk readers): ``decrypt`` of each under ``FieldContext(table, record_id, field)``.

        The record's part of the associated data is built once. Any failure is
        ``decrypt``'s (the one ``DecryptionError``, or ``CiphertextFormatError``
        for an unknown format), for the whole record.
        """
        if len(fields) != len(ciphertexts):
            raise ValueError("one ciphertext per field")
        record = record_id.encode()
        prefix, suffix = _aad_table(table) + _U16.pack(len(record)) + record, _U32.pack(self.key_version)
        header, open_ = self._header, self._aead.decrypt
        out = []
        for field, ciphertext in zip(fields, ciphertexts, strict=True):
            # The header is public: a plain comparison leaks nothing.
            if len(ciphertext) < _OVERHEAD or ciphertext[: _HEADER.size] != header:
                read_header(ciphertext)
                raise DecryptionError
            try:
                out.append(open_(ciphertext[_HEADER.size : _BODY], ciphertext[_BODY:], prefix + _aad_field(field) + suffix))
            except InvalidTag:
                raise DecryptionError from None
        return out

    def decrypt(self, ciphertext: bytes, where: FieldContext) -> bytes:
        # The header is public: a plain comparison leaks nothing.
        if len(ciphertext) < _OVERHEAD or ciphertext[: _HEADER.size] != self._header:
            read_header(ciphertext)  # an unknown format gets its own (still opaque) error
            raise DecryptionError
        try:
            return self._aead.decrypt(ciphertext[_HEADER.size : _BODY], ciphertext[_BODY:], where.aad(self.key_version))
        except InvalidTag:
            raise DecryptionError from None


def _split(nonces: bytes) -> list[bytes]:
    return [nonces[at : at + NONCE_BYTES] for at in range(0, len(nonces), NONCE_BYTES)]


def read_header(ciphertext: bytes) -> tuple[int, int]:
    """Return (format version, key version) of a ciphertext, refusing unknown formats."""
    if len(ciphertext) < _OVERHEAD:
        raise DecryptionError
    fmt, version = _HEADER.unpack_from(ciphertext)
    if fmt != FORMAT_V1:
        raise CiphertextFormatError
    return fmt, version


__all__ = ["FORMAT_V1", "FieldCipher", "FieldContext", "RandomSource", "read_header"]
