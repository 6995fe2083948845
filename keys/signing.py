"""Ed25519 signing keys per purpose: created on first use, rotated with an overlap, wrapped by the KEK.

Invariants:

* A private key exists in clear only in process memory. At rest the table
  ``signing_keys`` holds its 32-byte seed wrapped by a KEK version (AES-GCM
  through the provider) with associated data binding it to (purpose,
  version), so a wrapped seed copied to another purpose or version does not
  unwrap; beside it the raw 32-byte public key, which is public.
* Every key read from the store is unwrapped and checked against the public
  key stored beside it before it is used or listed: a row whose public key
  was swapped fails like a bad unwrap (one :class:`DecryptionError`), so
  nobody who can only write the key store can slip in a verifier key.
* For each purpose the highest version is current and has no
  ``retire_after``. Rotation adds version n+1 and gives every older key a
  ``retire_after`` no later than ``now + overlap``: an overlap only ever
  shortens, and an overlap of zero drops every older key at once. A key is
  listed for verification while ``now < retire_after``.
* Every wrap is counted per KEK version in ``kek_wraps``, in the same
  transaction as the wrap it counts. KEK rotation re-wraps these rows
  (:func:`rewrap_signing_keys`, called by ``MemberKeys``) and
  ``MemberKeys.kek_references`` counts them, so a KEK version is not retired
  while a signing key refers to it.
* Private keys are never logged, never put in an error and never in a ``repr``.

Associated data of a wrapped seed (lengths big-endian)::

    b"member-vault/signing-key/ed25519/v1" ‖ u16 len(purpose) ‖ purpose ‖ u32 version

A key id is the RFC 7638 JWK thumbprint of the public key (RFC 8037 ``OKP``
members): stable, derived from the public key alone, and the ``kid`` of a
vault-issued JWT.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Engine, Row, insert, select, update

from keys._store import count_wraps, hold_kek, insert_ignore, write_transaction
from keys.errors import DecryptionError, KeyNotFoundError
from keys.models import SigningKeyRow
from keys.provider import KekProvider

SEED_SIZE = 32
_AAD_PREFIX = b"member-vault/signing-key/ed25519/v1"


class SigningPurpose(StrEnum):
    audit = "audit"
    jwt = "jwt"
    receipts = "receipts"
    certificates = "certificates"  # erasure certificates (and later export manifests)
    dev_jwt = "dev-jwt"  # the development issuer (member-vault-dev); never trusted in production


def signing_key_id(public_key: Ed25519PublicKey) -> str:
    """The RFC 7638 thumbprint of the key's JWK (``{"crv":"Ed25519","kty":"OKP","x":…}``), base64url without padding."""
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(public_key.public_bytes_raw())}
    canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode("ascii")
    return _b64url(hashlib.sha256(canonical).digest())


@dataclass(frozen=True, slots=True)
class PublicSigningKey:
    """The public half of a signing key and its place in the rotation."""

    purpose: SigningPurpose
    version: int
    key_id: str
    public_key: Ed25519PublicKey = field(compare=False, repr=False)
    public_bytes: bytes
    created_at: datetime
    activated_at: datetime
    retire_after: datetime | None


@dataclass(frozen=True, slots=True, eq=False)
class SigningKey:
    """A private signing key, unwrapped; its ``repr`` names the key, never its material."""

    purpose: SigningPurpose
    version: int
    key_id: str
    private_key: Ed25519PrivateKey = field(repr=False)

    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)


_COLUMNS = (
    SigningKeyRow.version,
    SigningKeyRow.kek_version,
    SigningKeyRow.wrapped,
    SigningKeyRow.public_key,
    SigningKeyRow.created_at,
    SigningKeyRow.activated_at,
    SigningKeyRow.retire_after,
)


class SigningKeys:
    """Signing keys in the key store (its own engine), wrapped by the KEK provider."""

    def __init__(self, engine: Engine, provider: KekProvider, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.provider = provider
        self._now = now
        # (purpose, version) -> (wrapped seed, public key, private key): used only while the row holds those same bytes.
        self._cache: dict[tuple[str, int], tuple[bytes, bytes, Ed25519PrivateKey]] = {}

    # -- reading ---------------------------------------------------------------

    def current(self, purpose: SigningPurpose) -> SigningKey:
        """The current key of ``purpose``; version 1 is created on first use."""
        purpose = _purpose(purpose)
        rows = self._rows(purpose)
        if not rows:
            self._create_first(purpose)
            rows = self._rows(purpose)
        version, kek_version, wrapped, public, *_ = rows[0]
        private = self._unwrap(purpose, version, kek_version, bytes(wrapped), bytes(public))
        return SigningKey(purpose, version, signing_key_id(private.public_key()), private)

    def verification_keys(self, purpose: SigningPurpose, now: datetime | None = None) -> list[PublicSigningKey]:
        """The current key and the older keys still in their overlap at ``now``, current first (none before first use)."""
        purpose = _purpose(purpose)
        at = _aware(self._now() if now is None else now)
        listed = []
        for version, kek_version, wrapped, public, created_at, activated_at, retire_after in self._rows(purpose):
            retires = None if retire_after is None else _utc(retire_after)
            if retires is not None and at >= retires:
                continue
            private = self._unwrap(purpose, version, kek_version, bytes(wrapped), bytes(public))
            public_key = private.public_key()
            listed.append(
                PublicSigningKey(
                    purpose=purpose,
                    version=version,
                    key_id=signing_key_id(public_key),
                    public_key=public_key,
                    public_bytes=public_key.public_bytes_raw(),
                    created_at=_utc(created_at),
                    activated_at=_utc(activated_at),
                    retire_after=retires,
                )
            )
        return listed

    def _rows(self, purpose: SigningPurpose) -> Sequence[Row[int, int, bytes, bytes, datetime, datetime, datetime | None]]:
        stmt = select(*_COLUMNS).where(SigningKeyRow.purpose == purpose.value).order_by(SigningKeyRow.version.desc())
        with self.engine.connect() as conn:
            return conn.execute(stmt).all()

    def _unwrap(self, purpose: SigningPurpose, version: int, kek_version: int, wrapped: bytes, public: bytes) -> Ed25519PrivateKey:
        cached = self._cache.get((purpose.value, version))
        if cached is not None and cached[:2] == (wrapped, public):
            return cached[2]
        seed = self.provider.unwrap(kek_version, wrapped, _aad(purpose, version))
        if len(seed) != SEED_SIZE:
            raise DecryptionError()
        private = Ed25519PrivateKey.from_private_bytes(seed)
        if private.public_key().public_bytes_raw() != public:
            raise DecryptionError()
        self._cache[(purpose.value, version)] = (wrapped, public, private)
        return private

    # -- creating and rotating -----------------------------------------------------

    def _create_first(self, purpose: SigningPurpose) -> None:
        """Insert version 1 unless another process got there first."""
        private = Ed25519PrivateKey.generate()
        at = _aware(self._now())
        with write_transaction(self.engine) as conn:
            hold_kek(conn)
            kek_version, blob = self.provider.wrap(private.private_bytes_raw(), _aad(purpose, 1))
            row = _row(purpose, 1, kek_version=kek_version, blob=blob, private=private, at=at)
            conn.execute(insert_ignore(conn, SigningKeyRow).values(**row))
            count_wraps(conn, kek_version, 1)  # a wrap that lost a creation race still spent a nonce

    def rotate(self, purpose: SigningPurpose, overlap: timedelta) -> SigningKey:
        """Make a new version current; older keys stay listed until ``now + overlap`` at the latest."""
        if overlap < timedelta(0):
            raise ValueError("overlap must not be negative")
        purpose = _purpose(purpose)
        self.current(purpose)  # rotation starts from an existing key: version 1 is made first if needed
        at = _aware(self._now())
        private = Ed25519PrivateKey.generate()
        with write_transaction(self.engine) as conn:
            hold_kek(conn)
            # Lock the purpose's rows (PostgreSQL; SQLite holds the write lock already), then read the
            # newest version in a fresh statement so a rotation that committed meanwhile is seen.
            conn.execute(select(SigningKeyRow.version).where(SigningKeyRow.purpose == purpose.value).with_for_update()).all()
            newest = conn.scalar(select(SigningKeyRow.version).where(SigningKeyRow.purpose == purpose.value).order_by(SigningKeyRow.version.desc()).limit(1))
            if newest is None:
                raise KeyNotFoundError(f"no {purpose.value} signing key to rotate")
            version = int(newest) + 1
            kek_version, blob = self.provider.wrap(private.private_bytes_raw(), _aad(purpose, version))
            deadline = at + overlap
            older = SigningKeyRow.purpose == purpose.value
            conn.execute(update(SigningKeyRow).where(older, SigningKeyRow.retire_after.is_(None)).values(retire_after=deadline))
            conn.execute(update(SigningKeyRow).where(older, SigningKeyRow.retire_after > deadline).values(retire_after=deadline))
            conn.execute(insert(SigningKeyRow).values(**_row(purpose, version, kek_version=kek_version, blob=blob, private=private, at=at)))
            count_wraps(conn, kek_version, 1)
        self._cache[(purpose.value, version)] = (blob, private.public_key().public_bytes_raw(), private)
        return SigningKey(purpose, version, signing_key_id(private.public_key()), private)


def rewrap_signing_keys(conn: Connection, provider: KekProvider, current: int) -> int:
    """Re-wrap, in the caller's transaction, every signing key not under KEK ``current``.

    Returns the number of wraps made, for the caller to count. A row is updated
    only if it still holds the blob it was read with.
    """
    rows = conn.execute(
        select(SigningKeyRow.purpose, SigningKeyRow.version, SigningKeyRow.kek_version, SigningKeyRow.wrapped).where(SigningKeyRow.kek_version != current)
    ).all()
    if not rows:
        return 0
    fresh = provider.rewrap([(kek_version, bytes(wrapped), _aad(purpose, version)) for purpose, version, kek_version, wrapped in rows])
    for (purpose, version, _, old), (kek_version, blob) in zip(rows, fresh, strict=True):
        conn.execute(
            update(SigningKeyRow)
            .where(SigningKeyRow.purpose == purpose, SigningKeyRow.version == version, SigningKeyRow.wrapped == bytes(old))
            .values(kek_version=kek_version, wrapped=blob)
        )
    return len(rows)


def _row(purpose: SigningPurpose, version: int, *, kek_version: int, blob: bytes, private: Ed25519PrivateKey, at: datetime) -> dict[str, object]:
    return {
        "purpose": purpose.value,
        "version": version,
        "kek_version": kek_version,
        "wrapped": blob,
        "public_key": private.public_key().public_bytes_raw(),
        "created_at": at,
        "activated_at": at,
        "retire_after": None,
    }


def _aad(purpose: str, version: int) -> bytes:
    p = purpose.encode()
    return _AAD_PREFIX + struct.pack(">H", len(p)) + p + struct.pack(">I", version)


def _purpose(purpose: SigningPurpose) -> SigningPurpose:
    try:
        return SigningPurpose(purpose)
    except ValueError:
        raise KeyNotFoundError("no such signing purpose") from None


def _aware(moment: datetime) -> datetime:
    """An injected time in UTC; a naive one is refused rather than guessed."""
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return moment.astimezone(UTC)


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive value read back from SQLite was stored as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


__all__ = ["PublicSigningKey", "SigningKey", "SigningKeys", "SigningPurpose", "rewrap_signing_keys", "signing_key_id"]
