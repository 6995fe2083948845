"""Access tokens: the hostile cases H1–H3 and H6–H9 of SECURITY-BAR.md, trusted issuers, and the vault's own tokens.

Every key is generated here with ``cryptography``; tokens are built with pyjwt
or by hand (base64url, ``hmac``) when a test needs a header or signature that
pyjwt would not produce. Time is the verifier's ``now`` callable: nothing
sleeps and nothing freezes the clock.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from api.tokens import (
    Claims,
    InvalidTokenError,
    TokenVerifier,
    TrustedIssuersError,
    TrustedKey,
    issue_token,
    keys_by_id,
    load_trusted_issuers,
    trusted_keys_from_jwks,
    vault_keys,
)
from keys.signing import PublicSigningKey, SigningKey, SigningPurpose, signing_key_id

ISSUER = "https://login.example.org"
OTHER_ISSUER = "https://other.example.org"
AUDIENCE = "member-vault"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
JTI = "jti-0001"
REMOVE = object()


# -- building tokens -----------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: object) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def changed(base: dict[str, object], changes: dict[str, object]) -> dict[str, object]:
    merged = {**base, **changes}
    return {name: value for name, value in merged.items() if value is not REMOVE}


def payload(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "staff-17",
        "roles": ["front_desk"],
        "clinics": ["clinic-x"],
        "iat": T,
        "exp": T + 600,
        "jti": JTI,
    }
    return changed(base, changes)


def header(**changes: object) -> dict[str, object]:
    return changed({"alg": "EdDSA", "typ": "at+jwt", "kid": "ed-1"}, changes)


def compact(head: dict[str, object], body: dict[str, object], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{segment(head)}.{segment(body)}"
    return f"{signing_input}.{b64(sign(signing_input.encode('ascii')))}"


def refusal(verifier: TokenVerifier, token: str) -> str:
    """The reason ``verifier`` refuses ``token``, after checking the error says nothing else."""
    with pytest.raises(InvalidTokenError) as info:
        verifier.verify(token)
    assert str(info.value) == "invalid token"
    assert repr(info.value) == "InvalidTokenError('invalid token')"
    return info.value.reason


# -- keys and verifiers ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ed_private() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def ec_private() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def weak_rsa_private() -> rsa.RSAPrivateKey:
    """A 1024-bit RSA key, weak on purpose: the vault must refuse it."""
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - made to be refused


@pytest.fixture(scope="module")
def ed_key(ed_private: Ed25519PrivateKey) -> TrustedKey:
    return TrustedKey(ISSUER, "ed-1", "EdDSA", ed_private.public_key())


@pytest.fixture(scope="module")
def ed_sign(ed_private: Ed25519PrivateKey) -> Callable[[bytes], bytes]:
    return ed_private.sign


@pytest.fixture
def make_verifier(ed_key: TrustedKey) -> Callable[..., TokenVerifier]:
    def make(*keys: TrustedKey, now: Callable[[], datetime] = lambda: NOW, **options: object) -> TokenVerifier:
        indexed = keys_by_id(keys or (ed_key,))
        return TokenVerifier(lambda: indexed, audience=AUDIENCE, now=now, **options)

    return make


@pytest.fixture
def verifier(make_verifier: Callable[..., TokenVerifier]) -> TokenVerifier:
    return make_verifier()


@pytest.fixture
def sign(ed_sign: Callable[[bytes], bytes]) -> Callable[..., str]:
    """A token signed by the trusted Ed25519 key: ``sign(head=…, **claim_changes)``."""

    def make(head: dict[str, object] | None = None, **changes: object) -> str:
        return compact(header() if head is None else head, payload(**changes), ed_sign)

    return make


def test_a_well_formed_token_verifies_to_its_claims(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    claims = verifier.verify(sign())
    assert claims == Claims(
        issuer=ISSUER,
        subject="staff-17",
        roles=("front_desk",),
        clinics=("clinic-x",),
        member_id=None,
        client_id=None,
        acting_staff=None,
        token_id=JTI,
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=10),
    )


def test_optional_claims_are_read(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    token = sign(
        roles=["loyalty_service", "role_from_the_future"],
        clinics=["*"],
        member_id="0123456789abcdef0123456789abcdef",
        client_id="loyalty-app",
        act={"sub": "staff-42"},
    )
    claims = verifier.verify(token)
    assert claims.roles == ("loyalty_service", "role_from_the_future")
    assert claims.clinics == ("*",)
    assert claims.member_id == "0123456789abcdef0123456789abcdef"
    assert claims.client_id == "loyalty-app"
    assert claims.acting_staff == "staff-42"


def test_clinics_default_to_none(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    assert verifier.verify(sign(clinics=REMOVE)).clinics == ()


# -- H1: alg none ------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_h1_alg_none_with_an_empty_signature_is_refused(verifier: TokenVerifier, alg: str) -> None:
    token = f"{segment(header(alg=alg))}.{segment(payload())}."
    assert refusal(verifier, token) == "bad_algorithm"


@pytest.mark.parametrize("alg", ["HS256", "PS256", "ES384", "RS512", "Ed25519", "eddsa", ""])
def test_h1_algorithms_outside_the_allowlist_are_refused(verifier: TokenVerifier, ed_sign: Callable[[bytes], bytes], alg: str) -> None:
    assert refusal(verifier, compact(header(alg=alg), payload(), ed_sign)) == "bad_algorithm"


def test_h1_missing_alg_is_refused(verifier: TokenVerifier, ed_sign: Callable[[bytes], bytes]) -> None:
    assert refusal(verifier, compact(header(alg=REMOVE), payload(), ed_sign)) == "bad_algorithm"


# -- H2: key confusion ------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["pem", "raw"])
def test_h2_hs256_signed_with_the_public_key_as_hmac_secret_is_refused(verifier: TokenVerifier, ed_private: Ed25519PrivateKey, encoding: str) -> None:
    public = ed_private.public_key()
    secret = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo) if encoding == "pem" else public.public_bytes_raw()
    token = compact(header(alg="HS256"), payload(), lambda data: hmac.new(secret, data, hashlib.sha256).digest())
    assert refusal(verifier, token) == "bad_algorithm"


def test_h2_es256_token_naming_an_ed25519_kid_is_refused(verifier: TokenVerifier, ec_private: ec.EllipticCurvePrivateKey) -> None:
    token = jwt.encode(payload(), ec_private, algorithm="ES256", headers={"typ": "at+jwt", "kid": "ed-1"})
    assert refusal(verifier, token) == "bad_algorithm"


def test_h2_eddsa_token_naming_an_es256_kid_is_refused(
    make_verifier: Callable[..., TokenVerifier], ec_private: ec.EllipticCurvePrivateKey, ed_sign: Callable[[bytes], bytes]
) -> None:
    verifier = make_verifier(TrustedKey(ISSUER, "ec-1", "ES256", ec_private.public_key()))
    assert refusal(verifier, compact(header(kid="ec-1"), payload(), ed_sign)) == "bad_algorithm"


def test_h2_a_trusted_key_is_bound_to_the_algorithm_of_its_type(
    ed_private: Ed25519PrivateKey, ec_private: ec.EllipticCurvePrivateKey, weak_rsa_private: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(ValueError, match=r"^key 'k': ES256 does not match the key's type and size$"):
        TrustedKey(ISSUER, "k", "ES256", ed_private.public_key())
    with pytest.raises(ValueError, match=r"^key 'k': EdDSA does not match the key's type and size$"):
        TrustedKey(ISSUER, "k", "EdDSA", ec_private.public_key())
    with pytest.raises(ValueError, match=r"^key 'k': RS256 does not match the key's type and size$"):
        TrustedKey(ISSUER, "k", "RS256", weak_rsa_private.public_key())
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match=r"^key 'k': ES256 does not match the key's type and size$"):
        TrustedKey(ISSUER, "k", "ES256", p384.public_key())


# -- H3: signature tampering ---------------------------------------------------------------------


def test_h3_stripped_signature_is_refused(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    head, body, _ = sign().split(".")
    assert refusal(verifier, f"{head}.{body}.") == "bad_signature"


def test_h3_one_flipped_signature_bit_is_refused(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    head, body, signature = sign().split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[10] ^= 0x01
    assert refusal(verifier, f"{head}.{body}.{b64(bytes(raw))}") == "bad_signature"


def test_h3_payload_edited_after_signing_is_refused(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    head, _, signature = sign().split(".")
    edited = segment(payload(roles=["vault_admin"]))
    assert refusal(verifier, f"{head}.{edited}.{signature}") == "bad_signature"


def test_h3_signature_of_another_key_is_refused(verifier: TokenVerifier) -> None:
    assert refusal(verifier, compact(header(), payload(), Ed25519PrivateKey.generate().sign)) == "bad_signature"


# -- H6: expiry and lifetime ------------------------------------------------------------------------


def test_h6_expired_beyond_leeway_is_refused(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    assert refusal(verifier, sign(iat=T - 900, exp=T - 31)) == "expired"
    assert refusal(verifier, sign(iat=T - 900, exp=T - 30)) == "expired"


def test_h6_expired_within_leeway_is_accepted(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    assert verifier.verify(sign(iat=T - 900, exp=T - 29)).expires_at == NOW - timedelta(seconds=29)


def test_h6_missing_exp_is_refused(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    assert refusal(verifier, sign(exp=REMOVE)) == "missing_claim"


@pytest.mark.parametrize("claim", ["iat", "iss", "aud", "sub", "jti"])
def test_h6_every_required_claim_must_be_present(verifier: TokenVerifier, sign: Callable[..., str], claim: str) -> None:
    assert refusal(verifier, sign(**{claim: REMOVE})) == "missing_claim"


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"exp": str(T + 600)}, id="exp-string"),
        pytest.param({"iat": str(T)}, id="iat-string"),
        pytest.param({"nbf": str(T)}, id="nbf-string"),
        pytest.param({"nbf": None}, id="nbf-null"),
        pytest.param({"exp": True}, id="exp-bool"),
        pytest.param({"iat": True}, id="iat-bool"),
        pytest.param({"exp": 10**20}, id="exp-past-year-9999"),
        pytest.param({"iat": -1}, id="iat-before-1970"),
        pytest.param({"exp": T - 1}, id="exp-before-iat"),
        pytest.param({"exp": T}, id="exp-equal-to-iat"),
    ],
)
def test_h6_malformed_times_are_refused(verifier: TokenVerifier, sign: Callable[..., str], changes: dict[str, object]) -> None:
    assert refusal(verifier, sign(**changes)) == "bad_claims"


def test_h6_lifetime_over_the_cap_is_refused(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    assert refusal(verifier, sign(exp=T + 3601)) == "lifetime_exceeded"
    assert verifier.verify(sign(exp=T + 3600)).expires_at == NOW + timedelta(hours=1)


def test_h6_exp_in_year_9999_is_over_the_cap(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    assert refusal(verifier, sign(exp=253402300799)) == "lifetime_exceeded"


def test_h6_the_lifetime_cap_is_configurable(make_verifier: Callable[..., TokenVerifier], sign: Callable[..., str]) -> None:
    assert refusal(make_verifier(max_lifetime=timedelta(minutes=5)), sign(exp=T + 301)) == "lifetime_exceeded"


def test_h6_fractional_numeric_dates_are_accepted(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    assert verifier.verify(sign(exp=T + 600.5)).expires_at == NOW + timedelta(seconds=600.5)


# -- H7: not yet valid -----------------------------------------------------------------------------------


def test_h7_nbf_ten_minutes_ahead_is_refused(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    assert refusal(verifier, sign(nbf=T + 600, exp=T + 1200)) == "not_yet_valid"


def test_h7_iat_ten_minutes_ahead_is_refused(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    assert refusal(verifier, sign(iat=T + 600, exp=T + 1200)) == "not_yet_valid"


def test_h7_nbf_and_iat_within_leeway_are_accepted(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    claims = verifier.verify(sign(iat=T + 30, nbf=T + 30, exp=T + 600))
    assert claims.issued_at == NOW + timedelta(seconds=30)


def test_h7_nbf_just_beyond_leeway_is_refused(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    assert refusal(verifier, sign(nbf=T + 31)) == "not_yet_valid"


def test_time_comes_from_the_now_callable_on_every_call(make_verifier: Callable[..., TokenVerifier], sign: Callable[..., str]) -> None:
    clock = [NOW - timedelta(minutes=10)]
    verifier = make_verifier(now=lambda: clock[0])
    token = sign(iat=T, exp=T + 600)
    assert refusal(verifier, token) == "not_yet_valid"
    clock[0] = NOW
    assert verifier.verify(token).token_id == JTI
    clock[0] = NOW + timedelta(minutes=11)
    assert refusal(verifier, token) == "expired"


def test_the_default_clock_is_the_current_utc_time(ed_key: TrustedKey, ed_sign: Callable[[bytes], bytes]) -> None:
    """The one test on the real clock: a token issued a second ago verifies with the default ``now``."""
    issued = int(datetime.now(UTC).timestamp()) - 1
    verifier = TokenVerifier(lambda: {"ed-1": ed_key}, audience=AUDIENCE)
    assert verifier.verify(compact(header(), payload(iat=issued, exp=issued + 600), ed_sign)).issued_at == datetime.fromtimestamp(issued, UTC)


def test_a_naive_now_is_a_programming_error(make_verifier: Callable[..., TokenVerifier], sign: Callable[..., str]) -> None:
    verifier = make_verifier(now=lambda: NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match=r"^now must return a timezone-aware datetime$"):
        verifier.verify(sign())


# -- H8: audience and issuer ------------------------------------------------------------------------------


def test_h8_wrong_audience_is_refused(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    assert refusal(verifier, sign(aud="billing-service")) == "bad_audience"
    assert refusal(verifier, sign(aud=["billing-service", "crm"])) == "bad_audience"


def test_h8_audience_list_containing_ours_is_accepted(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    assert verifier.verify(sign(aud=["billing-service", AUDIENCE])).subject == "staff-17"


def test_h8_empty_or_non_string_audience_is_refused(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    assert refusal(verifier, sign(aud=[])) == "missing_claim"
    assert refusal(verifier, sign(aud=7)) == "bad_audience"


def test_h8_token_claiming_another_issuer_than_its_key_is_refused(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    assert refusal(verifier, sign(iss=OTHER_ISSUER)) == "bad_issuer"


def test_h8_key_of_issuer_a_cannot_sign_for_issuer_b(make_verifier: Callable[..., TokenVerifier], ed_key: TrustedKey) -> None:
    other = Ed25519PrivateKey.generate()
    verifier = make_verifier(ed_key, TrustedKey(OTHER_ISSUER, "other-1", "EdDSA", other.public_key()))
    assert verifier.verify(compact(header(kid="other-1"), payload(iss=OTHER_ISSUER), other.sign)).issuer == OTHER_ISSUER
    assert refusal(verifier, compact(header(kid="other-1"), payload(iss=ISSUER), other.sign)) == "bad_issuer"


# -- H9: token type and headers ------------------------------------------------------------------------------


def test_h9_consent_receipt_signed_by_a_trusted_key_is_refused(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    assert refusal(verifier, sign(header(typ="consent-receipt+jwt"))) == "bad_type"


@pytest.mark.parametrize("typ", [REMOVE, "JWT", "at+jwt ", "", 1, ["at+jwt"], "\u0430t+jwt"])
def test_h9_missing_or_other_typ_is_refused(verifier: TokenVerifier, sign: Callable[..., str], typ: object) -> None:
    assert refusal(verifier, sign(header(typ=typ))) == "bad_type"


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+JWT"])
def test_h9_access_token_typ_is_case_insensitive(verifier: TokenVerifier, sign: Callable[..., str], typ: str) -> None:
    assert verifier.verify(sign(header(typ=typ))).subject == "staff-17"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("jwk", {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}),
        ("x5c", ["MIIB"]),
        ("crit", ["exp"]),
        ("b64", False),
    ],
)
def test_key_location_and_extension_headers_are_refused(verifier: TokenVerifier, sign: Callable[..., str], name: str, value: object) -> None:
    assert refusal(verifier, sign(header(**{name: value}))) == "forbidden_header"


@pytest.mark.parametrize("kid", ["ed-2", REMOVE, 1, None, ["ed-1"]])
def test_unknown_or_malformed_kid_is_refused(verifier: TokenVerifier, sign: Callable[..., str], kid: object) -> None:
    assert refusal(verifier, sign(header(kid=kid))) == "unknown_key"


def test_key_source_is_asked_on_every_verify(ed_key: TrustedKey, sign: Callable[..., str]) -> None:
    sources: list[dict[str, TrustedKey]] = [{"ed-1": ed_key}, {}]
    calls: list[int] = []

    def source() -> dict[str, TrustedKey]:
        calls.append(1)
        return sources[len(calls) - 1]

    verifier = TokenVerifier(source, audience=AUDIENCE, now=lambda: NOW)
    token = sign()
    assert verifier.verify(token).subject == "staff-17"
    assert refusal(verifier, token) == "unknown_key"
    assert len(calls) == 2


# -- malformed input --------------------------------------------------------------------------------------------


def test_an_8_kb_token_is_too_large(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    assert refusal(verifier, sign(padding="x" * 8192)) == "too_large"


def test_the_size_limit_is_checked_before_parsing(make_verifier: Callable[..., TokenVerifier]) -> None:
    assert refusal(make_verifier(max_token_bytes=16), "!" * 17) == "too_large"
    assert refusal(make_verifier(max_token_bytes=16), "!" * 16) == "malformed"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("abc", id="one-segment"),
        pytest.param("abc.def", id="two-segments"),
        pytest.param("a.b.c.d", id="four-segments"),
        pytest.param(".e30.", id="empty-header"),
        pytest.param("e30..", id="empty-payload"),
        pytest.param("eyJhbGciOiJFZERTQSJ9=.e30.", id="padding"),
        pytest.param("eyJh bGciOiJFZERTQSJ9.e30.", id="space"),
        pytest.param("eyJhbGciOiJFZERTQSJ9+.e30.", id="standard-alphabet"),
        pytest.param("eyJhbGciOiJFZERTQSJ9\u00e9.e30.", id="non-ascii"),
        pytest.param(f"{b64(b'not json')}.e30.", id="header-not-json"),
        pytest.param(f"{segment(['alg'])}.e30.", id="header-not-object"),
        pytest.param(b64(b"\xff\xfe") + ".e30.", id="header-not-utf8"),
        pytest.param(b64(b'{"alg":NaN}') + ".e30.", id="header-nan"),
        pytest.param(b64(b"[" * 3000) + ".e30.", id="header-nested-deeply"),
        pytest.param("eyJhbGciOiJFZERTQSJ9A.e30.", id="header-bad-length"),
        pytest.param("e31.e30.", id="header-non-canonical"),
    ],
)
def test_malformed_tokens_are_refused(verifier: TokenVerifier, token: str) -> None:
    assert refusal(verifier, token) == "malformed"


def test_duplicate_header_member_is_refused(verifier: TokenVerifier, ed_sign: Callable[[bytes], bytes]) -> None:
    head = b64(b'{"alg":"none","alg":"EdDSA","typ":"at+jwt","kid":"ed-1"}')
    signing_input = f"{head}.{segment(payload())}"
    assert refusal(verifier, f"{signing_input}.{b64(ed_sign(signing_input.encode()))}") == "malformed"


def test_signed_payload_that_is_not_json_is_refused(verifier: TokenVerifier, ed_sign: Callable[[bytes], bytes]) -> None:
    signing_input = f"{segment(header())}.{b64(b'not json')}"
    assert refusal(verifier, f"{signing_input}.{b64(ed_sign(signing_input.encode()))}") == "malformed"


def test_signed_payload_with_a_duplicate_member_is_refused(verifier: TokenVerifier, ed_sign: Callable[[bytes], bytes]) -> None:
    body = json.dumps(payload(), separators=(",", ":"))[:-1] + ',"sub":"staff-99"}'
    signing_input = f"{segment(header())}.{b64(body.encode())}"
    assert refusal(verifier, f"{signing_input}.{b64(ed_sign(signing_input.encode()))}") == "bad_claims"


# -- claims ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"roles": "front_desk"}, id="roles-string"),
        pytest.param({"roles": []}, id="roles-empty"),
        pytest.param({"roles": REMOVE}, id="roles-missing"),
        pytest.param({"roles": ["Front_Desk"]}, id="roles-uppercase"),
        pytest.param({"roles": ["front_desk", 7]}, id="roles-non-string"),
        pytest.param({"roles": ["r" * 33]}, id="roles-too-long"),
        pytest.param({"sub": "staff 17"}, id="sub-space"),
        pytest.param({"sub": ""}, id="sub-empty"),
        pytest.param({"sub": "s" * 257}, id="sub-too-long"),
        pytest.param({"sub": 17}, id="sub-number"),
        pytest.param({"jti": ""}, id="jti-empty"),
        pytest.param({"jti": "j" * 129}, id="jti-too-long"),
        pytest.param({"jti": 5}, id="jti-number"),
        pytest.param({"clinics": "clinic-x"}, id="clinics-string"),
        pytest.param({"clinics": None}, id="clinics-null"),
        pytest.param({"clinics": ["clinic x"]}, id="clinics-space"),
        pytest.param({"clinics": ["**"]}, id="clinics-double-star"),
        pytest.param({"member_id": "0123456789ABCDEF0123456789ABCDEF"}, id="member-id-uppercase"),
        pytest.param({"member_id": None}, id="member-id-null"),
        pytest.param({"client_id": "c" * 65}, id="client-id-too-long"),
        pytest.param({"act": "staff-42"}, id="act-string"),
        pytest.param({"act": {}}, id="act-without-sub"),
        pytest.param({"act": {"sub": "staff 42"}}, id="act-sub-space"),
    ],
)
def test_malformed_claims_are_refused(verifier: TokenVerifier, sign: Callable[..., str], changes: dict[str, object]) -> None:
    assert refusal(verifier, sign(**changes)) == "bad_claims"


def test_unknown_claims_are_ignored(verifier: TokenVerifier, sign: Callable[..., str]) -> None:
    assert verifier.verify(sign(email="someone@example.org", scope="openid")).subject == "staff-17"


# -- trusted issuers from JWK sets ------------------------------------------------------------------------------------


def okp_jwk(private: Ed25519PrivateKey, kid: str) -> dict[str, object]:
    return {**jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key(), as_dict=True), "kid": kid}


def ec_jwk(private: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, object]:
    return {**jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True), "kid": kid}


def rsa_jwk(private: rsa.RSAPrivateKey, kid: str) -> dict[str, object]:
    return {**jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True), "kid": kid}


def test_es256_issuer_from_a_jwks_verifies_its_own_tokens(make_verifier: Callable[..., TokenVerifier], ec_private: ec.EllipticCurvePrivateKey) -> None:
    keys = trusted_keys_from_jwks(OTHER_ISSUER, {"keys": [{**ec_jwk(ec_private, "ec-1"), "alg": "ES256", "use": "sig"}]})
    assert [(key.issuer, key.key_id, key.algorithm) for key in keys] == [(OTHER_ISSUER, "ec-1", "ES256")]
    token = jwt.encode(payload(iss=OTHER_ISSUER), ec_private, algorithm="ES256", headers={"typ": "at+jwt", "kid": "ec-1"})
    assert make_verifier(*keys).verify(token).issuer == OTHER_ISSUER


def test_rs256_issuer_from_a_jwks_verifies_its_own_tokens(make_verifier: Callable[..., TokenVerifier], rsa_private: rsa.RSAPrivateKey) -> None:
    keys = trusted_keys_from_jwks(OTHER_ISSUER, {"keys": [{**rsa_jwk(rsa_private, "rsa-1"), "alg": "RS256"}]})
    assert [(key.issuer, key.key_id, key.algorithm) for key in keys] == [(OTHER_ISSUER, "rsa-1", "RS256")]
    token = jwt.encode(payload(iss=OTHER_ISSUER), rsa_private, algorithm="RS256", headers={"typ": "application/at+jwt", "kid": "rsa-1"})
    assert make_verifier(*keys).verify(token).issuer == OTHER_ISSUER


def test_eddsa_issuer_from_a_jwks_verifies_its_own_tokens(make_verifier: Callable[..., TokenVerifier]) -> None:
    private = Ed25519PrivateKey.generate()
    keys = trusted_keys_from_jwks(OTHER_ISSUER, {"keys": [okp_jwk(private, "ed-9")]})
    assert make_verifier(*keys).verify(compact(header(kid="ed-9"), payload(iss=OTHER_ISSUER), private.sign)).issuer == OTHER_ISSUER


def test_rs256_token_naming_an_rsa_kid_but_signed_ps256_is_refused(make_verifier: Callable[..., TokenVerifier], rsa_private: rsa.RSAPrivateKey) -> None:
    verifier = make_verifier(*trusted_keys_from_jwks(ISSUER, {"keys": [rsa_jwk(rsa_private, "rsa-1")]}))
    token = jwt.encode(payload(), rsa_private, algorithm="PS256", headers={"typ": "at+jwt", "kid": "rsa-1"})
    assert refusal(verifier, token) == "bad_algorithm"


def jwks_refusal(jwks: dict[str, object]) -> str:
    with pytest.raises(TrustedIssuersError) as info:
        trusted_keys_from_jwks(ISSUER, jwks)
    return str(info.value)


def test_jwks_with_a_private_member_is_refused(ed_private: Ed25519PrivateKey) -> None:
    private_jwk = {**jwt.algorithms.OKPAlgorithm.to_jwk(ed_private, as_dict=True), "kid": "ed-1"}
    assert jwks_refusal({"keys": [private_jwk]}) == f"issuer {ISSUER!r}, kid 'ed-1': private key member d present; only public keys are trusted"


def test_jwks_with_an_rsa_private_key_names_every_private_member(rsa_private: rsa.RSAPrivateKey) -> None:
    private_jwk = {**jwt.algorithms.RSAAlgorithm.to_jwk(rsa_private, as_dict=True), "kid": "rsa-1"}
    assert (
        jwks_refusal({"keys": [private_jwk]}) == f"issuer {ISSUER!r}, kid 'rsa-1': private key member d, p, q, dp, dq, qi present; only public keys are trusted"
    )


def test_jwks_with_rsa_1024_is_refused(weak_rsa_private: rsa.RSAPrivateKey) -> None:
    assert (
        jwks_refusal({"keys": [rsa_jwk(weak_rsa_private, "rsa-small")]})
        == f"issuer {ISSUER!r}, kid 'rsa-small': RSA key of 1024 bits; at least 2048 are required"
    )


def test_jwks_with_another_curve_is_refused() -> None:
    p384 = ec_jwk(ec.generate_private_key(ec.SECP384R1()), "ec-384")
    assert jwks_refusal({"keys": [p384]}) == f"issuer {ISSUER!r}, kid 'ec-384': 'crv' must be P-256 for a EC key"
    x25519 = {"kty": "OKP", "crv": "X25519", "kid": "x-1", "x": b64(X25519PrivateKey.generate().public_key().public_bytes_raw())}
    assert jwks_refusal({"keys": [x25519]}) == f"issuer {ISSUER!r}, kid 'x-1': 'crv' must be Ed25519 for a OKP key"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"alg": "ES256"}, "'alg' must be EdDSA for a OKP key", id="alg-mismatch"),
        pytest.param({"alg": "none"}, "'alg' must be EdDSA for a OKP key", id="alg-none"),
        pytest.param({"use": "enc"}, "'use' must be 'sig'", id="use-enc"),
        pytest.param({"kty": "oct"}, "'kty' must be OKP, EC or RSA", id="kty-oct"),
        pytest.param({"kty": None}, "'kty' must be OKP, EC or RSA", id="kty-null"),
        pytest.param({"x": "AAAA"}, "not a valid OKP public key", id="x-short"),
        pytest.param({"x": 12}, "not a valid OKP public key", id="x-number"),
        pytest.param({"x": "not base64!"}, "not a valid OKP public key", id="x-not-base64url"),
    ],
)
def test_jwks_key_that_does_not_fit_is_refused(ed_private: Ed25519PrivateKey, changes: dict[str, object], message: str) -> None:
    assert jwks_refusal({"keys": [{**okp_jwk(ed_private, "ed-1"), **changes}]}) == f"issuer {ISSUER!r}, kid 'ed-1': {message}"


def test_jwks_ec_point_off_the_curve_is_refused(ec_private: ec.EllipticCurvePrivateKey) -> None:
    jwk = ec_jwk(ec_private, "ec-1")
    assert jwks_refusal({"keys": [{**jwk, "y": jwk["x"]}]}) == f"issuer {ISSUER!r}, kid 'ec-1': not a valid EC public key"


@pytest.mark.parametrize("kid", [REMOVE, "", 7, "key one", "k" * 257])
def test_jwks_key_without_a_usable_kid_is_refused(ed_private: Ed25519PrivateKey, kid: object) -> None:
    jwk = changed(okp_jwk(ed_private, "ed-1"), {"kid": kid})
    assert jwks_refusal({"keys": [jwk]}) == f"issuer {ISSUER!r}, key 0: 'kid' must be 1 to 256 printable ASCII characters without spaces"


@pytest.mark.parametrize("jwks", [{}, {"keys": []}, {"keys": "ed-1"}])
def test_jwks_without_keys_is_refused(jwks: dict[str, object]) -> None:
    assert jwks_refusal(jwks) == f"issuer {ISSUER!r}: the JWK set needs a non-empty 'keys' list"


def test_jwks_entry_that_is_not_an_object_is_refused() -> None:
    assert jwks_refusal({"keys": ["ed-1"]}) == f"issuer {ISSUER!r}, key 0: a JWK must be a JSON object"


def test_jwks_with_a_kid_twice_is_refused(ed_private: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    jwks = {"keys": [okp_jwk(ed_private, "ed-1"), okp_jwk(other, "ed-1")]}
    assert jwks_refusal(jwks) == f"kid 'ed-1' is used by more than one key (issuers {ISSUER!r} and {ISSUER!r})"


@pytest.mark.parametrize("issuer", ["", 7])
def test_jwks_needs_an_issuer(ed_private: Ed25519PrivateKey, issuer: object) -> None:
    with pytest.raises(TrustedIssuersError, match=r"^an issuer must be a non-empty string$"):
        trusted_keys_from_jwks(issuer, {"keys": [okp_jwk(ed_private, "ed-1")]})


# -- the trusted issuers file ------------------------------------------------------------------------------------------


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = tmp_path / "trusted-issuers.json"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def issuers_file(*entries: tuple[str, list[dict[str, object]]]) -> str:
    return json.dumps({"issuers": [{"issuer": issuer, "jwks": {"keys": keys}} for issuer, keys in entries]})


def file_refusal(path: Path) -> str:
    with pytest.raises(TrustedIssuersError) as info:
        load_trusted_issuers(path)
    return str(info.value)


def test_trusted_issuers_file_is_loaded(
    write_file: Callable[[str], Path], make_verifier: Callable[..., TokenVerifier], ed_private: Ed25519PrivateKey, ec_private: ec.EllipticCurvePrivateKey
) -> None:
    path = write_file(issuers_file((ISSUER, [okp_jwk(ed_private, "ed-1")]), (OTHER_ISSUER, [ec_jwk(ec_private, "ec-1")])))
    keys = load_trusted_issuers(path)
    assert [(key.issuer, key.key_id, key.algorithm) for key in keys] == [(ISSUER, "ed-1", "EdDSA"), (OTHER_ISSUER, "ec-1", "ES256")]
    token = jwt.encode(payload(iss=OTHER_ISSUER), ec_private, algorithm="ES256", headers={"typ": "at+jwt", "kid": "ec-1"})
    assert make_verifier(*keys).verify(token).issuer == OTHER_ISSUER


def test_trusted_issuers_file_may_list_no_issuer(write_file: Callable[[str], Path]) -> None:
    assert load_trusted_issuers(write_file('{"issuers": []}')) == []


def test_trusted_issuers_file_with_a_duplicate_json_member_is_refused(write_file: Callable[[str], Path], ed_private: Ed25519PrivateKey) -> None:
    jwk = json.dumps(okp_jwk(ed_private, "ed-1"))
    path = write_file(f'{{"issuers": [{{"issuer": "{ISSUER}", "issuer": "{OTHER_ISSUER}", "jwks": {{"keys": [{jwk}]}}}}]}}')
    assert file_refusal(path) == f"{path}: duplicate member 'issuer'"


def test_trusted_issuers_file_with_a_kid_across_issuers_is_refused(write_file: Callable[[str], Path], ed_private: Ed25519PrivateKey) -> None:
    path = write_file(issuers_file((ISSUER, [okp_jwk(ed_private, "shared")]), (OTHER_ISSUER, [okp_jwk(Ed25519PrivateKey.generate(), "shared")])))
    assert file_refusal(path) == f"{path}: kid 'shared' is used by more than one key (issuers {ISSUER!r} and {OTHER_ISSUER!r})"


def test_trusted_issuers_file_with_a_private_member_is_refused(write_file: Callable[[str], Path], ed_private: Ed25519PrivateKey) -> None:
    private_jwk = {**jwt.algorithms.OKPAlgorithm.to_jwk(ed_private, as_dict=True), "kid": "ed-1"}
    path = write_file(issuers_file((ISSUER, [private_jwk])))
    assert file_refusal(path) == f"{path}: issuer {ISSUER!r}, kid 'ed-1': private key member d present; only public keys are trusted"


def test_trusted_issuers_file_with_rsa_1024_is_refused(write_file: Callable[[str], Path], weak_rsa_private: rsa.RSAPrivateKey) -> None:
    path = write_file(issuers_file((ISSUER, [rsa_jwk(weak_rsa_private, "rsa-small")])))
    assert file_refusal(path) == f"{path}: issuer {ISSUER!r}, kid 'rsa-small': RSA key of 1024 bits; at least 2048 are required"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param('{"issuers": [], "refresh": true}', "unknown member 'refresh'", id="unknown-member"),
        pytest.param("[]", "the file must hold a JSON object", id="not-object"),
        pytest.param("{}", "'issuers' must be a list", id="no-issuers"),
        pytest.param('{"issuers": {}}', "'issuers' must be a list", id="issuers-object"),
        pytest.param('{"issuers": ["x"]}', "issuers[0] must be an object with exactly 'issuer' and 'jwks'", id="entry-string"),
        pytest.param('{"issuers": [{"issuer": "a"}]}', "issuers[0] must be an object with exactly 'issuer' and 'jwks'", id="entry-without-jwks"),
        pytest.param('{"issuers": [{"issuer": "a", "jwks": [], "x": 1}]}', "issuers[0] must be an object with exactly 'issuer' and 'jwks'", id="entry-extra"),
        pytest.param('{"issuers": [{"issuer": "a", "jwks": []}]}', "issuers[0].jwks must be a JSON object", id="jwks-list"),
        pytest.param('{"issuers": [{"issuer": ["a"], "jwks": {"keys": []}}]}', "an issuer must be a non-empty string", id="issuer-list"),
        pytest.param('{"issuers": [', "not JSON (line 1, column 14)", id="truncated"),
        pytest.param('{"issuers": NaN}', "NaN is not JSON", id="nan"),
    ],
)
def test_malformed_trusted_issuers_file_is_refused(write_file: Callable[[str], Path], text: str, message: str) -> None:
    path = write_file(text)
    assert file_refusal(path) == f"{path}: {message}"


def test_trusted_issuers_file_listing_an_issuer_twice_is_refused(write_file: Callable[[str], Path], ed_private: Ed25519PrivateKey) -> None:
    path = write_file(issuers_file((ISSUER, [okp_jwk(ed_private, "ed-1")]), (ISSUER, [okp_jwk(Ed25519PrivateKey.generate(), "ed-2")])))
    assert file_refusal(path) == f"{path}: issuer {ISSUER!r} is listed twice"


def test_trusted_issuers_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trusted-issuers.json"
    path.write_bytes(b'{"issuers": ["\xff"]}')
    assert file_refusal(path) == f"{path}: not UTF-8"


def test_missing_trusted_issuers_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    assert file_refusal(path) == f"{path}: cannot be read"


# -- the vault's own tokens ----------------------------------------------------------------------------------------------


@pytest.fixture
def vault_signing_key(ed_private: Ed25519PrivateKey) -> SigningKey:
    return SigningKey(SigningPurpose.jwt, 1, signing_key_id(ed_private.public_key()), ed_private)


@pytest.fixture
def vault_verifier(vault_signing_key: SigningKey) -> TokenVerifier:
    public = vault_signing_key.public_key()
    published = PublicSigningKey(
        purpose=SigningPurpose.jwt,
        version=1,
        key_id=vault_signing_key.key_id,
        public_key=public,
        public_bytes=public.public_bytes_raw(),
        created_at=NOW,
        activated_at=NOW,
        retire_after=None,
    )
    keys = keys_by_id(vault_keys("member-vault", [published]))
    return TokenVerifier(lambda: keys, audience=AUDIENCE, now=lambda: NOW)


def test_issued_token_round_trips_through_the_verifier(vault_signing_key: SigningKey, vault_verifier: TokenVerifier) -> None:
    token, claims = issue_token(
        vault_signing_key,
        issuer="member-vault",
        audience=AUDIENCE,
        subject="loyalty-app",
        roles=["loyalty_service"],
        ttl=timedelta(minutes=15),
        now=NOW + timedelta(microseconds=700),
        clinics=["clinic-x", "clinic-y"],
        member_id="0123456789abcdef0123456789abcdef",
        client_id="loyalty-app",
        acting_staff="staff-42",
    )
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": vault_signing_key.key_id, "typ": "at+jwt"}
    assert vault_verifier.verify(token) == claims
    assert claims.issuer == "member-vault"
    assert claims.roles == ("loyalty_service",)
    assert claims.clinics == ("clinic-x", "clinic-y")
    assert claims.acting_staff == "staff-42"
    assert claims.issued_at == NOW
    assert claims.expires_at == NOW + timedelta(minutes=15)
    assert len(claims.token_id) == 22


def test_issued_token_carries_only_the_claims_given(vault_signing_key: SigningKey, vault_verifier: TokenVerifier) -> None:
    token, claims = issue_token(
        vault_signing_key, issuer="member-vault", audience=AUDIENCE, subject="staff-17", roles=["front_desk"], ttl=timedelta(hours=1), now=NOW
    )
    body = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert sorted(body) == ["aud", "exp", "iat", "iss", "jti", "roles", "sub"]
    assert body["aud"] == AUDIENCE
    assert vault_verifier.verify(token) == claims
    assert (claims.clinics, claims.member_id, claims.client_id, claims.acting_staff) == ((), None, None, None)


def test_issued_tokens_have_distinct_ids(vault_signing_key: SigningKey) -> None:
    ids = {
        issue_token(vault_signing_key, issuer="member-vault", audience=AUDIENCE, subject="s", roles=["front_desk"], ttl=timedelta(minutes=1), now=NOW)[
            1
        ].token_id
        for _ in range(20)
    }
    assert len(ids) == 20


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"ttl": timedelta(0)}, "ttl must be at least one second", id="ttl-zero"),
        pytest.param({"ttl": timedelta(milliseconds=999)}, "ttl must be at least one second", id="ttl-sub-second"),
        pytest.param({"ttl": timedelta(hours=1, seconds=1)}, "ttl must be at most one hour", id="ttl-over-an-hour"),
        pytest.param({"now": NOW.replace(tzinfo=None)}, "now must be timezone-aware", id="naive-now"),
        pytest.param({"issuer": ""}, "issuer must not be empty", id="empty-issuer"),
        pytest.param({"audience": ""}, "audience must not be empty", id="empty-audience"),
        pytest.param({"roles": "front_desk"}, "roles and clinics are sequences of names, not a single string", id="roles-string"),
        pytest.param({"clinics": "clinic-x"}, "roles and clinics are sequences of names, not a single string", id="clinics-string"),
        pytest.param({"roles": []}, "claim 'roles' must be a non-empty list of role names", id="roles-empty"),
        pytest.param({"subject": "staff 17"}, "claim 'sub' is malformed", id="subject-space"),
        pytest.param({"clinics": ["clinic x"]}, "claim 'clinics' must be a list of clinic ids", id="clinic-space"),
        pytest.param({"member_id": "M-1"}, "claim 'member_id' is malformed", id="member-id"),
        pytest.param({"client_id": "a b"}, "claim 'client_id' is malformed", id="client-id"),
        pytest.param({"acting_staff": ""}, "claim 'act.sub' is malformed", id="acting-staff"),
    ],
)
def test_issue_token_refuses_what_the_verifier_would_refuse(vault_signing_key: SigningKey, changes: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "issuer": "member-vault",
        "audience": AUDIENCE,
        "subject": "staff-17",
        "roles": ["front_desk"],
        "ttl": timedelta(minutes=5),
        "now": NOW,
        **changes,
    }
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        issue_token(vault_signing_key, **arguments)


# -- construction ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"audience": ""}, "audience must not be empty", id="audience"),
        pytest.param({"leeway": timedelta(seconds=-1)}, "leeway must not be negative", id="leeway"),
        pytest.param({"max_lifetime": timedelta(0)}, "max_lifetime must be positive", id="lifetime"),
        pytest.param({"max_token_bytes": 0}, "max_token_bytes must be positive", id="size"),
    ],
)
def test_verifier_refuses_unsafe_settings(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        TokenVerifier(dict, **{"audience": AUDIENCE, **options})


def test_trusted_key_needs_an_issuer_and_a_kid(ed_private: Ed25519PrivateKey) -> None:
    with pytest.raises(ValueError, match=r"^issuer must not be empty$"):
        TrustedKey("", "ed-1", "EdDSA", ed_private.public_key())
    with pytest.raises(ValueError, match=r"^key_id must be 1 to 256 printable ASCII characters without spaces$"):
        TrustedKey(ISSUER, "", "EdDSA", ed_private.public_key())


def test_trusted_key_repr_names_the_key_not_its_material(ed_key: TrustedKey) -> None:
    assert repr(ed_key) == f"TrustedKey(issuer={ISSUER!r}, key_id='ed-1', algorithm='EdDSA')"


# -- properties ------------------------------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
CLAIM_NAMES = st.sampled_from(["iss", "aud", "sub", "roles", "clinics", "member_id", "client_id", "act", "jti", "iat", "exp", "nbf"])


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300) | st.from_regex(r"[A-Za-z0-9_-]{0,40}\.[A-Za-z0-9_-]{0,40}\.[A-Za-z0-9_-]{0,40}", fullmatch=True))
def test_any_string_is_refused_with_invalid_token_only(ed_key: TrustedKey, text: str) -> None:
    verifier = TokenVerifier(lambda: {"ed-1": ed_key}, audience=AUDIENCE, now=lambda: NOW)
    with pytest.raises(InvalidTokenError) as info:
        verifier.verify(text)
    assert str(info.value) == "invalid token"


@settings(max_examples=300, deadline=None)
@given(changes=st.dictionaries(CLAIM_NAMES, JSON, max_size=3), head=st.dictionaries(st.sampled_from(["alg", "typ", "kid", "cty", "x5t"]), JSON, max_size=2))
def test_signed_tokens_with_any_claim_values_verify_or_raise_invalid_token(
    ed_key: TrustedKey, ed_sign: Callable[[bytes], bytes], changes: dict[str, object], head: dict[str, object]
) -> None:
    """A token signed by a trusted key, whatever its header and claim values, yields claims or one InvalidTokenError, never another exception."""
    verifier = TokenVerifier(lambda: {"ed-1": ed_key}, audience=AUDIENCE, now=lambda: NOW)
    token = compact(header(**head), payload(**changes), ed_sign)
    with contextlib.suppress(InvalidTokenError):
        assert verifier.verify(token).issuer == ISSUER
