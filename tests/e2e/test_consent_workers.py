"""Live consent across worker processes, and the demo seeder's consent histories, end to end.

Two ``vaultctl serve`` processes (one worker each, two ports) share one
fresh vault — PostgreSQL, and SQLite through the same data directory. A
member withdraws consent through one process; the very next request for
that purpose through the other is refused with ``…/consent-required``:
the state is derived from the database on every request, no process keeps
it. The policy directory is the default one plus a rule letting the clinic
manager read contact data for ``marketing_contact``.

``vaultctl demo seed`` then runs as a command: it reports its consent
counts, and the states it reports are the ones the API serves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from api.authn import DEV_ISSUER
from api.runtime import Runtime, open_runtime
from api.settings import Settings
from api.tokens import issue_token
from audit import store
from keys.signing import SigningPurpose
from policies import DEFAULT_DIRECTORY, MODEL_FILENAME, POLICY_FILENAME
from vault.demo import seed_members
from vault.storage.schema import members

VAULTCTL = Path(sys.executable).with_name("vaultctl")
MARKETING_READ = "p, clinic_manager, clinic, member:contact, read, marketing_contact, allow\n"
CONSENT_REQUIRED = re.compile(r"^https?://\S+/consent-required$")
MEMBERS_LINE = re.compile(r"^seeded 20 members, \d+ treatments, \d+ ledger entries$")
CONSENTS_LINE = re.compile(
    r"^seeded (\d+) consent events \((\d+) app, (\d+) front_desk, (\d+) paper; (\d+) withdrawals\); "
    r"consents now (\d+) granted, (\d+) withdrawn, (\d+) stale; published marketing_contact notice version 2 \(material\)$"
)

pytestmark = pytest.mark.usefixtures("clean_env")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(settings: Settings) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(settings.data_dir), "VAULT_DATA_DIR": str(settings.data_dir), "VAULT_LOG_LEVEL": "warning"}
    if settings.policy_dir is not None:
        env["VAULT_POLICY_DIR"] = str(settings.policy_dir)
    for name in ("database_url", "migration_database_url", "keystore_url", "keystore_migration_url"):
        value = getattr(settings, name)
        if value is not None:
            env[f"VAULT_{name.upper()}"] = value.get_secret_value()
    return env


def _token(rt: Runtime, settings: Settings, *roles: str, subject: str, clinics: tuple[str, ...] = (), member_id: str | None = None) -> dict[str, str]:
    key = rt.signing.current(SigningPurpose.dev_jwt)
    token, _ = issue_token(
        key,
        issuer=DEV_ISSUER,
        audience=settings.audience,
        subject=subject,
        roles=list(roles),
        ttl=timedelta(minutes=10),
        now=datetime.now(UTC),
        clinics=clinics,
        member_id=member_id,
    )
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Pair:
    a: str
    b: str
    settings: Settings


@pytest.fixture
def two_processes(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Pair]:
    """Two ``vaultctl serve --workers 1`` processes on one vault, with the marketing_contact rule added to the default policy."""
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    shutil.copyfile(DEFAULT_DIRECTORY / MODEL_FILENAME, policy_dir / MODEL_FILENAME)
    (policy_dir / POLICY_FILENAME).write_text((DEFAULT_DIRECTORY / POLICY_FILENAME).read_text() + MARKETING_READ)
    settings = make_settings(policy_dir=policy_dir)
    ports = (_free_port(), _free_port())
    processes = [
        subprocess.Popen(
            [str(VAULTCTL), "serve", "--port", str(port), "--workers", "1"],
            env=_env(settings),
            cwd=settings.data_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for base in bases:
            for _ in range(200):
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                pytest.fail(f"the server at {base} did not start")
        yield Pair(bases[0], bases[1], settings)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def _record(base: str, member_id: str, auth: dict[str, str], body: dict[str, object]) -> dict[str, object]:
    r = httpx.post(f"{base}/v1/members/{member_id}/consents", headers={**auth, "X-Purpose": "self_service"}, json=body, timeout=30)
    assert r.status_code == 201, r.text
    answer: dict[str, object] = r.json()
    return answer


GRANT = {"purpose": "marketing_contact", "decision": "granted", "notice_version": 1, "channel": "app"}
WITHDRAW = {"purpose": "marketing_contact", "decision": "withdrawn", "channel": "app"}


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_withdrawal_through_one_process_refuses_the_very_next_request_in_the_other(two_processes: Pair) -> None:
    a, b, settings = two_processes.a, two_processes.b, two_processes.settings
    rt = open_runtime(settings)
    try:
        (member_id,) = seed_members(rt.data_engine, rt.keys, rt.members, count=1, seed=3, now=datetime.now(UTC)).member_ids
        with rt.data_engine.connect() as conn:
            home = str(conn.scalar(select(members.c.home_clinic_id).where(members.c.member_id == member_id)))
        member = _token(rt, settings, "member", subject="member-1", member_id=member_id)
        manager = {**_token(rt, settings, "clinic_manager", subject="manager-1", clinics=(home,)), "X-Purpose": "marketing_contact"}

        def read(base: str) -> httpx.Response:
            return httpx.get(f"{base}/v1/members/{member_id}", headers=manager, timeout=30)

        def refused(r: httpx.Response) -> str:
            assert r.status_code == 403, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert CONSENT_REQUIRED.match(r.json()["type"]), r.json()
            return str(r.json()["request_id"])

        refused(read(b))  # no consent yet
        granted = _record(a, member_id, member, GRANT)
        first = read(b)
        assert first.status_code == 200, first.text
        assert set(first.json()) == {"member_id", "contact", "redacted"}
        assert first.json()["redacted"] == ["demographic", "health", "identity", "membership", "preference"]

        withdrawn = _record(a, member_id, member, WITHDRAW)
        refused_id = refused(read(b))

        regranted = _record(b, member_id, member, GRANT)
        again = read(a)
        assert again.status_code == 200, again.text
        assert again.json()["contact"] == first.json()["contact"]

        states = httpx.get(f"{a}/v1/members/{member_id}/consents", headers={**member, "X-Purpose": "self_service"}, timeout=30).json()
        assert [e["consent_id"] for e in states["history"]] == [granted["consent_id"], withdrawn["consent_id"], regranted["consent_id"]]
        assert states["current"]["marketing_contact"]["state"] == "granted"
        with rt.data_engine.connect() as conn:
            leaves = [json.loads(leaf) for leaf in conn.scalars(select(store.audit_journal.c.leaf))]
        (denial,) = [e for e in leaves if e["request_id"] == refused_id]
        assert (denial["decision"], denial["reason_code"], denial["purpose"], denial["member_id"]) == (
            "deny",
            "consent_required",
            "marketing_contact",
            member_id,
        )
    finally:
        rt.close()


# -- vaultctl demo seed --------------------------------------------------------------


def test_demo_seed_prints_consent_counts_and_the_api_serves_those_states(tmp_path: Path) -> None:
    """Standard output keeps its one members line; the consent line on standard error matches what GET …/consents returns."""
    data_dir = tmp_path / "var"
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path), "VAULT_DATA_DIR": str(data_dir)}
    for args in (["init"], ["demo", "seed", "--members", "20", "--seed", "5"]):
        result = subprocess.run([str(VAULTCTL), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr
    assert MEMBERS_LINE.match(result.stdout.removesuffix("\n")), result.stdout
    assert result.stdout.count("\n") == 1
    assert "seeding consents" in result.stderr
    (line,) = [m for m in map(CONSENTS_LINE.match, result.stderr.splitlines()) if m]
    events, app, front_desk, paper, withdrawals, granted, withdrawn, stale = (int(g) for g in line.groups())
    assert events == app + front_desk + paper

    settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    rt = open_runtime(settings)
    try:
        with rt.data_engine.connect() as conn:
            member_ids = list(conn.scalars(select(members.c.member_id)))
        with TestClient(create_app(settings, audit_pump=False)) as client:
            overviews = []
            for member_id in member_ids:
                auth = {**_token(rt, settings, "member", subject="member", member_id=member_id), "X-Purpose": "self_service"}
                r = client.get(f"/v1/members/{member_id}/consents", headers=auth)
                assert r.status_code == 200, r.text
                overviews.append(r.json())
    finally:
        rt.close()
    states = Counter(s["state"] for o in overviews for s in o["current"].values())
    history = [e for o in overviews for e in o["history"]]
    assert len(member_ids) == 20
    assert (states["granted"], states["withdrawn"], states["stale"]) == (granted, withdrawn, stale)
    assert Counter(e["channel"] for e in history) == Counter({"app": app, "front_desk": front_desk, "paper": paper})
    assert sum(e["decision"] == "withdrawn" for e in history) == withdrawals
    assert all((e["evidence"] is None) == (e["channel"] == "app") for e in history)
