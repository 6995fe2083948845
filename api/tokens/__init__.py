"""Access tokens: verifying bearer JWTs from trusted issuers, and issuing the vault's own. No HTTP, no database.

Invariants:

* Keys come only from configuration: the vault's own signing keys
  (:func:`vault_keys`) and the trusted issuers file
  (:func:`load_trusted_issuers`). A token never supplies or locates its key:
  headers ``jku``, ``x5u``, ``jwk`` and ``x5c`` are refused and nothing is
  fetched; ``crit`` and ``b64`` are refused as extensions the vault does not
  implement.
* A key is bound to one issuer and to the one algorithm its type allows
  (Ed25519 → EdDSA, EC P-256 → ES256, RSA of at least 2048 bits → RS256),
  checked when the :class:`TrustedKey` is made. The token's ``alg`` must name
  exactly that algorithm and pyjwt is given only it, so ``none`` in any
  spelling, HMAC and key confusion fail before any signature check. A ``kid``
  selects one key, so a ``kid`` is unique across all trusted issuers.
* ``typ`` must be ``at+jwt`` or ``application/at+jwt`` (RFC 9068, compared
  case-insensitively): consent receipts, manifests and other signed objects
  of the vault are never access tokens (RFC 8725 §3.11).
* Only the header is parsed before the signature is verified; the payload is
  read only after. Header and payload are strict JSON (no duplicate members,
  no ``NaN``). A token longer than ``max_token_bytes`` is refused before any
  parsing.
* Time is the verifier's injected ``now``, never the wall clock inside pyjwt:
  ``exp``, ``iat`` and ``nbf`` are JSON numbers (not strings, not booleans);
  ``exp`` must be after ``now - leeway``, ``iat`` and ``nbf`` not after
  ``now + leeway``, and ``exp - iat`` at most ``max_lifetime``.
* Every refusal is one :class:`InvalidTokenError` whose ``str`` is
  "invalid token"; its ``reason`` code is for the operational log. Neither
  ever holds the token or a claim value.

Trusted issuers file (UTF-8 JSON, strict: duplicate members, unknown members
and a ``kid`` used twice are refused, as are private key members, curves other
than Ed25519 and P-256, RSA keys under 2048 bits and an ``alg`` or ``use``
that does not fit the key)::

    {
      "issuers": [
        {
          "issuer": "https://login.example.org",
          "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "2026-01", "x": "…"}]}
        }
      ]
    }

Each ``jwks`` is an RFC 7517 JWK set as the issuer publishes it; every key
needs a ``kid``.
"""

from api.tokens._claims import Claims
from api.tokens._issuer import DEV_ISSUER, MAX_TTL, issue_token
from api.tokens._trusted import (
    MIN_RSA_BITS,
    Algorithm,
    PublicKey,
    TrustedIssuersError,
    TrustedKey,
    keys_by_id,
    load_trusted_issuers,
    trusted_keys_from_jwks,
    vault_keys,
)
from api.tokens._verifier import ACCESS_TOKEN_TYPES, ALGORITHMS, FORBIDDEN_HEADERS, InvalidTokenError, Reason, TokenVerifier

__all__ = [
    "ACCESS_TOKEN_TYPES",
    "ALGORITHMS",
    "DEV_ISSUER",
    "FORBIDDEN_HEADERS",
    "MAX_TTL",
    "MIN_RSA_BITS",
    "Algorithm",
    "Claims",
    "InvalidTokenError",
    "PublicKey",
    "Reason",
    "TokenVerifier",
    "TrustedIssuersError",
    "TrustedKey",
    "issue_token",
    "keys_by_id",
    "load_trusted_issuers",
    "trusted_keys_from_jwks",
    "vault_keys",
]
