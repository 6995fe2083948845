"""The verifier's cache of verified tokens: only the very same token, only while its key is trusted, times always re-checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api.tokens import InvalidTokenError, TokenVerifier, TrustedKey
from tests.api.test_tokens import AUDIENCE, ISSUER, NOW, T, compact, header, payload


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def reason(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidTokenError) as info:
        verifier.verify(token)
    return info.value.reason


@pytest.fixture
def private() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_a_cached_token_expires_like_any_other(private: Ed25519PrivateKey) -> None:
    key = TrustedKey(ISSUER, "ed-1", "EdDSA", private.public_key())
    clock = Clock()
    verifier = TokenVerifier(lambda: {"ed-1": key}, audience=AUDIENCE, now=clock)
    token = compact(header(), payload(exp=T + 600), private.sign)
    assert verifier.verify(token).subject == "staff-17"
    assert verifier.cached == 1
    assert verifier.verify(token).subject == "staff-17"  # from the cache
    clock.now = NOW + timedelta(seconds=631)  # past exp and the 30 s leeway
    assert reason(verifier, token) == "expired"


def test_a_cached_token_is_not_yet_valid_before_its_nbf_even_from_the_cache(private: Ed25519PrivateKey) -> None:
    key = TrustedKey(ISSUER, "ed-1", "EdDSA", private.public_key())
    clock = Clock()
    verifier = TokenVerifier(lambda: {"ed-1": key}, audience=AUDIENCE, now=clock)
    token = compact(header(), payload(nbf=T + 100, exp=T + 600), private.sign)
    clock.now = NOW + timedelta(seconds=200)
    verifier.verify(token)
    clock.now = NOW  # a clock stepped back: the cache must not vouch for it
    assert reason(verifier, token) == "not_yet_valid"


def test_a_key_taken_out_of_trust_refuses_its_cached_tokens(private: Ed25519PrivateKey) -> None:
    key = TrustedKey(ISSUER, "ed-1", "EdDSA", private.public_key())
    trusted = {"ed-1": key}
    verifier = TokenVerifier(lambda: trusted, audience=AUDIENCE, now=lambda: NOW)
    token = compact(header(), payload(), private.sign)
    verifier.verify(token)
    del trusted["ed-1"]
    assert reason(verifier, token) == "unknown_key"


def test_a_kid_now_naming_another_key_verifies_the_token_anew(private: Ed25519PrivateKey) -> None:
    trusted = {"ed-1": TrustedKey(ISSUER, "ed-1", "EdDSA", private.public_key())}
    verifier = TokenVerifier(lambda: trusted, audience=AUDIENCE, now=lambda: NOW)
    token = compact(header(), payload(), private.sign)
    verifier.verify(token)
    trusted["ed-1"] = TrustedKey(ISSUER, "ed-1", "EdDSA", Ed25519PrivateKey.generate().public_key())
    assert reason(verifier, token) == "bad_signature"


def test_only_the_same_token_comes_from_the_cache(private: Ed25519PrivateKey) -> None:
    key = TrustedKey(ISSUER, "ed-1", "EdDSA", private.public_key())
    verifier = TokenVerifier(lambda: {"ed-1": key}, audience=AUDIENCE, now=lambda: NOW)
    token = compact(header(), payload(), private.sign)
    verifier.verify(token)
    head, body, signature = token.split(".")
    forged_body = compact(header(), payload(roles=["dpo"]), private.sign).split(".")[1]
    assert reason(verifier, f"{head}.{forged_body}.{signature}") == "bad_signature"
    assert reason(verifier, f"{head}.{body}.") in {"bad_signature", "malformed"}
    assert verifier.cached == 1


def test_the_cache_is_bounded_and_can_be_off(private: Ed25519PrivateKey) -> None:
    key = TrustedKey(ISSUER, "ed-1", "EdDSA", private.public_key())
    bounded = TokenVerifier(lambda: {"ed-1": key}, audience=AUDIENCE, now=lambda: NOW, cache_size=3)
    off = TokenVerifier(lambda: {"ed-1": key}, audience=AUDIENCE, now=lambda: NOW, cache_size=0)
    for n in range(10):
        token = compact(header(), payload(jti=f"jti-{n}"), private.sign)
        assert bounded.verify(token).token_id == f"jti-{n}"
        assert off.verify(token).token_id == f"jti-{n}"
    assert bounded.cached == 3
    assert off.cached == 0
    with pytest.raises(ValueError, match="cache_size"):
        TokenVerifier(lambda: {}, audience=AUDIENCE, now=lambda: datetime.now(UTC), cache_size=-1)
