"""Policy reload: the next request of every worker is decided by the new version; refused files change nothing (H13, ASVS 8.3.2)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from api.authz import PolicyStore, vocabulary
from api.settings import Settings
from policies import DEFAULT_DIRECTORY, MODEL_FILENAME, POLICY_FILENAME, PolicySet
from tests.api.conftest import Vault
from vault.storage.schema import policy_versions

FRONT_DESK_AUDIT = "p, front_desk, *, audit:events, read, *, allow\n"


@dataclass
class Workers:
    """Two app instances (two workers) on one vault whose policy directory is a copy the test edits."""

    one: TestClient
    two: TestClient
    policy_dir: Path

    def add_line(self, line: str) -> None:
        path = self.policy_dir / POLICY_FILENAME
        path.write_text(path.read_text() + line)

    def policy_hash(self) -> str:
        return PolicySet.from_directory(self.policy_dir, vocabulary()).hash


@pytest.fixture
def workers(vault: Vault, make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Workers]:
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    for name in (MODEL_FILENAME, POLICY_FILENAME):
        shutil.copyfile(DEFAULT_DIRECTORY / name, policy_dir / name)
    with vault.runtime.data_engine.begin() as conn:
        PolicyStore(DEFAULT_DIRECTORY).active(conn)  # version 1: the packaged files, before the test edits its copy
    settings = make_settings(policy_dir=policy_dir)
    with (
        TestClient(create_app(settings, audit_pump=False), raise_server_exceptions=False) as one,
        TestClient(create_app(settings, audit_pump=False), raise_server_exceptions=False) as two,
    ):
        yield Workers(one, two, policy_dir)


def active_version(vault: Vault) -> int:
    with vault.runtime.data_engine.connect() as conn:
        return int(conn.execute(select(func.max(policy_versions.c.version))).scalar_one())


def reload(vault: Vault, client: TestClient, *roles: str) -> tuple[int, dict[str, object]]:
    r = client.post("/v1/policies/reload", headers=vault.headers(vault.token(*roles or ("vault_admin",), subject="admin-1")))
    return r.status_code, r.json()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_after_a_reload_every_worker_decides_by_the_new_version(vault: Vault, workers: Workers) -> None:
    desk = vault.headers(vault.token("front_desk", clinics=["sh-001"]))
    assert workers.one.get("/v1/audit/events", headers=desk).status_code == 403
    assert workers.two.get("/v1/audit/events", headers=desk).status_code == 403
    old_hash = PolicySet.from_directory(DEFAULT_DIRECTORY, vocabulary()).hash
    workers.add_line(FRONT_DESK_AUDIT)
    new_hash = workers.policy_hash()
    before = vault.journal_size()

    status, body = reload(vault, workers.one)

    assert (status, body) == (200, {"version": 2, "policy_hash": new_hash, "changed": True})
    assert vault.journal_size() == before + 1
    event = json.loads(vault.journal_events()[-1])
    assert (event["action"], event["resource_type"], event["decision"], event["outcome"], event["policy_hash"]) == ("reload", "policy", "allow", "ok", old_hash)
    assert workers.one.get("/v1/audit/events", headers=desk).status_code == 200
    assert workers.two.get("/v1/audit/events", headers=desk).status_code == 200
    assert vault.client.get("/v1/audit/events", headers=desk).status_code == 200  # a worker started with the packaged directory
    later = [json.loads(e) for e in vault.journal_events()[before + 1 :]]
    assert [(e["decision"], e["policy_hash"]) for e in later] == [("allow", new_hash)] * 3
    with vault.runtime.data_engine.connect() as conn:
        row = conn.execute(select(policy_versions).where(policy_versions.c.version == 2)).one()
    assert (row.policy_hash, row.activated_by) == (new_hash, "admin-1")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_reloading_unchanged_files_keeps_the_version(vault: Vault, workers: Workers) -> None:
    hash_ = PolicySet.from_directory(DEFAULT_DIRECTORY, vocabulary()).hash
    status, body = reload(vault, workers.one)
    assert (status, body) == (200, {"version": 1, "policy_hash": hash_, "changed": False})
    assert active_version(vault) == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_an_invalid_policy_is_422_naming_the_line_and_the_active_version_is_unchanged(vault: Vault, workers: Workers) -> None:
    workers.add_line(FRONT_DESK_AUDIT)
    assert reload(vault, workers.one)[0] == 200
    lines = (workers.policy_dir / POLICY_FILENAME).read_text().count("\n")
    workers.add_line("p, nobody, *, audit:events, read, *, allow\n")
    before = vault.journal_size()

    status, body = reload(vault, workers.two)

    assert status == 422
    assert body["detail"] == f"the policy files are refused: line {lines + 1}, role: unknown value 'nobody'"
    assert body["errors"] == {"policy": "invalid"}
    assert active_version(vault) == 2
    assert vault.journal_size() == before + 1
    event = json.loads(vault.journal_events()[-1])
    assert (event["action"], event["decision"], event["outcome"]) == ("reload", "allow", "invalid")
    desk = vault.headers(vault.token("front_desk", clinics=["sh-001"]))
    assert workers.one.get("/v1/audit/events", headers=desk).status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_missing_policy_file_is_422_and_changes_nothing(vault: Vault, workers: Workers) -> None:
    (workers.policy_dir / MODEL_FILENAME).unlink()
    status, body = reload(vault, workers.one)
    assert (status, body["detail"]) == (422, "the policy files are refused: model.conf: cannot be read (FileNotFoundError)")
    assert active_version(vault) == 1


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("role", ["dpo", "compliance_officer", "front_desk", "loyalty_service"])
def test_only_a_vault_admin_may_reload(vault: Vault, workers: Workers, role: str) -> None:
    workers.add_line(FRONT_DESK_AUDIT)
    before = vault.journal_size()
    status, body = reload(vault, workers.one, role)
    assert (status, body["title"]) == (403, "Forbidden")
    assert active_version(vault) == 1
    assert vault.journal_size() == before + 1
    assert json.loads(vault.journal_events()[-1])["decision"] == "deny"
