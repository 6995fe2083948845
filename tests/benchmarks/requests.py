"""Benchmark of data-subject requests: erasure end to end, against a plain member read in the same run.

    python -m tests.benchmarks.requests [--members N]

Each member of a fresh SQLite vault (demo data: treatments, a card ledger) gets
an erasure request; the dpo's ``completed`` transition over HTTP (FastAPI's
test client, in process) is timed — it settles the card balance, commits the
step and its audit event, then crypto-shreds the member (tombstone, scrub,
key shredding, WAL checkpoints). The baseline is a full member read over the
same client. Prints medians and the 95th percentile; nothing is asserted (the
target is in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from api.authn import DEV_ISSUER
from api.runtime import init_vault, open_runtime
from api.settings import Settings
from api.tokens import issue_token
from keys.signing import SigningPurpose
from vault.demo import seed_members


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def bench_erasure(root: Path, members: int) -> dict[str, float]:
    settings = Settings(_env_file=None, data_dir=root / "erasure")  # type: ignore[call-arg]
    init_vault(settings)
    rt = open_runtime(settings)
    try:
        ids = seed_members(rt.data_engine, rt.keys, rt.members, count=members, seed=3, now=datetime.now(UTC)).member_ids
        key = rt.signing.current(SigningPurpose.dev_jwt)

        def token(role: str, **claims: object) -> str:
            signed, _ = issue_token(
                key,
                issuer=DEV_ISSUER,
                audience=settings.audience,
                subject=f"bench-{role}",
                roles=[role],
                ttl=timedelta(hours=1),
                now=datetime.now(UTC),
                **claims,
            )  # type: ignore[arg-type]
            return signed

        dpo = {"Authorization": f"Bearer {token('dpo')}", "X-Purpose": "self_service"}
        reads, erasures = [], []
        with TestClient(create_app(settings, audit_pump=False)) as client:
            for member_id in ids:
                own = {"Authorization": f"Bearer {token('member', member_id=member_id)}", "X-Purpose": "self_service"}
                start = time.perf_counter()
                assert client.get(f"/v1/members/{member_id}", headers=own).status_code == 200
                reads.append(time.perf_counter() - start)
                dsr_id = client.post(f"/v1/members/{member_id}/requests", json={"type": "erasure"}, headers=own).json()["dsr_id"]
                for to in ("verified", "in_progress"):
                    client.post(f"/v1/requests/{dsr_id}/transitions", json={"to": to}, headers=dpo)
                start = time.perf_counter()
                done = client.post(f"/v1/requests/{dsr_id}/transitions", json={"to": "completed"}, headers=dpo)
                erasures.append(time.perf_counter() - start)
                assert done.status_code == 200, done.text
                assert client.get(f"/v1/members/{member_id}", headers=own).status_code == 404
    finally:
        rt.close()
    return {
        "members": float(members),
        "erase_ms": statistics.median(erasures) * 1000,
        "erase_p95_ms": _p95(erasures) * 1000,
        "read_ms": statistics.median(reads) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.requests")
    parser.add_argument("--members", type=int, default=50, help="members erased one after another")
    args = parser.parse_args(argv)
    for name in [k for k in os.environ if k.startswith("VAULT_") and not k.startswith("VAULT_TEST_")]:
        del os.environ[name]
    with tempfile.TemporaryDirectory() as tmp:
        er = bench_erasure(Path(tmp), args.members)
    out = sys.stdout
    out.write("| benchmark | ours (median) | p95 | plain baseline (median) | ratio | target |\n|---|---|---|---|---|---|\n")
    out.write(
        f"| erasure end to end, {int(er['members'])} members (SQLite, HTTP in process) | {er['erase_ms']:.1f} ms | {er['erase_p95_ms']:.1f} ms "
        f"| {er['read_ms']:.1f} ms (full member read) | {er['erase_ms'] / er['read_ms']:.1f}× | < 1 s |\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
