"""The consent service's values: notices, events and the state derived from them.

All frozen, slotted dataclasses; times are aware UTC datetimes. An event's
``evidence`` is the decrypted reference (a scan or form id) only once a
reader asked for it; at rest it is encrypted under the member's data key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from vault.purposes import Purpose


class ConsentDecision(StrEnum):
    granted = "granted"
    withdrawn = "withdrawn"


class ConsentChannel(StrEnum):
    app = "app"  # the member (or their guardian) in the card app
    front_desk = "front_desk"  # recorded by the front desk, evidence required
    paper = "paper"  # a signed paper form, recorded by the front desk, evidence required
    request = "request"  # carrying out a data-subject request (an objection), recorded by the dpo; evidence dsr:<id>


class GivenBy(StrEnum):
    """Whose will the event records: the member, or a guardian for a member under 14 (PIPL Art. 31)."""

    member = "member"
    guardian = "guardian"


class RecorderRole(StrEnum):
    """Who entered the event: the member, the front desk on the member's behalf, or the dpo carrying out their objection."""

    member = "member"
    front_desk = "front_desk"
    dpo = "dpo"


class ConsentState(StrEnum):
    granted = "granted"
    withdrawn = "withdrawn"
    stale = "stale"  # granted under a notice that a material change replaced, past the grace period
    none = "none"


@dataclass(frozen=True, slots=True)
class Notice:
    purpose: Purpose
    version: int
    text_zh: str
    text_en: str
    sha256_zh: str
    sha256_en: str
    notice_hash: str
    material: bool
    effective_at: datetime
    published_at: datetime
    published_by: str


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    seq: int
    consent_id: str
    member_id: str
    purpose: Purpose
    decision: ConsentDecision
    notice_version: int | None
    notice_hash: str | None
    channel: ConsentChannel
    given_by: GivenBy
    recorded_by: str
    recorded_role: RecorderRole
    recorded_at: datetime
    request_id: str
    evidence: str | None = None


@dataclass(frozen=True, slots=True)
class PurposeState:
    """A purpose's current state for one member; ``since`` is when it took this state (None for ``none``)."""

    purpose: Purpose
    state: ConsentState
    notice_version: int | None = None
    since: datetime | None = None

    @property
    def live(self) -> bool:
        return self.state is ConsentState.granted


@dataclass(frozen=True, slots=True)
class Recorder:
    """Who is entering a consent event, from the edge's token."""

    subject: str
    role: RecorderRole


@dataclass(frozen=True, slots=True)
class ConsentRequest:
    """A grant or withdrawal as asked for, before the service's checks."""

    purpose: Purpose
    decision: ConsentDecision
    channel: ConsentChannel
    notice_version: int | None = None
    notice_hash: str | None = None
    evidence: str | None = None
    given_by: GivenBy = GivenBy.member


__all__ = [
    "ConsentChannel",
    "ConsentDecision",
    "ConsentEvent",
    "ConsentRequest",
    "ConsentState",
    "GivenBy",
    "Notice",
    "PurposeState",
    "Recorder",
    "RecorderRole",
]
