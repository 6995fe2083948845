"""The answers of a policy set: a verdict, and an explanation for operators.

Invariant: ``allowed`` is true exactly when ``reason`` is ``Reason.ALLOWED``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """Why a request was allowed or refused."""

    ALLOWED = "allowed"
    DENIED_BY_RULE = "denied_by_rule"  # a deny line of one of the caller's roles matched: it overrides every allow
    NO_MATCHING_RULE = "no_matching_rule"  # default deny: no allow line matched


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision on one request."""

    allowed: bool
    reason: Reason


@dataclass(frozen=True, slots=True)
class Explanation:
    """The decision on one request and every policy line, allow and deny alike, that matched it, as written and in file order."""

    allowed: bool
    reason: Reason
    lines: tuple[str, ...]
