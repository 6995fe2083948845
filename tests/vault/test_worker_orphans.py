"""Worker processes do not outlive a killed parent (``vault.parent_process``).

A command that runs an extract or a seeding with worker processes is killed
with ``SIGKILL`` (as the out-of-memory killer or a hard stop would): it cannot
stop its workers. An extract worker waiting for its next task holds the
opened vault — its key store, the KEK's cipher, the pseudonym root key — and
a seeding worker would go on seeding alone, so each must end by itself. The parent here is a real process started for the test: it starts
the workers on a real vault, prints their ids once they run, and waits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from api.settings import Settings
from vault.demo._batches import GROUP

PARENT = """
import functools, multiprocessing, sys, time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from api.runtime import open_runtime
from api.settings import Settings
from vault.demo._batches import GROUP
from vault.extracts._workers import WorkerPool
from vault.extracts.profiling import Profiling
from vault.extracts.source import SourceSpec
from vault.purposes import Purpose

settings = Settings(_env_file=None, data_dir=Path(sys.argv[1]))
job = Profiling("panel", Purpose.loyalty_profiling, ("tier",), False, 1, ("tier",), (), (), datetime.now(UTC))
with WorkerPool(functools.partial(open_runtime, settings), 3, spec=SourceSpec(timedelta(days=30), 100), job=job):
    time.sleep(float(sys.argv[2]))  # the workers open the vault meanwhile: one that could not would exit at once
    print(" ".join(str(p.pid) for p in multiprocessing.active_children() if p.name.startswith("extract-worker")), flush=True)
    time.sleep(600)
"""


SEEDING_PARENT = """
import functools, multiprocessing, sys, time
from datetime import UTC, datetime
from pathlib import Path

from api.runtime import open_runtime
from api.settings import Settings
from vault.demo._batches import GROUP
from vault.demo.seed import seed_members_parallel

settings = Settings(_env_file=None, data_dir=Path(sys.argv[1]))
told = False

def progress(seeded: int) -> None:  # once a batch is committed, every worker has started
    global told
    if not told:
        told = True
        print(" ".join(str(p.pid) for p in multiprocessing.active_children() if p.name.startswith("seed-worker")), flush=True)
        time.sleep(600)

if __name__ == "__main__":  # a seeding worker imports this script again (spawn)
    seed_members_parallel(functools.partial(open_runtime, settings), count=100_000, seed=3, now=datetime.now(UTC), workers=2, batch=20, progress=progress)
"""


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (an exited process whose parent, here PID 1, has not reaped it yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_extract_workers_exit_once_their_parent_is_killed(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    workers = _kill_parent(tmp_path, PARENT, [str(make_settings().data_dir), "3"], expected=2)
    assert not [pid for pid in workers if _running(pid)], "an extract worker outlived its killed parent"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_seeding_worker_claims_nothing_more_once_its_parent_is_killed(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """It ends with its parent instead of seeding the rest alone; the group it was writing commits whole or not at all.

    The parent stops in its first progress report; the worker is seen
    seeding on (the vault's member count grows) before the parent is killed.
    """
    data_dir = make_settings().data_dir
    at_kill: list[int] = []

    def seeding() -> None:
        counted = _members(data_dir)
        deadline = time.monotonic() + 30
        while _members(data_dir) == counted and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _members(data_dir) > counted, "the seeding worker never committed a batch"
        at_kill.append(_members(data_dir))

    workers = _kill_parent(tmp_path, SEEDING_PARENT, [str(data_dir)], expected=1, before=seeding)
    assert not [pid for pid in workers if _running(pid)], "a seeding worker outlived its killed parent"
    time.sleep(2)  # a worker that had gone on seeding would have committed more by now (a batch takes well under a second)
    assert _members(data_dir) - at_kill[0] <= GROUP * 20  # at most the group it was committing as the parent died


def _members(data_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'vault.db'}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT count(*) FROM members").fetchone()[0])


def _kill_parent(tmp_path: Path, source: str, args: list[str], *, expected: int, before: Callable[[], None] = lambda: None) -> list[int]:
    """Start ``source`` as a process, read the worker ids it prints, run ``before``, SIGKILL it; the workers' ids once they are gone or 30 s passed."""
    script = tmp_path / "parent.py"
    script.write_text(source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    parent = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert parent.stdout is not None
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == expected
        assert all(_running(pid) for pid in workers)  # they opened the vault and work or wait
        before()

        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 30  # a liveness bound, not a speed
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        return workers
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
