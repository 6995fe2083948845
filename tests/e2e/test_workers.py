"""Two uvicorn workers on PostgreSQL: a burst of reads and writes, nothing lost, one audit tree, one policy.

``vaultctl serve --workers 2`` runs in a subprocess against a fresh
PostgreSQL vault; concurrent clients patch and read members. Afterwards
every acknowledged write is in the database, every request has exactly one
journaled event, the sequenced tree has no gap, and the stored log verifies
against a checkpoint. Then a policy reload through one worker is obeyed by
every request after it, whichever worker serves it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2 as httpx
import pytest
from sqlalchemy import func, select

from api.authn import DEV_ISSUER
from api.runtime import make_checkpointer, open_runtime
from api.settings import Settings
from api.tokens import issue_token
from audit import store
from audit.live_verify import verify_stored
from audit.sequencer import Sequencer
from keys.signing import SigningPurpose
from policies import DEFAULT_DIRECTORY, MODEL_FILENAME, POLICY_FILENAME
from vault import data_map as dm
from vault.demo import seed_members
from vault.storage.schema import members

VAULTCTL = Path(sys.executable).with_name("vaultctl")
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


@dataclass
class Server:
    base: str
    process: subprocess.Popen[bytes]


@pytest.fixture
def served(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[tuple[Server, Settings]]:
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    for name in (MODEL_FILENAME, POLICY_FILENAME):
        shutil.copyfile(DEFAULT_DIRECTORY / name, policy_dir / name)
    settings = make_settings(policy_dir=policy_dir)
    port = _free_port()
    process = subprocess.Popen(
        [str(VAULTCTL), "serve", "--port", str(port), "--workers", "2"],
        env=_env(settings),
        cwd=settings.data_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("the server did not start")
        yield Server(base, process), settings
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("backend", ["postgres"])
def test_two_workers_serve_a_burst_without_losing_a_write_and_keep_one_audit_tree(served: tuple[Server, Settings]) -> None:
    server, settings = served
    rt = open_runtime(settings)
    try:
        seeded = seed_members(rt.data_engine, rt.keys, rt.members, count=8, seed=3, now=datetime.now(UTC)).member_ids
        with rt.data_engine.connect() as conn:
            homes = dict(conn.execute(select(members.c.member_id, members.c.home_clinic_id).where(members.c.member_id.in_(seeded))).all())
            journal_before = conn.execute(select(func.count()).select_from(store.audit_journal)).scalar_one()
        key = rt.signing.current(SigningPurpose.dev_jwt)
        now = datetime.now(UTC)
        token, _ = issue_token(
            key,
            issuer=DEV_ISSUER,
            audience=settings.audience,
            subject="fd",
            roles=["front_desk"],
            ttl=timedelta(minutes=10),
            now=now,
            clinics=sorted(set(homes.values())),
        )
        auth = {"Authorization": f"Bearer {token}", "X-Purpose": "care"}

        def patch(i: int) -> tuple[str, str, int]:
            member_id = seeded[i % len(seeded)]
            email = f"burst{i}@example.com"
            headers = {**auth, "Content-Type": "application/merge-patch+json"}
            r = httpx.patch(f"{server.base}/v1/members/{member_id}", headers=headers, content=json.dumps({"contact": {"email": email}}), timeout=30)
            return member_id, email, r.status_code

        def read(i: int) -> int:
            return httpx.get(f"{server.base}/v1/members/{seeded[i % len(seeded)]}", headers=auth, timeout=30).status_code

        # One writer per member (so the last acknowledged value per member is known), readers interleaved.
        with ThreadPoolExecutor(max_workers=16) as pool:
            reads = pool.map(read, range(80))
            rounds = []
            for r in range(5):
                rounds.append(list(pool.map(patch, range(r * len(seeded), (r + 1) * len(seeded)))))
            read_statuses = list(reads)

        assert set(read_statuses) == {200}
        assert {status for batch in rounds for _, _, status in batch} == {200}
        last = {member_id: email for member_id, email, _ in rounds[-1]}
        with rt.data_engine.connect() as conn:
            for member_id, email in last.items():
                assert rt.members.read(conn, member_id, {dm.Category.contact}).values[dm.Category.contact]["email"] == email
            journal_after = conn.execute(select(func.count()).select_from(store.audit_journal)).scalar_one()
        assert journal_after - journal_before == 80 + 5 * len(seeded)

        Sequencer(rt.data_engine).run_until_idle()
        checkpointer = make_checkpointer(settings, rt.data_engine, rt.signing)
        checkpointer.make(now=datetime.now(UTC))
        with rt.data_engine.connect() as conn:
            assert store.tree_size(conn) == journal_after
            report, _ = verify_stored(conn, checkpointer, datetime.now(UTC))
        assert (report.finding, report.proven_size) == (None, journal_after)

        # A reload through the API: front desk may no longer read contact data. Every later read, on either worker, redacts it.
        assert "contact" in httpx.get(f"{server.base}/v1/members/{seeded[0]}", headers=auth, timeout=30).json()
        policy = settings.policy_dir / POLICY_FILENAME  # type: ignore[operator]
        policy.write_text(policy.read_text().replace("p, front_desk, clinic, member:contact, read, care, allow\n", ""))
        admin, _ = issue_token(key, issuer=DEV_ISSUER, audience=settings.audience, subject="admin", roles=["vault_admin"], ttl=timedelta(minutes=10), now=now)
        reload = httpx.post(f"{server.base}/v1/policies/reload", headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        assert reload.status_code == 200
        assert reload.json()["changed"] is True
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda i: httpx.get(f"{server.base}/v1/members/{seeded[i % len(seeded)]}", headers=auth, timeout=30).json(), range(40)))
        assert all("contact" not in a and a["redacted"] == ["contact", "health"] for a in answers)
        with rt.data_engine.connect() as conn:
            hashes = {
                json.loads(leaf)["policy_hash"]
                for leaf in conn.scalars(select(store.audit_journal.c.leaf).order_by(store.audit_journal.c.journal_id.desc()).limit(40))
            }
        assert hashes == {reload.json()["policy_hash"]}
    finally:
        rt.close()
