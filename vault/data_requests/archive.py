"""A zip archive written as a stream of bytes, each member file hashed on the way.

``ArchiveWriter.add(path, chunks)`` deflates one file from an iterable of
byte chunks and yields the archive's bytes as they are produced, so a file of
any length passes through with memory bounded by one chunk and zlib's
window. The writer keeps each file's SHA-256 and size (``files``) for the
manifest, and ``close`` yields the central directory. The standard
library's ``zipfile`` does the format: on an output it cannot seek, it writes
each file's sizes and CRC in a data descriptor after its data.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

_COMPRESS_LEVEL = 6


@dataclass(frozen=True, slots=True)
class ArchivedFile:
    path: str
    sha256: str  # hex
    size: int  # bytes, uncompressed


class _Sink:
    """A write-only, non-seekable output that hands its bytes back to the writer's generator."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._offset = 0

    def write(self, data: bytes, /) -> int:
        self._parts.append(bytes(data))
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self._offset

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class ArchiveWriter:
    def __init__(self, *, modified: datetime) -> None:
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(self._sink, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=_COMPRESS_LEVEL)
        self._when = (modified.year, modified.month, modified.day, modified.hour, modified.minute, modified.second)
        self.files: list[ArchivedFile] = []

    def add(self, path: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Write ``path`` from ``chunks``; yields the archive bytes produced meanwhile."""
        info = zipfile.ZipInfo(path, date_time=self._when)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o600 << 16
        digest, size = hashlib.sha256(), 0
        with self._zip.open(info, mode="w", force_zip64=True) as member:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                member.write(chunk)
                if pending := self._sink.drain():
                    yield pending
        self.files.append(ArchivedFile(path, digest.hexdigest(), size))
        if pending := self._sink.drain():
            yield pending

    def close(self) -> Iterator[bytes]:
        """The central directory: the archive's last bytes."""
        self._zip.close()
        if pending := self._sink.drain():
            yield pending


__all__ = ["ArchiveWriter", "ArchivedFile"]
