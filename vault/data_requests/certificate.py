"""The erasure certificate: what an erasure destroyed, what it kept, why and until when — a JWS the vault signs.

Built from the data map (each field's ``Retention``), the request and the
facts stored beside it (the held treatments' retention years, the refund entry
that settled the card balance), so it can be issued again, the same bytes
under the same key, whenever the member or the dpo asks. Header
``{"alg": "EdDSA", "typ": "erasure-certificate+jwt", "kid": …}``, signed with the
``certificates`` key (published in ``/.well-known/jwks.json``); no ``aud``, so
it is never an access token. Claims::

    {"iss", "iat" (the erasure time), "jti" (the request id),
     "certificate_version": "member-vault/erasure-certificate/1",
     "controller": {"id", "name"}, "request_id", "member_id", "erased_at",
     "destroyed": [{"table", "fields", "how"}, …],
     "kept": [{"what", "fields", "why", "until", "access"}, …],
     "settlement": {"refund_entry_id"} | null,
     "backups": {"key_store_retention_days", "statement"}}

No personal value appears: table and field names, ids, years and codes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import jwt

from keys.signing import SigningKey
from vault import data_map as dm
from vault.times import rfc3339_seconds

CERTIFICATE_TYPE = "erasure-certificate+jwt"
CERTIFICATE_VERSION = "member-vault/erasure-certificate/1"
SHREDDED = "crypto-shredded: the member's data key was destroyed, so every copy of these ciphertexts, backups included, is unreadable"


@dataclass(frozen=True, slots=True)
class ErasureFacts:
    request_id: str
    member_id: str
    erased_at: datetime
    retention_years: tuple[int, ...]  # expiry years of the treatment records kept under legal hold
    refund_entry_id: str | None  # the ledger entry that paid back a positive card balance before shredding


def _names(table: dm.Table, retention: dm.Retention) -> list[str]:
    return sorted(f.name for f in dm.fields_of(table) if f.retention is retention)


def certificate_claims(facts: ErasureFacts, *, issuer: str, controller: str, backup_days: int) -> dict[str, object]:
    destroyed: list[dict[str, object]] = [{"table": t.value, "fields": names, "how": SHREDDED} for t in dm.Table if (names := _names(t, dm.Retention.member))]
    destroyed += [
        {"table": "blind_index", "fields": [], "how": "deleted: searches by phone, e-mail, document or card number no longer find the member"},
        {"table": "field_history", "fields": [], "how": "deleted, and unreadable anyway without the data key"},
        {"table": "consent_events", "fields": ["evidence"], "how": SHREDDED},
        {"table": "data_requests", "fields": ["details", "evidence"], "how": SHREDDED},
        {"table": "data_request_steps", "fields": ["note"], "how": SHREDDED},
    ]
    held = _names(dm.Table.treatments, dm.Retention.medical_record)
    kept: list[dict[str, object]] = [
        {
            "what": "treatment records",
            "fields": held,
            "why": f"medical-record retention: outpatient records are kept at least {dm.MEDICAL_RETENTION_YEARS} years",
            "until": f"{year}-12-31",
            "access": "restricted: the dpo, for legal claims only",
        }
        for year in sorted(facts.retention_years)
    ]
    kept += [
        {
            "what": "record metadata",
            "fields": sorted({f"{t.value}.{name}" for t in dm.Table for name in _names(t, dm.Retention.plain_metadata)}),
            "why": "unencrypted, not identifying on their own: kept as a tombstone so audit references and ledger arithmetic stay meaningful",
            "until": None,
            "access": "as before; they name no person once the rest is shredded",
        },
        {
            "what": "audit trail, consent history and data-request steps",
            "fields": [],
            "why": "proof of what was done and on what ground (ids, codes and field names only, never values)",
            "until": None,
            "access": "compliance officers and the dpo",
        },
    ]
    return {
        "iss": issuer,
        "iat": int(facts.erased_at.timestamp()),
        "jti": facts.request_id,
        "certificate_version": CERTIFICATE_VERSION,
        "controller": {"id": issuer, "name": controller},
        "request_id": facts.request_id,
        "member_id": facts.member_id,
        "erased_at": rfc3339_seconds(facts.erased_at),
        "destroyed": destroyed,
        "kept": kept,
        "settlement": None if facts.refund_entry_id is None else {"refund_entry_id": facts.refund_entry_id},
        "backups": {
            "key_store_retention_days": backup_days,
            "statement": (
                f"backups of the key store are kept at most {backup_days} days: until then a shredded key may survive in one; "
                "backups of the data database never bring the member back, since their ciphertexts need the shredded key"
            ),
        },
    }


def sign_certificate(key: SigningKey, facts: ErasureFacts, *, issuer: str, controller: str, backup_days: int) -> str:
    claims = certificate_claims(facts, issuer=issuer, controller=controller, backup_days=backup_days)
    return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"typ": CERTIFICATE_TYPE, "kid": key.key_id})


__all__ = ["CERTIFICATE_TYPE", "CERTIFICATE_VERSION", "ErasureFacts", "certificate_claims", "sign_certificate"]
