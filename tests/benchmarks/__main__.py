"""Run the vault-core benchmarks and print a Markdown table of medians and ratios.

    python -m tests.benchmarks [--members N] [--keys N] [--seed-members N]

Each figure is the median of several repeats, measured in the same process as
its baseline: a bare ``AESGCM`` call for the field cipher, the same read from
a plaintext table for the repository, a bare loop of AESGCM unwrap + wrap with
the raw KEKs and one batched SQLite update for KEK re-wrapping. Nothing here asserts; the targets are in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Column, MetaData, String, Table, insert, select

from api.runtime import init_vault, open_runtime
from api.settings import Settings
from keys.field_cipher import FieldCipher, FieldContext
from keys.member_keys import _member_aad
from keys.rotation import rotate_kek
from vault import data_map as dm
from vault.demo import seed_members, seed_members_parallel
from vault.storage.engine import make_engine

REPEATS = 5


def _median_rate(run: Callable[[], int], repeats: int = REPEATS) -> tuple[float, list[float]]:
    """Median of ops/second over ``repeats`` runs of ``run`` (which returns its op count)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = run()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates), rates


def bench_field_cipher(n: int = 50_000) -> dict[str, float]:
    key = AESGCM.generate_key(bit_length=256)
    cipher = FieldCipher(key, 1)
    where = FieldContext("members", "0" * 32, "phone")
    value = b"+8613800138000"
    aead = AESGCM(key)
    aad = where.aad(1)

    def ours() -> int:
        for _ in range(n):
            cipher.decrypt(cipher.encrypt(value, where), where)
        return n

    def bare() -> int:
        for _ in range(n):
            nonce = os.urandom(12)
            aead.decrypt(nonce, aead.encrypt(nonce, value, aad), aad)
        return n

    ours_rate, _ = _median_rate(ours)
    bare_rate, _ = _median_rate(bare)
    return {"ours_us": 1e6 / ours_rate, "bare_us": 1e6 / bare_rate, "ratio": bare_rate / ours_rate}


def bench_member_read(settings: Settings, members: int, reads: int = 2000) -> dict[str, float]:
    rt = open_runtime(settings)
    try:
        report = seed_members(rt.data_engine, rt.keys, rt.members, count=members, seed=11, now=datetime.now(UTC))
        ids = list(report.member_ids)
        categories = set(dm.categories_of(dm.Table.members))
        # The baseline: the same members' values in a plaintext table of the same database engine kind.
        plain_engine = make_engine(f"sqlite:///{settings.data_dir / 'plain.db'}")
        meta = MetaData()
        cols = [Column(f.name, String) for f in dm.fields_of(dm.Table.members)]
        plain = Table("plain_members", meta, Column("member_id", String, primary_key=True), *cols)
        meta.create_all(plain_engine)
        with rt.data_engine.connect() as conn:
            rows = []
            for mid in ids:
                view = rt.members.read(conn, mid, categories)
                flat = {k: str(v) for group in view.values.values() for k, v in group.items()}
                rows.append({"member_id": mid, **flat})
        with plain_engine.begin() as conn:
            conn.execute(insert(plain), rows)
        order = [ids[(i * 7919) % len(ids)] for i in range(reads)]

        def ours() -> int:
            with rt.data_engine.connect() as conn:
                for mid in order:
                    rt.members.read(conn, mid, categories)
            return reads

        def bare() -> int:
            with plain_engine.connect() as conn:
                for mid in order:
                    dict(conn.execute(select(plain).where(plain.c.member_id == mid)).one()._mapping)
            return reads

        ours()  # warm the key cache, as a running server would be
        ours_rate, _ = _median_rate(ours)
        bare_rate, _ = _median_rate(bare)
        plain_engine.dispose()
        return {"ours_us": 1e6 / ours_rate, "bare_us": 1e6 / bare_rate, "ratio": bare_rate / ours_rate}
    finally:
        rt.close()


def bench_rewrap(settings: Settings, n_keys: int) -> dict[str, float]:
    rt = open_runtime(settings)
    try:
        owners = [f"{i:032x}" for i in range(n_keys)]
        for start in range(0, n_keys, 10_000):
            rt.keys.create(owners[start : start + 10_000])
        start = time.perf_counter()
        report = rotate_kek(rt.keys, batch=10_000)
        ours = report.rewrapped / (time.perf_counter() - start)
        # Baseline: the same work as a bare loop — AESGCM unwrap + wrap with the raw KEKs, one batched update.
        new_version = rt.provider.rotate()
        keks = {k["version"]: AESGCM(base64.b64decode(k["key"])) for k in json.loads(settings.keyring_path.read_text())["keks"] if k["key"]}
        start = time.perf_counter()
        done = 0
        with rt.keys_engine.begin() as conn:
            rows = conn.exec_driver_sql("SELECT owner_id, scope, version, kek_version, wrapped FROM member_keys").all()
            params = []
            target = keks[new_version]
            for owner, scope, version, kek_version, wrapped in rows:
                aad = _member_aad(owner, scope, version)
                key = keks[kek_version].decrypt(wrapped[:12], wrapped[12:], aad)
                nonce = os.urandom(12)
                params.append((new_version, nonce + target.encrypt(nonce, key, aad), owner, scope, version))
            conn.exec_driver_sql("UPDATE member_keys SET kek_version = ?, wrapped = ? WHERE owner_id = ? AND scope = ? AND version = ?", params)
            done = len(params)
        bare = done / (time.perf_counter() - start)
        return {"ours_per_s": ours, "bare_per_s": bare, "ratio": bare / ours, "keys": float(report.rewrapped)}
    finally:
        rt.close()


def bench_seed(root: Path, members: int, workers: int) -> dict[str, float]:
    """Seeding rate, as `vaultctl demo seed` runs it (``workers`` processes: this one and spawned ones), and in one process with its CPU time a member.

    The CPU time (this process's, its commit thread's included) is what the
    rate over several processes follows on a busy machine, where wall rates are noisy.
    """
    parallel = _fresh(root, "seed-parallel")
    start = time.perf_counter()
    seed_members_parallel(functools.partial(open_runtime, parallel), count=members, seed=5, now=datetime.now(UTC), workers=workers)
    rate = members / (time.perf_counter() - start)
    rt = open_runtime(_fresh(root, "seed-single"))
    try:
        start, cpu = time.perf_counter(), time.process_time()
        seed_members(rt.data_engine, rt.keys, rt.members, count=members, seed=5, now=datetime.now(UTC))
        single, cpu_us = members / (time.perf_counter() - start), 1e6 * (time.process_time() - cpu) / members
    finally:
        rt.close()
    return {"members_per_s": rate, "single_per_s": single, "single_cpu_us": cpu_us, "members": float(members), "workers": float(workers)}


def _fresh(root: Path, name: str) -> Settings:
    settings = Settings(_env_file=None, data_dir=root / name)  # type: ignore[call-arg]
    init_vault(settings)
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks")
    parser.add_argument("--members", type=int, default=1000, help="members seeded for the read benchmark")
    parser.add_argument("--keys", type=int, default=200_000, help="member keys re-wrapped in the KEK rotation benchmark")
    parser.add_argument("--seed-members", type=int, default=5000, help="members seeded for the seeding-rate benchmark")
    args = parser.parse_args(argv)
    for name in [k for k in os.environ if k.startswith("VAULT_") and not k.startswith("VAULT_TEST_")]:
        del os.environ[name]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fc = bench_field_cipher()
        rd = bench_member_read(_fresh(root, "read"), args.members)
        rw = bench_rewrap(_fresh(root, "rewrap"), args.keys)
        sd = bench_seed(root, args.seed_members, min(4, os.cpu_count() or 1))
    out = sys.stdout
    out.write("| benchmark | ours (median) | plain baseline (median) | ratio | target |\n|---|---|---|---|---|\n")
    out.write(f"| field encrypt+decrypt | {fc['ours_us']:.2f} µs | {fc['bare_us']:.2f} µs (bare AESGCM) | {fc['ratio']:.2f}× | ≤ 2× |\n")
    out.write(f"| read one whole member (SQLite) | {rd['ours_us']:.0f} µs | {rd['bare_us']:.0f} µs (plaintext table) | {rd['ratio']:.2f}× | ≤ 2× |\n")
    out.write(
        f"| KEK re-wrap, {int(rw['keys'])} keys (local, SQLite) | {rw['ours_per_s']:,.0f} keys/s | {rw['bare_per_s']:,.0f} keys/s (bare loop) "
        f"| {rw['ratio']:.2f}× | ≥ 70,000 keys/s |\n"
    )
    out.write(
        f"| demo seed, {int(sd['members'])} members (SQLite) | {sd['members_per_s']:,.0f} members/s ({int(sd['workers'])} processes) "
        f"| {sd['single_per_s']:,.0f} members/s (one process, {sd['single_cpu_us']:.0f} µs CPU a member) | — | ≥ 2,000 members/s |\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
