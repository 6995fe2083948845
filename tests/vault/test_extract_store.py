"""The sealed store of extract data: whole files come back, anything else is refused.

On a real key store: bytes written through ``SealedWriter`` (several chunks
and a partial one) read back identical; the file is 0600 and holds no
plaintext; a truncated file, a flipped byte, two chunks swapped, or a file
moved to another extract's name is refused; after ``purge`` the key is gone
and the data with it.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import pytest

from api.runtime import Runtime
from keys.errors import DecryptionError
from vault.errors import ConflictError
from vault.extracts.store import CHUNK, ExtractStore
from vault.ids import new_id

_LENGTH = struct.Struct(">I")


@pytest.fixture
def store(runtime: Runtime, tmp_path: Path) -> ExtractStore:
    return ExtractStore(tmp_path / "extracts", runtime.keys)


def _payload(size: int) -> bytes:
    line = b'{"pseudonym":"0123456789abcdef0123456789abcdef","tier":"gold"}\n'
    return (line * (size // len(line) + 1))[:size]


def _write(store: ExtractStore, extract_id: str, data: bytes, pieces: int = 7) -> None:
    with store.create(extract_id) as sink:
        step = max(1, len(data) // pieces)
        for start in range(0, len(data), step):
            sink.write(data[start : start + step])
        sink.flush()


def _chunks(path: Path) -> list[bytes]:
    raw, out, at = path.read_bytes(), [], 0
    while at < len(raw):
        (length,) = _LENGTH.unpack_from(raw, at)
        out.append(raw[at : at + _LENGTH.size + length])
        at += _LENGTH.size + length
    return out


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, 2 * CHUNK + 17])
def test_what_is_written_reads_back_whole_and_the_file_holds_no_plaintext(store: ExtractStore, tmp_path: Path, size: int) -> None:
    extract_id, data = new_id(), _payload(size)

    _write(store, extract_id, data)

    path = tmp_path / "extracts" / f"{extract_id}.sealed"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert b"pseudonym" not in path.read_bytes()
    assert b"".join(store.open(extract_id, len(data))) == data


def test_a_truncated_file_is_refused_before_any_byte(store: ExtractStore, tmp_path: Path) -> None:
    extract_id, data = new_id(), _payload(2 * CHUNK + 5)
    _write(store, extract_id, data)
    path = tmp_path / "extracts" / f"{extract_id}.sealed"
    chunks = _chunks(path)

    for cut in (b"".join(chunks[:-1]), path.read_bytes()[:-1]):
        path.write_bytes(cut)
        with pytest.raises(ConflictError, match="incomplete"):
            store.open(extract_id, len(data))


@pytest.mark.parametrize("damage", ["flip", "swap", "other_extract"])
def test_tampered_swapped_or_moved_chunks_fail_authentication(store: ExtractStore, tmp_path: Path, damage: str) -> None:
    extract_id, data = new_id(), _payload(2 * CHUNK)
    _write(store, extract_id, data)
    path = tmp_path / "extracts" / f"{extract_id}.sealed"
    chunks = _chunks(path)
    if damage == "flip":
        raw = bytearray(path.read_bytes())
        raw[100] ^= 1  # inside the first chunk's ciphertext
        path.write_bytes(bytes(raw))
    elif damage == "swap":
        path.write_bytes(chunks[1] + chunks[0])
    else:
        other = new_id()
        _write(store, other, data)
        os.replace(tmp_path / "extracts" / f"{other}.sealed", path)

    with pytest.raises(DecryptionError):
        b"".join(store.open(extract_id, len(data)))


def test_purge_shreds_the_key_and_removes_the_file(store: ExtractStore, runtime: Runtime, tmp_path: Path) -> None:
    extract_id, data = new_id(), _payload(1000)
    _write(store, extract_id, data)
    path = tmp_path / "extracts" / f"{extract_id}.sealed"
    kept = path.read_bytes()

    store.purge(extract_id)
    store.purge(extract_id)  # idempotent

    assert not path.exists()
    with pytest.raises(ConflictError, match="purged"):
        store.open(extract_id, len(data))
    path.write_bytes(kept)  # a copy of the file kept elsewhere is no use without the key
    with pytest.raises(ConflictError, match="purged"):
        store.open(extract_id, len(data))
    assert runtime.keys.scopes_of(extract_id) == []
