"""A temporary, encrypted spool: bytes written once, read back once, never readable on disk.

The export archive reads and decrypts each record once, but shows it in
several files (JSON, CSV, FHIR) that a zip stream must write one after the
other. What the later files need is spooled here meanwhile: an anonymous
temporary file (unlinked on creation, gone when closed or when the process
dies) holding AES-256-GCM records under a key that exists only in this
object's memory. Memory stays bounded by one chunk; a crash leaves nothing
readable behind.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_LENGTH = struct.Struct(">I")
_NONCE = struct.Struct(">4xQ")  # 96 bits: a record counter, never repeated under one key


class Spool:
    def __init__(self, directory: Path | None = None) -> None:
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 — closed by close() / the context manager
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))
        self._written = 0
        self._reading = False

    def write(self, data: bytes) -> None:
        if self._reading:
            raise RuntimeError("the spool is being read")
        if not data:
            return
        sealed = self._aead.encrypt(_NONCE.pack(self._written), data, None)
        self._file.write(_LENGTH.pack(len(sealed)) + sealed)
        self._written += 1

    def read(self) -> Iterator[bytes]:
        """The chunks written, in order (once)."""
        self._reading = True
        self._file.flush()
        self._file.seek(0)
        for counter in range(self._written):
            (length,) = _LENGTH.unpack(self._file.read(_LENGTH.size))
            yield self._aead.decrypt(_NONCE.pack(counter), self._file.read(length), None)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()


def spool_directory(path: Path) -> Path:
    """``path`` created with mode 0700 if missing (the data directory's ``exports/``)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


__all__ = ["Spool", "spool_directory"]
