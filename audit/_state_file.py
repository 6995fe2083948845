"""A small file kept outside the database (the published checkpoint), written so a crash never leaves half of it.

``replace_atomically`` writes a temporary file in the same directory (mode
0600, from ``mkstemp``), fsyncs it, renames it over the target and fsyncs the
directory: a reader sees the old bytes or the new, never a mix, and the new
name survives a power loss once the call returns. ``keep_aside`` renames a file
to a new name without ever overwriting one (hard link, then unlink).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def read_bounded(path: Path, limit: int) -> bytes | None:
    """The file's bytes (at most ``limit + 1``, so a caller can tell it is too long); ``None`` if it does not exist."""
    try:
        with path.open("rb") as file:
            return file.read(limit + 1)
    except FileNotFoundError:
        return None


def replace_atomically(path: Path, data: bytes) -> None:
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(directory)


def keep_aside(path: Path, stem: str) -> Path | None:
    """Rename ``path`` to ``stem`` (or ``stem-1``, ``stem-2``, … if taken) in its directory; the new path, or ``None`` if there was no file."""
    if not path.exists():
        return None
    for attempt in range(1000):
        kept = path.with_name(stem if attempt == 0 else f"{stem}-{attempt}")
        try:
            os.link(path, kept)
        except FileExistsError:
            continue
        path.unlink()
        fsync_directory(path.parent)
        return kept
    raise FileExistsError(f"too many files named {stem}-…")


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["fsync_directory", "keep_aside", "read_bounded", "replace_atomically"]
