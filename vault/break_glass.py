"""Break-glass: an emergency read outside the caller's clinics, flagged and queued for review.

Only the reason *code* is recorded (a closed set); the request's audit event
carries ``reason_code = break_glass:<code>`` and the review row the same
request id. The dpo or a compliance officer closes a review with an outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, select, update

from vault.errors import ConflictError, NotFoundError
from vault.ids import new_id
from vault.storage.schema import break_glass_reviews


class BreakGlassReason(StrEnum):
    emergency_care = "emergency_care"
    adverse_event = "adverse_event"
    unconscious_patient = "unconscious_patient"


class ReviewOutcome(StrEnum):
    justified = "justified"
    unjustified = "unjustified"


@dataclass(frozen=True, slots=True)
class Review:
    review_id: str
    member_id: str
    subject: str
    reason_code: str
    request_id: str
    requested_at: datetime
    status: str
    reviewed_by: str | None
    reviewed_at: datetime | None
    outcome: str | None


def queue_review(conn: Connection, *, member_id: str, subject: str, reason: BreakGlassReason, request_id: str, now: datetime) -> str:
    review_id = new_id()
    conn.execute(
        break_glass_reviews.insert().values(
            review_id=review_id, member_id=member_id, subject=subject, reason_code=reason.value, request_id=request_id, requested_at=now, status="pending"
        )
    )
    return review_id


def reviews(conn: Connection, *, pending_only: bool, after: str | None, limit: int) -> list[Review]:
    """Reviews oldest first by (requested_at, review_id); ``after`` is the last review id of the previous page."""
    t = break_glass_reviews
    stmt = select(t).order_by(t.c.requested_at, t.c.review_id).limit(limit)
    if pending_only:
        stmt = stmt.where(t.c.status == "pending")
    if after is not None:
        last = conn.execute(select(t.c.requested_at).where(t.c.review_id == after)).scalar()
        if last is None:
            return []
        stmt = stmt.where((t.c.requested_at > last) | ((t.c.requested_at == last) & (t.c.review_id > after)))
    return [Review(**dict(r._mapping)) for r in conn.execute(stmt)]


def close_review(conn: Connection, review_id: str, *, outcome: ReviewOutcome, reviewed_by: str, now: datetime) -> None:
    t = break_glass_reviews
    row = conn.execute(select(t.c.status).where(t.c.review_id == review_id)).first()
    if row is None:
        raise NotFoundError(f"no break-glass review {review_id}")
    if row.status != "pending":
        raise ConflictError("the review is already closed")
    conn.execute(update(t).where(t.c.review_id == review_id).values(status="reviewed", reviewed_by=reviewed_by, reviewed_at=now, outcome=outcome.value))


__all__ = ["BreakGlassReason", "Review", "ReviewOutcome", "close_review", "queue_review", "reviews"]
