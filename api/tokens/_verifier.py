"""The access-token verifier: every check in a fixed order, one error type with a reason for the log."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import jwt
from jwt.types import Options

from api.tokens._claims import Claims, numeric_date, parse_claims
from api.tokens._encoding import b64url_decode, strict_json
from api.tokens._trusted import Algorithm, TrustedKey

Reason = Literal[
    "malformed",
    "too_large",
    "forbidden_header",
    "bad_type",
    "bad_algorithm",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "bad_audience",
    "bad_issuer",
    "missing_claim",
    "lifetime_exceeded",
    "bad_claims",
]

ACCESS_TOKEN_TYPES: Final = ("at+jwt", "application/at+jwt")
ALGORITHMS: Final[tuple[Algorithm, ...]] = ("EdDSA", "ES256", "RS256")
# Key-location headers would make the token name its own key (nothing is ever fetched); ``crit``
# names extensions the vault does not implement (RFC 7515 §4.1.11); ``b64`` is RFC 7797's unencoded payload.
FORBIDDEN_HEADERS: Final = ("jku", "x5u", "jwk", "x5c", "crit", "b64")
_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]*")
# pyjwt checks the signature, the presence of the registered claims, ``iss``, ``aud`` and the types of
# ``sub`` and ``jti``; its time checks read the wall clock, so the verifier makes them against its own ``now``.
_DECODE_OPTIONS: Final[Options] = {
    "verify_signature": True,
    "require": ["exp", "iat", "iss", "aud", "sub", "jti"],
    "verify_aud": True,
    "verify_iss": True,
    "verify_sub": True,
    "verify_jti": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "strict_aud": False,
    "enforce_minimum_key_length": True,
}


class InvalidTokenError(Exception):
    """Any refused token. ``str()`` is always "invalid token"; ``reason`` is a short code for the operational log."""

    def __init__(self, reason: Reason) -> None:
        super().__init__("invalid token")
        self.reason: Reason = reason


def _utc_now() -> datetime:
    return datetime.now(UTC)


DEFAULT_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token that passed every check: the key that verified it, its payload (for the time checks) and its claims."""

    key: TrustedKey
    payload: Mapping[str, object]
    claims: Claims


class TokenVerifier:
    """Verifies bearer access tokens against the keys ``key_source`` returns (``kid`` → key), asked on every call."""

    def __init__(
        self,
        key_source: Callable[[], Mapping[str, TrustedKey]],
        *,
        audience: str,
        leeway: timedelta = timedelta(seconds=30),
        max_lifetime: timedelta = timedelta(hours=1),
        max_token_bytes: int = 4096,
        now: Callable[[], datetime] = _utc_now,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        if not audience:
            raise ValueError("audience must not be empty")
        if leeway < timedelta(0):
            raise ValueError("leeway must not be negative")
        if max_lifetime <= timedelta(0):
            raise ValueError("max_lifetime must be positive")
        if max_token_bytes <= 0:
            raise ValueError("max_token_bytes must be positive")
        self._key_source = key_source
        self._audience = audience
        self._leeway = leeway
        self._max_lifetime = max_lifetime
        self._max_token_bytes = max_token_bytes
        self._now = now
        if cache_size < 0:
            raise ValueError("cache_size must not be negative")
        self._cache_size = cache_size
        self._verified: dict[str, _Verified] = {}
        self._cache_lock = threading.Lock()

    def verify(self, token: str) -> Claims:
        """The claims of ``token``, or :class:`InvalidTokenError`; nothing of the payload is read before the signature is verified.

        A token verified before is not parsed and verified again while the key
        that verified it is still the one its ``kid`` names (a key rotated out
        or refreshed means a full check); its time claims are checked anew on
        every call. The cache is keyed by the whole token, so only the very
        same bytes are ever taken from it (as Envoy's JWT filter caches).
        """
        if len(token) > self._max_token_bytes:  # characters; the alphabet check below admits only ASCII, one byte each
            raise InvalidTokenError("too_large")
        keys = self._key_source()
        known = self._verified.get(token)
        if known is not None and keys.get(known.key.key_id) is known.key:
            self._check_times(known.payload)
            return known.claims
        claims, verified = self._verify(token, keys)
        self._remember(token, verified)
        return claims

    @property
    def cached(self) -> int:
        """How many verified tokens the cache holds."""
        return len(self._verified)

    def _remember(self, token: str, verified: _Verified) -> None:
        if self._cache_size == 0:
            return
        with self._cache_lock:
            while len(self._verified) >= self._cache_size:
                del self._verified[next(iter(self._verified))]  # the oldest entry
            self._verified[token] = verified

    def _verify(self, token: str, keys: Mapping[str, TrustedKey]) -> tuple[Claims, _Verified]:
        segments = _COMPACT.fullmatch(token)
        if segments is None:
            raise InvalidTokenError("malformed")
        header = _json_object(segments[1])
        if header is None:
            raise InvalidTokenError("malformed")
        key = self._key_for(header, keys)
        self._verify_signature_and_registered_claims(token, key)
        payload = _json_object(segments[2])
        if payload is None:  # pyjwt accepted it, so only the strict parser's refusals (duplicate members) remain
            raise InvalidTokenError("bad_claims")
        issued_at, expires_at = self._check_times(payload)
        try:
            claims = parse_claims(payload, issuer=key.issuer, issued_at=issued_at, expires_at=expires_at)
        except ValueError as exc:
            raise InvalidTokenError("bad_claims") from exc
        return claims, _Verified(key, payload, claims)

    def _key_for(self, header: Mapping[str, object], keys: Mapping[str, TrustedKey]) -> TrustedKey:
        """The trusted key the header names, after the header's own checks."""
        if any(name in header for name in FORBIDDEN_HEADERS):
            raise InvalidTokenError("forbidden_header")
        media_type = header.get("typ")
        if not isinstance(media_type, str) or not media_type.isascii() or media_type.lower() not in ACCESS_TOKEN_TYPES:
            raise InvalidTokenError("bad_type")
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise InvalidTokenError("bad_algorithm")
        key_id = header.get("kid")
        if not isinstance(key_id, str):
            raise InvalidTokenError("unknown_key")
        key = keys.get(key_id)
        if key is None:
            raise InvalidTokenError("unknown_key")
        if algorithm != key.algorithm:
            raise InvalidTokenError("bad_algorithm")
        return key

    def _verify_signature_and_registered_claims(self, token: str, key: TrustedKey) -> None:
        try:
            jwt.decode(token, key.public_key, algorithms=[key.algorithm], audience=self._audience, issuer=key.issuer, options=_DECODE_OPTIONS)
        except jwt.InvalidSignatureError as exc:
            raise InvalidTokenError("bad_signature") from exc
        except jwt.DecodeError as exc:
            raise InvalidTokenError("malformed") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidTokenError("missing_claim") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidTokenError("bad_audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidTokenError("bad_issuer") from exc
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("bad_claims") from exc

    def _check_times(self, payload: Mapping[str, object]) -> tuple[datetime, datetime]:
        """``(iat, exp)`` once ``exp``, ``iat`` and ``nbf`` are numbers that hold at ``now`` and the lifetime is within the cap."""
        now = self._now()
        if now.tzinfo is None:
            raise ValueError("now must return a timezone-aware datetime")
        expires_at = numeric_date(payload.get("exp"))
        if expires_at is None:
            raise InvalidTokenError("bad_claims")
        issued_at = numeric_date(payload.get("iat"))
        if issued_at is None:
            raise InvalidTokenError("bad_claims")
        not_before = numeric_date(payload["nbf"]) if "nbf" in payload else issued_at
        if not_before is None:
            raise InvalidTokenError("bad_claims")
        if now - self._leeway >= expires_at:
            raise InvalidTokenError("expired")
        if issued_at > now + self._leeway:
            raise InvalidTokenError("not_yet_valid")
        if not_before > now + self._leeway:
            raise InvalidTokenError("not_yet_valid")
        if expires_at <= issued_at:
            raise InvalidTokenError("bad_claims")
        if expires_at - issued_at > self._max_lifetime:
            raise InvalidTokenError("lifetime_exceeded")
        return issued_at, expires_at


def _json_object(segment: str) -> dict[str, object] | None:
    """A base64url segment decoded as a strict JSON object, or None."""
    try:
        value = strict_json(b64url_decode(segment))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
