"""Stale consent reaches the deletion feed: once per stale moment, only for members an extract held, never for one who granted again.

On a real vault (seeded members, the real consent service and notice book,
extracts written by the real runner): a material notice version makes the
grants under version 1 stop counting at its ``effective_at`` plus the grace
period. A sweep after that moment feeds, to each consumer whose extracts held
them, the pseudonym (``Pseudonymizer`` for that consumer and epoch) of every
held member whose consent is not live, with reason ``stale``; before it,
nothing. A moment is recorded once: a second sweep, another instance or two
sweeps at once add nothing more, and a sweep that stopped midway is completed
by the next without feeding anyone twice. A moment waits while an extract of
its purpose started before it still runs. Each batch that fed entries is one
audit event with counts only.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from api.runtime import Runtime
from audit.store import audit_journal
from tests.vault.test_extracts import NOW, Vault
from vault.consent import ConsentChannel, ConsentDecision, ConsentRequest, ConsentService, NoticeBook, Recorder, RecorderRole
from vault.extracts import records
from vault.extracts import stale as stale_module
from vault.extracts.feed import DeletionFeed, FeedEntry, LeftReason
from vault.extracts.pseudonyms import ROOT_KEY
from vault.extracts.runner import ExtractRequest
from vault.extracts.stale import ACTION, StaleConsentFeed, StaleMoment, SweptMoment
from vault.extracts.writers import ExtractFormat
from vault.ids import new_id
from vault.purposes import Purpose
from vault.storage.engine import write_transaction
from vault.storage.schema import deletion_feed_sweeps

P = Purpose.loyalty_profiling
EFFECTIVE = NOW + timedelta(days=1)  # version 2 of the notice, material
STALE_AT = EFFECTIVE + timedelta(days=30)  # the consent service's default grace period


class Stale:
    """Two consumers whose extracts held different members, a material notice version 2, and members who granted again under it."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        members = vault.members
        self.never = members[:3]  # never granted: no extract held them
        self.late = members[3:8]  # granted after marketing-analytics' extract: only loyalty-app's held them
        self.early = members[8:]  # held by both consumers' extracts
        self.regranted = members[8:11]  # granted again under version 2 before the moment
        vault.consumer("loyalty-app", ["tier"], k=2)
        vault.consumer("marketing-analytics", ["tier"], k=2)
        for m in self.early:
            vault.record(m, P, ConsentDecision.granted, NOW - timedelta(days=2))
        marketing, _ = vault.run("marketing-analytics", now=NOW - timedelta(days=1))
        for m in self.late:
            vault.record(m, P, ConsentDecision.granted, NOW - timedelta(hours=12))
        loyalty, _ = vault.run("loyalty-app", now=NOW)
        self.held = {"loyalty-app": vault.included(loyalty.extract_id), "marketing-analytics": vault.included(marketing.extract_id)}
        with write_transaction(vault.rt.data_engine) as conn:
            vault.consent.notices.publish(
                conn, P, 2, text_zh="新的说明", text_en="a new notice", material=True, effective_at=EFFECTIVE, published_by="staff:dpo-1", now=NOW
            )
        for m in self.regranted:
            request = ConsentRequest(P, ConsentDecision.granted, ConsentChannel.app, notice_version=2)
            with write_transaction(vault.rt.data_engine) as conn:
                vault.consent.record(
                    conn, m, request, Recorder("app", RecorderRole.member), consent_id=new_id(), request_id="test", now=EFFECTIVE + timedelta(hours=1)
                )

    def sweeper(self) -> StaleConsentFeed:
        """A sweeper as another process would build it: its own consent service and feed on the same vault."""
        feed = DeletionFeed(lambda: self.vault.rt.keys.root_key(ROOT_KEY))
        return StaleConsentFeed(ConsentService(self.vault.rt.members, NoticeBook(), feed=feed), feed)

    def feed(self, consumer_id: str) -> list[FeedEntry]:
        with self.vault.rt.data_engine.connect() as conn:
            return self.vault.feed.since(conn, consumer_id, after=0, limit=10_000)

    def expected(self, consumer_id: str) -> set[tuple[int, str, LeftReason]]:
        return {(1, self.vault.pseudonym(consumer_id, 1, m), LeftReason.stale) for m in self.held[consumer_id] - set(self.regranted)}

    def moments(self) -> list[tuple[str, int]]:
        with self.vault.rt.data_engine.connect() as conn:
            return [(str(p), int(v)) for p, v in conn.execute(select(deletion_feed_sweeps.c.purpose, deletion_feed_sweeps.c.notice_version))]

    def sweep_events(self) -> list[dict[str, Any]]:
        with self.vault.rt.data_engine.connect() as conn:
            leaves = [json.loads(bytes(b)) for b in conn.scalars(select(audit_journal.c.leaf).order_by(audit_journal.c.journal_id))]
        return [e for e in leaves if e["action"] == ACTION]


def _entries(feed: list[FeedEntry]) -> set[tuple[int, str, LeftReason]]:
    return {(e.epoch, e.pseudonym, e.reason) for e in feed}


@pytest.fixture
def stale(runtime: Runtime, tmp_path: Path) -> Stale:
    return Stale(Vault(runtime, tmp_path, members=30))


def _engine(stale: Stale) -> Engine:
    return stale.vault.rt.data_engine


def test_the_extracts_hold_the_members_the_scenario_needs(stale: Stale) -> None:
    """Both extracts held every member they were offered (k reached without suppression), so the checks below are about the feed."""
    assert stale.held == {"loyalty-app": set(stale.late) | set(stale.early), "marketing-analytics": set(stale.early)}


def test_after_the_moment_each_consumer_is_fed_the_stale_members_its_extracts_held(stale: Stale) -> None:
    swept = stale.sweeper().sweep(_engine(stale), STALE_AT + timedelta(minutes=1))

    loyalty, marketing = stale.feed("loyalty-app"), stale.feed("marketing-analytics")
    assert _entries(loyalty) == stale.expected("loyalty-app")
    assert _entries(marketing) == stale.expected("marketing-analytics")
    assert len(loyalty) == len(stale.late) + len(stale.early) - len(stale.regranted)
    assert len(marketing) == len(stale.early) - len(stale.regranted)
    assert {e.at for e in loyalty + marketing} == {STALE_AT + timedelta(minutes=1)}
    assert swept == [SweptMoment(StaleMoment(P, 2, STALE_AT), epochs=2, judged=len(stale.late) + 2 * len(stale.early), fed=len(loyalty) + len(marketing))]


def test_a_member_who_granted_again_or_was_never_held_is_not_fed(stale: Stale) -> None:
    stale.sweeper().sweep(_engine(stale), STALE_AT)

    fed = {e.pseudonym for e in stale.feed("loyalty-app")} | {e.pseudonym for e in stale.feed("marketing-analytics")}
    for m in [*stale.regranted, *stale.never]:
        assert stale.vault.pseudonym("loyalty-app", 1, m) not in fed
        assert stale.vault.pseudonym("marketing-analytics", 1, m) not in fed
    assert stale.vault.pseudonym("marketing-analytics", 1, stale.late[0]) not in fed  # only loyalty-app's extract held the late members
    assert stale.vault.pseudonym("loyalty-app", 1, stale.late[0]) in fed


def test_inside_the_grace_period_the_sweep_feeds_nothing_and_records_nothing(stale: Stale) -> None:
    assert stale.sweeper().sweep(_engine(stale), STALE_AT - timedelta(seconds=1)) == []

    assert stale.feed("loyalty-app") == stale.feed("marketing-analytics") == []
    assert stale.moments() == []
    assert stale.sweep_events() == []


def test_a_second_sweep_and_another_instance_add_nothing_and_the_moment_is_recorded_once(stale: Stale) -> None:
    first = stale.sweeper()
    assert len(first.sweep(_engine(stale), STALE_AT)) == 1
    fed = stale.feed("loyalty-app") + stale.feed("marketing-analytics")

    assert first.sweep(_engine(stale), STALE_AT + timedelta(days=1)) == []
    assert stale.sweeper().sweep(_engine(stale), STALE_AT + timedelta(days=2)) == []

    assert stale.feed("loyalty-app") + stale.feed("marketing-analytics") == fed
    assert stale.moments() == [("loyalty_profiling", 2)]
    assert sum(int(e["details"]["fed"]) for e in stale.sweep_events()) == len(fed)


def test_two_sweeps_at_once_feed_each_member_once_and_neither_fails(stale: Stale) -> None:
    sweepers = [stale.sweeper(), stale.sweeper()]
    barrier = threading.Barrier(2)
    results: list[list[SweptMoment]] = []
    errors: list[BaseException] = []

    def run(sweeper: StaleConsentFeed) -> None:
        barrier.wait()
        try:
            results.append(sweeper.sweep(_engine(stale), STALE_AT))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in sweepers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert sorted(len(r) for r in results) == [0, 1]
    assert _entries(stale.feed("loyalty-app")) == stale.expected("loyalty-app")
    assert len(stale.feed("loyalty-app")) == len(stale.expected("loyalty-app"))
    assert stale.moments() == [("loyalty_profiling", 2)]
    assert sum(int(e["details"]["fed"]) for e in stale.sweep_events()) == len(stale.feed("loyalty-app")) + len(stale.feed("marketing-analytics"))


def test_batches_of_a_few_members_feed_the_same_entries_each_batch_journaled(stale: Stale, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stale_module, "BATCH", 4)

    [swept] = stale.sweeper().sweep(_engine(stale), STALE_AT)

    assert _entries(stale.feed("loyalty-app")) == stale.expected("loyalty-app")
    assert _entries(stale.feed("marketing-analytics")) == stale.expected("marketing-analytics")
    events = stale.sweep_events()
    # Each consumer's held members in id order, four a batch; a batch is journaled only if it fed someone, so one made
    # only of re-granted members (the ids are random: two of the three can be a consumer's last two) has no event.
    batches = [sorted(held)[i : i + 4] for held in stale.held.values() for i in range(0, len(held), 4)]
    journaled = [batch for batch in batches if set(batch) - set(stale.regranted)]
    assert swept.judged == len(stale.late) + 2 * len(stale.early)
    assert sum(int(e["details"]["judged"]) for e in events) == sum(len(batch) for batch in journaled)
    assert swept.fed == sum(int(e["details"]["fed"]) for e in events) == len(stale.expected("loyalty-app")) + len(stale.expected("marketing-analytics"))
    assert len(events) == len(journaled)


def test_a_sweep_that_stopped_midway_is_completed_by_the_next_without_feeding_anyone_twice(stale: Stale) -> None:
    """A process that stopped after some batches left their entries and no sweep row: the next sweep goes over the moment again."""
    already = sorted(stale.held["loyalty-app"] - set(stale.regranted))[:5]
    with write_transaction(_engine(stale)) as conn:
        stale.vault.feed.members_left(conn, "loyalty-app", 1, already, LeftReason.stale, now=STALE_AT)

    [swept] = stale.sweeper().sweep(_engine(stale), STALE_AT + timedelta(minutes=5))

    assert _entries(stale.feed("loyalty-app")) == stale.expected("loyalty-app")
    assert len(stale.feed("loyalty-app")) == len(stale.expected("loyalty-app"))
    assert swept.fed == len(stale.expected("loyalty-app")) - len(already) + len(stale.expected("marketing-analytics"))
    assert stale.moments() == [("loyalty_profiling", 2)]


def test_a_member_already_in_the_feed_is_not_added_again(stale: Stale) -> None:
    withdrawn = stale.early[-1]
    stale.vault.record(withdrawn, P, ConsentDecision.withdrawn, EFFECTIVE + timedelta(days=2))

    stale.sweeper().sweep(_engine(stale), STALE_AT)

    entries = [(e.pseudonym, e.reason) for e in stale.feed("loyalty-app")]
    assert entries.count((stale.vault.pseudonym("loyalty-app", 1, withdrawn), LeftReason.withdrawn)) == 1
    assert [p for p, _ in entries].count(stale.vault.pseudonym("loyalty-app", 1, withdrawn)) == 1
    assert len(entries) == len(stale.expected("loyalty-app"))


def test_the_moment_waits_while_an_extract_started_before_it_still_runs(stale: Stale) -> None:
    vault = stale.vault
    with vault.rt.data_engine.connect() as conn:
        consumer = vault.registry.get(conn, "marketing-analytics")
    extract_id = new_id()
    with write_transaction(vault.rt.data_engine) as conn:
        vault.runner.begin(conn, ExtractRequest(extract_id, consumer, ExtractFormat.ndjson), requested_by="t", now=STALE_AT - timedelta(minutes=1))

    assert stale.sweeper().sweep(_engine(stale), STALE_AT + timedelta(minutes=1)) == []
    assert stale.moments() == []

    with write_transaction(vault.rt.data_engine) as conn:
        records.interrupt(conn, {extract_id}, STALE_AT + timedelta(minutes=2))
    assert len(stale.sweeper().sweep(_engine(stale), STALE_AT + timedelta(minutes=3))) == 1
    assert _entries(stale.feed("marketing-analytics")) == stale.expected("marketing-analytics")


def test_a_non_material_version_makes_no_moment(stale: Stale) -> None:
    with write_transaction(stale.vault.rt.data_engine) as conn:
        stale.vault.consent.notices.publish(
            conn, P, 3, text_zh="措辞修订", text_en="wording", material=False, effective_at=EFFECTIVE + timedelta(days=1), published_by="staff:dpo-1", now=NOW
        )

    stale.sweeper().sweep(_engine(stale), STALE_AT + timedelta(days=60))

    assert stale.moments() == [("loyalty_profiling", 2)]


def test_the_sweeps_audit_events_name_the_moment_and_counts_and_no_member_or_pseudonym(stale: Stale) -> None:
    stale.sweeper().sweep(_engine(stale), STALE_AT)

    events = stale.sweep_events()
    assert [e["details"] for e in events] == [
        {"consumer": "loyalty-app", "epoch": 1, "fed": len(stale.expected("loyalty-app")), "judged": len(stale.held["loyalty-app"])},
        {"consumer": "marketing-analytics", "epoch": 1, "fed": len(stale.expected("marketing-analytics")), "judged": len(stale.held["marketing-analytics"])},
    ]
    for event in events:
        assert event["resource_type"] == "deletion_feed"
        assert event["resource_id"] == "loyalty_profiling:2"
        assert event["purpose"] == "loyalty_profiling"
        assert event["member_id"] is None
        assert event["fields"] == []
        assert event["actor"] == {"subject": "vault:sweep", "roles": ["system"], "client_id": None, "acting_staff": None}
    text = json.dumps(events)
    for m in stale.vault.members:
        assert m not in text
        assert stale.vault.pseudonym("loyalty-app", 1, m) not in text
        assert stale.vault.pseudonym("marketing-analytics", 1, m) not in text
