"""The vault as issuer: client credentials (RFC 6749 §4.4) over HTTP, the JWKS, and the client registry.

Clients are registered through the registry (``vault.clients``) on the test
vault's own database; tokens are fetched from ``POST /v1/oauth/token`` and
used on ``GET /v1/members/{id}`` like any service would. The registry's
throttle window is tested with injected times; nothing sleeps.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import quote_plus

import httpx2 as httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api import logging as oplog
from api.tokens import Claims, InvalidTokenError, TokenVerifier, keys_by_id, trusted_keys_from_jwks
from keys.signing import SigningPurpose
from tests.api.conftest import Vault
from vault.clients import ROOT_KEY, ClientRegistry, Throttle, revoke_token
from vault.errors import ConflictError, NotFoundError, ValidationError
from vault.roles import Role
from vault.storage.engine import write_transaction
from vault.storage.schema import auth_throttle, clients

ENDPOINT = "/v1/oauth/token"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
LIMIT = Throttle().limit
T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


# -- helpers -------------------------------------------------------------------------


def registry(vault: Vault) -> ClientRegistry:
    return ClientRegistry(vault.runtime.keys.root_key(ROOT_KEY))


def add_client(vault: Vault, client_id: str = "svc.legal", roles: Sequence[str] = ("dpo",), clinics: Sequence[str] = ("*",)) -> str:
    with write_transaction(vault.runtime.data_engine) as conn:
        return registry(vault).add(conn, client_id, roles, clinics, datetime.now(UTC))


def basic(client_id: str, secret: str) -> dict[str, str]:
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}


def ask(client: TestClient, body: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post(ENDPOINT, content=body, headers={**FORM, **(headers or {})})


def token_by_basic(vault: Vault, client_id: str, secret: str, body: str = "grant_type=client_credentials") -> httpx.Response:
    return ask(vault.client, body, basic(client_id, secret))


def read_member(vault: Vault, token: str) -> httpx.Response:
    return vault.client.get(f"/v1/members/{vault.members[0].member_id}", headers=vault.headers(token, "legal_claims"))


def events(vault: Vault, last: int) -> list[dict[str, object]]:
    return [json.loads(e) for e in vault.journal_events()[-last:]]


def jwks_verifier(vault: Vault) -> TokenVerifier:
    document = vault.client.get("/.well-known/jwks.json").json()
    keys = keys_by_id(trusted_keys_from_jwks(vault.settings.issuer, document))
    return TokenVerifier(lambda: keys, audience=vault.settings.audience)


def assert_invalid_client(r: httpx.Response) -> None:
    assert r.status_code == 401
    assert r.json() == {"error": "invalid_client"}
    assert r.headers["www-authenticate"] == 'Basic realm="member-vault", charset="UTF-8"'
    assert r.headers["cache-control"] == "no-store"


# -- the flow ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_dpo_client_gets_a_token_reads_a_member_and_is_cut_off_when_revoked(vault: Vault) -> None:
    secret = add_client(vault)
    before = vault.journal_size()

    r = token_by_basic(vault, "svc.legal", secret)

    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert (r.headers["cache-control"], r.headers["pragma"]) == ("no-store", "no-cache")
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 900, "dpo")
    issued = events(vault, 1)[0]
    assert vault.journal_size() == before + 1
    assert (issued["action"], issued["resource_type"], issued["resource_id"], issued["decision"], issued["outcome"]) == (
        "issue_token",
        "client",
        "svc.legal",
        "allow",
        "ok",
    )
    assert issued["actor"] == {"subject": "svc.legal", "roles": ["dpo"], "client_id": "svc.legal", "acting_staff": None}

    read = read_member(vault, body["access_token"])
    assert read.status_code == 200
    assert read.json()["member_id"] == vault.members[0].member_id
    assert events(vault, 1)[0]["actor"] == {"subject": "svc.legal", "roles": ["dpo"], "client_id": "svc.legal", "acting_staff": None}

    with write_transaction(vault.runtime.data_engine) as conn:
        registry(vault).revoke(conn, "svc.legal", datetime.now(UTC))
    journaled = vault.journal_size()
    assert read_member(vault, body["access_token"]).status_code == 401
    assert vault.journal_size() == journaled
    assert_invalid_client(token_by_basic(vault, "svc.legal", secret))


@pytest.mark.parametrize("backend", ["sqlite"])
def test_form_credentials_give_a_token_with_the_clients_claims(vault: Vault) -> None:
    secret = add_client(vault, "svc.front", roles=("front_desk",), clinics=("sh-001", "bj-002"))

    r = ask(vault.client, f"grant_type=client_credentials&client_id=svc.front&client_secret={secret}")

    assert r.status_code == 200
    claims = jwks_verifier(vault).verify(r.json()["access_token"])
    assert isinstance(claims, Claims)
    assert (claims.issuer, claims.subject, claims.client_id, claims.roles, claims.clinics) == (
        vault.settings.issuer,
        "svc.front",
        "svc.front",
        ("front_desk",),
        ("bj-002", "sh-001"),
    )
    assert claims.expires_at - claims.issued_at == timedelta(minutes=15)
    assert claims.member_id is None


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_scope_narrows_the_roles_and_a_foreign_scope_is_invalid_scope_with_one_deny_event(vault: Vault) -> None:
    secret = add_client(vault, "svc.two", roles=("dpo", "compliance_officer"))

    narrowed = token_by_basic(vault, "svc.two", secret, "grant_type=client_credentials&scope=dpo")
    assert narrowed.status_code == 200
    assert narrowed.json()["scope"] == "dpo"
    assert jwks_verifier(vault).verify(narrowed.json()["access_token"]).roles == ("dpo",)

    before = vault.journal_size()
    refused = token_by_basic(vault, "svc.two", secret, "grant_type=client_credentials&scope=dpo+vault_admin")
    assert (refused.status_code, refused.json()) == (400, {"error": "invalid_scope"})
    assert vault.journal_size() == before + 1
    denied = events(vault, 1)[0]
    assert (denied["action"], denied["decision"], denied["reason_code"], denied["resource_id"]) == ("issue_token", "deny", "invalid_scope", "svc.two")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_rotating_the_secret_retires_the_old_one_at_once(vault: Vault) -> None:
    old = add_client(vault)
    with write_transaction(vault.runtime.data_engine) as conn:
        new = registry(vault).rotate_secret(conn, "svc.legal", datetime.now(UTC))

    assert new != old
    assert_invalid_client(token_by_basic(vault, "svc.legal", old))
    assert token_by_basic(vault, "svc.legal", new).status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_wrong_secret_an_unknown_client_and_a_revoked_client_get_the_same_answer_and_no_audit_event(vault: Vault) -> None:
    secret = add_client(vault)
    add_client(vault, "svc.gone")
    with write_transaction(vault.runtime.data_engine) as conn:
        registry(vault).revoke(conn, "svc.gone", datetime.now(UTC))
    before = vault.journal_size()

    answers = [
        token_by_basic(vault, "svc.legal", secret[:-1] + ("A" if secret[-1] != "A" else "B")),
        token_by_basic(vault, "svc.nobody", secret),
        token_by_basic(vault, "svc.gone", secret),
        ask(vault.client, f"grant_type=client_credentials&client_id=svc.nobody&client_secret={secret}"),
    ]

    for r in answers:
        assert_invalid_client(r)
        assert r.content == b'{"error":"invalid_client"}'
    assert vault.journal_size() == before


@pytest.mark.parametrize("backend", ["sqlite"])
def test_h33_wrong_secrets_are_throttled_after_the_threshold_even_for_the_right_secret(vault: Vault) -> None:
    secret = add_client(vault)
    wrong = "x" * 43

    statuses = [token_by_basic(vault, "svc.legal", wrong).status_code for _ in range(200)]

    first_429 = statuses.index(429) + 1
    assert first_429 == LIMIT + 1
    assert statuses[:LIMIT] == [401] * LIMIT
    assert set(statuses[LIMIT:]) == {429}
    right = token_by_basic(vault, "svc.legal", secret)
    assert (right.status_code, right.json()) == (429, {"error": "invalid_client"})
    assert 0 < int(right.headers["retry-after"]) <= 300
    assert right.headers["cache-control"] == "no-store"
    with vault.runtime.data_engine.connect() as conn:
        counted = dict(conn.execute(select(auth_throttle.c.bucket, auth_throttle.c.failures)).all())
    assert counted == {"client:svc.legal": LIMIT, "addr:testclient": LIMIT}


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_address_bucket_stops_guessing_across_client_ids_and_the_client_bucket_across_addresses(vault: Vault) -> None:
    secret = add_client(vault)
    other_secret = add_client(vault, "svc.other")

    statuses = [token_by_basic(vault, f"svc.guess-{n}", secret).status_code for n in range(LIMIT + 2)]
    assert statuses == [401] * LIMIT + [429, 429]

    elsewhere = TestClient(vault.client.app, client=("203.0.113.7", 40000))
    assert ask(elsewhere, "grant_type=client_credentials", basic("svc.other", other_secret)).status_code == 200
    for _ in range(LIMIT):
        assert ask(elsewhere, "grant_type=client_credentials", basic("svc.legal", "nope")).status_code == 401
    third = TestClient(vault.client.app, client=("198.51.100.9", 40000))
    assert ask(third, "grant_type=client_credentials", basic("svc.legal", secret)).status_code == 429
    assert ask(third, "grant_type=client_credentials", basic("svc.other", other_secret)).status_code == 200


GRANT = "grant_type=client_credentials"
MALFORMED = {
    "empty": ("", {}, True, 400, "invalid_request"),
    "no-grant-type": ("scope=dpo", {}, True, 400, "invalid_request"),
    "password-grant": ("grant_type=password&username=a&password=b", {}, True, 400, "unsupported_grant_type"),
    "repeated-parameter": (f"{GRANT}&{GRANT}", {}, True, 400, "invalid_request"),
    "basic-and-form": (f"{GRANT}&client_id=svc.legal", {}, True, 400, "invalid_request"),
    "json-body": (GRANT, {"Content-Type": "application/json"}, True, 400, "invalid_request"),
    "not-utf8": (GRANT + "&scope=%FF", {}, True, 400, "invalid_request"),
    "basic-not-base64": (GRANT, {"Authorization": "Basic !!!"}, False, 400, "invalid_request"),
    "basic-without-colon": (GRANT, {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}, False, 400, "invalid_request"),
    "other-scheme": (GRANT, {"Authorization": "Bearer abc"}, False, 401, "invalid_client"),
    "secret-without-id": (f"{GRANT}&client_secret=s", {}, False, 401, "invalid_client"),
    "no-credentials": (GRANT, {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}, False, 401, "invalid_client"),
}


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("case", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_token_requests_get_rfc6749_errors_and_no_audit_event(vault: Vault, case: tuple[str, dict[str, str], bool, int, str]) -> None:
    body, headers, with_credentials, status, error = case
    secret = add_client(vault)
    credentials = basic("svc.legal", secret) if with_credentials else {}
    before = vault.journal_size()

    r = vault.client.post(ENDPOINT, content=body, headers={**FORM, **credentials, **headers})

    assert (r.status_code, r.json()) == (status, {"error": error})
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    assert vault.journal_size() == before


@pytest.mark.parametrize("backend", ["sqlite"])
def test_neither_the_secret_nor_the_token_reaches_the_operational_log(vault: Vault, capfd: pytest.CaptureFixture[str]) -> None:
    oplog.configure(vault.settings.log_level)  # log to this test's captured standard error
    secret = add_client(vault)
    issued = token_by_basic(vault, "svc.legal", secret).json()["access_token"]
    token_by_basic(vault, "svc.legal", secret + "x")

    logged = capfd.readouterr().err
    assert "oauth.token_issued" in logged
    assert "oauth.token_refused" in logged
    assert secret not in logged
    assert issued.split(".")[2] not in logged


# -- the JWKS ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_jwks_lists_the_jwt_receipt_and_certificate_keys_as_public_okp_keys(vault: Vault) -> None:
    r = vault.client.get("/.well-known/jwks.json")

    assert r.status_code == 200
    assert r.headers["cache-control"] == "public, max-age=300"
    keys = r.json()["keys"]
    signing = vault.runtime.signing
    expected = [signing.current(p).key_id for p in (SigningPurpose.jwt, SigningPurpose.receipts, SigningPurpose.certificates)]
    assert [k["kid"] for k in keys] == expected
    for key in keys:
        assert set(key) == {"kty", "crv", "x", "kid", "alg", "use"}
        assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_jwt_key_rotation_keeps_old_tokens_valid_and_lists_both_keys(vault: Vault) -> None:
    secret = add_client(vault)
    old_token = token_by_basic(vault, "svc.legal", secret).json()["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]

    new_kid = vault.runtime.signing.rotate(SigningPurpose.jwt, overlap=timedelta(hours=1)).key_id

    listed = [k["kid"] for k in vault.client.get("/.well-known/jwks.json").json()["keys"]]
    assert listed[:2] == [new_kid, old_kid]
    assert read_member(vault, old_token).status_code == 200
    new_token = token_by_basic(vault, "svc.legal", secret).json()["access_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    verifier = jwks_verifier(vault)
    assert verifier.verify(old_token).subject == verifier.verify(new_token).subject == "svc.legal"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_token_verified_against_the_jwks_fails_once_a_byte_of_its_signature_changes(vault: Vault) -> None:
    secret = add_client(vault)
    issued = token_by_basic(vault, "svc.legal", secret).json()["access_token"]
    head, body, signature = issued.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]

    with pytest.raises(InvalidTokenError):
        jwks_verifier(vault).verify(f"{head}.{body}.{flipped}")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_revoked_jti_is_refused_on_the_next_request(vault: Vault) -> None:
    secret = add_client(vault)
    issued = token_by_basic(vault, "svc.legal", secret).json()["access_token"]
    claims = jwks_verifier(vault).verify(issued)
    assert read_member(vault, issued).status_code == 200

    with write_transaction(vault.runtime.data_engine) as conn:
        assert revoke_token(conn, claims.token_id, claims.expires_at, datetime.now(UTC)) is True
        assert revoke_token(conn, claims.token_id, claims.expires_at, datetime.now(UTC)) is False

    assert read_member(vault, issued).status_code == 401


# -- the registry ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_registry_stores_only_a_keyed_digest_bound_to_the_client(vault: Vault) -> None:
    secret = add_client(vault, "svc.a")
    add_client(vault, "svc.b")
    reg = registry(vault)

    assert len(secret) == 43
    assert base64.urlsafe_b64decode(secret + "=") != b""
    with write_transaction(vault.runtime.data_engine) as conn:
        rows = dict(conn.execute(select(clients.c.client_id, clients.c.secret_digest)).all())
        assert all(len(bytes(d)) == 32 for d in rows.values())
        assert secret.encode() not in b"".join(bytes(d) for d in rows.values())
        conn.execute(clients.update().where(clients.c.client_id == "svc.b").values(secret_digest=rows["svc.a"]))
        assert reg.authenticate(conn, "svc.b", secret) is None
        found = reg.authenticate(conn, "svc.a", secret)
    assert found is not None
    assert (found.client_id, found.roles, found.clinics, found.active) == ("svc.a", (Role.dpo,), ("*",), True)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    ("client_id", "roles", "clinics", "problems"),
    [
        ("Svc", ["dpo"], [], {"client_id": "malformed"}),
        ("ab", ["dpo"], [], {"client_id": "malformed"}),
        ("svc.x", [], [], {"roles": "missing"}),
        ("svc.x", ["member"], [], {"roles": "not_a_client_role"}),
        ("svc.x", ["root"], [], {"roles": "not_a_client_role"}),
        ("svc.x", ["dpo"], ["sh 001"], {"clinics": "malformed"}),
        ("svc.x", ["dpo"], [f"c{n:04d}" for n in range(400)], {"clinics": "too_long"}),
    ],
)
def test_the_registry_refuses_bad_ids_roles_and_clinics(vault: Vault, client_id: str, roles: list[str], clinics: list[str], problems: dict[str, str]) -> None:
    with write_transaction(vault.runtime.data_engine) as conn, pytest.raises(ValidationError) as refused:
        registry(vault).add(conn, client_id, roles, clinics, T0)
    assert refused.value.problems == problems


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_registry_refuses_a_taken_id_and_unknown_or_revoked_clients(vault: Vault) -> None:
    reg = registry(vault)
    with write_transaction(vault.runtime.data_engine) as conn:
        reg.add(conn, "svc.a", ["dpo"], [], T0)
        with pytest.raises(ConflictError):
            reg.add(conn, "svc.a", ["loyalty_service"], [], T0)
        with pytest.raises(NotFoundError):
            reg.revoke(conn, "svc.none", T0)
        with pytest.raises(NotFoundError):
            reg.rotate_secret(conn, "svc.none", T0)
        first = reg.revoke(conn, "svc.a", T0 + timedelta(minutes=1))
        again = reg.revoke(conn, "svc.a", T0 + timedelta(minutes=2))
        with pytest.raises(ConflictError):
            reg.rotate_secret(conn, "svc.a", T0 + timedelta(minutes=3))
        listed = reg.list(conn)
    assert first.revoked_at == again.revoked_at == T0 + timedelta(minutes=1)
    assert [(c.client_id, c.roles, c.created_at, c.active) for c in listed] == [("svc.a", (Role.dpo,), T0, False)]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_throttle_window_passes_and_expired_buckets_are_pruned(vault: Vault) -> None:
    reg = ClientRegistry(vault.runtime.keys.root_key(ROOT_KEY), Throttle(limit=3, window=timedelta(minutes=5)))
    buckets = ["client:svc.a", "addr:192.0.2.1"]
    with write_transaction(vault.runtime.data_engine) as conn:
        reg.record_failure(conn, ["addr:192.0.2.99"], T0 - timedelta(minutes=10))
        for seconds in (0, 10, 20):
            assert reg.retry_after(conn, buckets, T0 + timedelta(seconds=seconds)) is None
            reg.record_failure(conn, buckets, T0 + timedelta(seconds=seconds))
        assert reg.retry_after(conn, buckets, T0 + timedelta(seconds=30)) == 270
        assert reg.retry_after(conn, buckets, T0 + timedelta(seconds=299, microseconds=500_000)) == 1
        assert reg.retry_after(conn, ["client:svc.b"], T0 + timedelta(seconds=30)) is None
        assert reg.retry_after(conn, buckets, T0 + timedelta(minutes=5)) is None
        reg.record_failure(conn, ["client:svc.a"], T0 + timedelta(minutes=5))
        rows = {r.bucket: (r.window_start, r.failures) for r in conn.execute(select(auth_throttle))}
    assert rows == {"client:svc.a": (T0 + timedelta(minutes=5), 1)}  # a new window; the address bucket's had passed: pruned
