"""HTTP benchmark: ``GET /v1/members/{id}`` through the whole vault against a bare read, with wrk.

    python -m tests.benchmarks.http [--members N] [--seconds S] [--connections C] [--backend sqlite|postgres]

For each backend and worker count (1, 2) the benchmark serves the app with
uvicorn (``tests.benchmarks.bench_app``: the production app plus one bare
route) and drives it with ``wrk`` on 127.0.0.1 at C connections:

* full — ``GET /v1/members/{id}``: JWT verification, policy decisions per
  category, decryption of every allowed category, and the audit event
  committed durably before the answer;
* bare — ``GET /bench/bare/{id}``: the same member's values from a plaintext
  table, nothing else, in the same server process;
* commit loop — a bare ``INSERT`` + ``COMMIT`` loop on the same database
  settings (SQLite WAL with ``synchronous=FULL``; PostgreSQL's default
  durable commit), the ceiling of any audited request.

Reported: requests/s, p50 and p99 latency (wrk's), and server CPU per
request (user + system time of the uvicorn processes, from /proc; on
PostgreSQL also the cluster's, from its postmaster's tree including the
backends that exited during the run, when ``VAULT_TEST_PG_DATA`` names it
as ``make bench``'s throwaway cluster does). The
privacy tax is bare ÷ full throughput. Nothing asserts; targets are in
docs/benchmarks.md. PostgreSQL needs ``VAULT_TEST_PG_*`` (``make bench``
starts a throwaway cluster).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2 as httpx
import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from api.authn import DEV_ISSUER
from api.runtime import init_vault, open_runtime
from api.settings import Settings
from api.tokens import issue_token
from keys.signing import SigningPurpose
from tests.benchmarks.bench_app import PLAIN_TABLE
from vault import data_map as dm
from vault.demo import seed_members

CLINIC = "sh-001"
_LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s+(\d+) requests in", re.MULTILINE)


@dataclass
class Run:
    rate: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    db_cpu_us: float | None  # the PostgreSQL server's processes (None on SQLite: it runs inside the workers)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(root: Path, backend: str) -> Settings:
    data_dir = root / backend
    if backend == "sqlite":
        return Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=data_dir,
        database_url=os.environ["VAULT_TEST_PG_URL"],
        migration_database_url=os.environ["VAULT_TEST_PG_MIGRATION_URL"],
        keystore_url=os.environ["VAULT_TEST_PG_KEYS_URL"],
        keystore_migration_url=os.environ["VAULT_TEST_PG_KEYS_MIGRATION_URL"],
    )


def _prepare(settings: Settings, members: int) -> tuple[list[str], str]:
    """A vault with ``members`` members of one clinic, their plaintext copy, and a practitioner token."""
    init_vault(settings)
    rt = open_runtime(settings)
    try:
        ids = list(seed_members(rt.data_engine, rt.keys, rt.members, count=members, seed=5, now=datetime.now(UTC)).member_ids)
        admin = make_url(settings.data_migration_url)
        owner = rt.data_engine if admin.get_backend_name() == "sqlite" else None
        from vault.storage.engine import make_engine  # noqa: PLC0415

        engine = owner or make_engine(settings.data_migration_url)
        categories = set(dm.categories_of(dm.Table.members))
        with rt.data_engine.connect() as conn:
            rows = []
            for member_id in ids:
                view = rt.members.read(conn, member_id, categories)
                body = {"member_id": member_id, **{c.value: v for c, v in view.values.items()}, "redacted": []}
                rows.append({"member_id": member_id, "body": json.dumps(body, ensure_ascii=False, default=str)})
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {PLAIN_TABLE}"))
            conn.execute(text(f"CREATE TABLE {PLAIN_TABLE} (member_id VARCHAR(32) PRIMARY KEY, body TEXT NOT NULL)"))
            if owner is None:
                conn.execute(text(f"GRANT SELECT ON {PLAIN_TABLE} TO vault_app"))
            conn.execute(text(f"INSERT INTO {PLAIN_TABLE} (member_id, body) VALUES (:member_id, :body)"), rows)
        if owner is None:
            engine.dispose()
        token, _ = issue_token(
            rt.signing.current(SigningPurpose.dev_jwt),
            issuer=DEV_ISSUER,
            audience=settings.audience,
            subject="bench-practitioner",
            roles=["practitioner"],
            ttl=timedelta(hours=1),
            now=datetime.now(UTC),
            clinics=["*"],
        )
        return ids, token
    finally:
        rt.close()


def _env(settings: Settings) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", os.defpath), "VAULT_DATA_DIR": str(settings.data_dir), "VAULT_LOG_LEVEL": "warning"}
    for name in ("database_url", "migration_database_url", "keystore_url", "keystore_migration_url"):
        value = getattr(settings, name)
        if value is not None:
            env[f"VAULT_{name.upper()}"] = value.get_secret_value()
    return env


def _cpu_seconds(root_pid: int) -> float:
    """User + system CPU of a process and its children (the uvicorn workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in [root_pid, *_children(root_pid)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _db_cpu_seconds(postmaster: int) -> float:
    """User + system CPU of a PostgreSQL cluster: the postmaster, its live processes and those it reaped meanwhile."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for _ in range(3):  # a backend may exit while the tree is walked
        try:
            children = _children(postmaster)
            break
        except OSError:
            children = []
    for pid in [postmaster, *children]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
        if pid == postmaster:  # cutime + cstime: the backends that exited (pooled connections closed) during the run
            total += (int(fields[13]) + int(fields[14])) / tick
    return total


def _postmaster(settings: Settings) -> int | None:
    """The throwaway cluster's postmaster (``VAULT_TEST_PG_DATA``, as ``make bench`` starts it), or None."""
    data = os.environ.get("VAULT_TEST_PG_DATA")
    if settings.database_url is None or not data:
        return None
    return int(Path(data, "postmaster.pid").read_text().split()[0])


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out.append(int(child))
            out.extend(_children(int(child)))
    return out


def _lua(paths: list[str], headers: dict[str, str]) -> str:
    lines = ["local paths = {" + ",".join(json.dumps(p) for p in paths) + "}", "local i = 0"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    lines += ["request = function()", "  i = i % #paths + 1", '  return wrk.format("GET", paths[i])', "end"]
    return "\n".join(lines) + "\n"


def _wrk(base: str, paths: list[str], headers: dict[str, str], *, seconds: int, connections: int, pid: int, db_pid: int | None, scratch: Path) -> Run:
    script = scratch / "paths.lua"
    script.write_text(_lua(paths, headers))
    cpu_before = _cpu_seconds(pid)
    db_before = None if db_pid is None else _db_cpu_seconds(db_pid)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), base],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    cpu = _cpu_seconds(pid) - cpu_before
    db_cpu = None if db_pid is None or db_before is None else _db_cpu_seconds(db_pid) - db_before
    if "Non-2xx" in out:
        raise RuntimeError("the benchmark saw error answers:\n" + out)
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    latency = {q: float(v) * unit[u] for q, v, u in _LATENCY.findall(out)}
    total = int(_TOTAL.search(out).group(1))  # type: ignore[union-attr]
    db_us = None if db_cpu is None else db_cpu / total * 1e6
    return Run(float(_RATE.search(out).group(1)), latency["50"], latency["99"], cpu / total * 1e6, db_us)  # type: ignore[union-attr]


def _serve(settings: Settings, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "tests.benchmarks.bench_app:app", "--port", str(port), "--workers", str(workers)]
    command += ["--no-access-log", "--log-level", "warning"]
    process = subprocess.Popen(command, env=_env(settings), cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("uvicorn did not start")


def commit_loop(settings: Settings, seconds: float = 3.0) -> float:
    """Commits/s of a bare INSERT + COMMIT loop with the vault's durability settings."""
    url = make_url(settings.data_migration_url)
    deadline = time.perf_counter() + seconds
    n = 0
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(url.database or "", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commits (n INTEGER)")
        while time.perf_counter() < deadline:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO bench_commits VALUES (?)", (n,))
            conn.execute("COMMIT")
            n += 1
        conn.close()
    else:
        with psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True) as pg:
            pg.execute("CREATE TABLE IF NOT EXISTS bench_commits (n INTEGER)")
            while time.perf_counter() < deadline:
                pg.execute("INSERT INTO bench_commits VALUES (%s)", (n,))
                n += 1
    return n / seconds


def _cpu(run: Run) -> str:
    return f"{run.cpu_us:,.0f}" if run.db_cpu_us is None else f"{run.cpu_us:,.0f} + {run.db_cpu_us:,.0f}"


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.stderr.write("wrk is not installed (apt-get install wrk; make bench does it)\n")
        return 2
    backends = args.backend or (["sqlite", "postgres"] if "VAULT_TEST_PG_URL" in os.environ else ["sqlite"])
    _out(
        "| backend | workers | full req/s | full p50 / p99 ms | full CPU µs/req (server + database) | bare req/s | bare p50 / p99 ms"
        " | bare CPU µs/req (server + database) | privacy tax | commits/s |"
    )
    _out("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for backend in backends:
            settings = _settings(root, backend)
            ids, token = _prepare(settings, args.members)
            commits = commit_loop(settings)
            for workers in (1, 2):
                process, base = _serve(settings, workers)
                try:
                    full_headers = {"Authorization": f"Bearer {token}", "X-Purpose": "care"}
                    kw = {"seconds": args.seconds, "connections": args.connections, "pid": process.pid, "db_pid": _postmaster(settings), "scratch": root}
                    full = _wrk(base, [f"/v1/members/{m}" for m in ids], full_headers, **kw)  # type: ignore[arg-type]
                    bare = _wrk(base, [f"/bench/bare/{m}" for m in ids], {}, **kw)  # type: ignore[arg-type]
                finally:
                    process.terminate()
                    process.wait(timeout=30)
                _out(
                    f"| {backend} | {workers} | {full.rate:,.0f} | {full.p50_ms:.1f} / {full.p99_ms:.1f} | {_cpu(full)} | "
                    f"{bare.rate:,.0f} | {bare.p50_ms:.1f} / {bare.p99_ms:.1f} | {_cpu(bare)} | {bare.rate / full.rate:.2f} | {commits:,.0f} |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
