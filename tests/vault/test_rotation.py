"""KEK rotation on real SQLite and PostgreSQL: online under concurrent reads and writes, and resumed after an interruption.

Must show: KEK rotation under concurrent reads and writes leaves every record
readable and the old KEK unreferenced; an interrupted rotation resumes.
"""

from __future__ import annotations

import math
import secrets
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select

from api.runtime import Runtime
from keys.models import RootKeyRow
from keys.rotation import RotationReport, rotate_kek
from tests.vault.factories import other_member_values
from vault import data_map as dm
from vault.demo import seed_members
from vault.treatments import Treatment

ALL = set(dm.categories_of(dm.Table.members))
SEEDED_AT = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
MAX_LOOPS = 20_000  # a worker stops after this many iterations even if never told to
GATE_TIMEOUT = 60.0  # seconds the rotation waits for the workers between batches before failing

Snapshot = tuple[dict[dm.Category, dict[str, object]], list[Treatment], int]


def _snapshot(rt: Runtime, member_id: str) -> Snapshot:
    with rt.data_engine.connect() as conn:
        return (
            rt.members.read(conn, member_id, ALL).values,
            rt.treatments.list_for_member(conn, member_id),
            rt.ledger.balance(conn, member_id).amount,
        )


def _total_keys(rt: Runtime) -> int:
    return sum(rt.keys.kek_references().values())


def _root_keys(rt: Runtime) -> int:
    with rt.keys_engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(RootKeyRow.__table__)).scalar_one())


@dataclass
class Workers:
    """Worker threads that count their iterations, and a gate the rotation waits at between batches."""

    count: int
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    loops: list[int] = field(init=False)
    alive: list[bool] = field(init=False)
    gates_passed: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.loops = [0] * self.count
        self.alive = [True] * self.count

    def run(self, index: int, step: Callable[[], None]) -> None:
        try:
            for _ in range(MAX_LOOPS):
                if self.stop.is_set():
                    break
                step()
                with self._cond:
                    self.loops[index] += 1
                    self._cond.notify_all()
        except Exception:  # noqa: BLE001 - any failure is recorded and asserted on by the main thread
            self.errors.append(traceback.format_exc())
        finally:
            with self._cond:
                self.alive[index] = False
                self._cond.notify_all()

    def gate(self, _done: int, _total: int) -> None:
        """Called by the rotation between batches: go on only once every live worker has made another iteration."""
        with self._cond:
            marks = list(self.loops)
            passed = self._cond.wait_for(
                lambda: all(n > m or not a for n, m, a in zip(self.loops, marks, self.alive, strict=True)),
                timeout=GATE_TIMEOUT,
            )
        assert passed, "workers made no progress"
        self.gates_passed += 1


def test_kek_rotation_under_concurrent_reads_and_writes_keeps_every_record_readable(runtime: Runtime) -> None:
    seeded = list(seed_members(runtime.data_engine, runtime.keys, runtime.members, count=150, seed=3, now=SEEDED_AT).member_ids)
    before = {m: _snapshot(runtime, m) for m in seeded}
    keys_before = _total_keys(runtime)
    assert runtime.keys.kek_references() == {1: keys_before}

    workers = Workers(3)
    written: dict[str, dict[str, object]] = {}

    def read_one() -> None:
        member_id = seeded[secrets.randbelow(len(seeded))]
        assert _snapshot(runtime, member_id) == before[member_id], member_id

    def write_one() -> None:
        n = 1000 + len(written)
        with runtime.data_engine.begin() as conn:
            member_id = runtime.members.create(conn, other_member_values(n))
        written[member_id] = {"city": "上海", "phone": f"+86139{n:08d}"}
        if len(written) > 1:
            previous = list(written)[-2]
            with runtime.data_engine.begin() as conn:
                runtime.members.update(conn, previous, {"city": "深圳", "phone": f"+86137{n:08d}"})
            written[previous] = {"city": "深圳", "phone": f"+86137{n:08d}"}

    threads = [
        threading.Thread(target=workers.run, args=(0, read_one)),
        threading.Thread(target=workers.run, args=(1, read_one)),
        threading.Thread(target=workers.run, args=(2, write_one)),
    ]
    for t in threads:
        t.start()
    try:
        report = rotate_kek(runtime.keys, batch=20, progress=workers.gate)
    finally:
        workers.stop.set()
        for t in threads:
            t.join(timeout=120)
    assert [t.is_alive() for t in threads] == [False, False, False]
    assert workers.errors == []

    assert (report.kek_version, report.started_new_version, report.retired) == (2, True, (1,))
    # Every key ever wrapped under version 1 (the seeded ones and any the writer made before the switch) was
    # re-wrapped exactly once; every key now is wrapped under version 2.
    total = _total_keys(runtime)
    assert report.rewrapped >= keys_before
    assert runtime.keys.wrap_counts() == {1: report.rewrapped, 2: total}
    assert runtime.keys.kek_references() == {2: total}
    assert total > report.rewrapped  # the writer's members added keys under the new KEK
    # The rotation really ran in batches of 20 (the root keys ride along with the first), each after the workers moved on.
    # One gate per progress report: the start, each batch, and the final pass that finds nothing left.
    batches = math.ceil((report.rewrapped - _root_keys(runtime)) / 20)
    assert 1 + batches <= workers.gates_passed <= 1 + batches + 2
    assert all(n >= workers.gates_passed for n in workers.loops), workers.loops

    assert [(v.version, v.retired) for v in runtime.provider.versions()] == [(1, True), (2, False)]
    assert runtime.provider.current_version() == 2

    for member_id, snapshot in before.items():
        assert _snapshot(runtime, member_id) == snapshot, member_id
    assert len(written) >= 2
    with runtime.data_engine.connect() as conn:
        for member_id, expected in written.items():
            view = runtime.members.read(conn, member_id, ALL).values
            assert (view[dm.Category.demographic]["city"], view[dm.Category.contact]["phone"]) == (expected["city"], expected["phone"])
            assert runtime.members.search(conn, "phone", str(expected["phone"])) == [member_id]
        some = seeded[0]
        phone = str(before[some][0][dm.Category.contact]["phone"])
        assert some in runtime.members.search(conn, "phone", phone)


def test_interrupted_kek_rotation_resumes_without_a_new_version(runtime: Runtime) -> None:
    seeded = seed_members(runtime.data_engine, runtime.keys, runtime.members, count=30, seed=3, now=SEEDED_AT).member_ids
    before = {m: _snapshot(runtime, m) for m in seeded}
    total = _total_keys(runtime)
    roots = _root_keys(runtime)
    assert roots >= 1
    assert runtime.keys.wrap_counts() == {1: total}

    # A rotation that stopped after its first batch: new version, 10 member keys (and the root keys) re-wrapped.
    assert runtime.provider.rotate() == 2
    assert runtime.keys.rewrap_batch(limit=10) == 10 + roots
    assert runtime.keys.kek_references() == {1: total - 10 - roots, 2: 10 + roots}
    for member_id, snapshot in before.items():
        assert _snapshot(runtime, member_id) == snapshot

    report = rotate_kek(runtime.keys, batch=7)

    assert report == RotationReport(kek_version=2, started_new_version=False, rewrapped=total - 10 - roots, retired=(1,))
    assert runtime.keys.kek_references() == {2: total}
    assert runtime.keys.wrap_counts() == {1: total, 2: total}
    assert [(v.version, v.retired) for v in runtime.provider.versions()] == [(1, True), (2, False)]
    for member_id, snapshot in before.items():
        assert _snapshot(runtime, member_id) == snapshot


def test_completed_rotation_run_again_starts_the_next_version(runtime: Runtime) -> None:
    seeded = seed_members(runtime.data_engine, runtime.keys, runtime.members, count=5, seed=3, now=SEEDED_AT).member_ids
    before = {m: _snapshot(runtime, m) for m in seeded}
    total = _total_keys(runtime)
    assert rotate_kek(runtime.keys) == RotationReport(2, True, total, (1,))
    assert rotate_kek(runtime.keys) == RotationReport(3, True, total, (2,))
    assert runtime.keys.kek_references() == {3: total}
    assert {m: _snapshot(runtime, m) for m in seeded} == before
