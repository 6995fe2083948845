"""Trusted verification keys: the vault's own, and other issuers' from JWK sets in a file."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers

from api.tokens._encoding import b64url_decode, strict_json
from keys.signing import PublicSigningKey

Algorithm = Literal["EdDSA", "ES256", "RS256"]
PublicKey = Ed25519PublicKey | EllipticCurvePublicKey | RSAPublicKey

MIN_RSA_BITS = 2048
_KEY_ID = re.compile(r"[!-~]{1,256}")
_ALGORITHM_OF_KTY: dict[str, Algorithm] = {"OKP": "EdDSA", "EC": "ES256", "RSA": "RS256"}
_CURVE_OF_KTY = {"OKP": "Ed25519", "EC": "P-256"}
_PUBLIC_MEMBERS = {"OKP": ("x",), "EC": ("x", "y"), "RSA": ("n", "e")}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_FILE_MEMBERS = {"issuers"}
_ISSUER_MEMBERS = {"issuer", "jwks"}


class TrustedIssuersError(Exception):
    """A JWK set or trusted issuers file was refused; the message names the issuer, key and rule, never key material."""


def algorithm_of(public_key: PublicKey) -> Algorithm | None:
    """The one algorithm a key may verify, or None for a key the vault does not accept."""
    if isinstance(public_key, Ed25519PublicKey):
        return "EdDSA"
    if isinstance(public_key, EllipticCurvePublicKey):
        return "ES256" if isinstance(public_key.curve, SECP256R1) else None
    return "RS256" if public_key.key_size >= MIN_RSA_BITS else None


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A verification key of one issuer, bound to the one algorithm its type allows."""

    issuer: str
    key_id: str
    algorithm: Algorithm
    public_key: PublicKey = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ValueError("issuer must not be empty")
        if not _KEY_ID.fullmatch(self.key_id):
            raise ValueError("key_id must be 1 to 256 printable ASCII characters without spaces")
        if algorithm_of(self.public_key) != self.algorithm:
            raise ValueError(f"key {self.key_id!r}: {self.algorithm} does not match the key's type and size")


def vault_keys(issuer: str, keys: Sequence[PublicSigningKey]) -> list[TrustedKey]:
    """The vault's own Ed25519 signing keys as EdDSA keys of ``issuer``."""
    return [TrustedKey(issuer, key.key_id, "EdDSA", key.public_key) for key in keys]


def keys_by_id(keys: Iterable[TrustedKey]) -> dict[str, TrustedKey]:
    """Index keys by ``kid`` for a verifier's key source; a ``kid`` used twice is refused, since it selects the key."""
    indexed: dict[str, TrustedKey] = {}
    for key in keys:
        if key.key_id in indexed:
            raise TrustedIssuersError(f"kid {key.key_id!r} is used by more than one key (issuers {indexed[key.key_id].issuer!r} and {key.issuer!r})")
        indexed[key.key_id] = key
    return indexed


def trusted_keys_from_jwks(issuer: str, jwks: Mapping[str, object]) -> list[TrustedKey]:
    """The public keys of an RFC 7517 JWK set: OKP/Ed25519, EC/P-256 and RSA of at least 2048 bits, each with a ``kid``."""
    if not isinstance(issuer, str) or not issuer:
        raise TrustedIssuersError("an issuer must be a non-empty string")
    entries = jwks.get("keys")
    if not isinstance(entries, list) or not entries:
        raise TrustedIssuersError(f"issuer {issuer!r}: the JWK set needs a non-empty 'keys' list")
    keys = [_trusted_key(issuer, index, entry) for index, entry in enumerate(entries)]
    keys_by_id(keys)
    return keys


def _trusted_key(issuer: str, index: int, jwk: object) -> TrustedKey:
    where = f"issuer {issuer!r}, key {index}"
    if not isinstance(jwk, Mapping):
        raise TrustedIssuersError(f"{where}: a JWK must be a JSON object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not _KEY_ID.fullmatch(kid):
        raise TrustedIssuersError(f"{where}: 'kid' must be 1 to 256 printable ASCII characters without spaces")
    where = f"issuer {issuer!r}, kid {kid!r}"
    private = [name for name in _PRIVATE_MEMBERS if name in jwk]
    if private:
        raise TrustedIssuersError(f"{where}: private key member {', '.join(private)} present; only public keys are trusted")
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in _ALGORITHM_OF_KTY:
        raise TrustedIssuersError(f"{where}: 'kty' must be OKP, EC or RSA")
    algorithm = _ALGORITHM_OF_KTY[kty]
    if "alg" in jwk and jwk["alg"] != algorithm:
        raise TrustedIssuersError(f"{where}: 'alg' must be {algorithm} for a {kty} key")
    if "use" in jwk and jwk["use"] != "sig":
        raise TrustedIssuersError(f"{where}: 'use' must be 'sig'")
    if kty in _CURVE_OF_KTY and jwk.get("crv") != _CURVE_OF_KTY[kty]:
        raise TrustedIssuersError(f"{where}: 'crv' must be {_CURVE_OF_KTY[kty]} for a {kty} key")
    try:
        members = [b64url_decode(_string(jwk.get(name))) for name in _PUBLIC_MEMBERS[kty]]
        public_key = _public_key(kty, members)
    except ValueError as exc:
        raise TrustedIssuersError(f"{where}: not a valid {kty} public key") from exc
    if isinstance(public_key, RSAPublicKey) and public_key.key_size < MIN_RSA_BITS:
        raise TrustedIssuersError(f"{where}: RSA key of {public_key.key_size} bits; at least {MIN_RSA_BITS} are required")
    return TrustedKey(issuer, kid, algorithm, public_key)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("a key member must be a string")
    return value


def _public_key(kty: str, members: list[bytes]) -> PublicKey:
    if kty == "OKP":
        return Ed25519PublicKey.from_public_bytes(members[0])
    if kty == "EC":
        return EllipticCurvePublicKey.from_encoded_point(SECP256R1(), b"\x04" + members[0] + members[1])
    modulus, exponent = (int.from_bytes(member, "big") for member in members)
    return RSAPublicNumbers(exponent, modulus).public_key()


def load_trusted_issuers(path: Path) -> list[TrustedKey]:
    """The keys of every issuer in a trusted issuers file (format in the package docstring)."""
    try:
        return _issuers_file(path.read_bytes())
    except OSError as exc:
        raise TrustedIssuersError(f"{path}: cannot be read") from exc
    except TrustedIssuersError as exc:
        raise TrustedIssuersError(f"{path}: {exc}") from exc


def _issuers_file(raw: bytes) -> list[TrustedKey]:
    try:
        document = strict_json(raw)
    except ValueError as exc:
        raise TrustedIssuersError(str(exc)) from exc
    if not isinstance(document, dict):
        raise TrustedIssuersError("the file must hold a JSON object")
    unknown = sorted(set(document) - _FILE_MEMBERS)
    if unknown:
        raise TrustedIssuersError(f"unknown member {', '.join(map(repr, unknown))}")
    entries = document.get("issuers")
    if not isinstance(entries, list):
        raise TrustedIssuersError("'issuers' must be a list")
    keys: list[TrustedKey] = []
    issuers: set[str] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != _ISSUER_MEMBERS:
            raise TrustedIssuersError(f"issuers[{index}] must be an object with exactly 'issuer' and 'jwks'")
        if not isinstance(entry["jwks"], dict):
            raise TrustedIssuersError(f"issuers[{index}].jwks must be a JSON object")
        issuer_keys = trusted_keys_from_jwks(entry["issuer"], entry["jwks"])
        issuer = issuer_keys[0].issuer  # a checked string: the key set is never empty
        if issuer in issuers:
            raise TrustedIssuersError(f"issuer {issuer!r} is listed twice")
        issuers.add(issuer)
        keys.extend(issuer_keys)
    keys_by_id(keys)
    return keys
