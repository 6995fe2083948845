"""Data-subject requests as values: types, statuses, reason codes, a request and its steps.

All frozen, slotted dataclasses; times are aware UTC datetimes. A step's
``note`` and a request's ``details`` and ``evidence`` are plaintext here
only once a reader asked for them; at rest they are encrypted under the
member's data key (``vault.data_requests.service``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class RequestType(StrEnum):
    access = "access"  # PIPL Art. 45, GDPR Art. 15: a copy of the data
    portability = "portability"  # PIPL Art. 45(3), GDPR Art. 20: the same archive, in machine-readable formats
    rectification = "rectification"  # PIPL Art. 46, GDPR Art. 16: the changes travel in ``details``
    erasure = "erasure"  # PIPL Art. 47, GDPR Art. 17
    restriction = "restriction"  # GDPR Art. 18: stored but not used, until lifted
    objection = "objection"  # GDPR Art. 21: withdraws the purposes named in ``details``


class Status(StrEnum):
    received = "received"
    verified = "verified"  # the requester's identity is verified
    in_progress = "in_progress"
    completed = "completed"
    rejected = "rejected"
    lifted = "lifted"  # a completed restriction, ended by the dpo


class ReasonCode(StrEnum):
    """Why a step was taken; a rejection must give one of the rejection reasons."""

    filed = "filed"
    identity_verified = "identity_verified"
    work_started = "work_started"
    fulfilled = "fulfilled"
    restriction_lifted = "restriction_lifted"
    # rejections (PIPL Art. 50 and GDPR Art. 12(4): the requester is told why)
    identity_not_verified = "identity_not_verified"
    manifestly_unfounded = "manifestly_unfounded"
    excessive = "excessive"
    legal_obligation_to_retain = "legal_obligation_to_retain"
    not_applicable = "not_applicable"


REJECTION_REASONS = frozenset(
    {
        ReasonCode.identity_not_verified,
        ReasonCode.manifestly_unfounded,
        ReasonCode.excessive,
        ReasonCode.legal_obligation_to_retain,
        ReasonCode.not_applicable,
    }
)


class FiledBy(StrEnum):
    member = "member"  # the member, in the card app
    front_desk = "front_desk"  # the front desk on the member's behalf, with evidence


@dataclass(frozen=True, slots=True)
class Step:
    seq: int
    from_status: Status | None
    to_status: Status
    actor: str
    actor_role: str
    reason_code: ReasonCode
    at: datetime
    note: str | None = None


@dataclass(frozen=True, slots=True)
class DataRequest:
    dsr_id: str
    member_id: str
    type: RequestType
    status: Status
    jurisdiction: str
    filed_by: str
    filed_role: FiledBy
    received_at: datetime
    due_at: datetime
    closed_at: datetime | None
    details: dict[str, object] | None = None
    evidence: str | None = None
    steps: tuple[Step, ...] = ()

    def overdue(self, now: datetime) -> bool:
        return self.status in OPEN and now > self.due_at


OPEN = frozenset({Status.received, Status.verified, Status.in_progress})

__all__ = ["OPEN", "REJECTION_REASONS", "DataRequest", "FiledBy", "ReasonCode", "RequestType", "Status", "Step"]
