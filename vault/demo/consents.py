"""Deterministic consent histories for the demo members.

A member's story depends only on ``seed`` and the member's card number
(its own generator), so the same demo members get the same stories in any
order, however their seeding was split over processes (ids are random, as
all ids are; evidence references are numbered in the order of recording). Every event goes through
``ConsentService.record`` at an injected past time, so each history is one
the API could have recorded:

* ``health_data``: most members granted it at the clinic, usually on paper
  or at the front desk with an evidence reference (every demo member has
  health data: a skin type, treatments); a few withdrew it later.
* ``marketing_contact``: the seeder publishes a material version 2 of the
  notice (effective some months before ``now``, published two weeks before
  that) unless the purpose already has a later version. Members who granted
  version 1 and never re-granted are ``stale`` once the grace period after
  it has passed; others re-granted version 2 in the app.
* ``loyalty_profiling``, ``photo_use``, ``third_party_sharing``,
  ``cross_border_transfer``: fewer grants, some withdrawn later.

Times are spread over the last 18 months, from when the members joined and
from when every purpose's first notice took effect (the migration's
version 1), whichever is later; a grant names the notice current at its
time. A member under 14 at an event's time acts through a guardian (PIPL
Art. 31). Members are seeded in batches, one write transaction each.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Connection, Engine

from vault import data_map as dm
from vault.consent.model import (
    ConsentChannel,
    ConsentDecision,
    ConsentEvent,
    ConsentRequest,
    ConsentState,
    GivenBy,
    Notice,
    Recorder,
    RecorderRole,
)
from vault.consent.service import GUARDIAN_AGE, ConsentService, age_on
from vault.consent.state import derive
from vault.ids import new_id
from vault.members import MemberRepository
from vault.purposes import Purpose, consent_purposes
from vault.storage.engine import write_transaction

WINDOW = timedelta(days=548)  # about 18 months
REQUEST_ID = "demo-seed"
PUBLISHED_BY = "demo-seed"
NOTICE_LEAD = timedelta(days=14)  # the material change is published this long before it takes effect
MARKETING_V2_ZH = (
    "我们会通过短信、微信和电子邮件向您发送优惠、活动和新项目信息，并统计您是否打开这些消息，"
    "以改进推送内容。您可随时在会员应用中或到前台撤回同意，撤回后我们不再联系您。"
)
MARKETING_V2_EN = (
    "We contact you by SMS, WeChat and e-mail about offers, events and new treatments, and measure whether you open "
    "these messages to improve them. You can withdraw at any time in the member app or at the front desk; after that we "
    "no longer contact you."
)

# purpose -> (chance of a grant, chance that a grant is withdrawn later, channel weights app/front_desk/paper)
_STORIES: dict[Purpose, tuple[float, float, tuple[int, int, int]]] = {
    Purpose.health_data: (0.9, 0.04, (20, 45, 35)),
    Purpose.marketing_contact: (0.7, 0.2, (70, 20, 10)),
    Purpose.loyalty_profiling: (0.45, 0.15, (80, 15, 5)),
    Purpose.photo_use: (0.2, 0.1, (10, 40, 50)),
    Purpose.third_party_sharing: (0.08, 0.25, (60, 20, 20)),
    Purpose.cross_border_transfer: (0.04, 0.2, (50, 25, 25)),
}
_RENEWAL_CHANCE = 0.45  # a version 1 marketing grant re-granted on the material version
DEMO_CHANNELS = (ConsentChannel.app, ConsentChannel.front_desk, ConsentChannel.paper)  # what the demo records (no data-request withdrawals)
_EVIDENCE_PREFIX = {ConsentChannel.front_desk: "scan:fd", ConsentChannel.paper: "form:pc"}


@dataclass(frozen=True, slots=True)
class ConsentSeedReport:
    members: int
    events: int
    channels: dict[ConsentChannel, int]
    withdrawals: int
    guardian: int
    states: dict[tuple[Purpose, ConsentState], int]  # over every member and consent purpose, at ``now``
    published: Notice | None  # the material marketing_contact version this run published


@dataclass(frozen=True, slots=True)
class _Planned:
    at: datetime
    purpose: Purpose
    decision: ConsentDecision
    channel: ConsentChannel


class _Evidence:
    """Evidence references like ``scan:fd-2026-000123``, numbered per channel and year."""

    def __init__(self) -> None:
        self._next: Counter[tuple[ConsentChannel, int]] = Counter()

    def __call__(self, channel: ConsentChannel, at: datetime) -> str | None:
        if channel is ConsentChannel.app:
            return None
        self._next[(channel, at.year)] += 1
        return f"{_EVIDENCE_PREFIX[channel]}-{at.year}-{self._next[(channel, at.year)]:06d}"


def seed_consents(
    engine: Engine,
    service: ConsentService,
    repo: MemberRepository,
    member_ids: Sequence[str],
    *,
    seed: int,
    now: datetime,
    batch: int = 200,
    progress: Callable[[int], None] = lambda n: None,
) -> ConsentSeedReport:
    """Give each of ``member_ids`` a consent history ending before ``now``; publish the marketing change first."""
    with write_transaction(engine) as conn:
        notices = service.notices.every(conn)
        start = _window_start(notices, now)
        published = _publish_change(conn, service, notices[Purpose.marketing_contact], start, now) if start is not None else None
        if published is not None:
            notices = service.notices.every(conn)
    evidence = _Evidence()
    events: list[ConsentEvent] = []
    states: Counter[tuple[Purpose, ConsentState]] = Counter()
    renewal = _renewal(notices[Purpose.marketing_contact], start, now) if start is not None else None
    for first in range(0, len(member_ids), batch):
        with write_transaction(engine) as conn:
            for member_id in member_ids[first : first + batch]:
                view = repo.read(conn, member_id, (dm.Category.identity, dm.Category.membership)).values
                born = view[dm.Category.identity].get("date_of_birth")
                joined = view[dm.Category.membership].get("joined_at")
                since = _later(start, joined)
                card = view[dm.Category.membership].get("card_no")
                rng = random.Random(f"{seed}:{card if isinstance(card, str) else member_id}")
                plan = _plan(rng, since, now, renewal) if since is not None else []
                last: dict[Purpose, ConsentEvent] = {}
                for step in plan:
                    event = _record(
                        conn, service, member_id, step, notices=notices, born=born if isinstance(born, date) else None, evidence=evidence(step.channel, step.at)
                    )
                    last[step.purpose] = event
                    events.append(event)
                for purpose in consent_purposes():
                    states[(purpose, derive(purpose, last.get(purpose), notices[purpose], now=now, grace=service.grace).state)] += 1
        progress(min(first + batch, len(member_ids)))
    return ConsentSeedReport(
        members=len(member_ids),
        events=len(events),
        channels=dict(Counter(e.channel for e in events)),
        withdrawals=sum(e.decision is ConsentDecision.withdrawn for e in events),
        guardian=sum(e.given_by is GivenBy.guardian for e in events),
        states=dict(states),
        published=published,
    )


def _window_start(notices: Mapping[Purpose, Sequence[Notice]], now: datetime) -> datetime | None:
    """The earliest time of the window: 18 months back, once every seeded purpose had a notice; None if none fits."""
    firsts = [notices[p][0].effective_at for p in _STORIES if notices[p]]
    if len(firsts) < len(_STORIES):
        return None
    start = max([now - WINDOW, *firsts])
    return start if start < now else None


def _publish_change(conn: Connection, service: ConsentService, marketing: Sequence[Notice], start: datetime, now: datetime) -> Notice | None:
    """Publish the material version 2 of the marketing notice, unless the purpose has moved past version 1."""
    if len(marketing) != 1:
        return None
    effective = max(start + (now - start) / 2, now - timedelta(days=150)).replace(microsecond=0)
    if effective <= marketing[0].effective_at or effective >= now:
        return None
    return service.notices.publish(
        conn,
        Purpose.marketing_contact,
        marketing[0].version + 1,
        text_zh=MARKETING_V2_ZH,
        text_en=MARKETING_V2_EN,
        material=True,
        effective_at=effective,
        published_by=PUBLISHED_BY,
        now=max(effective - NOTICE_LEAD, marketing[0].effective_at),
    )


def _renewal(marketing: Sequence[Notice], start: datetime, now: datetime) -> datetime | None:
    """When the latest material change of the marketing notice inside the window took effect (re-grants come after it)."""
    inside = [n.effective_at for n in marketing[1:] if n.material and start < n.effective_at < now]
    return max(inside, default=None)


def _later(start: datetime | None, joined: object) -> datetime | None:
    if start is None or not isinstance(joined, date):
        return start
    return max(start, datetime.combine(joined, time(), tzinfo=UTC))


def _at(lo: datetime, hi: datetime, fraction: float) -> datetime:
    """The whole second ``fraction`` of the way from ``lo`` to ``hi`` (rounded down)."""
    return (lo + (hi - lo) * fraction).replace(microsecond=0)


def _plan(rng: random.Random, since: datetime, now: datetime, renewal: datetime | None) -> list[_Planned]:
    """One member's events, oldest first."""
    plan: list[_Planned] = []
    for purpose, (p_grant, p_withdraw, weights) in _STORIES.items():
        grant_roll, renew_roll, withdraw_roll, desk_roll, renew_at, withdraw_at = (rng.random() for _ in range(6))
        channel, desk_channel = rng.choices(DEMO_CHANNELS, weights=weights, k=2)
        granted = _at(since, now, rng.random() ** (2 if purpose is Purpose.health_data else 1))  # health consent comes early, at a first visit
        if grant_roll >= p_grant:
            continue
        plan.append(_Planned(granted, purpose, ConsentDecision.granted, channel))
        last = granted
        if purpose is Purpose.marketing_contact and renewal is not None and granted < renewal and renew_roll < _RENEWAL_CHANCE:
            last = _at(renewal, now, renew_at)
            plan.append(_Planned(last, purpose, ConsentDecision.granted, ConsentChannel.app))
        withdrawn = _at(last, now, withdraw_at)
        if withdraw_roll < p_withdraw and withdrawn > last:
            plan.append(_Planned(withdrawn, purpose, ConsentDecision.withdrawn, desk_channel if desk_roll < 0.5 else ConsentChannel.app))
    return sorted(plan, key=lambda e: e.at)


def _record(
    conn: Connection,
    service: ConsentService,
    member_id: str,
    step: _Planned,
    *,
    notices: Mapping[Purpose, Sequence[Notice]],
    born: date | None,
    evidence: str | None,
) -> ConsentEvent:
    notice = service.notices.current_of(notices[step.purpose], step.at) if step.decision is ConsentDecision.granted else None
    minor = born is not None and age_on(born, step.at.date()) < GUARDIAN_AGE
    request = ConsentRequest(
        purpose=step.purpose,
        decision=step.decision,
        channel=step.channel,
        notice_version=notice.version if notice else None,
        notice_hash=notice.notice_hash if notice else None,
        evidence=evidence,
        given_by=GivenBy.guardian if minor else GivenBy.member,
    )
    role = RecorderRole.member if step.channel is ConsentChannel.app else RecorderRole.front_desk
    recorder = Recorder(f"demo-member:{member_id}" if role is RecorderRole.member else "demo-front-desk", role)
    return service.record(conn, member_id, request, recorder, consent_id=new_id(), request_id=REQUEST_ID, now=step.at)


__all__ = ["ConsentSeedReport", "seed_consents"]
