"""The ``local`` KEK provider: a versioned keyring file.

File format (JSON, mode 0600, created by ``vaultctl init``)::

    {"format": "member-vault-keyring/1",
     "current": 2,
     "keks": [{"version": 1, "created_at": "...", "key": null, "retired": true},
              {"version": 2, "created_at": "...", "key": "<base64 of 32 bytes>", "retired": false}]}

Invariants: the file is never readable by group or others (the provider
refuses to open it otherwise); it is replaced atomically (write, fsync,
rename, fsync the directory); a retired version keeps its number but loses its
key. Wrapping is AES-256-GCM with a fresh 96-bit nonce: ``blob = nonce ‖
ciphertext ‖ tag``, with the caller's associated data. A process notices a
rotation made by another process through the file's mtime and reloads.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keys.errors import DecryptionError, KeyNotFoundError, KeyringError
from keys.provider import KekInfo

FORMAT = "member-vault-keyring/1"
_NONCE = 12


class LocalKeyring:
    name = "local"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._spath = str(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] = (0, 0)
        self._current = 0
        self._infos: list[KekInfo] = []
        self._aeads: dict[int, AESGCM] = {}
        self._load()

    @classmethod
    def create(cls, path: Path) -> LocalKeyring:
        """Create a keyring with one fresh KEK; refuses to overwrite an existing file."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        doc = {"format": FORMAT, "current": 1, "keks": [_new_entry(1)]}
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyringError(f"keyring already exists: {path}") from None
        with os.fdopen(fd, "w") as out:
            json.dump(doc, out)
            out.flush()
            os.fsync(out.fileno())
        _fsync_dir(path.parent)
        return cls(path)

    def current_version(self) -> int:
        self._refresh()
        return self._current

    def versions(self) -> Sequence[KekInfo]:
        self._refresh()
        return tuple(self._infos)

    def wrap(self, key: bytes, aad: bytes) -> tuple[int, bytes]:
        self._refresh()
        version = self._current
        nonce = os.urandom(_NONCE)
        return version, nonce + self._aeads[version].encrypt(nonce, key, aad)

    def unwrap(self, kek_version: int, blob: bytes, aad: bytes) -> bytes:
        self._refresh()  # a version retired by another process is dead here too
        aead = self._aeads.get(kek_version)
        if aead is None or len(blob) <= _NONCE:
            raise DecryptionError
        try:
            return aead.decrypt(blob[:_NONCE], blob[_NONCE:], aad)
        except InvalidTag:
            raise DecryptionError from None

    def unwrap_many(self, items: Sequence[tuple[int, bytes, bytes]]) -> list[bytes]:
        self._refresh()  # once per batch, not per key: a version retired by another process is dead from the next batch
        aeads = self._aeads
        out = []
        for kek_version, blob, aad in items:
            aead = aeads.get(kek_version)
            if aead is None or len(blob) <= _NONCE:
                raise DecryptionError
            try:
                out.append(aead.decrypt(blob[:_NONCE], blob[_NONCE:], aad))
            except InvalidTag:
                raise DecryptionError from None
        return out

    def rewrap(self, items: Sequence[tuple[int, bytes, bytes]]) -> list[tuple[int, bytes]]:
        self._refresh()  # once per batch, not per key
        version = self._current
        target = self._aeads[version]
        out = []
        for kek_version, blob, aad in items:
            aead = self._aeads.get(kek_version)
            if aead is None or len(blob) <= _NONCE:
                raise DecryptionError
            try:
                key = aead.decrypt(blob[:_NONCE], blob[_NONCE:], aad)
            except InvalidTag:
                raise DecryptionError from None
            nonce = os.urandom(_NONCE)
            out.append((version, nonce + target.encrypt(nonce, key, aad)))
        return out

    def rotate(self) -> int:
        with self._lock:
            doc = self._read()
            version = max(int(k["version"]) for k in doc["keks"]) + 1
            doc["keks"].append(_new_entry(version))
            doc["current"] = version
            self._write(doc)
        self._refresh(force=True)
        return version

    def retire(self, version: int) -> None:
        with self._lock:
            doc = self._read()
            if int(doc["current"]) == version:
                raise KeyringError(f"KEK version {version} is current and cannot be retired")
            entries = [k for k in doc["keks"] if int(k["version"]) == version]
            if not entries:
                raise KeyNotFoundError(f"no KEK version {version}")
            entries[0]["key"] = None
            entries[0]["retired"] = True
            self._write(doc)
        self._refresh(force=True)

    def check(self) -> None:
        """Re-read the keyring: it must be private, well-formed and hold a usable current KEK."""
        self._refresh(force=True)

    def close(self) -> None:
        self._aeads.clear()

    # -- file handling -------------------------------------------------------

    def _refresh(self, *, force: bool = False) -> None:
        try:
            st = os.stat(self._spath)
        except FileNotFoundError:
            raise KeyringError(f"keyring missing: {self._path}") from None
        if force or (st.st_mtime_ns, st.st_size) != self._stamp:
            self._load()

    def _load(self) -> None:
        doc = self._read()
        infos: list[KekInfo] = []
        aeads: dict[int, AESGCM] = {}
        try:
            for entry in doc["keks"]:
                version = int(entry["version"])
                infos.append(KekInfo(version, str(entry["created_at"]), bool(entry["retired"])))
                if not entry["retired"]:
                    raw = base64.b64decode(entry["key"], validate=True)
                    if len(raw) != 32:
                        raise ValueError
                    aeads[version] = AESGCM(raw)
            current = int(doc["current"])
        except (KeyError, TypeError, ValueError):
            raise KeyringError(f"keyring malformed: {self._path}") from None
        if current not in aeads:
            raise KeyringError(f"keyring has no usable current KEK: {self._path}")
        st = self._path.stat()
        self._stamp = (st.st_mtime_ns, st.st_size)
        self._infos, self._aeads, self._current = infos, aeads, current

    def _read(self) -> dict[str, Any]:
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise KeyringError(f"keyring missing: {self._path}") from None
        except OSError:
            raise KeyringError(f"keyring unreadable: {self._path}") from None
        with os.fdopen(fd, "rb") as src:
            mode = os.fstat(src.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise KeyringError(f"keyring is not a regular file: {self._path}")
            if mode & 0o077:
                raise KeyringError(f"keyring is accessible by group or others (mode {mode & 0o777:o}); chmod 600 {self._path}")
            try:
                doc = json.loads(src.read())
            except (ValueError, UnicodeDecodeError):
                raise KeyringError(f"keyring malformed: {self._path}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("keks"), list):
            raise KeyringError(f"keyring malformed: {self._path}")
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        tmp = self._path.with_name(self._path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(doc, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self._path)
        _fsync_dir(self._path.parent)


def _new_entry(version: int) -> dict[str, Any]:
    return {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "key": base64.b64encode(AESGCM.generate_key(bit_length=256)).decode(),
        "retired": False,
    }


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["LocalKeyring"]
