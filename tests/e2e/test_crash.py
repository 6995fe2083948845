"""H27: SIGKILL the API between its data write and its commit — afterwards both are there, or neither.

On PostgreSQL a trigger makes the audit append sleep, so a request is held
mid-transaction: its data rows written, its event being inserted, nothing
committed. The whole ``vaultctl serve`` process group is then killed with
SIGKILL. After the trigger is gone, the member is as it was, no field
history was kept, no event was journaled, and a create that died the same
way left only a wrapped key with no member, which the orphan sweep shreds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx2 as httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from api.authn import DEV_ISSUER
from api.runtime import open_runtime
from api.settings import Settings
from api.tokens import issue_token
from audit.store import audit_journal
from keys.signing import SigningPurpose
from tests.conftest import PgServer
from tests.e2e.test_workers import VAULTCTL, _env, _free_port
from vault import data_map as dm
from vault.demo import seed_members
from vault.erasure import Eraser
from vault.storage.engine import make_engine
from vault.storage.schema import field_history, members

pytestmark = pytest.mark.usefixtures("clean_env")

SLOW_AUDIT = """
CREATE FUNCTION test_slow_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(60); RETURN NEW; END $$;
CREATE TRIGGER test_slow_audit BEFORE INSERT ON audit_journal FOR EACH ROW EXECUTE FUNCTION test_slow_audit();
"""
NORMAL_AUDIT = "DROP TRIGGER test_slow_audit ON audit_journal; DROP FUNCTION test_slow_audit();"


def _owner_sql(settings: Settings, sql: str) -> None:
    engine = make_engine(settings.data_migration_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def _wait_for_sleeping_append(settings: Settings, admin_url: str) -> None:
    """Poll as the superuser (only it sees other roles' queries) until this database's request sleeps in the append."""
    database = make_url(settings.data_url).database
    engine = make_engine(admin_url)
    try:
        for _ in range(300):
            with engine.connect() as conn:
                sleeping = text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND query LIKE 'INSERT INTO audit_journal%'")
                if conn.execute(sleeping, {"db": database}).scalar_one():
                    return
            time.sleep(0.05)
    finally:
        engine.dispose()
    pytest.fail("the request never reached the audit append")


def _end_orphaned_backend(settings: Settings, admin_url: str) -> None:
    """PostgreSQL notices a dead client only at its next I/O; end the sleeping session now (its transaction aborts)."""
    engine = make_engine(admin_url)
    try:
        with engine.connect() as conn:
            ended = text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db AND query LIKE 'INSERT INTO audit_journal%'")
            conn.execute(ended, {"db": make_url(settings.data_url).database})
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["postgres"])
def test_a_request_killed_before_its_commit_leaves_neither_data_nor_event(make_settings: Callable[..., Settings], pg_server: PgServer) -> None:
    settings = make_settings()
    rt = open_runtime(settings)
    try:
        member_id = seed_members(rt.data_engine, rt.keys, rt.members, count=1, seed=9, now=datetime.now(UTC)).member_ids[0]
        with rt.data_engine.connect() as conn:
            home = conn.execute(select(members.c.home_clinic_id).where(members.c.member_id == member_id)).scalar_one()
            email = rt.members.read(conn, member_id, {dm.Category.contact}).values[dm.Category.contact]["email"]
            journal = conn.execute(select(func.count()).select_from(audit_journal)).scalar_one()
            member_count = conn.execute(select(func.count()).select_from(members)).scalar_one()
        keys_before = len(rt.keys.owners(after="", limit=1000))
        token, _ = issue_token(
            rt.signing.current(SigningPurpose.dev_jwt),
            issuer=DEV_ISSUER,
            audience=settings.audience,
            subject="fd",
            roles=["front_desk"],
            ttl=timedelta(minutes=10),
            now=datetime.now(UTC),
            clinics=[home],
        )
        headers = {"Authorization": f"Bearer {token}", "X-Purpose": "care"}

        for attempt in ("patch", "create"):
            port = _free_port()
            server = subprocess.Popen(
                [str(VAULTCTL), "serve", "--port", str(port), "--workers", "1"],
                env=_env(settings),
                cwd=settings.data_dir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            base = f"http://127.0.0.1:{port}"
            try:
                for _ in range(200):
                    try:
                        if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.1)
                _owner_sql(settings, SLOW_AUDIT)

                outcomes: list[str] = []
                sender = threading.Thread(target=_send, args=(attempt, base, member_id, headers, home), kwargs={"outcomes": outcomes})
                sender.start()
                _wait_for_sleeping_append(settings, pg_server.admin_url)
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=30)
                sender.join(timeout=30)
                assert outcomes == ["connection lost"]  # the client never got an answer
            finally:
                if server.poll() is None:
                    os.killpg(server.pid, signal.SIGKILL)
                _end_orphaned_backend(settings, pg_server.admin_url)
                _owner_sql(settings, NORMAL_AUDIT)

        with rt.data_engine.connect() as conn:
            assert rt.members.read(conn, member_id, {dm.Category.contact}).values[dm.Category.contact]["email"] == email
            assert conn.execute(select(func.count()).select_from(field_history)).scalar_one() == 0
            assert conn.execute(select(func.count()).select_from(audit_journal)).scalar_one() == journal
            assert conn.execute(select(func.count()).select_from(members)).scalar_one() == member_count
        # The create's key was committed in the key store before it died: an orphan, which the sweep shreds.
        assert len(rt.keys.owners(after="", limit=1000)) == keys_before + 1
        assert Eraser(rt.data_engine, rt.keys).sweep_orphan_keys(older_than=timedelta(0)) >= 1
        assert len(rt.keys.owners(after="", limit=1000)) == keys_before
    finally:
        rt.close()


def _send(which: str, base: str, member_id: str, headers: dict[str, str], home: str, *, outcomes: list[str]) -> None:
    try:
        if which == "patch":
            body = json.dumps({"contact": {"email": "never-committed@example.com"}})
            patch_headers = {**headers, "Content-Type": "application/merge-patch+json"}
            httpx.patch(f"{base}/v1/members/{member_id}", headers=patch_headers, content=body, timeout=60)
        else:
            httpx.post(f"{base}/v1/members", headers=headers, json=_new_member(home), timeout=60)
        outcomes.append("answered")
    except httpx.TransportError:
        outcomes.append("connection lost")


def _new_member(clinic: str) -> dict[str, object]:
    return {
        "membership": {"card_no": "MV9900000001", "tier": "gold", "status": "active", "joined_at": "2025-01-02", "home_clinic_id": clinic},
        "identity": {"full_name": "测试", "id_type": "passport", "national_id": "E12345678", "date_of_birth": "1990-01-01", "gender": "female"},
    }
