"""Audit log benchmark: appends under 32 writers, proofs and offline verification at a million events.

    python -m tests.benchmarks.audit [--events N] [--writers W] [--processes P] [--seconds S] [--batch B] [--only append|proofs|verify]

All on SQLite with the vault's engine (``vault.storage.engine.make_engine``:
WAL, ``synchronous=FULL``), in a temporary directory, each figure against
plain baselines in the same run:

1. append — W writer threads split over P spawned processes (32 over 2)
   write for S seconds, each one event per ``write_transaction`` through
   ``AuditJournal.append`` (what a write request does), while a thread of the first
   process runs ``Sequencer.run_until_idle`` in a loop, as the API's audit
   pump does. Reported: events/s journaled (over the writing window) and
   events/s sequenced (until the tree has caught up with the whole journal),
   write latency, CPU per event (user + system of the writer processes).
   Baselines, same writers and durability: a plain hash chain (each
   transaction reads the last row's hash and inserts SHA-256(prev ‖ leaf)),
   and ``pymerkle``'s ``SqliteTree`` (one tree per process shared by its
   threads, as its documentation allows). Group commit, two ways: the vault's
   ``GroupCommit`` (what a read request does: each writer hands over its one
   event and waits for the commit that holds it; the writers waiting together
   in a process share a transaction), and every variant again with B events
   per transaction (ours through ``AuditJournal.append_many``).
2. proofs — a tree of N events built in bulk (journal rows inserted in
   chunks, sequenced with ``run_until_idle`` in batches of 100,000), then the
   median of ``inclusion_proof`` and ``consistency_proof`` at size N over
   random arguments, against reading the same node rows by primary key with
   plain ``sqlite3``; ``pymerkle`` proofs over the same leaves for comparison.
3. verify — the NDJSON export (``audit.queries.export``) of those N events
   and a checkpoint signed by the vault's audit key, checked end to end by
   ``audit.verify.verify_export_file`` as ``vaultctl audit verify --export``
   calls it (one worker process per usable CPU), and again in one process;
   baselines: reading the file, parsing each line and SHA-256 of its leaf, in
   one process and in as many forked processes (one byte range each), and
   SHA-256 alone over the same leaves in memory. Wall and CPU time (this
   process and its workers) are both reported: CPU time shows the work when
   the machine is shared.

Nothing asserts a speed; the targets are in docs/benchmarks.md. A wrong
result (a tree that does not cover its journal, a proof or an export that
does not verify, a pymerkle root that differs) stops the run.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import multiprocessing
import os
import queue
import resource
import secrets
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice, pairwise
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path

from pymerkle import SqliteTree  # type: ignore[import-untyped]
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.engine import make_url

from api.runtime import init_vault, make_checkpointer, open_runtime
from api.services import PUMP_INTERVAL_SECONDS
from api.settings import Settings
from audit import merkle
from audit.canonical import canonical_bytes
from audit.event import Actor, AuditEvent, Decision, event_time
from audit.group_commit import GroupCommit
from audit.queries import export
from audit.sequencer import Sequencer
from audit.store import AuditJournal, audit_journal, consistency_proof, inclusion_proof, root, tree_size
from audit.verify import Report, verify_export_file
from vault.storage.engine import make_engine, write_on, write_transaction

BUILD_BATCH = 100_000
INSERT_CHUNK = 50_000
GENESIS = bytes(32)
WAIT_SECONDS = 900
_ACTOR = Actor(subject="staff:17", roles=("practitioner",), client_id="front-desk", acting_staff="staff:17")
_CATEGORIES = ("contact", "demographic", "health", "identity", "membership", "preference")
_LAST_LINK = text("SELECT hash FROM bench_chain ORDER BY id DESC LIMIT 1")
_ADD_LINK = text("INSERT INTO bench_chain (leaf, hash) VALUES (:leaf, :hash)")


def _event(request_id: str, member_id: str, now: datetime) -> AuditEvent:
    """A whole-member read as the gate journals it (category names, never values)."""
    return AuditEvent(
        time=event_time(now),
        request_id=request_id,
        actor=_ACTOR,
        action="read",
        resource_type="member",
        resource_id=member_id,
        member_id=member_id,
        fields=_CATEGORIES,
        purpose="care",
        decision=Decision.ALLOW,
        reason_code="policy_allow",
        policy_hash="sha256:" + "ab" * 32,
        outcome="ok",
    )


def _settings(data_dir: Path) -> Settings:
    settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    init_vault(settings)
    return settings


def _sqlite_path(url: str) -> str:
    return make_url(url).database or ""


# -- 1. appends under concurrent writers -----------------------------------------------------


@dataclass(frozen=True)
class AppendSpec:
    """One append variant: ``vault``, ``vault-group`` (``GroupCommit``, as read requests commit), ``chain`` or ``pymerkle``."""

    variant: str
    url: str
    batch: int
    seconds: float


@dataclass(frozen=True)
class ProcessReport:
    """What a writer process measured (``time.monotonic`` instants, comparable across processes)."""

    latencies: list[float]
    began: float
    ended: float
    caught_up: float | None
    cpu_s: float
    transactions: int


@dataclass(frozen=True)
class AppendRun:
    variant: str
    batch: int
    per_transaction: float
    events: int
    journaled_per_s: float
    sequenced_per_s: float
    catch_up_s: float
    p50_ms: float
    p99_ms: float
    cpu_us: float


Writer = Callable[[Sequence[AuditEvent]], None]
Message = tuple[str, int, ProcessReport | str | None]


@dataclass(frozen=True)
class Signals:
    """Between the parent and its writer processes: start writing, the writers are all done, and the messages back."""

    go: ProcessEvent
    drain: ProcessEvent
    out: Queue[Message]


def _vault_writer(engine: Engine) -> Writer:
    journal = AuditJournal()

    def write(events: Sequence[AuditEvent]) -> None:
        with write_transaction(engine) as conn:
            if len(events) == 1:
                journal.append(conn, events[0])
            else:
                journal.append_many(conn, [(event, None) for event in events])

    return write


def _chain_writer(engine: Engine) -> Writer:
    def write(events: Sequence[AuditEvent]) -> None:
        with write_transaction(engine) as conn:
            previous = conn.execute(_LAST_LINK).scalar_one_or_none() or GENESIS
            for event in events:
                leaf = event.leaf_bytes()
                previous = hashlib.sha256(previous + leaf).digest()
                conn.execute(_ADD_LINK, {"leaf": leaf, "hash": previous})

    return write


def _pymerkle_writer(tree: SqliteTree) -> Writer:
    def write(events: Sequence[AuditEvent]) -> None:
        if len(events) == 1:
            tree.append_entry(events[0].leaf_bytes())
        else:
            tree.append_entries([event.leaf_bytes() for event in events])

    return write


def _open_pymerkle(path: str) -> SqliteTree:
    tree = SqliteTree(path)
    tree.con.execute("PRAGMA journal_mode=WAL")
    tree.con.execute("PRAGMA synchronous=FULL")
    return tree


def _group_writer(engine: Engine, group: GroupCommit) -> Writer:
    """What a read request does: hand its one event to the process's ``GroupCommit`` and wait for its commit."""
    local = threading.local()

    def write(events: Sequence[AuditEvent]) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = engine.connect()
        for event in events:
            group.commit(conn, event)

    return write


def writer_process(spec: AppendSpec, process: int, threads: int, signals: Signals) -> None:
    """A spawned writer process: ``threads`` writers, and in process 0 of the vault variants the sequencer."""
    try:
        _writer_process(spec, process, threads, signals)
    except BaseException:
        signals.out.put(("failed", process, traceback.format_exc()))
        raise


def _writer_process(spec: AppendSpec, process: int, threads: int, signals: Signals) -> None:
    go, drain, out = signals.go, signals.drain, signals.out
    tree = _open_pymerkle(_sqlite_path(spec.url)) if spec.variant == "pymerkle" else None
    engine = make_engine(spec.url)
    group = GroupCommit(AuditJournal(), write_on) if spec.variant == "vault-group" else None
    write = _pymerkle_writer(tree) if tree is not None else _chain_writer(engine) if spec.variant == "chain" else _vault_writer(engine)
    write = _group_writer(engine, group) if group is not None else write
    start_line, window = threading.Event(), [0.0, 0.0]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    failures: list[str] = []
    caught_up: list[float] = []

    def run(thread: int) -> None:
        start_line.wait()
        n = 0
        try:
            while time.monotonic() < window[1]:
                now = datetime.now(UTC)
                events = [_event(f"req-{process}-{thread}-{n + k}", f"{(n + k) % 5000:032x}", now) for k in range(spec.batch)]
                began = time.perf_counter()
                write(events)
                latencies[thread].append(time.perf_counter() - began)
                n += spec.batch
        except Exception:  # noqa: BLE001  # reported to the parent, which stops the run
            failures.append(traceback.format_exc())

    def pump() -> None:
        """The API's audit pump, less the checkpoints: sequence until idle, wait, again."""
        sequencer = Sequencer(engine)
        try:
            while sequencer.run_until_idle() or not drain.is_set():
                drain.wait(PUMP_INTERVAL_SECONDS)
            caught_up.append(time.monotonic())
        except Exception:  # noqa: BLE001  # reported to the parent, which stops the run
            failures.append(traceback.format_exc())

    writers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    sequencer = threading.Thread(target=pump) if spec.variant.startswith("vault") and process == 0 else None
    for thread in writers:
        thread.start()
    out.put(("ready", process, None))
    go.wait()
    cpu = _cpu_seconds()
    window[0] = time.monotonic()
    window[1] = window[0] + spec.seconds
    start_line.set()
    if sequencer is not None:
        sequencer.start()
    for thread in writers:
        thread.join()
    ended = time.monotonic()
    out.put(("written", process, None))
    if sequencer is not None:
        sequencer.join()
    if failures:
        raise RuntimeError("\n".join(failures))
    flat = [x for per_thread in latencies for x in per_thread]
    transactions = group.groups if group is not None else len(flat)
    report = ProcessReport(flat, window[0], ended, caught_up[0] if caught_up else None, _cpu_seconds() - cpu, transactions)
    out.put(("report", process, report))
    if tree is not None:
        tree.close()
    engine.dispose()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Mailbox:
    """The writer processes' messages, taken by kind and process whatever order they arrive in."""

    def __init__(self, out: Queue[Message]) -> None:
        self._out = out
        self._held: dict[tuple[str, int], ProcessReport | str | None] = {}

    def take(self, kind: str, process: int) -> ProcessReport | str | None:
        while (kind, process) not in self._held:
            try:
                got, sender, body = self._out.get(timeout=WAIT_SECONDS)
            except queue.Empty:
                raise RuntimeError(f"no {kind!r} message from writer process {process}") from None
            if got == "failed":
                raise RuntimeError(f"writer process {sender} failed:\n{body}")
            self._held[(got, sender)] = body
        return self._held.pop((kind, process))

    def report(self, process: int) -> ProcessReport:
        report = self.take("report", process)
        if not isinstance(report, ProcessReport):
            raise TypeError("a report was expected")
        return report


def bench_append(root_dir: Path, spec_variant: str, *, writers: int, processes: int, batch: int, seconds: float) -> AppendRun:
    """One variant: ``writers`` threads over ``processes`` spawned processes for ``seconds``; the tree must catch up."""
    spec = AppendSpec(spec_variant, _prepare_append(root_dir / f"append-{spec_variant}-{batch}", spec_variant), batch, seconds)
    spawn = multiprocessing.get_context("spawn")
    out: Queue[Message] = spawn.Queue()
    signals = Signals(spawn.Event(), spawn.Event(), out)
    threads = [writers // processes + (p < writers % processes) for p in range(processes)]
    children = [spawn.Process(target=writer_process, args=(spec, p, threads[p], signals)) for p in range(processes)]
    for child in children:
        child.start()
    try:
        mail = _Mailbox(out)
        for p in range(processes):
            mail.take("ready", p)
        signals.go.set()
        for p in range(processes):
            mail.take("written", p)
        signals.drain.set()
        reports = [mail.report(p) for p in range(processes)]
    finally:
        for child in children:
            child.join(timeout=WAIT_SECONDS)
    latencies = sorted(x for r in reports for x in r.latencies)
    total = _check_appended(spec.url, spec.variant)
    if total != len(latencies) * batch:
        raise RuntimeError(f"{spec.variant}: {total} rows for {len(latencies) * batch} acknowledged events")
    began, ended = min(r.began for r in reports), max(r.ended for r in reports)
    caught_up = reports[0].caught_up or ended
    return AppendRun(
        variant=spec.variant,
        batch=batch,
        per_transaction=total / sum(r.transactions for r in reports),
        events=total,
        journaled_per_s=total / (ended - began),
        sequenced_per_s=total / (caught_up - began),
        catch_up_s=caught_up - ended,
        p50_ms=statistics.median(latencies) * 1e3,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1e3,
        cpu_us=sum(r.cpu_s for r in reports) / total * 1e6,
    )


def _prepare_append(data_dir: Path, variant: str) -> str:
    if variant.startswith("vault"):
        return _settings(data_dir).data_url
    data_dir.mkdir(parents=True)
    path = data_dir / f"{variant}.db"
    if variant == "pymerkle":
        _open_pymerkle(str(path)).close()
    else:
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE bench_chain (id INTEGER PRIMARY KEY, leaf BLOB NOT NULL, hash BLOB NOT NULL)")
    return f"sqlite:///{path}"


def _check_appended(url: str, variant: str) -> int:
    """The number of events stored; for the vault, after checking that the tree covers the whole journal."""
    if variant == "pymerkle":
        tree = _open_pymerkle(_sqlite_path(url))
        try:
            return int(tree.get_size())
        finally:
            tree.close()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if variant == "chain":
                return int(conn.execute(text("SELECT count(*) FROM bench_chain")).scalar_one())
            journaled = int(conn.execute(select(func.count()).select_from(audit_journal)).scalar_one())
            if tree_size(conn) != journaled:
                raise RuntimeError(f"the tree has {tree_size(conn)} leaves for {journaled} journal entries")
            return journaled
    finally:
        engine.dispose()


def commit_loop(path: Path, seconds: float = 3.0) -> float:
    """Commits/s of one thread's bare INSERT + COMMIT loop with the same durability (the fsync ceiling)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE bench_commits (n INTEGER)")
    n, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO bench_commits VALUES (?)", (n,))
        conn.execute("COMMIT")
        n += 1
    conn.close()
    return n / seconds


# -- 2. a tree of N events, and proofs from it --------------------------------------------------


def _leaves(n: int) -> Iterator[bytes]:
    """The leaf bytes of ``n`` distinct events: ``AuditEvent.leaf_bytes()`` of each, without building every event."""
    template = _event("req-0", _member(0), datetime(2026, 11, 22, 16, 0, tzinfo=UTC)).to_json_obj()
    for i in range(n):
        member = _member(i)
        template["request_id"], template["resource_id"], template["member_id"] = f"req-{i}", member, member
        yield canonical_bytes(template)


def _member(i: int) -> str:
    """One of 50,000 member ids (32 hex digits, as ``vault.ids`` makes them)."""
    return f"{i % 50_000:032x}"


def _check_leaves() -> None:
    """The bulk leaves are exactly the events' own leaf bytes."""
    at = datetime(2026, 11, 22, 16, 0, tzinfo=UTC)
    expected = [_event(f"req-{i}", _member(i), at).leaf_bytes() for i in range(3)]
    if list(_leaves(3)) != expected:
        raise RuntimeError("the bulk leaves differ from AuditEvent.leaf_bytes()")


def build_tree(settings: Settings, n: int) -> dict[str, float]:
    """Insert ``n`` journal rows in bulk, then sequence them; return both durations."""
    _check_leaves()
    engine = make_engine(settings.data_url)
    at = datetime(2026, 11, 22, 16, 0, tzinfo=UTC)
    try:
        began = time.perf_counter()
        rows = (
            {"received_at": at, "leaf": leaf, "event_time": at, "member_id": _member(i), "actor_subject": _ACTOR.subject}
            | {"actor_client_id": _ACTOR.client_id, "action": "read", "decision": "allow"}
            for i, leaf in enumerate(_leaves(n))
        )
        with write_transaction(engine) as conn:
            while chunk := list(islice(rows, INSERT_CHUNK)):
                conn.execute(insert(audit_journal), chunk)
        journaled = time.perf_counter()
        sequenced = Sequencer(engine).run_until_idle(max_batch=BUILD_BATCH, now=at)
        done = time.perf_counter()
        if sequenced != n:
            raise RuntimeError(f"sequenced {sequenced} of {n} entries")
    finally:
        engine.dispose()
    return {"journal_s": journaled - began, "sequence_s": done - journaled}


def _nodes_read(compute: Callable[[merkle.NodeReader], object]) -> list[tuple[int, int]]:
    wanted: list[tuple[int, int]] = []

    def record(level: int, index: int) -> bytes:
        wanted.append((level, index))
        return bytes(merkle.HASH_SIZE)

    compute(record)
    return list(dict.fromkeys(wanted))


def _timed(call: Callable[[], object]) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def _median_ms(call: Callable[[int], object], arguments: Iterable[int]) -> float:
    """The median time of ``call(a)`` over the arguments, in ms."""
    return statistics.median(_timed(functools.partial(call, a)) for a in arguments) * 1e3


def bench_proofs(settings: Settings, n: int, samples: int) -> tuple[dict[str, float], bytes]:
    """Median proof times at size ``n`` (random leaf; random first size) against reading their node rows by primary key."""
    inclusions = [secrets.randbelow(n) for _ in range(samples)]
    firsts = [1 + secrets.randbelow(max(n - 1, 1)) for _ in range(samples)]
    inclusion_nodes = [_nodes_read(functools.partial(merkle.inclusion_proof, i, n)) for i in inclusions]
    consistency_nodes = [_nodes_read(functools.partial(merkle.consistency_proof, f, n)) for f in firsts]
    engine = make_engine(settings.data_url)
    raw = sqlite3.connect(_sqlite_path(settings.data_url))
    try:
        with engine.connect() as conn:
            top = root(conn, n)
            for index, first in zip(inclusions[:10], firsts[:10], strict=True):  # warm the page cache, and check the proofs
                leaf = merkle.leaf_hash(_leaf_at(raw, index))
                if not merkle.verify_inclusion(leaf, index, n, inclusion_proof(conn, index, n), top):
                    raise RuntimeError(f"the inclusion proof of {index} does not verify")
                if not merkle.verify_consistency(first, n, consistency_proof(conn, first, n), root(conn, first), top):
                    raise RuntimeError(f"the consistency proof {first} → {n} does not verify")
            results = {
                "inclusion_ms": _median_ms(lambda i: inclusion_proof(conn, i, n), inclusions),
                "consistency_ms": _median_ms(lambda f: consistency_proof(conn, f, n), firsts),
            }
        results["inclusion_bare_ms"] = _median_ms(lambda k: _read_rows(raw, inclusion_nodes[k]), range(samples))
        results["consistency_bare_ms"] = _median_ms(lambda k: _read_rows(raw, consistency_nodes[k]), range(samples))
    finally:
        raw.close()
        engine.dispose()
    results["inclusion_nodes"] = statistics.median(len(a) for a in inclusion_nodes)
    results["consistency_nodes"] = statistics.median(len(a) for a in consistency_nodes)
    return results, top


def _leaf_at(raw: sqlite3.Connection, index: int) -> bytes:
    row = raw.execute("SELECT j.leaf FROM audit_leaves l JOIN audit_journal j ON j.journal_id = l.journal_id WHERE l.leaf_index = ?", (index,)).fetchone()
    return bytes(row[0])


def _read_rows(raw: sqlite3.Connection, addresses: Sequence[tuple[int, int]]) -> list[bytes]:
    query = "SELECT hash FROM audit_nodes WHERE level = ? AND node_index = ?"
    return [raw.execute(query, address).fetchone()[0] for address in addresses]


def bench_pymerkle_proofs(path: Path, n: int, samples: int, expected_root: bytes) -> dict[str, float]:
    """pymerkle's SqliteTree over the same leaves: bulk build, first (cold) and median proof times."""
    tree = _open_pymerkle(str(path))
    try:
        began = time.perf_counter()
        tree.append_entries(_leaves(n))
        built = time.perf_counter() - began
        inclusions = [1 + secrets.randbelow(n) for _ in range(samples)]  # pymerkle counts leaves from one
        firsts = [1 + secrets.randbelow(max(n - 1, 1)) for _ in range(samples)]
        results = {
            "build_s": built,
            "inclusion_first_ms": _timed(lambda: tree.prove_inclusion(inclusions[0], n)) * 1e3,
            "consistency_first_ms": _timed(lambda: tree.prove_consistency(firsts[0], n)) * 1e3,
            "inclusion_ms": _median_ms(lambda i: tree.prove_inclusion(i, n), inclusions),
            "consistency_ms": _median_ms(lambda f: tree.prove_consistency(f, n), firsts),
        }
        if tree.get_root(n) != expected_root:
            raise RuntimeError("pymerkle's root differs from the vault's")
    finally:
        tree.close()
    return results


# -- 3. offline verification of the export ------------------------------------------------------


def bench_verify(settings: Settings, n: int, repeats: int, scratch: Path) -> dict[str, float]:
    """Export the tree, sign a checkpoint with the vault's audit key, and time ``verify_export_file`` against plain hashing."""
    export_file, checkpoint_file = scratch / "audit-export.ndjson", scratch / "checkpoint.txt"
    rt = open_runtime(settings)
    try:
        began = time.perf_counter()
        with rt.data_engine.connect() as conn, export_file.open("w", encoding="utf-8", newline="\n") as file:
            for line in export(conn, 0, n):
                file.write(line + "\n")
        exported = time.perf_counter() - began
        checkpointer = make_checkpointer(settings, rt.data_engine, rt.signing)
        checkpoint_file.write_text(checkpointer.make().note, encoding="utf-8")
        keys = checkpointer.verifier_keys(datetime.now(UTC))
    finally:
        rt.close()
    note = checkpoint_file.read_text(encoding="utf-8")
    workers = len(os.sched_getaffinity(0))
    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "ours_1": [], "read_hash": [], "read_hash_n": []}
    for _ in range(repeats):
        runs["ours"].append(_timed_cpu(lambda: _check_report(verify_export_file(export_file, [note], keys), n)))
        runs["ours_1"].append(_timed_cpu(lambda: _check_report(verify_export_file(export_file, [note], keys, workers=1), n)))
        runs["read_hash"].append(_timed_cpu(lambda: _hash_file(export_file)))
        runs["read_hash_n"].append(_timed_cpu(lambda: _hash_file_in_processes(export_file, workers)))
    leaves = [json.loads(raw)["leaf"].encode("utf-8") for raw in export_file.open("rb")]
    hash_only = [_timed(lambda: [hashlib.sha256(b"\x00" + leaf).digest() for leaf in leaves]) for _ in range(repeats)]
    results = {"export_s": exported, "hash_s": statistics.median(hash_only), "mb": export_file.stat().st_size / 1e6, "workers": workers}
    for name, timings in runs.items():
        results[f"{name}_s"] = statistics.median(wall for wall, _ in timings)
        results[f"{name}_cpu_s"] = statistics.median(cpu for _, cpu in timings)
    return results


def _check_report(report: Report, n: int) -> None:
    if not report.ok or report.proven_size != n:
        raise RuntimeError(f"the export did not verify: {report}")


def _timed_cpu(call: Callable[[], object]) -> tuple[float, float]:
    """Wall time and CPU time (user + system, of this process and of the worker processes it waited for) of ``call()``."""
    cpu = _cpu_seconds() + _children_cpu_seconds()
    began = time.perf_counter()
    call()
    return time.perf_counter() - began, _cpu_seconds() + _children_cpu_seconds() - cpu


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _hash_file(path: Path) -> int:
    """Plain hashing of the same leaves: read each line, take its leaf, SHA-256 it."""
    count = 0
    with path.open("rb") as file:
        for raw in file:
            hashlib.sha256(b"\x00" + json.loads(raw)["leaf"].encode("utf-8")).digest()
            count += 1
    return count


def _hash_file_in_processes(path: Path, workers: int) -> int:
    """``_hash_file`` over ``workers`` forked processes, each reading one byte range of the file (lines split at its newlines)."""
    size = path.stat().st_size
    bounds = [size * k // workers for k in range(workers + 1)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return sum(pool.starmap(_hash_range, [(str(path), begin, end) for begin, end in pairwise(bounds)]))


def _hash_range(path: str, begin: int, end: int) -> int:
    """Hash the leaves of the lines that start in ``[begin, end)``."""
    count = 0
    with open(path, "rb") as file:
        if begin:
            file.seek(begin - 1)
            file.readline()
        while file.tell() < end:
            raw = file.readline()
            if not raw:
                break
            hashlib.sha256(b"\x00" + json.loads(raw)["leaf"].encode("utf-8")).digest()
            count += 1
    return count


# -- report ---------------------------------------------------------------------------------------


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


_NAMES = {
    "vault": "ours: `AuditJournal.append` (`append_many` for several) + sequencer",
    "vault-group": "ours, group commit (`GroupCommit`, as a read request commits): each writer waits for the commit that holds its event",
    "chain": "plain hash chain",
    "pymerkle": "pymerkle 7.0.0 `SqliteTree`",
}


def _append_table(runs: Sequence[AppendRun], commits: float, writers: int, processes: int) -> None:
    _out(f"Appends: {writers} writers in {processes} processes; one thread's bare INSERT + COMMIT loop does {commits:,.0f} commits/s")
    _out("")
    _out("| variant | events / txn | events | journaled events/s | sequenced events/s | tree caught up | p50 / p99 write ms | CPU µs/event | ours ÷ this |")
    _out("|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        ours = next(r for r in runs if r.variant == "vault" and r.batch == run.batch)
        ratio = f"{ours.sequenced_per_s / run.sequenced_per_s:.2f}" if run.variant in ("chain", "pymerkle") else "—"
        catch_up = f"{run.catch_up_s:.2f} s after" if run.variant.startswith("vault") else "at commit"
        _out(
            f"| {_NAMES[run.variant]} | {run.per_transaction:,.1f} | {run.events:,} | {run.journaled_per_s:,.0f} | {run.sequenced_per_s:,.0f} | {catch_up} "
            f"| {run.p50_ms:.1f} / {run.p99_ms:.1f} | {run.cpu_us:,.0f} | {ratio} |"
        )


def _proof_table(n: int, build: dict[str, float], proofs: dict[str, float], pym: dict[str, float]) -> None:
    _out("")
    _out(
        f"Proofs at {n:,} events: tree built in {build['journal_s'] + build['sequence_s']:.1f} s "
        f"(journal rows {build['journal_s']:.1f} s, sequencing {build['sequence_s']:.1f} s); pymerkle tree built in {pym['build_s']:.1f} s"
    )
    _out("")
    _out("| proof | ours (median) | node rows read | plain: same rows by primary key (median) | ratio | pymerkle median (first call) | target |")
    _out("|---|---|---|---|---|---|---|")
    for kind in ("inclusion", "consistency"):
        ours, bare = proofs[f"{kind}_ms"], proofs[f"{kind}_bare_ms"]
        _out(
            f"| {kind} | {ours:.3f} ms | {proofs[f'{kind}_nodes']:.0f} | {bare:.3f} ms | {ours / bare:.2f}× "
            f"| {pym[f'{kind}_ms']:.3f} ms ({pym[f'{kind}_first_ms']:,.0f} ms) | ≤ 5 ms |"
        )


def _verify_table(n: int, verify: dict[str, float]) -> None:
    _out("")
    _out(f"Offline verification of a {n:,}-event export ({verify['mb']:,.0f} MB, written in {verify['export_s']:.1f} s)")
    _out("")
    _out("| check | wall (median) | CPU, all processes (median) | ÷ plain read + SHA-256, 1 process | target |")
    _out("|---|---|---|---|---|")
    workers = int(verify["workers"])
    rows = [
        ("ours", f"ours: `verify_export_file` ({workers} worker processes, as `vaultctl audit verify --export`)", "≤ 5 s"),
        ("ours_1", "ours: `verify_export_file(..., workers=1)` (one process)", "—"),
        ("read_hash", "plain: read + `json.loads` + SHA-256 each leaf, 1 process", "—"),
        ("read_hash_n", f"plain: the same in {workers} forked processes, one byte range each", "—"),
    ]
    for key, label, target in rows:
        wall, cpu = verify[f"{key}_s"], verify[f"{key}_cpu_s"]
        _out(f"| {label} | {wall:.2f} s | {cpu:.2f} s | {wall / verify['read_hash_s']:.2f}× | {target} |")
    _out(f"| plain: SHA-256 only, leaves in memory | {verify['hash_s']:.2f} s | — | {verify['hash_s'] / verify['read_hash_s']:.2f}× | — |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.audit", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000, help="tree size for the proof and verification benchmarks")
    parser.add_argument("--writers", type=int, default=32, help="concurrent writer threads, split over the processes")
    parser.add_argument("--processes", type=int, default=2, help="writer processes (spawned)")
    parser.add_argument("--seconds", type=float, default=10.0, help="writing time of each append variant")
    parser.add_argument("--batch", type=int, default=100, help="events per transaction in the group-commit variants")
    parser.add_argument("--samples", type=int, default=200, help="random arguments per proof kind")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the verification and its baselines")
    parser.add_argument("--only", choices=["append", "proofs", "verify"], action="append", help="run only these parts (proofs and verify share the tree)")
    args = parser.parse_args(argv)
    parts = set(args.only or ["append", "proofs", "verify"])
    for name in [k for k in os.environ if k.startswith("VAULT_") and not k.startswith("VAULT_TEST_")]:
        del os.environ[name]
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        if "append" in parts:
            commits = commit_loop(scratch / "commits.db")
            variants = [
                ("vault", 1),
                ("vault-group", 1),
                ("chain", 1),
                ("pymerkle", 1),
                ("vault", args.batch),
                ("chain", args.batch),
                ("pymerkle", args.batch),
            ]
            runs = [bench_append(scratch, v, writers=args.writers, processes=args.processes, batch=b, seconds=args.seconds) for v, b in variants]
            _append_table(runs, commits, args.writers, args.processes)
        if parts & {"proofs", "verify"}:
            settings = _settings(scratch / "tree")
            build = build_tree(settings, args.events)
            if "proofs" in parts:
                proofs, top = bench_proofs(settings, args.events, args.samples)
                pym = bench_pymerkle_proofs(scratch / "pymerkle-proofs.db", args.events, args.samples, top)
                _proof_table(args.events, build, proofs, pym)
            if "verify" in parts:
                _verify_table(args.events, bench_verify(settings, args.events, args.repeats, scratch))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
