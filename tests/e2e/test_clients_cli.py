"""``vaultctl clients …``, ``vaultctl token`` and ``vaultctl revoke-token`` end to end.

The commands run as real subprocesses on a temporary data directory (see
``tests/e2e/test_cli.py``); what they did is checked through the app itself,
built in-process on the same data directory: the secret a command printed
gets a token from ``POST /v1/oauth/token``, a printed development token
reads a member.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.runtime import open_runtime
from tests.e2e.test_cli import local_settings, one_line, sqlite_dump, vaultctl
from vault import data_map as dm
from vault.demo import seed_members

pytestmark = pytest.mark.usefixtures("clean_env")

SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
LISTED = re.compile(r"^(?P<id>[a-z0-9._-]+)\t(?P<roles>\S+)\t(?P<clinics>\S+)\t(?P<created>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\t(?P<status>active|revoked \S+)$")
SHOWN_ONCE = "the secret is shown only this once: store it now\n"


@pytest.fixture(scope="module")
def initialized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``vaultctl init``; each test works on its own copy (modes kept)."""
    root = tmp_path_factory.mktemp("clients-cli")
    result = vaultctl(root, "init", VAULT_DATA_DIR=str(root / "var"))
    assert result.returncode == 0, result.stderr
    return root / "var"


@pytest.fixture
def data_dir(initialized: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "var"
    shutil.copytree(initialized, copy)
    return copy


def run(data_dir: Path, *args: str, **env: str) -> tuple[int, str, str]:
    result = vaultctl(data_dir.parent, *args, VAULT_DATA_DIR=str(data_dir), **env)
    return result.returncode, result.stdout, result.stderr


@contextmanager
def app_on(data_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(local_settings(data_dir), audit_pump=False), raise_server_exceptions=False) as client:
        yield client


def token_status(client: TestClient, client_id: str, secret: str) -> int:
    credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}", "Content-Type": "application/x-www-form-urlencoded"}
    return client.post("/v1/oauth/token", content="grant_type=client_credentials", headers=headers).status_code


def journaled_actions(data_dir: Path) -> list[str]:
    with closing(sqlite3.connect(data_dir / "vault.db")) as conn:
        return [str(a) for (a,) in conn.execute("SELECT action FROM audit_journal ORDER BY journal_id")]


def add(data_dir: Path, client_id: str = "svc.legal", *options: str) -> str:
    code, out, err = run(data_dir, "clients", "add", client_id, *(options or ("--role", "dpo", "--clinic", "*")))
    assert (code, err) == (0, SHOWN_ONCE)
    assert SECRET.fullmatch(out.removesuffix("\n"))
    return out.removesuffix("\n")


def seed_one_member(data_dir: Path) -> tuple[str, str]:
    """One demo member, seeded in-process; returns its id and home clinic."""
    rt = open_runtime(local_settings(data_dir))
    try:
        report = seed_members(rt.data_engine, rt.keys, rt.members, count=1, seed=3, now=datetime.now(UTC))
        member_id = report.member_ids[0]
        with rt.data_engine.connect() as conn:
            membership = rt.members.read(conn, member_id, {dm.Category.membership}).values[dm.Category.membership]
    finally:
        rt.close()
    return member_id, str(membership["home_clinic_id"])


# -- clients -------------------------------------------------------------------------------


def test_clients_add_prints_the_secret_once_and_list_never_shows_it(data_dir: Path) -> None:
    secret = add(data_dir)
    add(data_dir, "svc.loyalty", "--role", "loyalty_service")

    code, out, err = run(data_dir, "clients", "list")

    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "client_id\troles\tclinics\tcreated\tstatus"
    rows = [LISTED.fullmatch(line) for line in lines[1:]]
    assert [(m["id"], m["roles"], m["clinics"], m["status"]) for m in rows if m] == [
        ("svc.legal", "dpo", "*", "active"),
        ("svc.loyalty", "loyalty_service", "-", "active"),
    ]
    assert secret not in out
    assert not any(secret in line for line in sqlite_dump(data_dir / "vault.db"))
    assert journaled_actions(data_dir) == ["add_client", "add_client"]
    with app_on(data_dir) as client:
        assert token_status(client, "svc.legal", secret) == 200


def test_clients_revoke_cuts_the_client_off(data_dir: Path) -> None:
    secret = add(data_dir)
    with app_on(data_dir) as client:
        issued = client.post(
            "/v1/oauth/token",
            content=f"grant_type=client_credentials&client_id=svc.legal&client_secret={secret}",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {issued}", "X-Purpose": "legal_claims"}
        assert client.get(f"/v1/members/{'0' * 32}", headers=auth).status_code == 404

        code, out, err = run(data_dir, "clients", "revoke", "svc.legal")

        assert (code, err) == (0, "")
        assert re.fullmatch(r"revoked client svc\.legal at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n", out)
        assert client.get(f"/v1/members/{'0' * 32}", headers=auth).status_code == 401
        assert token_status(client, "svc.legal", secret) == 401
    listed = run(data_dir, "clients", "list")[1].splitlines()[1]
    match = LISTED.fullmatch(listed)
    assert match is not None
    assert match["status"].startswith("revoked ")
    assert journaled_actions(data_dir)[-1] == "revoke_client"


def test_clients_rotate_secret_prints_a_new_secret_and_retires_the_old_one(data_dir: Path) -> None:
    old = add(data_dir)

    code, out, err = run(data_dir, "clients", "rotate-secret", "svc.legal")

    assert (code, err) == (0, SHOWN_ONCE)
    new = out.removesuffix("\n")
    assert SECRET.fullmatch(new)
    assert new != old
    with app_on(data_dir) as client:
        assert token_status(client, "svc.legal", old) == 401
        assert token_status(client, "svc.legal", new) == 200
    assert journaled_actions(data_dir) == ["add_client", "rotate_client_secret", "issue_token"]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["clients", "add", "svc.legal", "--role", "dpo"], "vaultctl: client svc.legal already exists"),
        (["clients", "add", "svc.new", "--role", "member"], "vaultctl: invalid fields: roles (not_a_client_role)"),
        (["clients", "add", "svc.new"], "vaultctl: invalid fields: roles (missing)"),
        (["clients", "add", "Not An Id", "--role", "dpo"], "vaultctl: invalid fields: client_id (malformed)"),
        (["clients", "revoke", "svc.nobody"], "vaultctl: no such client"),
        (["clients", "rotate-secret", "svc.nobody"], "vaultctl: no such client"),
    ],
    ids=["duplicate", "member-role", "no-role", "bad-id", "revoke-unknown", "rotate-unknown"],
)
def test_client_commands_fail_with_one_line_and_change_nothing(data_dir: Path, args: list[str], reason: str) -> None:
    add(data_dir)
    before = sqlite_dump(data_dir / "vault.db")

    code, out, err = run(data_dir, *args)

    assert (code, out) == (1, "")
    assert one_line(err) == reason
    assert sqlite_dump(data_dir / "vault.db") == before


def test_a_revoked_clients_secret_cannot_be_rotated(data_dir: Path) -> None:
    add(data_dir)
    assert run(data_dir, "clients", "revoke", "svc.legal")[0] == 0

    code, out, err = run(data_dir, "clients", "rotate-secret", "svc.legal")

    assert (code, out) == (1, "")
    assert one_line(err) == "vaultctl: client svc.legal is revoked"


# -- token and revoke-token --------------------------------------------------------------------


def test_token_prints_one_development_jwt_that_the_app_accepts(data_dir: Path) -> None:
    member_id, home = seed_one_member(data_dir)

    code, out, err = run(data_dir, "token", "--role", "practitioner", "--sub", "alice", "--clinic", "sh-001", "--clinic", home, "--ttl", "600")

    assert (code, err) == (0, "")
    assert out.count("\n") == 1
    token = out.removesuffix("\n")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["iss"], claims["sub"], claims["roles"], claims["exp"] - claims["iat"]) == ("member-vault-dev", "alice", ["practitioner"], 600)
    assert sorted(claims["clinics"]) == sorted({"sh-001", home})
    with app_on(data_dir) as client:
        read = client.get(f"/v1/members/{member_id}", headers={"Authorization": f"Bearer {token}", "X-Purpose": "care"})
    assert read.status_code == 200
    assert read.json()["member_id"] == member_id


def test_token_is_refused_in_production_with_one_line_and_makes_no_key(data_dir: Path) -> None:
    before = sqlite_dump(data_dir / "keys" / "keystore.db")

    code, out, err = run(data_dir, "token", "--role", "practitioner", "--sub", "alice", "--clinic", "sh-001", VAULT_ENV="production")

    assert code != 0
    assert out == ""
    assert one_line(err) == "vaultctl: the development issuer is refused in production mode"
    assert sqlite_dump(data_dir / "keys" / "keystore.db") == before


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--role", "root", "--sub", "alice"], "vaultctl: --role must be one of: "),
        (["--role", "dpo", "--sub", "has space"], "vaultctl: claim 'sub' is malformed"),
        (["--role", "member", "--sub", "m", "--member-id", "not-hex"], "vaultctl: claim 'member_id' is malformed"),
    ],
    ids=["unknown-role", "bad-subject", "bad-member-id"],
)
def test_token_with_bad_claims_fails_with_one_line(data_dir: Path, args: list[str], reason: str) -> None:
    code, out, err = run(data_dir, "token", *args)

    assert (code, out) == (1, "")
    assert one_line(err).startswith(reason)


def test_revoke_token_refuses_that_token_from_the_next_request_on(data_dir: Path) -> None:
    token = run(data_dir, "token", "--role", "dpo", "--sub", "bob", "--clinic", "*")[1].removesuffix("\n")
    claims = jwt.decode(token, options={"verify_signature": False})
    expires = datetime.fromtimestamp(claims["exp"], UTC).isoformat().replace("+00:00", "Z")
    auth = {"Authorization": f"Bearer {token}", "X-Purpose": "legal_claims"}
    with app_on(data_dir) as client:
        assert client.get(f"/v1/members/{'0' * 32}", headers=auth).status_code == 404

        first = run(data_dir, "revoke-token", claims["jti"], "--expires-at", expires)
        again = run(data_dir, "revoke-token", claims["jti"], "--expires-at", expires)

        assert first == (0, "revoked the token\n", "")
        assert again == (0, "the token was already revoked\n", "")
        assert client.get(f"/v1/members/{'0' * 32}", headers=auth).status_code == 401
    assert journaled_actions(data_dir)[-1] == "revoke_token"
    assert json.loads(_last_leaf(data_dir))["resource_id"] == claims["jti"]


@pytest.mark.parametrize("expires_at", ["tomorrow", "2026-11-22T16:00:00"], ids=["not-a-time", "no-zone"])
def test_revoke_token_needs_an_rfc3339_time_with_a_zone(data_dir: Path, expires_at: str) -> None:
    code, out, err = run(data_dir, "revoke-token", "some-jti", "--expires-at", expires_at)

    assert (code, out) == (1, "")
    assert one_line(err) == "vaultctl: --expires-at must be an RFC 3339 time with a zone, e.g. 2026-11-22T16:00:00Z"


def _last_leaf(data_dir: Path) -> str:
    with closing(sqlite3.connect(data_dir / "vault.db")) as conn:
        (leaf,) = conn.execute("SELECT leaf FROM audit_journal ORDER BY journal_id DESC LIMIT 1").fetchone()
    return bytes(leaf).decode("utf-8")
