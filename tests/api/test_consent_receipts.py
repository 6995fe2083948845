"""Consent receipts over HTTP, checked with an independent JOSE library (jwcrypto), never with our own code.

Invariants: every consent event is answered with a compact JWS (header
``alg`` EdDSA, ``typ`` consent-receipt+jwt, ``kid`` of a key published at
``/.well-known/jwks.json``) carrying the claims vault/consent/receipts.py
documents; no edit of the receipt passes verification with changed content;
a receipt is never accepted as an access token (SECURITY-BAR H9).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from jwcrypto import jwk, jws

from tests.api.conftest import Vault

EVIDENCE = "scan:paper-form/2026-0042"


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def strict_decode(segment: str) -> bytes:
    """base64url without padding, refusing any character outside the alphabet."""
    return base64.b64decode((segment + "=" * (-len(segment) % 4)).encode("latin-1"), altchars=b"-_", validate=True)


def spells(text: str, signed: list[bytes]) -> bool:
    """``text`` is another base64url spelling of exactly the header, payload and signature bytes in ``signed``."""
    segments = text.split(".")
    try:
        return len(segments) == 3 and [strict_decode(s) for s in segments] == signed
    except (binascii.Error, ValueError):
        return False


def jwks(vault: Vault) -> jwk.JWKSet:
    r = vault.client.get("/.well-known/jwks.json")
    assert r.status_code == 200
    return jwk.JWKSet.from_json(r.text)


def verified(receipt: str, keys: jwk.JWKSet) -> tuple[dict[str, Any], dict[str, Any]]:
    """The receipt's protected header and claims, verified by jwcrypto with the JWKS key its ``kid`` names (EdDSA only)."""
    token = jws.JWS()
    token.deserialize(receipt)
    key = keys.get_key(token.jose_header["kid"])
    assert key is not None
    token.verify(key, alg="EdDSA")
    return dict(token.jose_header), json.loads(token.payload)


def jwcrypto_accepts(receipt: str, keys: jwk.JWKSet) -> bool:
    try:
        verified(receipt, keys)
    except (AssertionError, jws.InvalidJWSObject, jws.InvalidJWSSignature, ValueError, UnicodeDecodeError, KeyError, TypeError):
        return False
    return True


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def record(vault: Vault, index: int, body: dict[str, object], headers: dict[str, str]) -> dict[str, Any]:
    r = vault.client.post(f"/v1/members/{vault.members[index].member_id}/consents", json=body, headers=headers)
    assert r.status_code == 201, r.text
    event: dict[str, Any] = r.json()
    return event


def test_receipts_verify_against_the_jwks_with_jwcrypto_and_carry_the_documented_claims(vault: Vault) -> None:
    m = vault.members[2]
    app = vault.headers(vault.token("member", subject="app-2", member_id=m.member_id), "self_service")
    desk = vault.headers(vault.token("front_desk", subject="desk-1", clinics=[m.home_clinic_id]), "care")
    granted = record(vault, 2, {"purpose": "marketing_contact", "decision": "granted", "notice_version": 1, "channel": "app"}, app)
    withdrawn = record(vault, 2, {"purpose": "photo_use", "decision": "withdrawn", "channel": "paper", "evidence": EVIDENCE}, desk)
    keys = jwks(vault)

    for event, state, notice, channel, actor in (
        (granted, "granted", {"version": 1, "hash": granted["notice_hash"]}, "app", {"given_by": "member", "recorded_by": "app-2", "recorded_role": "member"}),
        (withdrawn, "withdrawn", None, "paper", {"given_by": "member", "recorded_by": "desk-1", "recorded_role": "front_desk"}),
    ):
        header, claims = verified(event["receipt"], keys)
        recorded_at = datetime.fromisoformat(event["recorded_at"])
        assert header == {"alg": "EdDSA", "typ": "consent-receipt+jwt", "kid": header["kid"]}
        assert claims == {
            "iss": "member-vault",
            "iat": int(recorded_at.timestamp()),
            "jti": event["consent_id"],
            "receipt_version": "member-vault/consent-receipt/1",
            "record_id": event["consent_id"],
            "controller": {"id": "member-vault", "name": "Member Vault demo clinics"},
            "member_id": m.member_id,
            "purpose": event["purpose"],
            "legal_basis": "consent",
            "sensitive": event["purpose"] == "photo_use",
            "notice": notice,
            "state": state,
            "time": rfc3339(recorded_at),
            "channel": channel,
            "actor": actor,
        }
    assert EVIDENCE not in json.dumps(verified(withdrawn["receipt"], keys))
    history = vault.client.get(f"/v1/members/{m.member_id}/consents", headers=app).json()["history"]
    assert [e["receipt"] for e in history] == [granted["receipt"], withdrawn["receipt"]]


def test_no_single_byte_flip_of_a_receipt_passes_jwcrypto_with_changed_content(vault: Vault) -> None:
    """Every bit of every byte flipped: jwcrypto refuses every edit except another spelling of the very same signed bytes.

    A base64url segment whose length is not a multiple of 4 ends in a character
    with unused low bits. jwcrypto's decoder ignores them (RFC 4648 §3.5 lets a
    decoder reject them; jwcrypto does not) and verifies its re-encoding, so a
    flip of such a bit in the last character of the header, payload or
    signature decodes to identical bytes and passes. Those edits, and only
    those, pass: no accepted edit changes a signed byte or the signature.
    """
    m = vault.members[2]
    app = vault.headers(vault.token("member", subject="app-2", member_id=m.member_id), "self_service")
    receipt = record(vault, 2, {"purpose": "marketing_contact", "decision": "granted", "notice_version": 1, "channel": "app"}, app)["receipt"]
    keys = jwks(vault)
    assert jwcrypto_accepts(receipt, keys)
    original = receipt.split(".")
    signed = [strict_decode(segment) for segment in original]

    accepted, same_bytes = set(), set()
    for position in range(len(receipt)):
        for bit in range(8):
            edited = bytearray(receipt.encode("ascii"))
            edited[position] ^= 1 << bit
            text = edited.decode("latin-1")
            if jwcrypto_accepts(text, keys):
                accepted.add((position, bit))
            if spells(text, signed):
                same_bytes.add((position, bit))

    assert accepted == same_bytes
    segment_ends = {len(original[0]) - 1, len(original[0]) + len(original[1]), len(receipt) - 1}
    assert {position for position, _ in accepted} <= segment_ends
    assert all(b64url_encode(raw) == segment for raw, segment in zip(signed, original, strict=True))  # the vault's own spelling is canonical


def test_a_receipt_presented_as_a_bearer_token_is_401_and_journals_nothing(vault: Vault) -> None:
    """SECURITY-BAR H9: a receipt is signed by the vault, but its ``typ`` is not ``at+jwt`` and its key is not an access-token key."""
    m = vault.members[2]
    app = vault.headers(vault.token("member", subject="app-2", member_id=m.member_id), "self_service")
    receipt = record(vault, 2, {"purpose": "marketing_contact", "decision": "granted", "notice_version": 1, "channel": "app"}, app)["receipt"]
    before = vault.journal_size()

    answers = [
        vault.client.get(f"/v1/members/{m.member_id}", headers=vault.headers(receipt, "self_service")),
        vault.client.get(f"/v1/members/{m.member_id}/consents", headers=vault.headers(receipt, "self_service")),
    ]

    for r in answers:
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert (body["type"], body["status"], body["request_id"]) == ("https://member-vault.example/problems/unauthorized", 401, r.headers["x-request-id"])
        assert receipt not in r.text
    assert vault.journal_size() == before
