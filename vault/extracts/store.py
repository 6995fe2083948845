"""Where a finished extract's rows wait for their consumer: sealed on disk, for a limited time, then shredded.

An extract run through the API writes its file (NDJSON, CSV or Parquet)
through a ``SealedWriter`` into ``exports/extracts/<extract id>.sealed``
(mode 0600, directory 0700). The file is a sequence of chunks, each
``u32 length ‖ FieldCipher ciphertext`` of up to ``CHUNK`` plaintext bytes,
under the extract's own AES-256 key — a key-store row (owner the extract id,
scope ``extract-data``) wrapped by the KEK like a member key. Each chunk's
associated data names the extract and the chunk's index, so chunks cannot be
reordered, swapped between extracts or replayed; the expected plaintext size
(the manifest's ``content_bytes``) is checked against the chunk lengths before
a byte is served, so a truncated file is refused rather than sent short.

``purge`` shreds the key first (the file is unreadable from then on, in every
process, and in any backup of the data directory) and then unlinks the file.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from keys.errors import KeyNotFoundError
from keys.field_cipher import FieldCipher, FieldContext
from keys.member_keys import MemberKeys
from vault.errors import ConflictError

SCOPE = "extract-data"
CHUNK = 256 * 1024
_TABLE = "extract_data"
_LENGTH = struct.Struct(">I")
_OVERHEAD = 1 + 4 + 12 + 16  # FieldCipher v1: format byte, key version, nonce, tag


def _where(extract_id: str, index: int) -> FieldContext:
    return FieldContext(_TABLE, extract_id, f"chunk/{index}")


class SealedWriter:
    """A write-only binary sink that seals every ``CHUNK`` bytes; ``flush`` seals the rest and makes it durable."""

    def __init__(self, path: Path, extract_id: str, cipher: FieldCipher) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "wb")
        self._extract_id = extract_id
        self._cipher = cipher
        self._pending = bytearray()
        self._index = 0

    def write(self, data: bytes) -> int:
        self._pending += data
        while len(self._pending) >= CHUNK:
            self._seal(bytes(self._pending[:CHUNK]))
            del self._pending[:CHUNK]
        return len(data)

    def flush(self) -> None:
        if self._pending:
            self._seal(bytes(self._pending))
            self._pending.clear()
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()

    def _seal(self, chunk: bytes) -> None:
        sealed = self._cipher.encrypt(chunk, _where(self._extract_id, self._index))
        self._file.write(_LENGTH.pack(len(sealed)) + sealed)
        self._index += 1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()


class ExtractStore:
    def __init__(self, directory: Path, keys: MemberKeys) -> None:
        self._directory = directory
        self._keys = keys

    def _path(self, extract_id: str) -> Path:
        return self._directory / f"{extract_id}.sealed"

    def create(self, extract_id: str) -> SealedWriter:
        """A new sealed file for the extract, under a fresh key of its own."""
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self._directory, 0o700)
        cipher = self._keys.create([extract_id], SCOPE)[extract_id]
        return SealedWriter(self._path(extract_id), extract_id, cipher)

    def open(self, extract_id: str, expected_bytes: int) -> Iterator[bytes]:
        """The extract's plaintext, chunk by chunk — checked complete before anything is returned.

        ``ConflictError`` if the data was purged (key shredded, file gone) or is
        not whole; a chunk that fails authentication while streaming raises
        ``keys.errors.DecryptionError``.
        """
        try:
            cipher = self._keys.load(extract_id, (SCOPE,)).get(SCOPE, 1)
        except KeyNotFoundError:
            raise ConflictError("the extract's data was purged") from None
        path = self._path(extract_id)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise ConflictError("the extract's data was purged") from None
        try:
            if _plain_size(handle) != expected_bytes:
                raise ConflictError("the extract's data is incomplete")
        except BaseException:
            handle.close()
            raise
        return _chunks(handle, extract_id, cipher)

    def purge(self, extract_id: str) -> None:
        """Shred the extract's key, then remove its file (idempotent)."""
        self._keys.shred(extract_id, (SCOPE,))
        self._path(extract_id).unlink(missing_ok=True)


def _plain_size(handle: BinaryIO) -> int:
    """The plaintext bytes the chunks hold, from their lengths alone (no decryption); -1 if the framing is broken."""
    size = os.fstat(handle.fileno()).st_size
    total = 0
    while header := handle.read(_LENGTH.size):
        if len(header) < _LENGTH.size:
            return -1
        (length,) = _LENGTH.unpack(header)
        if length < _OVERHEAD:
            return -1
        if handle.seek(length, os.SEEK_CUR) > size:
            return -1
        total += length - _OVERHEAD
    handle.seek(0)
    return total


def _chunks(handle: BinaryIO, extract_id: str, cipher: FieldCipher) -> Iterator[bytes]:
    try:
        index = 0
        while header := handle.read(_LENGTH.size):
            (length,) = _LENGTH.unpack(header)
            yield cipher.decrypt(handle.read(length), _where(extract_id, index))
            index += 1
    finally:
        handle.close()


__all__ = ["CHUNK", "SCOPE", "ExtractStore", "SealedWriter"]
