"""The deletion feed feeds a pseudonym whenever the consumer holds it again, and members who leave while an extract runs.

On a real vault (seeded members, the real consent service, data-request gate
and runner), on SQLite and PostgreSQL:

* a member who withdraws, grants again, is released again by a later extract
  of the epoch and withdraws again is fed a second time, after that extract's
  feed position; one who withdraws twice with no release in between is fed
  once;
* a member who withdraws or is restricted while an extract runs, after its
  snapshot was read, is in that extract's file and is fed when the extract is
  released, after its feed position, whether or not an earlier extract held
  them; the extract's audit event counts them (``departed``). A departure the
  running extract did not include feeds nothing;
* a withdrawal's transaction holds the feed's lock until it commits: an
  extract starting meanwhile waits for it, and then its snapshot sees the
  withdrawal (the member is not included, nothing is fed);
* on PostgreSQL an extract's release takes the feed's lock only after it has
  inserted its members, so feed writers do not wait for that insert.
"""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text

from api.runtime import Runtime
from audit.event import AuditEvent
from audit.store import AuditJournal, audit_journal
from tests.vault.test_extracts import DPO, NOW, Vault
from vault.access import Access, Gatekeeper
from vault.consent import ConsentChannel, ConsentDecision, ConsentRequest, Recorder, RecorderRole
from vault.data_requests import DataRequestGate, DataRequestService, FiledBy, Filer, Filing, Move, RequestType, Status
from vault.extracts import feed
from vault.extracts.feed import FeedEntry, LeftReason
from vault.extracts.runner import ExtractAudit, ExtractOutcome, ExtractRequest
from vault.extracts.writers import ExtractFormat
from vault.ids import new_id
from vault.purposes import Purpose
from vault.storage.engine import write_transaction
from vault.storage.schema import extract_departures, extracts

P = Purpose.loyalty_profiling


@pytest.fixture
def vault(runtime: Runtime, tmp_path: Path) -> Vault:
    v = Vault(runtime, tmp_path, members=24)
    v.consumer("loyalty-app", ["tier"], k=2)
    for m in v.members:
        v.record(m, P, ConsentDecision.granted)
    return v


def _feed(vault: Vault) -> list[FeedEntry]:
    with vault.rt.data_engine.connect() as conn:
        return vault.feed.since(conn, "loyalty-app", after=0, limit=1000)


def _feed_seq(vault: Vault, extract_id: str) -> int:
    with vault.rt.data_engine.connect() as conn:
        return int(conn.execute(select(extracts.c.feed_seq).where(extracts.c.extract_id == extract_id)).scalar_one())


def _details(vault: Vault, extract_id: str) -> dict[str, object]:
    with vault.rt.data_engine.connect() as conn:
        leaves = [json.loads(bytes(b)) for b in conn.scalars(select(audit_journal.c.leaf).order_by(audit_journal.c.journal_id))]
    (event,) = [AuditEvent.from_json_obj(e) for e in leaves if e["action"] == "extract" and e["resource_id"] == extract_id]
    return dict(event.details)


def _restrict(vault: Vault, member_id: str) -> None:
    service = DataRequestService(vault.rt.members, periods={"default": "P1M"})
    gate = DataRequestGate(service, vault.rt.members, vault.consent, vault.rt.ledger, Gatekeeper(AuditJournal()), feed=vault.feed)
    with write_transaction(vault.rt.data_engine) as conn:
        dsr_id = service.file(conn, member_id, Filing(RequestType.restriction), Filer("app", FiledBy.member), dsr_id=new_id(), now=NOW).dsr_id
    for to in (Status.verified, Status.in_progress, Status.completed):
        access = Access(DPO, request_id="req", purpose="self_service", policy_hash="policy-test-1", now=NOW + timedelta(minutes=2))
        with write_transaction(vault.rt.data_engine) as conn:
            moved = gate.transition(conn, access, allowed=True, dsr_id=dsr_id, member_id=member_id, move=Move(to))
        assert not hasattr(moved, "outcome"), moved


def _run_while(vault: Vault, leave: dict[str, str]) -> tuple[ExtractOutcome, bytes]:
    """Run an extract whose first pass has read its snapshot when the members of ``leave`` leave (member id → how)."""
    with vault.rt.data_engine.connect() as conn:
        consumer = vault.registry.get(conn, "loyalty-app")
    left: list[str] = []

    def progress(_: int) -> None:  # called after the first batch was read under the run's snapshot
        for member_id, how in leave.items():
            if member_id in left:
                continue
            left.append(member_id)
            if how == "withdraw":
                vault.record(member_id, P, ConsentDecision.withdrawn, NOW + timedelta(minutes=5))
            else:
                _restrict(vault, member_id)

    out = io.BytesIO()
    outcome = vault.runner.run(
        ExtractRequest(new_id(), consumer, ExtractFormat.ndjson),
        out,
        audit=ExtractAudit(DPO, f"req-{new_id()[:8]}", "policy-test-1"),
        signing=vault.signing,
        now=NOW + timedelta(minutes=4),
        progress=progress,
    )
    assert sorted(left) == sorted(leave), "the first pass reported progress"
    return outcome, out.getvalue()


def test_a_member_who_leaves_again_after_a_later_release_is_fed_again(vault: Vault) -> None:
    again, once = vault.members[:2]
    first, _ = vault.run("loyalty-app")
    for m in (again, once):
        vault.record(m, P, ConsentDecision.withdrawn, NOW + timedelta(minutes=1))
        vault.record(m, P, ConsentDecision.granted, NOW + timedelta(minutes=2))
    vault.record(once, P, ConsentDecision.withdrawn, NOW + timedelta(minutes=3))  # no release since its entry: not fed again
    second, _ = vault.run("loyalty-app", now=NOW + timedelta(minutes=4))
    assert again in vault.included(second.extract_id)
    assert once not in vault.included(second.extract_id)

    vault.record(again, P, ConsentDecision.withdrawn, NOW + timedelta(minutes=5))
    vault.record(once, P, ConsentDecision.granted, NOW + timedelta(minutes=6))
    vault.record(once, P, ConsentDecision.withdrawn, NOW + timedelta(minutes=7))  # granted again, never released again

    feed = _feed(vault)
    assert len([e for e in feed if e.pseudonym == vault.pseudonym("loyalty-app", 1, once)]) == 1
    again_entries = [e for e in feed if e.pseudonym == vault.pseudonym("loyalty-app", 1, again)]
    assert [e.reason for e in again_entries] == [LeftReason.withdrawn, LeftReason.withdrawn]
    assert again_entries[0].seq <= _feed_seq(vault, second.extract_id) < again_entries[1].seq
    assert _feed_seq(vault, first.extract_id) == 0


@pytest.mark.parametrize("held_before", [False, True])
def test_members_who_leave_while_an_extract_runs_are_in_its_file_and_fed_when_it_is_released(vault: Vault, held_before: bool) -> None:
    withdrawing, restricted = vault.members[:2]
    if held_before:
        vault.run("loyalty-app")

    outcome, data = _run_while(vault, {withdrawing: "withdraw", restricted: "restrict"})

    assert outcome.status == "done"
    assert {withdrawing, restricted} <= vault.included(outcome.extract_id)  # its snapshot predates their departure
    released = {json.loads(line)["pseudonym"] for line in data.decode().splitlines()}
    fed = [(e.seq, e.pseudonym, e.reason) for e in _feed(vault)]
    for member_id, reason in ((withdrawing, LeftReason.withdrawn), (restricted, LeftReason.restricted)):
        pseudonym = vault.pseudonym("loyalty-app", 1, member_id)
        assert pseudonym in released
        entries = [(seq, r) for seq, p, r in fed if p == pseudonym]
        assert [r for _, r in entries] == [reason, reason] if held_before else [reason]
        assert entries[-1][0] > _feed_seq(vault, outcome.extract_id)  # after the release: the consumer drops the row it just got
    assert _details(vault, outcome.extract_id)["departed"] == 2


def test_a_departure_the_running_extract_did_not_include_feeds_nothing(vault: Vault) -> None:
    never = vault.members[0]
    vault.record(never, P, ConsentDecision.withdrawn, NOW - timedelta(hours=1))  # no live consent: no extract includes them

    outcome, _ = _run_while(vault, {never: "restrict"})

    assert never not in vault.included(outcome.extract_id)
    with vault.rt.data_engine.connect() as conn:
        recorded = conn.execute(select(extract_departures.c.member_id, extract_departures.c.reason)).all()
    assert [tuple(r) for r in recorded] == [(never, "restricted")]
    assert _feed(vault) == []
    assert "departed" not in _details(vault, outcome.extract_id)


def test_an_extract_starting_while_a_withdrawal_is_open_waits_for_it_and_then_leaves_the_member_out(vault: Vault) -> None:
    leaving = vault.members[0]
    with vault.rt.data_engine.connect() as conn:
        consumer = vault.registry.get(conn, "loyalty-app")
    request = ExtractRequest(new_id(), consumer, ExtractFormat.ndjson)
    started = threading.Event()
    failed: list[BaseException] = []

    def start() -> None:
        try:
            with write_transaction(vault.rt.data_engine) as conn:
                vault.runner.begin(conn, request, requested_by=DPO.subject, now=NOW + timedelta(minutes=4))
            started.set()
        except BaseException as exc:  # noqa: BLE001 — reported to the test's thread
            failed.append(exc)

    withdrawal = ConsentRequest(P, ConsentDecision.withdrawn, ConsentChannel.app)
    with write_transaction(vault.rt.data_engine) as conn:
        vault.consent.record(conn, leaving, withdrawal, Recorder("app", RecorderRole.member), consent_id=new_id(), request_id="t", now=NOW)
        starter = threading.Thread(target=start)
        starter.start()
        assert not started.wait(0.5), "the start waits for the open withdrawal's lock"
    starter.join(timeout=30)
    assert not failed
    assert started.is_set()

    out = io.BytesIO()
    outcome = vault.runner.run(
        request, out, audit=ExtractAudit(DPO, "req-t", "policy-test-1"), signing=vault.signing, now=NOW + timedelta(minutes=4), begun=True
    )

    assert outcome.status == "done"
    assert leaving not in vault.included(outcome.extract_id)
    assert _feed(vault) == []


def test_a_release_inserts_its_members_before_it_waits_for_the_feed_lock(vault: Vault) -> None:
    """On PostgreSQL, withdrawals wait for the feed's lock: the release takes it after its long insert, not before."""
    engine = vault.rt.data_engine
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's write transaction holds its write lock throughout")
    with engine.connect() as conn:
        consumer = vault.registry.get(conn, "loyalty-app")
    held, let_go = threading.Event(), threading.Event()

    def hold_the_feed() -> None:  # another feed writer, its transaction open until told
        with write_transaction(engine) as conn:
            feed.hold(conn)
            held.set()
            let_go.wait(30)

    holder = threading.Thread(target=hold_the_feed)
    ran: list[ExtractOutcome] = []

    def progress(_: int) -> None:  # the run has begun (its start took the lock and committed): now another writer holds it
        if not held.is_set():
            holder.start()
            assert held.wait(30)

    def run() -> None:
        out = io.BytesIO()
        audit = ExtractAudit(DPO, "req-lock", "policy-test-1")
        ran.append(
            vault.runner.run(ExtractRequest(new_id(), consumer, ExtractFormat.ndjson), out, audit=audit, signing=vault.signing, now=NOW, progress=progress)
        )

    runner = threading.Thread(target=run)
    runner.start()
    try:
        waiting = _backend_waiting_for_the_feed_lock(engine)
        with engine.connect() as conn:
            inserted = conn.execute(
                text("SELECT count(*) FROM pg_locks WHERE pid = :pid AND granted AND relation = 'extract_members'::regclass AND mode = 'RowExclusiveLock'"),
                {"pid": waiting},
            ).scalar_one()
        assert inserted == 1, "the release waits for the feed's lock with its members already inserted"
    finally:
        let_go.set()
        holder.join(timeout=30)
        runner.join(timeout=60)
    (outcome,) = ran
    assert outcome.status == "done"
    assert len(vault.included(outcome.extract_id)) == outcome.rows > 0


def _backend_waiting_for_the_feed_lock(engine: Engine) -> int:
    """The pid of the session waiting for the feed's advisory lock (polled: the release reaches it after its first pass)."""
    high, low = (feed.FEED_LOCK_KEY >> 32) & 0xFFFFFFFF, feed.FEED_LOCK_KEY & 0xFFFFFFFF
    query = text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = :high AND objid = :low")
    for _ in range(1500):
        with engine.connect() as conn:
            pid = conn.execute(query, {"high": high, "low": low}).scalar()
        if pid is not None:
            return int(pid)
        time.sleep(0.02)
    raise AssertionError("no session waited for the feed's lock")
