"""Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes, Ed25519.

Checkpoint body (the note text; every line ends in U+000A)::

    <origin>                  e.g. member-vault/audit
    <tree size>               ASCII decimal, no leading zeros ("0" for the empty tree)
    <root hash>               standard base64 (RFC 4648 §4, padded) of the 32-byte RFC 6962 root
    time <RFC 3339 UTC>       the one extension line, e.g. "time 2026-11-22T16:00:00Z"

Signed note: the body, one blank line, then signature lines::

    — <key name> <base64(key id ‖ 64-byte Ed25519 signature over the body bytes)>

with the em dash U+2014 and single spaces. The key id is 4 bytes::

    key id = SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte Ed25519 public key)[:4]

and a verifier key string is ``<key name>+<8 hex digits of the key id>+<base64(0x01 ‖ public key)>``.
A key name is non-empty, with no Unicode space, no ``+`` and no control character.

Invariants of ``open_note``: the note is UTF-8 text without control
characters other than newline; the body is separated at the *last* blank line;
at most ``MAX_SIGNATURES`` signature lines, each well-formed (else
``NoteFormatError`` with the line number). A signature whose (name, key id)
is not pinned is ignored; one that is pinned must verify, or the whole note
is rejected; and at least one must verify. Every rejection for a bad or
missing signature is the same ``VerificationError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit._time import format_utc, parse_utc
from audit.errors import CheckpointFormatError, NoteFormatError, VerificationError, VerifierKeyError
from audit.merkle import HASH_SIZE

ED25519_TYPE = 0x01
MAX_SIGNATURES = 100
MAX_TREE_SIZE = 2**63 - 1
SIGNATURE_PREFIX = "\u2014 "
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")
_KEY_ID_HEX = re.compile(r"[0-9a-fA-F]{8}")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    time: datetime


@dataclass(frozen=True, slots=True)
class VerifierKey:
    name: str
    key_id: bytes
    public_key: Ed25519PublicKey


class OpenedNote(NamedTuple):
    body: str
    signers: tuple[str, ...]


def format_checkpoint(origin: str, size: int, root: bytes, time: datetime) -> str:
    """The checkpoint body for a tree of ``size`` leaves with ``root``, made at ``time``."""
    _check_name(origin, CheckpointFormatError, "origin")
    if not 0 <= size <= MAX_TREE_SIZE:
        raise CheckpointFormatError("tree size out of range")
    if len(root) != HASH_SIZE:
        raise CheckpointFormatError("root hash must be 32 bytes")
    try:
        stamp = format_utc(time)
    except ValueError:
        raise CheckpointFormatError("time must be timezone-aware") from None
    return f"{origin}\n{size}\n{_b64(root)}\ntime {stamp}\n"


def parse_checkpoint(body: str) -> Checkpoint:
    """Read a checkpoint body (the text of an opened note)."""
    _check_text(body, CheckpointFormatError)
    if not body.endswith("\n"):
        raise CheckpointFormatError("checkpoint must end with a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 4:
        raise CheckpointFormatError(f"checkpoint has {len(lines)} lines, expected 4")
    if len(lines) > 4:
        raise CheckpointFormatError("line 5: unexpected extension line")
    origin, size_text, root_text, time_line = lines
    if not origin:
        raise CheckpointFormatError("line 1: origin must not be empty")
    if _SIZE.fullmatch(size_text) is None or int(size_text) > MAX_TREE_SIZE:
        raise CheckpointFormatError("line 2: tree size must be a decimal number without leading zeros")
    root_hash = _unb64(root_text)
    if root_hash is None or len(root_hash) != HASH_SIZE:
        raise CheckpointFormatError("line 3: root hash must be the base64 of 32 bytes")
    if not time_line.startswith("time "):
        raise CheckpointFormatError("line 4: expected the time extension line")
    try:
        time = parse_utc(time_line[len("time ") :])
    except ValueError:
        raise CheckpointFormatError("line 4: time must be RFC 3339 UTC with whole seconds and Z") from None
    return Checkpoint(origin=origin, size=int(size_text), root_hash=root_hash, time=time)


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The 4-byte C2SP key id of an Ed25519 key under ``name``."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ED25519_TYPE]) + _raw(public_key)).digest()[:4]


def verifier_key_string(name: str, public_key: Ed25519PublicKey) -> str:
    _check_name(name, VerifierKeyError, "key name")
    return f"{name}+{key_id(name, public_key).hex()}+{_b64(bytes([ED25519_TYPE]) + _raw(public_key))}"


def parse_verifier_key(text: str) -> VerifierKey:
    parts = text.split("+", 2)  # the base64 of the key may itself hold a "+"
    if len(parts) != 3:
        raise VerifierKeyError("verifier key must be <name>+<key id>+<key>")
    name, id_hex, key_text = parts
    _check_name(name, VerifierKeyError, "key name")
    if _KEY_ID_HEX.fullmatch(id_hex) is None:
        raise VerifierKeyError("key id must be 8 hex digits")
    key_bytes = _unb64(key_text)
    if key_bytes is None:
        raise VerifierKeyError("key must be standard base64")
    if len(key_bytes) != 33 or key_bytes[0] != ED25519_TYPE:
        raise VerifierKeyError("key must be 0x01 followed by a 32-byte Ed25519 public key")
    public_key = Ed25519PublicKey.from_public_bytes(key_bytes[1:])
    expected = key_id(name, public_key)
    if bytes.fromhex(id_hex) != expected:
        raise VerifierKeyError("key id does not match the name and key")
    return VerifierKey(name=name, key_id=expected, public_key=public_key)


def sign_note(body: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """``body`` signed by ``private_key`` under ``name``, as a signed note."""
    _check_text(body, NoteFormatError)
    if not body.endswith("\n"):
        raise NoteFormatError("note text must end with a newline")
    _check_name(name, NoteFormatError, "key name")
    signature = private_key.sign(body.encode("utf-8"))
    kid = key_id(name, private_key.public_key())
    return f"{body}\n{SIGNATURE_PREFIX}{name} {_b64(kid + signature)}\n"


def open_note(text: str, verifiers: Sequence[VerifierKey]) -> OpenedNote:
    """The body of a note and the names that validly signed it; see the module docstring for the rules."""
    pinned: dict[tuple[str, bytes], VerifierKey] = {}
    for verifier in verifiers:
        if (verifier.name, verifier.key_id) in pinned:
            raise VerifierKeyError("two verifier keys share a name and key id")
        pinned[(verifier.name, verifier.key_id)] = verifier
    _check_text(text, NoteFormatError)
    split = text.rfind("\n\n")
    if split < 0:
        raise NoteFormatError("no blank line before the signatures")
    body, block = text[: split + 1], text[split + 2 :]
    if not block.endswith("\n"):
        raise NoteFormatError("signature lines must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteFormatError(f"more than {MAX_SIGNATURES} signature lines")
    signers: list[str] = []
    message = body.encode("utf-8")
    for number, line in enumerate(lines, start=1):
        name, kid, signature = _signature_line(line, number)
        match = pinned.get((name, kid))
        if match is None:
            continue
        if len(signature) != 64:
            raise VerificationError()
        try:
            match.public_key.verify(signature, message)
        except InvalidSignature:
            raise VerificationError() from None
        if name not in signers:
            signers.append(name)
    if not signers:
        raise VerificationError()
    return OpenedNote(body=body, signers=tuple(signers))


def _signature_line(line: str, number: int) -> tuple[str, bytes, bytes]:
    where = f"signature line {number}"
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteFormatError(f"{where}: must start with an em dash and a space")
    parts = line[len(SIGNATURE_PREFIX) :].split(" ")
    if len(parts) != 2:
        raise NoteFormatError(f"{where}: must be a key name and a signature separated by one space")
    name, encoded = parts
    _check_name(name, NoteFormatError, f"{where}: key name")
    decoded = _unb64(encoded)
    if decoded is None or len(decoded) < 5:
        raise NoteFormatError(f"{where}: signature must be the base64 of a key id and a signature")
    return name, decoded[:4], decoded[4:]


_FormatError = type[NoteFormatError | VerifierKeyError | CheckpointFormatError]


def _check_text(text: str, error: _FormatError) -> None:
    if any(ch < " " and ch != "\n" for ch in text):
        raise error("text holds a control character other than newline")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise error("text is not valid UTF-8") from None


def _check_name(name: str, error: _FormatError, what: str) -> None:
    if not name:
        raise error(f"{what} must not be empty")
    if any(ch.isspace() or ch == "+" or ch < " " for ch in name):
        raise error(f"{what} must hold no space, no plus sign and no control character")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{what} is not valid UTF-8") from None


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes_raw()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes | None:
    """Strict standard base64: only the canonical spelling of some bytes, else ``None``."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        return None
    return data if _b64(data) == text else None


__all__ = [
    "ED25519_TYPE",
    "MAX_SIGNATURES",
    "Checkpoint",
    "OpenedNote",
    "VerifierKey",
    "format_checkpoint",
    "key_id",
    "open_note",
    "parse_checkpoint",
    "parse_verifier_key",
    "sign_note",
    "verifier_key_string",
]
