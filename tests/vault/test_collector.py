"""The cyclic garbage collector's pause (``vault.collector``), and why an extract may take it: its passes make no cycle per member.

An extract pauses the collector while it profiles a range and while it
releases a chunk: their objects are freed by reference counting. That is
only sound while the passes make no reference cycles per member — a cycle per
member would wait, with its member's values, for the collector's next run.
The last test runs a whole extract (both passes, one process) with the
collector off and counts what it then finds unreachable.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.runtime import Runtime
from tests.vault.test_extracts import Vault, _grant_all
from vault.collector import cyclic_gc_paused
from vault.extracts.writers import ExtractFormat


@pytest.fixture
def collector_on() -> Iterator[None]:
    """The test starts with the collector enabled and leaves it as it found it."""
    was = gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        if not was:
            gc.disable()


@pytest.mark.usefixtures("collector_on")
def test_the_collector_is_off_inside_and_on_again_after_even_when_the_block_raises() -> None:
    with cyclic_gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()

    seen: list[bool] = []

    def fail_midway() -> None:
        with cyclic_gc_paused():
            seen.append(gc.isenabled())
            raise RuntimeError("midway")

    with pytest.raises(RuntimeError, match="midway"):
        fail_midway()
    assert seen == [False]
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_a_nested_pause_leaves_the_outer_one_in_place_and_a_disabled_collector_stays_disabled() -> None:
    with cyclic_gc_paused():
        with cyclic_gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block found it off: it does not switch it on under the outer one
    assert gc.isenabled()

    gc.disable()
    with cyclic_gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # someone else's pause is not ended by ours


@pytest.mark.usefixtures("collector_on")
def test_overlapping_pauses_in_two_threads_keep_the_collector_off_until_the_last_ends() -> None:
    """An API process pauses in its extract thread while other threads may pause too: the first to end does not switch it on."""
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with cyclic_gc_paused():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second() -> None:
        first_in.wait(10)
        with cyclic_gc_paused():
            second_in.set()
            first_out.wait(10)
            seen.append(gc.isenabled())  # the first pause has ended; this one has not

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert first_out.is_set()
    assert seen == [False]
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_an_extract_leaves_no_reference_cycle_per_member(runtime: Runtime, tmp_path: Path) -> None:
    """A whole extract run with the collector off leaves fewer unreachable objects than it released members.

    A cycle per member (two objects at least) would leave at least twice as
    many as the members released. What is left is the run's own bookkeeping,
    the same whatever the number of members: 15 objects on SQLite and 167 on
    PostgreSQL (its driver's), for 105 members as for 556.
    """
    vault = Vault(runtime, tmp_path, members=400)
    vault.consumer("loyalty", ["gender", "age_band", "region", "tier", "spend_band", "rfm", "interest_tags", "preferred_categories"], k=2)
    _grant_all(vault)
    vault.run("loyalty", ExtractFormat.parquet)  # the epoch's generalization is fixed, statements compiled, caches warm

    gc.collect()
    with cyclic_gc_paused():
        outcome, data = vault.run("loyalty", ExtractFormat.parquet)
        left = gc.collect()  # an explicit collection runs even while the collector is paused

    assert outcome.status == "done"
    assert data
    assert outcome.rows >= 300
    assert left < outcome.rows, f"{left} unreachable objects after releasing {outcome.rows} members"
