"""Issuing the vault's own access tokens, signed with its current Ed25519 key."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import jwt

from api.tokens._claims import Claims, parse_claims
from keys.signing import SigningKey

MAX_TTL = timedelta(hours=1)
DEV_ISSUER = "member-vault-dev"  # the issuer of development tokens (``vaultctl tokens issue``, ``demo seed``), signed with the dev JWT key


def issue_token(
    signing_key: SigningKey,
    *,
    issuer: str,
    audience: str,
    subject: str,
    roles: Sequence[str],
    ttl: timedelta,
    now: datetime,
    clinics: Sequence[str] = (),
    member_id: str | None = None,
    client_id: str | None = None,
    acting_staff: str | None = None,
) -> tuple[str, Claims]:
    """A signed ``at+jwt`` valid from ``now`` for ``ttl`` (whole seconds, 1 s to 1 h), and the claims the verifier will return for it.

    The claims follow the verifier's rules, so an issued token always verifies while it is fresh;
    a claim that breaks them raises ``ValueError`` naming the claim.
    """
    if ttl < timedelta(seconds=1):
        raise ValueError("ttl must be at least one second")
    if ttl > MAX_TTL:
        raise ValueError("ttl must be at most one hour")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not issuer:
        raise ValueError("issuer must not be empty")
    if not audience:
        raise ValueError("audience must not be empty")
    if isinstance(roles, str) or isinstance(clinics, str):
        raise ValueError("roles and clinics are sequences of names, not a single string")
    issued_at = int(now.timestamp())
    expires_at = issued_at + int(ttl.total_seconds())
    payload: dict[str, object] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "roles": list(roles),
        "iat": issued_at,
        "exp": expires_at,
        "jti": secrets.token_urlsafe(16),
    }
    if clinics:
        payload["clinics"] = list(clinics)
    if member_id is not None:
        payload["member_id"] = member_id
    if client_id is not None:
        payload["client_id"] = client_id
    if acting_staff is not None:
        payload["act"] = {"sub": acting_staff}
    claims = parse_claims(
        payload,
        issuer=issuer,
        issued_at=datetime.fromtimestamp(issued_at, UTC),
        expires_at=datetime.fromtimestamp(expires_at, UTC),
    )
    token = jwt.encode(payload, signing_key.private_key, algorithm="EdDSA", headers={"typ": "at+jwt", "kid": signing_key.key_id})
    return token, claims
