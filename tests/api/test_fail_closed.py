"""Fail closed: no data without its audit event, no write without it, no hang when a database is gone (H22, H30).

The audit append is made to fail for real: on SQLite a trigger refuses
inserts into the journal (the owner can add one); on PostgreSQL the
application role loses INSERT on it. A read is then 503 with no data, a
rectification is 503 and leaves the member as it was; once the journal
accepts events again, both work.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from api.settings import Settings
from tests.api.conftest import Vault
from vault import data_map as dm
from vault.storage.engine import make_engine

BROKEN_AUDIT = "the vault cannot serve this request now"


@contextmanager
def _audit_refuses_inserts(vault: Vault) -> Iterator[None]:
    migration = make_engine(vault.settings.data_migration_url)
    sqlite = migration.dialect.name == "sqlite"
    on = (
        "CREATE TRIGGER test_no_audit BEFORE INSERT ON audit_journal BEGIN SELECT RAISE(ABORT, 'no audit'); END"
        if sqlite
        else "REVOKE INSERT ON audit_journal FROM vault_app"
    )
    off = "DROP TRIGGER test_no_audit" if sqlite else "GRANT INSERT ON audit_journal TO vault_app"
    try:
        with migration.begin() as conn:
            conn.execute(text(on))
        yield
    finally:
        with migration.begin() as conn:
            conn.execute(text(off))
        migration.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_read_whose_event_cannot_be_written_returns_no_data(vault: Vault) -> None:
    m = vault.members[0]
    headers = vault.headers(vault.token("practitioner", clinics=[m.home_clinic_id]), "care")
    before = vault.journal_size()

    with _audit_refuses_inserts(vault):
        refused = vault.client.get(f"/v1/members/{m.member_id}", headers=headers)
        ready = vault.client.get("/readyz")

    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert set(refused.json()) == {"type", "title", "status", "detail", "request_id"}
    assert refused.json()["detail"] == BROKEN_AUDIT
    assert m.card_no not in refused.text
    assert vault.journal_size() == before
    if vault.runtime.data_engine.dialect.name == "postgresql":  # a revoked grant is visible to the probe; a refusing trigger is not
        assert (ready.status_code, ready.json()["checks"]["audit_store"]) == (503, "not_ready")
    assert vault.client.get(f"/v1/members/{m.member_id}", headers=headers).status_code == 200
    assert vault.client.get("/readyz").status_code == 200


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_rectification_whose_event_cannot_be_written_changes_nothing(vault: Vault) -> None:
    m = vault.members[0]
    headers = vault.headers(vault.token("front_desk", clinics=[m.home_clinic_id]), "care", **{"Content-Type": "application/merge-patch+json"})
    patch = json.dumps({"contact": {"email": "rectified@example.com"}})
    with vault.runtime.data_engine.connect() as conn:
        previous = vault.runtime.members.read(conn, m.member_id, {dm.Category.contact}).values[dm.Category.contact]["email"]

    with _audit_refuses_inserts(vault):
        refused = vault.client.patch(f"/v1/members/{m.member_id}", headers=headers, content=patch)

    assert refused.status_code == 503
    with vault.runtime.data_engine.connect() as conn:
        assert vault.runtime.members.read(conn, m.member_id, {dm.Category.contact}).values[dm.Category.contact]["email"] == previous
        assert vault.runtime.members.history(conn, m.member_id) == []
    assert vault.client.patch(f"/v1/members/{m.member_id}", headers=headers, content=patch).status_code == 200


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("backend", ["sqlite"])
def test_with_the_database_down_the_app_is_live_not_ready_and_data_routes_answer_503(make_settings: Callable[..., Settings]) -> None:
    down = f"postgresql+psycopg://vault_app@127.0.0.1:{_closed_port()}/vault"
    settings = make_settings(database_url=down)
    with TestClient(create_app(settings, audit_pump=False), raise_server_exceptions=False) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        r = client.get(f"/v1/members/{'0' * 32}", headers={"Authorization": "Bearer x.y.z", "X-Purpose": "care"})
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == BROKEN_AUDIT
