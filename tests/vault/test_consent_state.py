"""The derived consent state equals a plain fold over the whole timeline, through the real ConsentService and NoticeBook.

The property test drives random steps (publish a notice version, grant, a
refused grant, withdraw) at increasing injected times on a real database, and
after every step compares ``ConsentService.current`` and ``.state`` at several
moments with ``fold``, written here from the design's words and nothing else:
walk the events and the notices' effective moments in time order; a grant
makes ``granted(v)``, a withdrawal ``withdrawn``, and a material version *w*
reaching ``effective_at + grace`` while ``granted(v)`` with ``v < w`` makes
``stale``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from api.runtime import Runtime
from tests.vault.factories import other_member_values
from vault.consent.model import ConsentChannel, ConsentDecision, ConsentRequest, ConsentState, PurposeState, Recorder, RecorderRole
from vault.consent.notices import NoticeBook
from vault.consent.service import ConsentService
from vault.errors import ConflictError, ValidationError
from vault.ids import new_id
from vault.purposes import Purpose, consent_purposes
from vault.storage.engine import write_transaction
from vault.storage.schema import consent_events, consent_notices

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)  # after version 1 of every notice (2026-01-01)
SECOND = timedelta(seconds=1)
MEMBER = Recorder("member:self", RecorderRole.member)
DESK = Recorder("staff:fd-1", RecorderRole.front_desk)
DPO = Recorder("staff:dpo-1", RecorderRole.dpo)  # withdraws only, carrying out an objection
# No example database and no shrinking: an example runs against a database that earlier examples changed, so a
# replayed or shrunk example would not meet the same notices (the labelled draws of a failure tell its timeline).
PROPERTY = settings(
    max_examples=25, deadline=None, database=None, phases=[Phase.explicit, Phase.generate], suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# -- the independent model ------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    version: int
    effective_at: datetime
    material: bool


@dataclass(frozen=True)
class Recorded:
    at: datetime
    granted: int | None  # the notice version of a grant; None for a withdrawal


def current_version(notices: Sequence[Published], at: datetime) -> int:
    """The highest version whose effective time has come."""
    return max(n.version for n in notices if n.effective_at <= at)


def fold(purpose: Purpose, notices: Sequence[Published], events: Sequence[Recorded], grace: timedelta, at: datetime) -> PurposeState:
    """The state at ``at``: walk every event and every material notice's stale moment in time order."""
    timeline: list[tuple[datetime, int, Recorded | Published]] = [(e.at, 0, e) for e in events]
    timeline += [(n.effective_at + grace, 1, n) for n in notices if n.material]
    state, version, since = ConsentState.none, None, None
    for when, _, what in sorted(timeline, key=lambda item: (item[0], item[1])):
        if when > at:
            break
        if isinstance(what, Recorded):
            state = ConsentState.withdrawn if what.granted is None else ConsentState.granted
            version, since = what.granted, when
        elif state is ConsentState.granted and version is not None and version < what.version:
            state, since = ConsentState.stale, when
    return PurposeState(purpose, state, version, since)


# -- the model's own sanity: the fold on hand-made timelines ----------------------------------


def _v(version: int, day: int, *, material: bool = True) -> Published:
    return Published(version, datetime(2026, 1, day, tzinfo=UTC), material)


def test_the_fold_marks_a_grant_stale_at_the_first_material_change_plus_grace() -> None:
    notices = [_v(1, 1), _v(2, 10, material=False), _v(3, 20), _v(4, 25)]
    grant = Recorded(datetime(2026, 1, 5, tzinfo=UTC), 1)
    grace = timedelta(days=2)
    stale_at = datetime(2026, 1, 22, tzinfo=UTC)
    assert fold(Purpose.photo_use, notices, [grant], grace, stale_at - SECOND) == PurposeState(Purpose.photo_use, ConsentState.granted, 1, grant.at)
    assert fold(Purpose.photo_use, notices, [grant], grace, stale_at) == PurposeState(Purpose.photo_use, ConsentState.stale, 1, stale_at)
    assert fold(Purpose.photo_use, notices, [grant], grace, stale_at + timedelta(days=30)) == PurposeState(Purpose.photo_use, ConsentState.stale, 1, stale_at)


def test_the_fold_lets_a_withdrawal_and_a_fresh_grant_replace_a_stale_one() -> None:
    notices = [_v(1, 1), _v(2, 10)]
    events = [Recorded(datetime(2026, 1, 5, tzinfo=UTC), 1), Recorded(datetime(2026, 1, 12, tzinfo=UTC), None), Recorded(datetime(2026, 1, 14, tzinfo=UTC), 2)]
    late = datetime(2026, 3, 1, tzinfo=UTC)
    assert fold(Purpose.photo_use, notices, events[:1], timedelta(0), late) == PurposeState(
        Purpose.photo_use, ConsentState.stale, 1, datetime(2026, 1, 10, tzinfo=UTC)
    )
    assert fold(Purpose.photo_use, notices, events[:2], timedelta(0), late) == PurposeState(Purpose.photo_use, ConsentState.withdrawn, None, events[1].at)
    assert fold(Purpose.photo_use, notices, events, timedelta(0), late) == PurposeState(Purpose.photo_use, ConsentState.granted, 2, events[2].at)
    assert fold(Purpose.photo_use, notices, [], timedelta(0), late) == PurposeState(Purpose.photo_use, ConsentState.none)


# -- driving the real service -----------------------------------------------------------------


def _stored_notices(runtime: Runtime, purpose: Purpose) -> list[Published]:
    """The purpose's notices as the table holds them (earlier examples of the same test published some)."""
    t = consent_notices
    with runtime.data_engine.connect() as conn:
        rows = conn.execute(select(t.c.version, t.c.effective_at, t.c.material).where(t.c.purpose == purpose.value).order_by(t.c.version)).all()
    return [Published(int(version), effective_at, bool(material)) for version, effective_at, material in rows]


def _event_count(runtime: Runtime, member_id: str) -> int:
    with runtime.data_engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(consent_events).where(consent_events.c.member_id == member_id)).scalar_one())


def _seconds(low: int, high: int) -> st.SearchStrategy[timedelta]:
    return st.integers(low, high).map(lambda s: timedelta(seconds=s))


GRACES = st.one_of(st.sampled_from([timedelta(0), SECOND, timedelta(days=1), timedelta(days=30)]), _seconds(0, 60 * 86400))
AHEAD = st.one_of(st.sampled_from([SECOND, timedelta(hours=1), timedelta(days=1)]), _seconds(1, 40 * 86400))
OFFSETS = st.one_of(st.just(timedelta(0)), AHEAD)
KINDS = ("publish", "publish", "grant", "grant", "grant_not_current", "grant_unknown", "withdraw")
FAR = timedelta(days=400)  # past every grace period drawn here


def _boundaries(notices: Sequence[Published], grace: timedelta, after: datetime) -> list[datetime]:
    """Moments where the answer may change, and the second before each, that lie after ``after``."""
    moments = {n.effective_at for n in notices} | {n.effective_at + grace for n in notices if n.material}
    return sorted(m for moment in moments for m in (moment - SECOND, moment) if m > after)


def _pick(data: st.DataObject, choices: Sequence[int] | Sequence[datetime], label: str) -> int | datetime:
    """One of ``choices``, drawn with a strategy that does not depend on them (hypothesis replays draws by shape)."""
    return choices[data.draw(st.integers(0, 255), label=label) % len(choices)]


def _next_time(data: st.DataObject, clock: datetime, notices: Sequence[Published], grace: timedelta) -> datetime:
    """A later moment: some time ahead, or a moment where the answer may change (or the second before it)."""
    to_boundary = data.draw(st.booleans(), label="to a boundary")
    ahead = clock + data.draw(AHEAD, label="ahead")
    boundaries = _boundaries(notices, grace, clock)
    boundary = _pick(data, boundaries or [ahead], "boundary")
    return boundary if to_boundary else ahead  # type: ignore[return-value]


def _channel(data: st.DataObject, *, withdrawal: bool = False) -> tuple[ConsentChannel, Recorder, str | None]:
    channels = list(ConsentChannel) if withdrawal else [c for c in ConsentChannel if c is not ConsentChannel.request]
    channel = data.draw(st.sampled_from(channels), label="channel")
    if channel is ConsentChannel.app:
        return channel, MEMBER, None
    if channel is ConsentChannel.request:
        return channel, DPO, f"dsr:{new_id()}"
    return channel, DESK, f"scan:{channel.value}/{new_id()[:8]}"


@pytest.fixture
def member_numbers() -> itertools.count[int]:
    return itertools.count(100)


@PROPERTY
@given(data=st.data())
def test_the_derived_state_equals_a_fold_over_the_timeline(runtime: Runtime, member_numbers: itertools.count[int], data: st.DataObject) -> None:
    purpose = data.draw(st.sampled_from(consent_purposes()), label="purpose")
    grace = data.draw(GRACES, label="grace")
    service = ConsentService(runtime.members, NoticeBook(), grace=grace)
    with runtime.data_engine.begin() as conn:
        member_id = runtime.members.create(conn, other_member_values(next(member_numbers)))
    notices = _stored_notices(runtime, purpose)
    events: list[Recorded] = []
    # Earlier examples of this test published versions into the same table: start once they are all in effect,
    # so the example's draws mean the same whatever ran before it.
    clock = max(T0, notices[-1].effective_at) + data.draw(OFFSETS, label="start")

    def check(at: datetime) -> None:
        expected = {p: PurposeState(p, ConsentState.none) for p in consent_purposes()}
        expected[purpose] = fold(purpose, notices, events, grace, at)
        event(f"state {expected[purpose].state.value}")
        with runtime.data_engine.connect() as conn:
            assert service.current(conn, member_id, at) == expected
            assert service.state(conn, member_id, purpose, at) == expected[purpose]
            assert service.has_live_consent(conn, member_id, purpose, at) is (expected[purpose].state is ConsentState.granted)

    for _ in range(data.draw(st.integers(4, 10), label="steps")):
        clock = _next_time(data, clock, notices, grace)
        kind = data.draw(st.sampled_from(KINDS), label="kind")
        event(f"step {kind}")
        current = current_version(notices, clock)
        if kind == "publish":
            latest = notices[-1]
            version = latest.version + data.draw(st.integers(1, 2), label="version step")
            effective = max(clock, latest.effective_at) + data.draw(OFFSETS, label="effective after")
            material = data.draw(st.booleans(), label="material")
            with write_transaction(runtime.data_engine) as conn:
                notice = service.notices.publish(
                    conn, purpose, version, text_zh=f"第 {version} 版告知", text_en=f"notice version {version}", material=material,
                    effective_at=effective, published_by="staff:dpo-1", now=clock,
                )  # fmt: skip
            assert (notice.version, notice.effective_at, notice.material) == (version, effective, material)
            notices.append(Published(version, effective, material))
        elif kind in {"withdraw", "grant"}:
            channel, recorder, evidence = _channel(data, withdrawal=kind == "withdraw")
            version = current if kind == "grant" else None
            decision = ConsentDecision.granted if kind == "grant" else ConsentDecision.withdrawn
            request = ConsentRequest(purpose, decision, channel, notice_version=version, evidence=evidence)
            with write_transaction(runtime.data_engine) as conn:
                entered = service.record(conn, member_id, request, recorder, consent_id=new_id(), request_id="req-prop", now=clock)
            assert (entered.decision, entered.notice_version, entered.recorded_at, entered.evidence) == (decision, version, clock, evidence)
            events.append(Recorded(clock, version))
        else:
            others = [n.version for n in notices if n.version != current]
            unknown = [0, -1, notices[-1].version + 1, notices[-1].version + 7]
            refused_conflict = kind == "grant_not_current" and bool(others)
            version = _pick(data, others if refused_conflict else unknown, "refused version")
            before = _event_count(runtime, member_id)
            request = ConsentRequest(purpose, ConsentDecision.granted, ConsentChannel.app, notice_version=version)
            expected_error = ConflictError if refused_conflict else ValidationError
            with pytest.raises(expected_error) as caught, write_transaction(runtime.data_engine) as conn:
                service.record(conn, member_id, request, MEMBER, consent_id=new_id(), request_id="req-prop", now=clock)
            if refused_conflict:
                assert f"the current version is {current} " in str(caught.value)
            else:
                assert caught.value.problems == {"notice_version": "unknown"}  # type: ignore[attr-defined]
            assert _event_count(runtime, member_id) == before
        queries = [clock, *(m for m in _boundaries(notices, grace, clock)[:4])]
        queries += [clock + data.draw(OFFSETS, label="later query"), clock + FAR]
        for at in queries:
            check(at)
