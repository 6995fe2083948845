"""The break-glass review queue (API.md, Members): reviews as ids and codes, never a personal value.

``BreakGlassReason`` and ``ReviewOutcome`` are the vault's value sets
(``vault.break_glass``); a review is ``pending`` until the dpo or a
compliance officer closes it with an outcome.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from vault.break_glass import BreakGlassReason, ReviewOutcome

ReviewStatus = Literal["pending", "reviewed"]
Id = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


class Review(BaseModel):
    review_id: Id
    member_id: Id
    subject: Annotated[str, Field(description="the caller who broke the glass, as audit records it")]
    reason_code: BreakGlassReason
    request_id: Annotated[str, Field(description="the request whose audit event is flagged break_glass:<reason>")]
    requested_at: datetime
    status: ReviewStatus
    reviewed_by: str | None
    reviewed_at: datetime | None
    outcome: ReviewOutcome | None


class ReviewPage(BaseModel):
    items: list[Review]
    next_cursor: str | None


class ReviewRequest(BaseModel):
    """Close a pending review."""

    model_config = ConfigDict(extra="forbid", strict=True)
    outcome: ReviewOutcome


class ReviewClosed(BaseModel):
    review_id: Id
    status: Literal["reviewed"]
    outcome: ReviewOutcome
    reviewed_by: str
    reviewed_at: datetime


__all__ = ["Review", "ReviewClosed", "ReviewPage", "ReviewRequest", "ReviewStatus"]
