"""Liveness and readiness over real HTTP (FastAPI's test client), failing closed."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.runtime import make_checkpointer, open_runtime
from api.settings import Settings
from audit.event import Actor, AuditEvent, Decision
from audit.sequencer import Sequencer
from audit.store import AuditJournal
from vault.storage.engine import write_transaction


def _get(settings: Settings, path: str) -> tuple[int, str, dict[str, object]]:
    with TestClient(create_app(settings)) as client:
        response = client.get(path)
    return response.status_code, response.headers["content-type"], json.loads(response.text)


def test_healthz_and_readyz_on_a_migrated_vault(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    assert _get(settings, "/healthz") == (200, "application/json", {"status": "ok"})
    assert _get(settings, "/readyz") == (
        200,
        "application/json",
        {"status": "ready", "checks": {"database": "ok", "keystore": "ok", "key_provider": "ok", "audit_store": "ok", "audit_checkpoint": "ok"}},
    )


@pytest.mark.parametrize("backend", ["sqlite"])
def test_readyz_is_503_problem_json_on_an_unmigrated_database(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    settings = make_settings(database_url=f"sqlite:///{empty}")

    status, content_type, body = _get(settings, "/readyz")

    assert (status, content_type) == (503, "application/problem+json")
    assert body["checks"] == {"database": "not_ready", "keystore": "ok", "key_provider": "ok", "audit_store": "not_ready", "audit_checkpoint": "not_ready"}
    assert body["detail"] == "not ready: audit_checkpoint, audit_store, database"
    assert isinstance(body["request_id"], str)
    assert _get(settings, "/healthz")[0] == 200


@pytest.mark.parametrize("backend", ["sqlite"])
def test_readyz_is_503_when_the_keyring_is_readable_by_others(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    settings.keyring_path.chmod(0o644)

    status, _, body = _get(settings, "/readyz")

    assert status == 503
    assert body["checks"] == {"database": "ok", "keystore": "ok", "key_provider": "not_ready", "audit_store": "ok", "audit_checkpoint": "not_ready"}
    assert set(body) == {"type", "title", "status", "detail", "request_id", "checks"}
    assert str(settings.data_dir) not in json.dumps(body)  # no paths or provider internals


@pytest.mark.parametrize("backend", ["sqlite"])
def test_readyz_recovers_once_the_keyring_is_private_again(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    settings.keyring_path.chmod(0o644)
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 503
        settings.keyring_path.chmod(0o600)
        assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"])
def test_docs_and_openapi_are_off_in_production(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(env="production")
    with TestClient(create_app(settings)) as client:
        assert client.get("/docs").status_code == 404
        assert client.get("/openapi.json").status_code == 404
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"])
def test_readyz_is_503_when_the_published_checkpoint_is_not_ours(make_settings: Callable[..., Settings]) -> None:
    """A last-checkpoint the stored tree cannot vouch for (here: not signed by our audit key) stops the vault signing on."""
    settings = make_settings()
    state = settings.data_dir / "audit" / "last-checkpoint"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text("member-vault/audit\n10\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n— member-vault/audit AAAAAA==\n")

    status, _, body = _get(settings, "/readyz")

    assert status == 503
    assert body["checks"] == {"database": "ok", "keystore": "ok", "key_provider": "ok", "audit_store": "ok", "audit_checkpoint": "not_ready"}
    assert str(body["detail"]).startswith("not ready: audit_checkpoint (")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_audit_pump_signs_checkpoints_at_the_configured_interval(make_settings: Callable[..., Settings]) -> None:
    """With VAULT_AUDIT_CHECKPOINT_EVERY_EVENTS=3 a checkpoint is due after three events, not after two."""
    settings = make_settings(audit_checkpoint_every_events=3, audit_checkpoint_every_seconds=86_400)
    rt = open_runtime(settings)
    try:
        checkpointer = make_checkpointer(settings, rt.data_engine, rt.signing)
        checkpointer.make()
        event = AuditEvent(
            time="2026-11-22T10:00:00Z",
            request_id="r1",
            actor=Actor("s", ("dpo",), None, None),
            action="read",
            resource_type="member",
            resource_id=None,
            member_id=None,
            fields=(),
            purpose=None,
            decision=Decision.ALLOW,
            reason_code="allowed",
            policy_hash="sha256:0",
            outcome="ok",
        )
        due = []
        for _ in range(3):
            with write_transaction(rt.data_engine) as conn:
                AuditJournal().append(conn, event, now=datetime.now(UTC))
            Sequencer(rt.data_engine).run_until_idle()
            due.append(checkpointer.due())
        assert due == [False, False, True]
    finally:
        rt.close()
