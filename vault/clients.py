"""The registry of service clients of the vault's token endpoint, their secrets, and the failure throttle.

Invariants:

* A client secret is 256 bits from ``secrets``, returned once (base64url, 43
  characters) by ``add`` and ``rotate_secret`` and never stored: the
  ``clients`` row holds only ``HMAC-SHA256(root key "client-secrets",
  DIGEST_LABEL ‖ client_id ‖ 0x00 ‖ secret)``, so a digest copied to another
  client's row does not match there. Rotation replaces the digest: the old
  secret stops working in the same transaction.
* ``authenticate`` does the same work whatever the outcome — one row read, one
  HMAC, one ``hmac.compare_digest`` (against a dummy digest for an unknown
  client) — and answers a wrong secret, an unknown client and a revoked client
  alike (``None``).
* A revoked client stays listed with its ``revoked_at``; it cannot be
  authenticated, its secret cannot be rotated, and tokens already issued to it
  are refused by the edge, which reads ``revoked_at`` on every request.
* A client id matches ``[a-z0-9][a-z0-9._-]{2,63}``; roles are ``vault.roles.Role``
  values except ``member`` (a member token is bound to one member at issuance,
  a service client is not); clinics are clinic ids or ``*``.
* Throttle: failed attempts are counted per bucket (``client:<id>``,
  ``addr:<remote address>``) in a fixed window that starts with the first
  failure. A bucket with ``limit`` failures in its running window is refused
  until the window passes, before any secret is checked — so the refusal does
  not say whether the secret was right. Refused attempts are not counted.
  Expired buckets are pruned as failures are recorded. Anyone who knows a
  client id can use up that client's bucket for one window; the address
  bucket alone would let a spread-out guesser go on.
* Time is always a ``now`` argument; nothing here reads the clock or commits.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NewType

from sqlalchemy import Column, Connection, Executable, Row, String, select, update

from vault.errors import ConflictError, NotFoundError, ValidationError
from vault.roles import Role
from vault.storage.schema import auth_throttle, clients, revoked_tokens
from vault.storage.upsert import insert_ignore

ClientId = NewType("ClientId", str)

ROOT_KEY = "client-secrets"
DIGEST_LABEL = b"member-vault/client-secret/v1\x00"
SECRET_BYTES = 32
CLIENT_ID = re.compile(r"[a-z0-9][a-z0-9._-]{2,63}")
CLINIC = re.compile(r"[A-Za-z0-9_.:-]{1,64}|\*")
TOKEN_ID = re.compile(r"[!-~]{1,128}")
CLIENT_ROLES = frozenset(Role) - {Role.member}
MAX_BUCKET = 128
_DUMMY_DIGEST = bytes(32)


@dataclass(frozen=True, slots=True)
class Client:
    """A registered service client, as the registry lists it (never its secret or digest)."""

    client_id: ClientId
    roles: tuple[Role, ...]
    clinics: tuple[str, ...]
    created_at: datetime
    secret_rotated_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class Throttle:
    """At most ``limit`` failures per bucket in a window of ``window``."""

    limit: int = 10
    window: timedelta = timedelta(minutes=5)


def client_bucket(client_id: str) -> str | None:
    """The throttle bucket of a well-formed client id (known or not); None for anything else."""
    return f"client:{client_id}" if CLIENT_ID.fullmatch(client_id) else None


def address_bucket(address: str | None) -> str:
    return f"addr:{(address or 'unknown')[: MAX_BUCKET - 5]}"


class ClientRegistry:
    """Service clients in the data database; secrets keyed by the ``client-secrets`` root key."""

    def __init__(self, secret_key: bytes, throttle: Throttle | None = None) -> None:
        if len(secret_key) < 32:
            raise ValueError("the client-secret key must be at least 32 bytes")
        self._key = secret_key
        self.throttle = throttle or Throttle()

    # -- the registry ------------------------------------------------------------

    def add(self, conn: Connection, client_id: str, roles: Iterable[str], clinics: Iterable[str], now: datetime) -> str:
        """Register a client; returns its secret, the only time it is ever shown. A taken id is a ``ConflictError``."""
        checked_id, role_text, clinic_text = _checked(client_id, roles, clinics)
        at = _utc(now)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        values = {"client_id": checked_id, "secret_digest": self._digest(checked_id, secret), "roles": role_text, "clinics": clinic_text}
        if not _inserted(conn, insert_ignore(conn, clients).values(**values, created_at=at, secret_rotated_at=at, revoked_at=None)):
            raise ConflictError(f"client {checked_id} already exists")
        return secret

    def list(self, conn: Connection) -> tuple[Client, ...]:
        """Every client, revoked ones included, by id."""
        return tuple(_client(row) for row in conn.execute(select(clients).order_by(clients.c.client_id)))

    def get(self, conn: Connection, client_id: str) -> Client:
        row = conn.execute(select(clients).where(clients.c.client_id == client_id)).first()
        if row is None:
            raise NotFoundError("no such client")
        return _client(row)

    def revoke(self, conn: Connection, client_id: str, now: datetime) -> Client:
        """Revoke a client (its tokens stop working at once); revoking it again keeps the first time."""
        self.get(conn, client_id)
        conn.execute(update(clients).where(clients.c.client_id == client_id, clients.c.revoked_at.is_(None)).values(revoked_at=_utc(now)))
        return self.get(conn, client_id)

    def rotate_secret(self, conn: Connection, client_id: str, now: datetime) -> str:
        """Give an active client a new secret (returned once); the old one stops working."""
        if not self.get(conn, client_id).active:
            raise ConflictError(f"client {client_id} is revoked")
        secret = secrets.token_urlsafe(SECRET_BYTES)
        changed = conn.execute(
            update(clients)
            .where(clients.c.client_id == client_id, clients.c.revoked_at.is_(None))
            .values(secret_digest=self._digest(client_id, secret), secret_rotated_at=_utc(now))
        ).rowcount
        if changed != 1:
            raise ConflictError(f"client {client_id} is revoked")
        return secret

    def authenticate(self, conn: Connection, client_id: str, secret: str) -> Client | None:
        """The active client whose secret this is, or None; the same work for every outcome."""
        presented = self._digest(client_id, secret)
        row = conn.execute(select(clients).where(clients.c.client_id == client_id)).first()
        stored = bytes(row.secret_digest) if row is not None else _DUMMY_DIGEST
        matches = hmac.compare_digest(presented, stored)
        if row is None or not matches or row.revoked_at is not None:
            return None
        return _client(row)

    def _digest(self, client_id: str, secret: str) -> bytes:
        message = DIGEST_LABEL + client_id.encode("utf-8", "surrogatepass") + b"\x00" + secret.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    # -- the throttle ------------------------------------------------------------

    def retry_after(self, conn: Connection, buckets: Sequence[str], now: datetime) -> int | None:
        """Seconds until every full bucket's window has passed, or None if no bucket is full."""
        at = _utc(now)
        waits = []
        for row in conn.execute(select(auth_throttle).where(auth_throttle.c.bucket.in_(list(buckets)))):
            ends = _utc(row.window_start) + self.throttle.window
            if row.failures >= self.throttle.limit and at < ends:
                waits.append(max(1, math.ceil((ends - at).total_seconds())))
        return max(waits) if waits else None

    def record_failure(self, conn: Connection, buckets: Sequence[str], now: datetime) -> None:
        """Count one failure in each bucket (a window that has passed starts again), then prune expired buckets."""
        at = _utc(now)
        expired_before = at - self.throttle.window
        for bucket in sorted(set(buckets)):  # one lock order for every writer
            self._count(conn, bucket, at, expired_before)
        stale = conn.execute(select(auth_throttle.c.bucket).where(auth_throttle.c.window_start <= expired_before).with_for_update(skip_locked=True)).scalars()
        doomed = [b for b in stale if b not in buckets]
        if doomed:
            conn.execute(auth_throttle.delete().where(auth_throttle.c.bucket.in_(doomed), auth_throttle.c.window_start <= expired_before))

    def _count(self, conn: Connection, bucket: str, at: datetime, expired_before: datetime) -> None:
        for _ in range(2):  # a row pruned or inserted by another writer meanwhile: look again once
            row = conn.execute(select(auth_throttle).where(auth_throttle.c.bucket == bucket).with_for_update()).first()
            if row is None:
                if _inserted(conn, insert_ignore(conn, auth_throttle).values(bucket=bucket, window_start=at, failures=1)):
                    return
                continue
            fresh = _utc(row.window_start) <= expired_before
            values = {"window_start": at, "failures": 1} if fresh else {"failures": auth_throttle.c.failures + 1}
            if conn.execute(update(auth_throttle).where(auth_throttle.c.bucket == bucket).values(**values)).rowcount == 1:
                return


def revoke_token(conn: Connection, token_id: str, expires_at: datetime, now: datetime) -> bool:
    """Refuse the access token ``token_id`` (its ``jti``) from now on; False if it was revoked already."""
    if not TOKEN_ID.fullmatch(token_id):
        raise ValidationError({"token_id": "malformed"})
    values = {"token_id": token_id, "expires_at": _utc(expires_at), "revoked_at": _utc(now)}
    return _inserted(conn, insert_ignore(conn, revoked_tokens).values(**values))


def _inserted(conn: Connection, statement: Executable) -> bool:
    """Whether an ``INSERT … ON CONFLICT DO NOTHING`` inserted its row (psycopg reports an INSERT's count only when asked)."""
    return bool(conn.execute(statement, execution_options={"preserve_rowcount": True}).rowcount == 1)


def _checked(client_id: str, roles: Iterable[str], clinics: Iterable[str]) -> tuple[ClientId, str, str]:
    """The id and the stored JSON of roles and clinics, or a ``ValidationError`` naming the fields."""
    role_list, clinic_list = sorted(set(roles)), sorted(set(clinics))
    problems: dict[str, str] = {}
    if not CLIENT_ID.fullmatch(client_id):
        problems["client_id"] = "malformed"
    if not role_list:
        problems["roles"] = "missing"
    elif any(r not in CLIENT_ROLES for r in role_list):
        problems["roles"] = "not_a_client_role"
    if any(not CLINIC.fullmatch(c) for c in clinic_list):
        problems["clinics"] = "malformed"
    role_text, clinic_text = _json(role_list), _json(clinic_list)
    if len(role_text) > _length(clients.c.roles):
        problems["roles"] = "too_long"
    if len(clinic_text) > _length(clients.c.clinics):
        problems["clinics"] = "too_long"
    if problems:
        raise ValidationError(problems)
    return ClientId(client_id), role_text, clinic_text


def _client(row: Row[object]) -> Client:
    names = _strings(row.roles)
    return Client(
        client_id=ClientId(row.client_id),
        roles=tuple(Role(r) for r in names if r in CLIENT_ROLES),  # a role that no longer exists grants nothing
        clinics=_strings(row.clinics),
        created_at=_utc(row.created_at),
        secret_rotated_at=_utc(row.secret_rotated_at),
        revoked_at=None if row.revoked_at is None else _utc(row.revoked_at),
    )


def _json(names: Sequence[str]) -> str:
    return json.dumps(list(names), separators=(",", ":"))


def _strings(text: str) -> tuple[str, ...]:
    value = json.loads(text)
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _length(column: Column[str]) -> int:
    kind = column.type
    return kind.length if isinstance(kind, String) and kind.length else 0


def _utc(moment: datetime) -> datetime:
    """An injected or stored time in UTC; a naive one is refused rather than guessed."""
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return moment.astimezone(UTC)


__all__ = ["CLIENT_ID", "CLIENT_ROLES", "ROOT_KEY", "Client", "ClientId", "ClientRegistry", "Throttle", "address_bucket", "client_bucket", "revoke_token"]
