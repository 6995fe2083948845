"""The extract benchmark of issue 7: ``vaultctl extract run`` over a seeded vault, against a hand-written loop in the same run.

    python -m tests.benchmarks.extracts [--members N ...] [--repeats R] [--cache DIR] [--workers W] [--revision REV]

For each size (default 100,000 and 1,000,000 members) a demo vault is seeded
once — members through ``seed_members_parallel``, consent histories through
``seed_consents`` (in one process, as the command line does), the two demo
consumers — and kept under ``--cache`` (default ``$VAULT_BENCH_CACHE`` or
``~/.cache/member-vault-bench``; a million members take about 10 GB) in a
directory named by the size, the seed and a hash of the seeder's source, so a
later run reuses it (``make bench`` on a fresh machine seeds it first). The
runs read what the page cache holds of it: on a machine that reclaims the
page cache proactively (DAMON) a run reads it from the disk again, and a cache
on a ``tmpfs`` (``--cache /dev/shm/...``, memory permitting) measures the
vault in memory. ``--revision``
measures the vaults an earlier seeder left there (a change to the seeder's
source would otherwise seed anew); migrations added since are applied to
them, as ``vaultctl init`` would.

Then ``--repeats`` rounds, each running the three variants one after another
(round-robin: this machine's speed drifts by a third over minutes, so runs
taken side by side compare better than blocks taken minutes apart); medians
reported:

* **ours**: ``vaultctl extract run --consumer loyalty-app --format parquet``
  as a child process; wall time, and its peak memory: the largest sum of the
  resident sets of the process and its worker processes, polled from
  ``/proc`` every 50 ms (also ``getrusage(RUSAGE_CHILDREN)``, the largest
  single process);
* **plain baseline, one process and two**: a hand-written loop over the same
  vault: read the member rows, unwrap each member's data key with the KEK,
  decrypt eight fields, HMAC the pseudonym and generalize; no consent filter,
  no ledger or treatments, no anonymity plan, no output file. It reads the member rows and the key store with ``sqlite3``
  (both in member id order, merged), unwraps with the keyring's KEK through
  ``AESGCM`` and decrypts the eight member fields a profile can read
  (gender, date of birth, city, education, income band, preferred channel,
  interest tags, preferred categories). Two processes split the members by
  id range.

``--choose-rows`` (default 200,000) also times ``choose`` alone over a
histogram of random rows of all eight quasi-identifiers (near-unique tuples):
the search's worst case, not reached by the demo consumers.

Figures: members per second (the vault's members over wall time, for ours and
the baselines alike) and rows released per second. "ours ÷ this" is the
median, over the rounds, of the baseline's wall time over ours in the same
round (above 1: ours is faster). The last lines scale issue 7's target by its
own yardstick: the plain loop did 106,000 members/s in two processes where
the issue was written, so 50,000/s there corresponds to 0.47 × the plain loop
here (an estimate for comparing machines, not a measurement). Each ``vaultctl`` run adds
an extract to the cached vault (the first fixes the epoch's generalization, so
later runs evaluate that one node instead of searching). Nothing is asserted;
targets are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import hmac
import json
import multiprocessing
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from api.runtime import init_vault, open_runtime
from api.settings import Settings
from keys.derive import derive_key
from keys.field_cipher import FieldContext
from keys.member_keys import _member_aad
from vault import data_map as dm
from vault import value_sets as vs
from vault.clients import ROOT_KEY as CLIENT_SECRETS_ROOT
from vault.clients import ClientRegistry
from vault.codec import decode
from vault.consent import ConsentService, NoticeBook
from vault.demo import seed_consents, seed_consumers, seed_members_parallel
from vault.extracts import hierarchies as hi
from vault.extracts._gazetteer import CITY_PROVINCE
from vault.extracts.anonymity import Histogram, choose
from vault.extracts.consumers import ConsumerRegistry
from vault.extracts.pseudonyms import pseudonym_label
from vault.storage.engine import write_transaction

SEED = 7
CONSUMER = "loyalty-app"
# Issue 7's target, and the yardstick it gave for scale: the plain loop did 106,000 members/s in two processes where the
# issue was written, so the target is that loop's speed × 50,000 / 106,000 on whatever machine runs the benchmark.
TARGET, YARDSTICK, YARDSTICK_PROCESSES = 50_000, 106_000, 2
TARGET_SHARE = TARGET / YARDSTICK
_SEEDER_PACKAGE = "vault/demo"  # every module of it: the seeder is split over several


def _settings(data_dir: Path) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]


def seeder_revision() -> str:
    """A short hash of the seeder's source: a cached vault is reused only while the seeder is unchanged."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for path in sorted((root / _SEEDER_PACKAGE).glob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def seeded_vault(cache: Path, members: int, *, workers: int, log: bool = True, revision: str | None = None) -> Path:
    """A demo vault of ``members`` members under ``cache``, seeded now unless a complete one is there.

    ``revision``: use the vault an earlier seeder (that revision of its source) left in ``cache``, never seed one.
    """
    data_dir = cache / f"extract-{members}-seed{SEED}-{revision or seeder_revision()}"
    if (data_dir / "SEEDED").exists():
        init_vault(_settings(data_dir))  # migrations added since it was seeded
        return data_dir
    if revision is not None:
        raise SystemExit(f"no vault of {members} members seeded by revision {revision} in {cache}")
    shutil.rmtree(data_dir, ignore_errors=True)
    settings = _settings(data_dir)
    init_vault(settings)
    now = datetime.now(UTC)
    start = time.perf_counter()
    report = seed_members_parallel(functools.partial(open_runtime, settings), count=members, seed=SEED, now=now, workers=workers)
    seeded = time.perf_counter()
    _seed_consents(settings, report.member_ids, now)  # one process, as the command line does: its write transactions are long
    rt = open_runtime(settings)
    try:
        with write_transaction(rt.data_engine) as conn:
            seed_consumers(conn, ClientRegistry(rt.keys.root_key(CLIENT_SECRETS_ROOT)), ConsumerRegistry(), now=now)
    finally:
        rt.close()
    (data_dir / "SEEDED").write_text(f"{members} members, seed {SEED}, seeded {now.isoformat()}\n")
    if log:
        done = time.perf_counter()
        sys.stderr.write(f"seeded {members:,} members in {seeded - start:.0f} s ({members / (seeded - start):,.0f}/s), consents in {done - seeded:.0f} s\n")
    return data_dir


def _seed_consents(settings: Settings, member_ids: tuple[str, ...], now: datetime) -> int:
    rt = open_runtime(settings)
    try:
        consent = ConsentService(rt.members, NoticeBook(), grace=timedelta(days=settings.consent_grace_days))
        return seed_consents(rt.data_engine, consent, rt.members, member_ids, seed=SEED, now=now).events
    finally:
        rt.close()


# -- ours: vaultctl extract run, its wall time and peak memory ------------------------------------------------


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and its descendants, from /proc (children through each thread's ``children`` list)."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm", "rb") as statm:
                total += int(statm.read().split()[1]) * resource.getpagesize()
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children", "rb") as children:
                    todo.extend(int(child) for child in children.read().split())
        except (OSError, ValueError):
            continue  # the process ended meanwhile
    return total


def run_ours(data_dir: Path, scratch: Path, vaultctl: Path) -> dict[str, float]:
    out = scratch / f"extract-{time.monotonic_ns()}.parquet"
    env = {**os.environ, "VAULT_DATA_DIR": str(data_dir), "VAULT_LOG_LEVEL": "warning"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    child = subprocess.Popen(
        [str(vaultctl), "extract", "run", "--consumer", CONSUMER, "--format", "parquet", "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    peak = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, _tree_rss(child.pid))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    _, err = child.communicate()
    wall = time.perf_counter() - start
    done.set()
    poller.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if child.returncode != 0:
        raise RuntimeError(f"vaultctl extract run failed ({child.returncode}): {err.decode(errors='replace')[-2000:]}")
    rows = int(err.decode().rsplit(" rows; ", 1)[0].rsplit(None, 1)[-1])
    out.unlink()
    out.with_name(out.name + ".manifest.jws").unlink()
    return {
        "wall": wall,
        "rows": float(rows),
        "peak_mib": peak / 2**20,
        "largest_process_mib": after.ru_maxrss / 1024,
        "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    }


# -- the plain baseline: a hand-written loop over the same vault ---------------------------------------------

_BASELINE_FIELDS = ("gender", "date_of_birth", "city", "education", "income_band", "preferred_channel", "interest_tags", "preferred_categories")


def _rows(conn: sqlite3.Connection, sql: str, key: str, bounds: tuple[str, str | None]) -> Iterator[tuple[Any, ...]]:
    """``sql`` (ending in a ``WHERE`` clause) for ``key`` in ``(lo, hi]``, in ``key`` order."""
    lo, hi = bounds
    if hi is None:
        cursor = conn.execute(f"{sql} AND {key} > ? ORDER BY {key}", (lo,))
    else:
        cursor = conn.execute(f"{sql} AND {key} > ? AND {key} <= ? ORDER BY {key}", (lo, hi))
    while batch := cursor.fetchmany(2000):
        yield from batch


def _baseline_range(data_dir: Path, bounds: tuple[str, str | None]) -> int:
    """Unwrap each member's key, decrypt eight fields, HMAC the pseudonym, generalize; the members done."""
    keyring = json.loads((data_dir / "keys" / "keyring.json").read_text())
    keks = {k["version"]: AESGCM(base64.b64decode(k["key"])) for k in keyring["keks"] if k["key"]}
    data = sqlite3.connect(f"file:{data_dir / 'vault.db'}?mode=ro", uri=True)
    store = sqlite3.connect(f"file:{data_dir / 'keys' / 'keystore.db'}?mode=ro", uri=True)
    root = store.execute("SELECT kek_version, wrapped, version FROM root_keys WHERE name = 'pseudonym' ORDER BY version DESC LIMIT 1").fetchone()
    pseudonym_key = derive_key(keks[root[0]].decrypt(root[1][:12], root[1][12:], _root_aad("pseudonym", root[2])), pseudonym_label(CONSUMER, 1))
    fields = [dm.fields_by_name(dm.Table.members)[name] for name in _BASELINE_FIELDS]
    columns = ", ".join(_BASELINE_FIELDS)
    members = _rows(data, f"SELECT member_id, key_version, {columns} FROM members WHERE erased_at IS NULL", "member_id", bounds)
    keys = _rows(store, "SELECT owner_id, version, kek_version, wrapped FROM member_keys WHERE scope = 'data'", "owner_id", bounds)
    as_of = date.today()
    done = 0
    key_row = next(keys, None)
    for member_id, key_version, *sealed in members:
        while key_row is not None and (key_row[0], key_row[1]) < (member_id, key_version):
            key_row = next(keys, None)
        if key_row is None or key_row[0] != member_id:
            continue
        owner, version, kek_version, wrapped = key_row
        aead = AESGCM(keks[kek_version].decrypt(wrapped[:12], wrapped[12:], _member_aad(owner, "data", version)))
        values = {}
        for f, blob in zip(fields, sealed, strict=True):
            if blob is not None:
                values[f.name] = decode(f, aead.decrypt(blob[5:17], blob[17:], FieldContext("members", member_id, f.name).aad(version)))
        hmac.new(pseudonym_key, member_id.encode("ascii"), hashlib.sha256).hexdigest()
        born = values.get("date_of_birth")
        city = values.get("city")
        (
            hi.age_band(born, as_of) if isinstance(born, date) else hi.UNKNOWN,
            hi.city_label(city if isinstance(city, str) else None),
            values.get("gender") or hi.UNDISCLOSED,
        )
        done += 1
    return done


def _root_aad(name: str, version: int) -> bytes:
    from keys.member_keys import _root_aad as aad  # noqa: PLC0415 — the key store's own associated data, for the bare loop only

    return aad(name, version)


def _halves(data_dir: Path, parts: int) -> list[tuple[str, str | None]]:
    data = sqlite3.connect(f"file:{data_dir / 'vault.db'}?mode=ro", uri=True)
    total = data.execute("SELECT count(*) FROM members").fetchone()[0]
    bounds: list[tuple[str, str | None]] = []
    lo = ""
    for i in range(1, parts):
        hi_id = data.execute("SELECT member_id FROM members ORDER BY member_id LIMIT 1 OFFSET ?", (total * i // parts - 1,)).fetchone()[0]
        bounds.append((lo, hi_id))
        lo = hi_id
    bounds.append((lo, None))
    return bounds


def run_baseline(data_dir: Path, processes: int) -> dict[str, float]:
    bounds = _halves(data_dir, processes)
    start = time.perf_counter()
    if processes == 1:
        done = _baseline_range(data_dir, bounds[0])
    else:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            done = sum(pool.starmap(_baseline_range, [(data_dir, b) for b in bounds]))
    return {"wall": time.perf_counter() - start, "members": float(done)}


# -- the anonymity search on near-unique data ------------------------------------------------------------------


def bench_choose(rows: int, repeats: int) -> dict[str, float]:
    """``choose`` over ``rows`` scattered rows of every quasi-identifier (near-unique tuples), k = 10, l = 2, a 5 % cap; CPU seconds."""
    names = [h.attribute for h in hi.QUASI_IDENTIFIERS]
    domains = [sorted(set(_CHOOSE_DOMAINS[n])) for n in names]
    skin = ("dry", "oily", "normal", "mixed")
    histogram = Histogram(names, ["skin_type"])
    for i in range(rows):  # a deterministic spread: the bytes of SHA-256(i) pick each value
        picks = hashlib.sha256(i.to_bytes(8, "big")).digest()
        histogram.add(tuple(domain[picks[j] % len(domain)] for j, domain in enumerate(domains)), (skin[picks[-1] % len(skin)],))
    times = []
    for _ in range(repeats):
        start = time.process_time()
        plan = choose(histogram, list(hi.QUASI_IDENTIFIERS), k=10, l=2, cap=Fraction(5, 100))
        times.append(time.process_time() - start)
    return {"distinct": float(histogram.distinct), "cpu": statistics.median(times), "suppressed": float(plan.suppressed), "classes": float(plan.classes)}


_CHOOSE_DOMAINS: dict[str, tuple[str, ...]] = {
    "gender": tuple(g.value for g in vs.Gender),
    "age_band": hi.AGE_BANDS,
    "region": tuple(CITY_PROVINCE),
    "income_band": tuple(i.value for i in vs.IncomeBand),
    "education": tuple(e.value for e in vs.Education),
    "member_since": tuple(str(y) for y in range(2010, 2027)),
    "spend_band": hi.MONEY_BANDS,
    "balance_band": hi.MONEY_BANDS,
}


def _member_count(data_dir: Path) -> int:
    data = sqlite3.connect(f"file:{data_dir / 'vault.db'}?mode=ro", uri=True)
    return int(data.execute("SELECT count(*) FROM members").fetchone()[0])


def _history(data_dir: Path) -> str:
    """The vault's size and extract history: every run adds its included members to ``extract_members``, for good."""
    data = sqlite3.connect(f"file:{data_dir / 'vault.db'}?mode=ro", uri=True)
    held = int(data.execute("SELECT count(*) FROM extract_members").fetchone()[0])
    done = int(data.execute("SELECT count(*) FROM extracts WHERE status = 'done'").fetchone()[0])
    size = sum(f.stat().st_size for f in data_dir.glob("vault.db*")) / 2**30
    return f"{_member_count(data_dir):,} members: {done} done extracts holding {held:,} membership rows, {size:.1f} GiB on disk"


def _cached(data_dir: Path) -> str:
    """How much of ``vault.db`` the page cache holds now (util-linux ``fincore``), and the page cache in all (``/proc/meminfo``)."""
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    cached = int(meminfo["Cached"].split()[0]) / 2**20
    db = data_dir / "vault.db"
    found = shutil.which("fincore")
    if found is None:
        return f"{_member_count(data_dir):,} members: vault.db residency unknown (no fincore), {cached:.1f} GiB cached in all"
    resident = int(subprocess.run([found, "--bytes", "--noheadings", "--output", "RES", str(db)], capture_output=True, text=True, check=True).stdout)
    return (
        f"{_member_count(data_dir):,} members: {resident / 2**30:.1f} of {db.stat().st_size / 2**30:.1f} GiB of vault.db cached, {cached:.1f} GiB cached in all"
    )


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.extracts")
    parser.add_argument("--members", type=int, nargs="+", default=[100_000, 1_000_000], help="vault sizes to extract from")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("VAULT_BENCH_CACHE") or Path.home() / ".cache" / "member-vault-bench"),
        help="where seeded vaults are kept",
    )
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes for seeding and for the baseline")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant; medians are reported")
    parser.add_argument("--seed-only", action="store_true", help="seed (or find) the vaults and stop")
    parser.add_argument("--revision", help="measure the vaults an earlier seeder left in the cache (its source revision); never seed")
    parser.add_argument("--choose-rows", type=int, default=200_000, help="rows of the near-unique histogram for the search benchmark (0: skip)")
    parser.add_argument("--vaultctl", type=Path, default=Path(sys.executable).with_name("vaultctl"), help="the command line to measure")
    args = parser.parse_args(argv)
    for name in [k for k in os.environ if k.startswith("VAULT_") and not k.startswith("VAULT_TEST_")]:
        del os.environ[name]
    args.cache.mkdir(parents=True, exist_ok=True)
    vaults = {members: seeded_vault(args.cache, members, workers=args.workers, revision=args.revision) for members in args.members}
    if args.seed_only:
        return 0
    out = sys.stdout
    out.write(f"load before: {_load()}\n\n")
    out.write(
        "| members | variant | members/s (median) | rows/s | wall s (runs) | peak RSS MiB (tree / largest process) | CPU s | ours ÷ this |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    histories = [_history(data_dir) for data_dir in vaults.values()]
    residency: list[str] = []
    targets: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for data_dir in vaults.values():
            count = _member_count(data_dir)
            # Round-robin, not one variant's runs after another's: this machine's speed drifts by a third over minutes, and a
            # ratio of two runs taken side by side is steadier than a ratio of medians taken minutes apart.
            ours: list[dict[str, float]] = []
            one: list[dict[str, float]] = []
            two: list[dict[str, float]] = []
            for _ in range(args.repeats):
                ours.append(run_ours(data_dir, Path(tmp), args.vaultctl))
                one.append(run_baseline(data_dir, 1))
                two.append(run_baseline(data_dir, args.workers))
            ours_wall = statistics.median(r["wall"] for r in ours)
            walls = ", ".join(f"{r['wall']:.1f}" for r in ours)
            out.write(
                f"| {count:,} | ours: vaultctl extract run (parquet) | {count / ours_wall:,.0f} "
                f"| {statistics.median(r['rows'] for r in ours) / ours_wall:,.0f} "
                f"| {ours_wall:.1f} ({walls}) | {max(r['peak_mib'] for r in ours):.0f} / {max(r['largest_process_mib'] for r in ours):.0f} "
                f"| {statistics.median(r['cpu'] for r in ours):.1f} | — |\n"
            )
            for label, runs in (("plain loop, 1 process", one), (f"plain loop, {args.workers} processes", two)):
                wall = statistics.median(r["wall"] for r in runs)
                walls = ", ".join(f"{r['wall']:.1f}" for r in runs)
                paired = statistics.median(b["wall"] / a["wall"] for a, b in zip(ours, runs, strict=True))
                out.write(f"| {count:,} | {label} | {count / wall:,.0f} | — | {wall:.1f} ({walls}) | — | — | {paired:.2f} |\n")
            if args.workers == YARDSTICK_PROCESSES:
                yardstick = count / statistics.median(r["wall"] for r in two)
                targets.append(
                    f"{count:,} members: {TARGET_SHARE * yardstick:,.0f} members/s here "
                    f"({TARGET:,} × this run's plain loop in {args.workers} processes, {yardstick:,.0f}/s, ÷ the issue's {YARDSTICK:,}/s)"
                )
            else:
                targets.append(f"{count:,} members: not computed (the issue's yardstick is the loop in {YARDSTICK_PROCESSES} processes: --workers 2)")
            residency.append(_cached(data_dir))
            out.flush()
    out.write("\nthe vaults before the runs (the page cache must hold what a run reads): " + "; ".join(histories) + "\n")
    out.write("the page cache after each vault's runs (a vault it does not keep is read from the disk): " + "; ".join(residency) + "\n")
    out.write("the issue's target scaled by its own yardstick (an estimate, not a measurement): " + "; ".join(targets) + "\n")
    if args.choose_rows:
        found = bench_choose(args.choose_rows, args.repeats)
        out.write(
            f"\nchoose over {int(found['distinct']):,} distinct tuples of all eight quasi-identifiers (k = 10, l = 2, 5 % cap): "
            f"{found['cpu']:.2f} s CPU (median of {args.repeats}); {int(found['classes']):,} classes, {int(found['suppressed']):,} rows suppressed\n"
        )
    out.write(f"\nload after: {_load()}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
