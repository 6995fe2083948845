"""The workflow's rules, pure: which transitions exist, which reason each step records, when a request is due.

::

    received ──▶ verified ──▶ in_progress ──▶ completed ──▶ lifted   (restriction only)
        │            │             │
        └────────────┴─────────────┴──▶ rejected   (a rejection reason is required)

Due dates: a request is due a period after it was received, per
jurisdiction (``VAULT_DSR_DUE_PERIODS``); the default is one calendar month
(GDPR Art. 12(3)), a day clamped to the month's end (31 January → 28 or 29
February).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from datetime import datetime, timedelta

from vault.data_requests.model import REJECTION_REASONS, ReasonCode, RequestType, Status
from vault.errors import ConflictError, ValidationError

TRANSITIONS: Mapping[Status, frozenset[Status]] = {
    Status.received: frozenset({Status.verified, Status.rejected}),
    Status.verified: frozenset({Status.in_progress, Status.rejected}),
    Status.in_progress: frozenset({Status.completed, Status.rejected}),
    Status.completed: frozenset({Status.lifted}),
}
DEFAULT_REASON: Mapping[Status, ReasonCode] = {
    Status.verified: ReasonCode.identity_verified,
    Status.in_progress: ReasonCode.work_started,
    Status.completed: ReasonCode.fulfilled,
    Status.lifted: ReasonCode.restriction_lifted,
}
DEFAULT_JURISDICTION = "default"
_PERIOD = re.compile(r"P(?:([1-9][0-9]?)M|([1-9][0-9]{0,2})D)")


def check_transition(kind: RequestType, current: Status, to: Status, reason: ReasonCode | None) -> ReasonCode:
    """The reason the step records; ``ConflictError`` for a transition the workflow does not have."""
    if to not in TRANSITIONS.get(current, frozenset()) or (to is Status.lifted and kind is not RequestType.restriction):
        raise ConflictError(f"this {kind.value} request cannot go from {current.value} to {to.value}")
    if to is Status.rejected:
        if reason is None:
            raise ValidationError({"reason_code": "required"})
        if reason not in REJECTION_REASONS:
            raise ValidationError({"reason_code": "not_a_rejection_reason"})
        return reason
    if reason is not None and reason is not DEFAULT_REASON[to]:
        raise ValidationError({"reason_code": "not_for_this_step"})
    return DEFAULT_REASON[to]


def parse_period(text: str) -> tuple[int, int]:
    """An ISO 8601 period of whole months or days (``P1M``, ``P15D``) as (months, days); ``ValueError`` otherwise."""
    match = _PERIOD.fullmatch(text)
    if match is None:
        raise ValueError("a period is P<n>M or P<n>D")
    months, days = match.groups()
    return (int(months), 0) if months else (0, int(days))


def add_period(moment: datetime, period: tuple[int, int]) -> datetime:
    months, days = period
    if months:
        index = moment.month - 1 + months
        year, month = moment.year + index // 12, index % 12 + 1
        day = min(moment.day, calendar.monthrange(year, month)[1])
        return moment.replace(year=year, month=month, day=day)
    return moment + timedelta(days=days)


def due_at(received_at: datetime, jurisdiction: str, periods: Mapping[str, str]) -> datetime:
    """When a request received at ``received_at`` must be answered."""
    period = periods.get(jurisdiction, periods.get(DEFAULT_JURISDICTION, "P1M"))
    return add_period(received_at, parse_period(period))


__all__ = ["DEFAULT_JURISDICTION", "DEFAULT_REASON", "TRANSITIONS", "add_period", "check_transition", "due_at", "parse_period"]
