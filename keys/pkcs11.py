"""The ``pkcs11`` KEK provider: non-extractable AES keys in an HSM.

Each KEK version is an AES-256 secret key object on the token labelled
``member-vault-kek-v<N>``, generated on the token with ``CKA_SENSITIVE`` and
not ``CKA_EXTRACTABLE``: its value never leaves the HSM. Wrapping is
``CKM_AES_GCM`` on the token with a fresh 96-bit nonce and the caller's
associated data (``blob = nonce ‖ ciphertext ‖ tag``), the same blob shape as
the local provider. The current version is the highest one on the token.
Retiring a version destroys its object.

The process logs in once and keeps one session, guarded by a lock (PKCS#11
sessions are not thread-safe). A PKCS#11 login belongs to the whole process: a
second provider on the same token shares it, and the first one's ``close``
ends it — so a process keeps one long-lived provider. The PIN is read from a file and never logged.
Device failures raise :class:`ProviderUnavailableError`; there is no fallback
to another provider.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error, UserAlreadyLoggedIn
from pkcs11.mechanisms import GCMParams
from pkcs11.types import DecryptMixin, EncryptMixin, SecretKey

from keys.errors import DecryptionError, KeyNotFoundError, ProviderUnavailableError
from keys.provider import KekInfo

LABEL_PREFIX = "member-vault-kek-v"


def _one_shot(result: bytes | Iterator[bytes]) -> bytes:
    """python-pkcs11 returns bytes for a single buffer (an iterator only for streamed input)."""
    return result if isinstance(result, bytes) else b"".join(result)


@dataclass(frozen=True, slots=True)
class _AesKey:
    """One KEK object on the token, seen through the two interfaces we use."""

    enc: EncryptMixin
    dec: DecryptMixin

    def encrypt(self, data: bytes, param: GCMParams) -> bytes:
        return _one_shot(self.enc.encrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=param))

    def decrypt(self, data: bytes, param: GCMParams) -> bytes:
        return _one_shot(self.dec.decrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=param))

    def destroy(self) -> None:
        self.enc.destroy()


_LABEL = re.compile(r"^member-vault-kek-v([1-9][0-9]{0,8})$")
_NONCE = 12


class Pkcs11Provider:
    name = "pkcs11"

    def __init__(self, module: Path, token_label: str, pin_file: Path) -> None:
        try:
            pin = pin_file.read_text().strip()
        except OSError:
            raise ProviderUnavailableError(f"PKCS#11 PIN file unreadable: {pin_file}") from None
        try:
            lib = pkcs11.lib(str(module))
            token = lib.get_token(token_label=token_label)
            try:
                self._session = token.open(user_pin=pin, rw=True)
            except UserAlreadyLoggedIn:
                # The login is per process: another provider of this process logged in already,
                # and a new session shares it (it is ended when that provider closes).
                self._session = token.open(rw=True)
        except (PKCS11Error, RuntimeError, OSError) as exc:
            raise ProviderUnavailableError(f"PKCS#11 token {token_label!r} unavailable: {type(exc).__name__}") from None
        self._lock = threading.Lock()
        self._keys: dict[int, _AesKey] = {}
        self._scan()

    def current_version(self) -> int:
        if not self._keys:
            raise ProviderUnavailableError("no KEK on the PKCS#11 token; run vaultctl init")
        return max(self._keys)

    def versions(self) -> Sequence[KekInfo]:
        return tuple(KekInfo(v, "", False) for v in sorted(self._keys))

    def wrap(self, key: bytes, aad: bytes) -> tuple[int, bytes]:
        version = self.current_version()
        nonce = os.urandom(_NONCE)
        with self._lock:
            try:
                sealed = self._keys[version].encrypt(key, GCMParams(nonce, aad, 128))
            except PKCS11Error as exc:
                raise ProviderUnavailableError(f"PKCS#11 wrap failed: {type(exc).__name__}") from None
        return version, nonce + sealed

    def unwrap(self, kek_version: int, blob: bytes, aad: bytes) -> bytes:
        kek = self._keys.get(kek_version)
        if kek is None:
            self._scan()
            kek = self._keys.get(kek_version)
        if kek is None or len(blob) <= _NONCE:
            raise DecryptionError
        with self._lock:
            try:
                return kek.decrypt(blob[_NONCE:], GCMParams(blob[:_NONCE], aad, 128))
            except PKCS11Error:
                raise DecryptionError from None

    def unwrap_many(self, items: Sequence[tuple[int, bytes, bytes]]) -> list[bytes]:
        """One token call per blob (the token does the work; there is no file to re-read)."""
        return [self.unwrap(kek_version, blob, aad) for kek_version, blob, aad in items]

    def rewrap(self, items: Sequence[tuple[int, bytes, bytes]]) -> list[tuple[int, bytes]]:
        return [self.wrap(self.unwrap(kek_version, blob, aad), aad) for kek_version, blob, aad in items]

    def rotate(self) -> int:
        self._scan()
        version = max(self._keys, default=0) + 1
        with self._lock:
            try:
                self._session.generate_key(
                    KeyType.AES,
                    256,
                    label=f"{LABEL_PREFIX}{version}",
                    store=True,
                    template={
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.ENCRYPT: True,
                        Attribute.DECRYPT: True,
                        Attribute.WRAP: False,
                        Attribute.UNWRAP: False,
                        Attribute.PRIVATE: True,
                    },
                )
            except PKCS11Error as exc:
                raise ProviderUnavailableError(f"PKCS#11 key generation failed: {type(exc).__name__}") from None
        self._scan()
        return version

    def retire(self, version: int) -> None:
        self._scan()
        if version not in self._keys:
            raise KeyNotFoundError(f"no KEK version {version}")
        if version == self.current_version():
            raise ProviderUnavailableError(f"KEK version {version} is current and cannot be retired")
        with self._lock:
            try:
                self._keys.pop(version).destroy()
            except PKCS11Error as exc:
                raise ProviderUnavailableError(f"PKCS#11 key destruction failed: {type(exc).__name__}") from None

    def check(self) -> None:
        """The session answers and the current KEK is on the token, able to wrap and unwrap.

        Asks the token for the key's attributes instead of wrapping a test value,
        so a readiness probe spends none of the KEK's nonce budget.
        """
        self._scan()
        kek = self._keys[self.current_version()]
        with self._lock:
            try:
                usable = kek.enc[Attribute.ENCRYPT] and kek.dec[Attribute.DECRYPT]
            except PKCS11Error as exc:
                raise ProviderUnavailableError(f"PKCS#11 token unavailable: {type(exc).__name__}") from None
        if not usable:
            raise ProviderUnavailableError("the current KEK on the PKCS#11 token cannot wrap and unwrap")

    def close(self) -> None:
        with self._lock:
            try:
                self._session.close()
            except PKCS11Error:
                return

    def _scan(self) -> None:
        found: dict[int, _AesKey] = {}
        with self._lock:
            try:
                objects = list(self._session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES}))
            except PKCS11Error as exc:
                raise ProviderUnavailableError(f"PKCS#11 token unavailable: {type(exc).__name__}") from None
        for obj in objects:
            if not isinstance(obj, SecretKey | EncryptMixin | DecryptMixin):
                continue
            match = _LABEL.match(obj.label or "") if isinstance(obj, SecretKey) else None
            if match and isinstance(obj, EncryptMixin) and isinstance(obj, DecryptMixin):
                found[int(match.group(1))] = _AesKey(obj, obj)
        self._keys = found


__all__ = ["Pkcs11Provider"]
