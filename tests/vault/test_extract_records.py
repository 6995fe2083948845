"""Extract jobs' bookkeeping: heartbeats reach only running jobs; a silent job is interrupted, a live one is not; purge marks once."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from api.runtime import Runtime
from vault.clients import ROOT_KEY as CLIENT_ROOT
from vault.clients import ClientRegistry
from vault.extracts import records
from vault.extracts.consumers import ConsumerRegistry
from vault.ids import new_id
from vault.storage.engine import write_transaction
from vault.storage.schema import extracts

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def _consumer(runtime: Runtime, consumer_id: str) -> None:
    with write_transaction(runtime.data_engine) as conn:
        ClientRegistry(runtime.keys.root_key(CLIENT_ROOT)).add(conn, consumer_id, ["loyalty_service"], [], T0)
        ConsumerRegistry().register(conn, consumer_id, purpose="loyalty_profiling", attributes=["tier"], health=False, now=T0)


def _job(runtime: Runtime, consumer_id: str, status: str, *, heartbeat: datetime, expires: datetime | None = None) -> str:
    extract_id = new_id()
    with write_transaction(runtime.data_engine) as conn:
        conn.execute(
            insert(extracts).values(
                extract_id=extract_id, consumer_id=consumer_id, purpose="loyalty_profiling", format="ndjson", epoch=1, status=status, k=5,
                requested_by=consumer_id, created_at=heartbeat, heartbeat_at=heartbeat, expires_at=expires,
            )
        )  # fmt: skip
    return extract_id


def _beat_of(runtime: Runtime, extract_id: str) -> datetime:
    with runtime.data_engine.connect() as conn:
        found = conn.execute(select(extracts.c.heartbeat_at).where(extracts.c.extract_id == extract_id)).scalar_one()
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def test_beats_reach_running_jobs_only(runtime: Runtime) -> None:
    _consumer(runtime, "app-a")
    _consumer(runtime, "app-b")
    running, done = _job(runtime, "app-a", "running", heartbeat=T0), _job(runtime, "app-b", "done", heartbeat=T0)

    with write_transaction(runtime.data_engine) as conn:
        records.beat(conn, {running, done, new_id()}, T0 + timedelta(minutes=1))

    assert _beat_of(runtime, running) == T0 + timedelta(minutes=1)
    assert _beat_of(runtime, done) == T0


def test_the_heartbeat_thread_keeps_a_job_alive_and_stops_with_its_block(runtime: Runtime) -> None:
    _consumer(runtime, "app-a")
    job = _job(runtime, "app-a", "running", heartbeat=T0)

    with records.heartbeat(runtime.data_engine, job, every=timedelta(milliseconds=20)):
        deadline = time.monotonic() + 30
        while _beat_of(runtime, job) == T0 and time.monotonic() < deadline:
            time.sleep(0.02)
    after = _beat_of(runtime, job)
    time.sleep(0.1)

    assert after > T0
    assert _beat_of(runtime, job) == after  # stopped with the block
    with write_transaction(runtime.data_engine) as conn:
        assert records.interrupt_stale(conn, silent_since=after - timedelta(seconds=1), now=after) == []
        assert records.interrupt_stale(conn, silent_since=after + timedelta(seconds=1), now=after) == [job]
    with runtime.data_engine.connect() as conn:
        record = records.extract_record(conn, job)
    assert record is not None
    assert (record.status, record.reason) == ("failed", records.INTERRUPTED)


def test_purge_is_due_once_past_the_time_and_marked_once(runtime: Runtime) -> None:
    _consumer(runtime, "app-a")
    kept = _job(runtime, "app-a", "done", heartbeat=T0, expires=T0 + timedelta(hours=1))

    with write_transaction(runtime.data_engine) as conn:
        assert records.due_for_purge(conn, T0 + timedelta(minutes=59)) == []
        assert records.due_for_purge(conn, T0 + timedelta(hours=1)) == [kept]
        records.mark_purged(conn, kept, T0 + timedelta(hours=1))
        records.mark_purged(conn, kept, T0 + timedelta(hours=2))
        assert records.due_for_purge(conn, T0 + timedelta(hours=3)) == []
    with runtime.data_engine.connect() as conn:
        record = records.extract_record(conn, kept)
    assert record is not None
    assert record.purged_at is not None
    assert not record.downloadable(T0)
