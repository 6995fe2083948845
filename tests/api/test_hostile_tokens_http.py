"""Hostile bearer tokens over HTTP (SECURITY-BAR H1–H3, H6–H9): one generic 401, nothing journaled, nothing fetched.

Tokens are built by hand (base64url, JSON, ``cryptography`` keys) around the
vault's real development key, so each case breaks exactly one rule of an
otherwise valid token; the authenticator's refusal counter shows which rule
refused it. Invariants: every hostile token gets the same problem body
(request id aside) and adds no audit event; a token that names a key location
(``jku``, ``x5u``) makes the vault connect nowhere; a header past the server's
limit is a 4xx from the real server, which keeps serving.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi.testclient import TestClient
from sqlalchemy import insert

from api.app import create_app
from api.authn import DEV_ISSUER
from api.runtime import open_runtime
from api.settings import Settings
from api.tokens import issue_token
from keys.signing import SigningPurpose, signing_key_id
from tests.api.conftest import Vault
from vault.storage.schema import revoked_tokens

GENERIC = {"type": "https://member-vault.example/problems/unauthorized", "title": "Unauthorized", "status": 401, "detail": "missing or invalid access token"}
REMOVE = object()
MADE_UP = "0" * 32


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: object) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


class Forge:
    """Builds tokens for one vault: the dev issuer's claims and header, signed by any key or none."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self.key = vault.runtime.signing.current(SigningPurpose.dev_jwt)
        self.now = int(datetime.now(UTC).timestamp())

    def header(self, **changes: object) -> dict[str, object]:
        return _changed({"alg": "EdDSA", "typ": "at+jwt", "kid": self.key.key_id}, changes)

    def claims(self, **changes: object) -> dict[str, object]:
        base: dict[str, object] = {
            "iss": DEV_ISSUER,
            "aud": self.vault.settings.audience,
            "sub": "hostile-tester",
            "roles": ["practitioner"],
            "clinics": [self.vault.members[0].home_clinic_id],
            "iat": self.now,
            "exp": self.now + 600,
            "jti": f"jti-{os.urandom(8).hex()}",
        }
        return _changed(base, changes)

    def token(self, header: dict[str, object] | None = None, claims: dict[str, object] | None = None, sign: Callable[[bytes], bytes] | None = None) -> str:
        signing_input = f"{segment(header or self.header())}.{segment(claims or self.claims())}"
        return f"{signing_input}.{b64((sign or self.key.sign)(signing_input.encode('ascii')))}"

    def hs256(self, secret: bytes) -> str:
        return self.token(self.header(alg="HS256"), sign=lambda data: hmac.new(secret, data, hashlib.sha256).digest())

    def foreign(self, algorithm: str, private: object, kid: str | None = None, **claims: object) -> str:
        headers = {"typ": "at+jwt", "kid": kid or self.key.key_id}
        return jwt.encode(self.claims(**claims), private, algorithm=algorithm, headers=headers)  # type: ignore[arg-type]  # a private key of that algorithm

    def revoked(self) -> str:
        claims = self.claims()
        with self.vault.runtime.data_engine.begin() as conn:
            conn.execute(insert(revoked_tokens).values(token_id=claims["jti"], expires_at=datetime.now(UTC) + timedelta(hours=1), revoked_at=datetime.now(UTC)))
        return self.token(claims=claims)


def _changed(base: dict[str, object], changes: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in {**base, **changes}.items() if v is not REMOVE}


def _edited(f: Forge) -> str:
    head, _, signature = f.token().split(".")
    return f"{head}.{segment(f.claims(roles=['dpo'], clinics=['*']))}.{signature}"


def _flipped(f: Forge) -> str:
    head, body, signature = f.token().split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[0] ^= 1
    return f"{head}.{body}.{b64(bytes(raw))}"


def _public(f: Forge, encoding: Encoding, fmt: PublicFormat) -> bytes:
    return f.key.private_key.public_key().public_bytes(encoding, fmt)


def _unsigned(**header: object) -> Callable[[Forge], str]:
    return lambda f: f.token(f.header(**header), sign=lambda _: b"")


def _fresh_ed25519(f: Forge, **claims: object) -> str:
    other = Ed25519PrivateKey.generate()
    return f.foreign("EdDSA", other, signing_key_id(other.public_key()), **claims)


# case → (builder, the authenticator's refusal reason)
HOSTILE: dict[str, tuple[Callable[[Forge], str], str]] = {
    **{f"alg-{a}": (_unsigned(alg=a), "bad_algorithm") for a in ("none", "None", "NONE", "nOnE")},
    "alg-none-without-kid": (_unsigned(alg="none", kid=REMOVE), "bad_algorithm"),
    "alg-none-keeping-a-valid-signature": (lambda f: f.token(f.header(alg="none")), "bad_algorithm"),
    "hs256-public-key-pem": (lambda f: f.hs256(_public(f, Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)), "bad_algorithm"),
    "hs256-public-key-raw": (lambda f: f.hs256(_public(f, Encoding.Raw, PublicFormat.Raw)), "bad_algorithm"),
    "es256-on-the-ed25519-kid": (lambda f: f.foreign("ES256", ec.generate_private_key(ec.SECP256R1())), "bad_algorithm"),
    "rs256-on-the-ed25519-kid": (lambda f: f.foreign("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)), "bad_algorithm"),
    "unknown-kid": (lambda f: f.token(f.header(kid="no-such-key")), "unknown_key"),
    "untrusted-issuer-key": (lambda f: _fresh_ed25519(f, iss="https://login.evil.example"), "unknown_key"),
    "foreign-key-on-the-dev-kid": (lambda f: f.token(sign=Ed25519PrivateKey.generate().sign), "bad_signature"),
    "receipts-key": (lambda f: f.token(f.header(kid=f.vault.runtime.signing.current(SigningPurpose.receipts).key_id)), "unknown_key"),
    "wrong-aud": (lambda f: f.token(claims=f.claims(aud="another-service")), "bad_audience"),
    "missing-aud": (lambda f: f.token(claims=f.claims(aud=REMOVE)), "missing_claim"),
    "wrong-iss-for-the-key": (lambda f: f.token(claims=f.claims(iss=f.vault.settings.issuer)), "bad_issuer"),
    "typ-jwt": (lambda f: f.token(f.header(typ="JWT")), "bad_type"),
    "typ-missing": (lambda f: f.token(f.header(typ=REMOVE)), "bad_type"),
    "typ-consent-receipt": (lambda f: f.token(f.header(typ="consent-receipt+jwt")), "bad_type"),
    "expired": (lambda f: f.token(claims=f.claims(iat=f.now - 1200, exp=f.now - 600)), "expired"),
    "no-exp": (lambda f: f.token(claims=f.claims(exp=REMOVE)), "missing_claim"),
    "exp-as-string": (lambda f: f.token(claims=f.claims(exp=str(f.now + 600))), "bad_claims"),
    "nbf-10-min-ahead": (lambda f: f.token(claims=f.claims(nbf=f.now + 600)), "not_yet_valid"),
    "iat-10-min-ahead": (lambda f: f.token(claims=f.claims(iat=f.now + 600, exp=f.now + 1200)), "not_yet_valid"),
    "lifetime-over-the-cap": (lambda f: f.token(claims=f.claims(exp=f.now + 7200)), "lifetime_exceeded"),
    "revoked-jti": (Forge.revoked, "revoked"),
    "payload-edited-after-signing": (_edited, "bad_signature"),
    "signature-stripped": (lambda f: f.token().rsplit(".", 1)[0] + ".", "bad_signature"),
    "signature-segment-missing": (lambda f: f.token().rsplit(".", 1)[0], "malformed"),
    "signature-bit-flipped": (_flipped, "bad_signature"),
    "jwk-header": (lambda f: f.token(f.header(jwk={"kty": "OKP", "crv": "Ed25519", "x": b64(_public(f, Encoding.Raw, PublicFormat.Raw))})), "forbidden_header"),
    "x5c-header": (lambda f: f.token(f.header(x5c=["MIIB"])), "forbidden_header"),
    "8-kb-token": (lambda f: f.token(claims=f.claims(pad="x" * 8192)), "too_large"),
}


def refusals(vault: Vault) -> dict[str, int]:
    return dict(vault.client.app.state.services.get().authenticator.refusals)  # type: ignore[attr-defined]  # the TestClient's app is our FastAPI app


def assert_refused(vault: Vault, token: str, reason: str) -> None:
    """401 with the generic body, the refusal counted under ``reason``, and no audit event."""
    before, counted = vault.journal_size(), refusals(vault)
    r = vault.client.get(f"/v1/members/{vault.members[0].member_id}", headers=vault.headers(token, "care"))
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    body = r.json()
    assert body.pop("request_id") == r.headers["x-request-id"]
    assert body == GENERIC
    assert token not in r.text
    assert vault.journal_size() == before
    assert refusals(vault) == {**counted, reason: counted.get(reason, 0) + 1}


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_token_is_a_generic_401_and_journals_nothing(vault: Vault, case: str) -> None:
    build, reason = HOSTILE[case]
    assert_refused(vault, build(Forge(vault)), reason)


@pytest.fixture
def trap() -> Iterator[socket.socket]:
    """A listening socket on 127.0.0.1 that no connection should ever reach."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("name", ["jku", "x5u"])
def test_a_key_location_header_is_refused_and_never_fetched(vault: Vault, trap: socket.socket, name: str) -> None:
    port = trap.getsockname()[1]
    f = Forge(vault)
    assert_refused(vault, f.token(f.header(**{name: f"http://127.0.0.1:{port}/jwks.json"})), "forbidden_header")
    readable, _, _ = select.select([trap], [], [], 0.5)
    assert readable == []


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(("name", "changes"), [("nbf", {"nbf": 10}), ("iat", {"iat": 10, "exp": 610}), ("exp", {"iat": -600, "exp": -10})])
def test_a_time_claim_within_the_leeway_is_accepted(vault: Vault, name: str, changes: dict[str, int]) -> None:
    f = Forge(vault)
    token = f.token(claims=f.claims(**{k: f.now + v for k, v in changes.items()}))
    before = vault.journal_size()
    r = vault.client.get(f"/v1/members/{vault.members[0].member_id}", headers=vault.headers(token, "care"))
    assert r.status_code == 200, name
    assert vault.journal_size() == before + 1


def issued(settings: Settings, purpose: SigningPurpose, issuer: str, role: str) -> str:
    """A five-minute token signed by the vault's current ``purpose`` key (read through a runtime of its own)."""
    runtime = open_runtime(settings)
    try:
        key, now, ttl = runtime.signing.current(purpose), datetime.now(UTC), timedelta(minutes=5)
        return issue_token(key, issuer=issuer, audience=settings.audience, subject="tester", roles=[role], ttl=ttl, now=now)[0]
    finally:
        runtime.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_dev_issuer_is_refused_in_production_mode(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(env="production")
    dev = issued(settings, SigningPurpose.dev_jwt, DEV_ISSUER, "dpo")
    own = issued(settings, SigningPurpose.jwt, settings.issuer, "practitioner")
    with TestClient(create_app(settings, audit_pump=False), raise_server_exceptions=False) as client:
        refused = client.get(f"/v1/members/{MADE_UP}", headers={"Authorization": f"Bearer {dev}", "X-Purpose": "self_service"})
        accepted = client.get(f"/v1/members/{MADE_UP}", headers={"Authorization": f"Bearer {own}", "X-Purpose": "care"})
    assert refused.status_code == 401
    assert {k: v for k, v in refused.json().items() if k != "request_id"} == GENERIC
    assert accepted.status_code == 403  # the vault's own issuer authenticates; the made-up member is simply out of reach


# -- the real server ---------------------------------------------------------------


def _get(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes] | None:
    """Status and body, or None when the server closed the connection without answering."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    except (ConnectionError, http.client.RemoteDisconnected):
        return None
    finally:
        conn.close()


@pytest.fixture
def server(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[tuple[int, Settings]]:
    """uvicorn serving ``api.app:app_from_environment`` on the test's vault, on a free port."""
    settings = make_settings()
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = int(probe.getsockname()[1])
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path), "VAULT_DATA_DIR": str(settings.data_dir)}
    command = [sys.executable, "-m", "uvicorn", "api.app:app_from_environment", "--factory", "--host", "127.0.0.1", "--port", str(port)]
    with (tmp_path / "server.log").open("wb") as out:
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while _get(port, "/healthz", {}) is None:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield port, settings
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_header_past_the_servers_limit_is_a_4xx_and_the_server_keeps_serving(server: tuple[int, Settings]) -> None:
    port, settings = server
    for size in (64 * 1024, 1024 * 1024):
        answer = _get(port, f"/v1/members/{MADE_UP}", {"Authorization": "Bearer " + "A" * size, "X-Purpose": "care"})
        assert answer is None or 400 <= answer[0] < 500, (size, answer)

    token = issued(settings, SigningPurpose.dev_jwt, DEV_ISSUER, "practitioner")
    assert _get(port, "/healthz", {}) is not None
    after = _get(port, f"/v1/members/{MADE_UP}", {"Authorization": f"Bearer {token}", "X-Purpose": "care"})
    assert after is not None
    assert after[0] == 403
