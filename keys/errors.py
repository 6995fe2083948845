"""Errors of the key hierarchy.

    KeysError
    ├── DecryptionError          any failure to decrypt, unwrap or verify (one message, no oracle)
    ├── KeyringError             the local keyring file is missing, unsafe or malformed
    ├── ProviderUnavailableError the KEK provider cannot be used (HSM down, wrong PIN, no key)
    ├── KeyNotFoundError         no live key of that id/version (shredded, retired, never existed)
    └── CiphertextFormatError    a ciphertext's header names an unknown format (subclass of DecryptionError)

Messages carry key ids, versions and paths, never key material or plaintext.
"""

from __future__ import annotations


class KeysError(Exception):
    """Root of the key hierarchy's errors."""


class DecryptionError(KeysError):
    """Decryption failed."""

    def __init__(self, message: str = "Decryption failed.") -> None:
        super().__init__(message)


class CiphertextFormatError(DecryptionError):
    """The ciphertext header is not one this code reads."""


class KeyringError(KeysError):
    """The local keyring file cannot be used."""


class ProviderUnavailableError(KeysError):
    """The KEK provider cannot be used right now."""


class KeyNotFoundError(KeysError):
    """No live key with that id and version."""
