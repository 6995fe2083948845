"""Benchmarks of data-subject requests: erasure end to end, and the access archive, each against a plain read in the same run.

    python -m tests.benchmarks.requests [--members N] [--treatments T --entries E]

Access archive: one member with T treatments and E card-ledger entries (200
and 1,000 by default); ``ExportBuilder.stream`` writes the whole zip (JSON,
CSV, FHIR Bundle, access log with proofs, signed manifest) and is timed
against simply reading and decrypting the same records (member, treatments,
ledger, field history, consent history) in the same run. Peak memory is
measured with ``tracemalloc`` for that member and for one with ten times the
records: a streamed archive's peak should barely move.

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
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from api.authn import DEV_ISSUER
from api.runtime import Runtime, init_vault, make_checkpointer, open_runtime
from api.settings import Settings
from api.tokens import issue_token
from audit.sequencer import Sequencer
from keys.signing import SigningPurpose
from tests.vault.factories import treatment_values
from vault import data_map as dm
from vault.consent import ConsentService, NoticeBook
from vault.consent.receipts import sign_receipt
from vault.data_requests import RequestType
from vault.data_requests.export import ExportBuilder, ExportSigning, ExportTicket
from vault.demo import seed_members
from vault.storage.engine import read_snapshot, write_transaction


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


def _grow(rt: Runtime, member_id: str, treatments: int, entries: int) -> None:
    start = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
    with write_transaction(rt.data_engine) as conn:
        for i in range(treatments):
            at = (start + timedelta(hours=7 * i)).isoformat()
            rt.treatments.add(conn, member_id, {**treatment_values(performed_at=at), "lot_no": f"L{i:06d}", "clinical_notes": f"复诊记录 {i}"})
        rt.ledger.append(conn, member_id, {"entry_type": "top_up", "amount": 10_000_000})
        for i in range(entries - 1):
            rt.ledger.append(conn, member_id, {"entry_type": "spend", "amount": 100 + i % 50})


def bench_export(root: Path, treatments: int, entries: int, repeats: int = 15) -> dict[str, float]:
    settings = Settings(_env_file=None, data_dir=root / "export")  # type: ignore[call-arg]
    init_vault(settings)
    rt = open_runtime(settings)
    try:
        small, large = seed_members(rt.data_engine, rt.keys, rt.members, count=2, seed=5, now=datetime.now(UTC)).member_ids
        _grow(rt, small, treatments, entries)
        _grow(rt, large, 10 * treatments, 10 * entries)
        Sequencer(rt.data_engine).run_until_idle()
        checkpointer = make_checkpointer(settings, rt.data_engine, rt.signing)
        checkpointer.make()
        consent = ConsentService(rt.members, NoticeBook())
        builder = ExportBuilder(rt.members, rt.treatments, rt.ledger, consent)
        receipts = rt.signing.current(SigningPurpose.receipts)
        signing = ExportSigning(
            manifest_key=rt.signing.current(SigningPurpose.certificates),
            consent_view=lambda e: {"consent_id": e.consent_id, "receipt": sign_receipt(receipts, e, issuer="bench", controller="bench")},
            issuer="bench",
            controller="bench",
        )

        def plain(member_id: str) -> int:
            with read_snapshot(rt.data_engine) as conn:
                view = rt.members.read(conn, member_id, dm.categories_of(dm.Table.members))
                held = rt.treatments.list_for_member(conn, member_id)
                ledger = rt.ledger.entries(conn, member_id)
                return len(view.values) + len(held) + len(ledger) + len(rt.members.history(conn, member_id)) + len(consent.history(conn, member_id))

        def archive(member_id: str) -> int:
            ticket = ExportTicket("0" * 32, member_id, RequestType.access)
            with read_snapshot(rt.data_engine) as conn:
                published = checkpointer.latest(conn)
                assert published is not None
                return sum(len(chunk) for chunk in builder.stream(conn, ticket, now=datetime.now(UTC), checkpoint=published, signing=signing))

        plain(small), archive(small)  # warm the key cache and the statement cache
        reads, builds = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            plain(small)
            reads.append(time.perf_counter() - start)
            start = time.perf_counter()
            size = archive(small)
            builds.append(time.perf_counter() - start)
        peaks = []
        for member_id in (small, large):
            tracemalloc.start()
            archive(member_id)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
    finally:
        rt.close()
    return {
        "archive_ms": statistics.median(builds) * 1000,
        "read_ms": statistics.median(reads) * 1000,
        "archive_kib": size / 1024,
        "peak_mib": peaks[0] / 2**20,
        "peak_10x_mib": peaks[1] / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.requests")
    parser.add_argument("--members", type=int, default=50, help="members erased one after another")
    parser.add_argument("--treatments", type=int, default=200, help="treatments of the exported member")
    parser.add_argument("--entries", type=int, default=1000, help="card-ledger entries of the exported member")
    args = parser.parse_args(argv)
    for name in [k for k in os.environ if k.startswith("VAULT_") and not k.startswith("VAULT_TEST_")]:
        del os.environ[name]
    with tempfile.TemporaryDirectory() as tmp:
        er = bench_erasure(Path(tmp), args.members)
        ex = bench_export(Path(tmp), args.treatments, args.entries)
    out = sys.stdout
    out.write("| benchmark | ours (median) | p95 | plain baseline (median) | ratio | target |\n|---|---|---|---|---|---|\n")
    out.write(
        f"| erasure end to end, {int(er['members'])} members (SQLite, HTTP in process) | {er['erase_ms']:.1f} ms | {er['erase_p95_ms']:.1f} ms "
        f"| {er['read_ms']:.1f} ms (full member read) | {er['erase_ms'] / er['read_ms']:.1f}× | < 1 s |\n"
    )
    out.write(
        f"| access archive, {args.treatments} treatments + {args.entries} ledger entries ({ex['archive_kib']:.0f} KiB zip) | {ex['archive_ms']:.1f} ms | "
        f"| {ex['read_ms']:.1f} ms (read and decrypt the same records) | {ex['archive_ms'] / ex['read_ms']:.2f}× | ≤ 3× |\n"
    )
    out.write(
        f"\npeak traced memory while building the archive: {ex['peak_mib']:.1f} MiB; "
        f"with ten times the treatments and ledger entries: {ex['peak_10x_mib']:.1f} MiB\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
