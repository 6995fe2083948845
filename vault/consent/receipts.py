"""Consent receipts: a compact JWS the vault signs for every consent event.

Header ``{"alg": "EdDSA", "typ": "consent-receipt+jwt", "kid": …}``, signed
with the vault's ``receipts`` key (published in ``/.well-known/jwks.json``,
never a key the access-token verifier trusts). The ``typ`` keeps a receipt
from ever passing as an access token (RFC 8725 §3.11), and it carries no
``aud`` or ``exp``.

The claims follow the consent record of ISO/IEC TS 27560 and the Kantara
Consent Receipt (v1.1): record id, controller, PII principal (by member id
only), purpose and legal basis, the notice (version and hash), the state the
event put the consent in, time, collection channel, and who gave and who
recorded it. ``iat`` is the event's time, so a receipt is the same bytes
however often it is re-issued under the same key. Example::

    {"iss": "member-vault", "iat": 1795000000, "jti": "<consent id>",
     "receipt_version": "member-vault/consent-receipt/1",
     "record_id": "<consent id>", "controller": {"id": "member-vault", "name": "…"},
     "member_id": "<member id>", "purpose": "marketing_contact", "legal_basis": "consent",
     "sensitive": false, "notice": {"version": 2, "hash": "<hex>"} | null,
     "state": "granted" | "withdrawn", "time": "2026-11-22T21:00:00Z",
     "channel": "app", "actor": {"given_by": "member", "recorded_by": "<sub>", "recorded_role": "member"}}
"""

from __future__ import annotations

import jwt

from keys.signing import SigningKey
from vault.consent.model import ConsentEvent
from vault.times import rfc3339_seconds

RECEIPT_TYPE = "consent-receipt+jwt"
RECEIPT_VERSION = "member-vault/consent-receipt/1"


def receipt_claims(event: ConsentEvent, *, issuer: str, controller: str) -> dict[str, object]:
    notice = None if event.notice_version is None else {"version": event.notice_version, "hash": event.notice_hash}
    return {
        "iss": issuer,
        "iat": int(event.recorded_at.timestamp()),
        "jti": event.consent_id,
        "receipt_version": RECEIPT_VERSION,
        "record_id": event.consent_id,
        "controller": {"id": issuer, "name": controller},
        "member_id": event.member_id,
        "purpose": event.purpose.value,
        "legal_basis": event.purpose.legal_basis.value,
        "sensitive": event.purpose.sensitive,
        "notice": notice,
        "state": event.decision.value,
        "time": rfc3339_seconds(event.recorded_at),
        "channel": event.channel.value,
        "actor": {"given_by": event.given_by.value, "recorded_by": event.recorded_by, "recorded_role": event.recorded_role.value},
    }


def sign_receipt(key: SigningKey, event: ConsentEvent, *, issuer: str, controller: str) -> str:
    """The compact JWS of ``event``'s receipt, signed with ``key`` (the ``receipts`` signing purpose)."""
    claims = receipt_claims(event, issuer=issuer, controller=controller)
    return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"typ": RECEIPT_TYPE, "kid": key.key_id})


__all__ = ["RECEIPT_TYPE", "RECEIPT_VERSION", "receipt_claims", "sign_receipt"]
