"""Demo consent histories on real SQLite and PostgreSQL: deterministic, varied, and each one the service could have recorded.

The histories are read back through ``ConsentService`` (evidence decrypted)
and checked against the notices and a plain fold written here, not against
the seeder's own bookkeeping.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select

from api.runtime import Runtime
from tests.vault.factories import other_member_values, resident_id
from vault import data_map as dm
from vault.consent import ConsentChannel, ConsentDecision, ConsentEvent, ConsentService, ConsentState, GivenBy, Notice, NoticeBook, RecorderRole
from vault.consent.service import age_on
from vault.demo import DEMO_CHANNELS, ConsentSeedReport, seed_consents, seed_members
from vault.demo.consents import MARKETING_V2_EN, MARKETING_V2_ZH, WINDOW
from vault.purposes import Purpose, consent_purposes
from vault.storage.engine import write_transaction
from vault.storage.schema import consent_events

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
MIGRATION_EFFECTIVE = datetime(2026, 1, 1, tzinfo=UTC)  # version 1 of every notice (migration 0005)
GRACE = timedelta(days=30)
EVIDENCE = {ConsentChannel.front_desk: re.compile(r"scan:fd-(\d{4})-\d{6}"), ConsentChannel.paper: re.compile(r"form:pc-(\d{4})-\d{6}")}


def _service(rt: Runtime) -> ConsentService:
    return ConsentService(rt.members, NoticeBook(), grace=GRACE)


def _seed(rt: Runtime, member_ids: Sequence[str], *, seed: int = 11, now: datetime = NOW) -> ConsentSeedReport:
    return seed_consents(rt.data_engine, _service(rt), rt.members, member_ids, seed=seed, now=now, batch=16)


def _members(rt: Runtime, count: int, seed: int = 3) -> tuple[str, ...]:
    return seed_members(rt.data_engine, rt.keys, rt.members, count=count, seed=seed, now=NOW).member_ids


def _histories(rt: Runtime, member_ids: Sequence[str]) -> dict[str, list[ConsentEvent]]:
    with rt.data_engine.connect() as conn:
        return {m: _service(rt).history(conn, m) for m in member_ids}


def _notices(rt: Runtime) -> dict[Purpose, list[Notice]]:
    with rt.data_engine.connect() as conn:
        return NoticeBook().every(conn)


def _states(rt: Runtime, member_ids: Sequence[str]) -> Counter[tuple[Purpose, ConsentState]]:
    """The multiset of (purpose, state) over the members, as the service derives it at NOW."""
    service = _service(rt)
    with rt.data_engine.connect() as conn:
        return Counter((p, s.state) for m in member_ids for p, s in service.current(conn, m, NOW).items())


def _folded(events: Sequence[ConsentEvent], notices: Sequence[Notice]) -> ConsentState:
    """A purpose's state at NOW by hand: the last event decides; a grant is stale once a later material version's grace has passed."""
    state = ConsentState.none
    for e in events:
        if e.decision is ConsentDecision.withdrawn:
            state = ConsentState.withdrawn
            continue
        replaced = [n for n in notices if n.material and n.version > (e.notice_version or 0) and n.effective_at + GRACE <= NOW]
        state = ConsentState.stale if replaced else ConsentState.granted
    return state


def test_same_seed_gives_the_same_states_and_another_seed_other_ones(runtime: Runtime) -> None:
    """Two copies of the same members (same member seed), seeded in opposite orders, get the same multiset of states for one consent seed."""
    first, second, third = _members(runtime, 20), _members(runtime, 20), _members(runtime, 20)
    report_first, report_second = _seed(runtime, first), _seed(runtime, second[::-1])
    report_other = _seed(runtime, third, seed=12)

    assert _states(runtime, first) == _states(runtime, second)
    assert _states(runtime, first) != _states(runtime, third)
    assert dict(_states(runtime, first)) == report_first.states == report_second.states
    assert dict(_states(runtime, third)) == report_other.states
    assert (report_first.events, report_first.channels, report_first.withdrawals) == (report_second.events, report_second.channels, report_second.withdrawals)
    assert report_first.published is not None
    assert (report_second.published, report_other.published) == (None, None)  # the material version is published once
    assert [n.version for n in _notices(runtime)[Purpose.marketing_contact]] == [1, 2]


def test_forty_members_show_every_state_and_front_desk_and_paper_evidence(runtime: Runtime) -> None:
    member_ids = _members(runtime, 40)
    report = _seed(runtime, member_ids)
    histories = _histories(runtime, member_ids)
    events = [e for h in histories.values() for e in h]

    states = _states(runtime, member_ids)
    assert {s for _, s in states} == set(ConsentState)
    assert {p for p, s in states if s is ConsentState.stale} == {Purpose.marketing_contact}
    assert {e.channel for e in events} == set(DEMO_CHANNELS)
    assert {e.decision for e in events} == set(ConsentDecision)
    for e in events:
        if e.channel is ConsentChannel.app:
            assert (e.evidence, e.recorded_role, e.recorded_by) == (None, RecorderRole.member, f"demo-member:{e.member_id}")
        else:
            match = EVIDENCE[e.channel].fullmatch(e.evidence or "")
            assert match is not None, e.evidence
            assert int(match.group(1)) == e.recorded_at.year
            assert (e.recorded_role, e.recorded_by) == (RecorderRole.front_desk, "demo-front-desk")
    off_app = [e.evidence for e in events if e.channel is not ConsentChannel.app]
    assert len(off_app) == len(set(off_app))  # every scan or form has its own reference
    health = Counter(s for (p, s), n in states.items() for _ in range(n) if p is Purpose.health_data)
    assert health[ConsentState.granted] > len(member_ids) / 2
    # Some version 1 marketing grants were renewed on version 2; others went stale.
    marketing = [[e.notice_version for e in h if e.purpose is Purpose.marketing_contact and e.decision is ConsentDecision.granted] for h in histories.values()]
    assert [1, 2] in marketing
    assert states[(Purpose.marketing_contact, ConsentState.stale)] == sum(
        1 for h in histories.values() if [e.notice_version for e in h if e.purpose is Purpose.marketing_contact] == [1]
    )
    assert (report.events, report.withdrawals) == (len(events), sum(e.decision is ConsentDecision.withdrawn for e in events))
    assert report.channels == dict(Counter(e.channel for e in events))


def test_every_history_is_one_the_service_could_have_recorded(runtime: Runtime) -> None:
    """Grants name the notice current at their time; times lie in the window; the derived state equals a plain fold."""
    member_ids = _members(runtime, 40)
    report = _seed(runtime, member_ids)
    notices = _notices(runtime)
    marketing_v2 = notices[Purpose.marketing_contact][1]
    assert report.published == marketing_v2
    assert (marketing_v2.material, marketing_v2.text_zh, marketing_v2.text_en) == (True, MARKETING_V2_ZH, MARKETING_V2_EN)
    assert MIGRATION_EFFECTIVE < marketing_v2.published_at < marketing_v2.effective_at < NOW - GRACE
    start = max(NOW - WINDOW, MIGRATION_EFFECTIVE)
    service = _service(runtime)
    expected: Counter[tuple[Purpose, ConsentState]] = Counter()
    with runtime.data_engine.connect() as conn:
        for member_id, history in _histories(runtime, member_ids).items():
            view = runtime.members.read(conn, member_id, (dm.Category.identity, dm.Category.membership)).values
            born, joined = view[dm.Category.identity]["date_of_birth"], view[dm.Category.membership]["joined_at"]
            assert isinstance(born, date)
            assert isinstance(joined, date)
            assert [e.recorded_at for e in history] == sorted(e.recorded_at for e in history)
            for e in history:
                assert max(start, datetime(joined.year, joined.month, joined.day, tzinfo=UTC)) <= e.recorded_at < NOW
                assert e.recorded_at.microsecond == 0
                assert e.given_by is GivenBy.member
                assert age_on(born, e.recorded_at.date()) >= 14
                if e.decision is ConsentDecision.granted:
                    current = NoticeBook.current_of(notices[e.purpose], e.recorded_at)
                    assert current is not None
                    assert (e.notice_version, e.notice_hash) == (current.version, current.notice_hash)
                else:
                    assert (e.notice_version, e.notice_hash) == (None, None)
            derived = service.current(conn, member_id, NOW)
            for purpose in consent_purposes():
                events = [e for e in history if e.purpose is purpose]
                decisions = [e.decision for e in events]
                assert ConsentDecision.withdrawn not in decisions[:-1]  # a withdrawal ends a purpose's story
                assert decisions.count(ConsentDecision.granted) <= (2 if purpose is Purpose.marketing_contact else 1)
                assert derived[purpose].state is _folded(events, notices[purpose])
                expected[(purpose, derived[purpose].state)] += 1
    assert report.states == dict(expected)


def test_a_member_under_14_consents_through_a_guardian_until_the_birthday(runtime: Runtime) -> None:
    """The demo members are all adults; members turning 14 inside the window act through a guardian only before their birthday."""
    birthdays = [NOW - timedelta(days=60 + 30 * n) for n in range(6)]
    member_ids = []
    with write_transaction(runtime.data_engine) as conn:
        for n, birthday in enumerate(birthdays, start=1):
            born = birthday.date().replace(year=birthday.year - 14)
            values = other_member_values(n, date_of_birth=born.isoformat(), national_id=resident_id(born, n), joined_at="2025-06-01")
            member_ids.append(runtime.members.create(conn, values))
    report = _seed(runtime, member_ids)
    events = [e for h in _histories(runtime, member_ids).values() for e in h]
    by_member = dict(zip(member_ids, birthdays, strict=True))

    assert {e.given_by for e in events} == set(GivenBy)
    for e in events:
        assert e.given_by is (GivenBy.guardian if e.recorded_at < by_member[e.member_id] else GivenBy.member)
    assert report.guardian == sum(e.given_by is GivenBy.guardian for e in events)


def test_before_any_notice_takes_effect_nothing_is_recorded_or_published(runtime: Runtime) -> None:
    member_ids = _members(runtime, 5)
    notices = _notices(runtime)
    report = _seed(runtime, member_ids, now=MIGRATION_EFFECTIVE - timedelta(seconds=1))
    with runtime.data_engine.connect() as conn:
        events = conn.execute(select(func.count()).select_from(consent_events)).scalar_one()
    assert (report.events, report.published, report.channels, events) == (0, None, {}, 0)
    assert report.states == {(p, ConsentState.none): 5 for p in consent_purposes()}
    assert _notices(runtime) == notices
