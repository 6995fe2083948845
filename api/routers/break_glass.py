"""The break-glass review queue (dpo, compliance officer): list reviews, close one (decision object ``break_glass:queue``).

No purpose: these routes read the queue (ids and codes), not a member's
data. Each request is one decision journaled through the gatekeeper — the
list as ``list`` on ``break_glass``, a review as ``review`` on that review.
Closing a review that is already closed is a 409; the outcome is checked
once the decision allows it (422), so a refused caller learns nothing of
the review.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from sqlalchemy import Connection

from api import problems as p
from api.decisions import operation_access
from api.deps import CallerDep, JsonBodyDep, NowDep, RequestIdDep, ServicesDep, validate_body
from api.offload import offloaded
from api.paging import DEFAULT_LIMIT, ID_PATTERN, MAX_LIMIT, CursorQuery, LimitQuery, capped, decode_cursor, encode_cursor
from api.responses import json_response, refuse
from api.schemas.break_glass import ReviewClosed, ReviewPage, ReviewRequest, ReviewStatus
from vault.access import Refusal, Target
from vault.break_glass import Review, ReviewOutcome, close_review, reviews
from vault.errors import ValidationError

router = APIRouter(prefix="/v1/break-glass", tags=["break-glass"])
QUEUE = "break_glass:queue"
RESOURCE = "break_glass"
ReviewIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="opaque review id")]
StatusQuery = Annotated[ReviewStatus | None, Query(description="only reviews with this status")]


@router.get(
    "",
    summary="The break-glass review queue, oldest first, paged",
    response_model=None,
    responses={200: {"model": ReviewPage}, **p.openapi_responses(p.BAD_REQUEST, p.UNAUTHORIZED, p.FORBIDDEN, p.UNAVAILABLE)},
)
@offloaded
def list_reviews(
    caller: CallerDep,
    services: ServicesDep,
    request_id: RequestIdDep,
    now: NowDep,
    status: StatusQuery = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = DEFAULT_LIMIT,
) -> Response:
    after, size = decode_cursor(cursor, ID_PATTERN), capped(limit)
    with services.unit() as conn:
        access, allowed = operation_access(services, conn, caller, QUEUE, "read", request_id=request_id, now=now)
        found = services.gatekeeper.perform(conn, access, Target("list", RESOURCE), allowed, lambda: _reviews(conn, status, after, size + 1))
    if isinstance(found, Refusal):
        refuse(found, access)
    page, more = found[:size], len(found) > size
    items: list[object] = [dataclasses.asdict(r) for r in page]
    return json_response({"items": items, "next_cursor": encode_cursor(page[-1].review_id) if more else None})


@router.post(
    "/{review_id}/review",
    summary="Close a pending review with an outcome (409 when it is already closed)",
    response_model=None,
    responses={
        200: {"model": ReviewClosed},
        **p.openapi_responses(p.BAD_REQUEST, p.UNAUTHORIZED, p.FORBIDDEN, p.NOT_FOUND, p.CONFLICT, p.TOO_LARGE, p.UNSUPPORTED_MEDIA, p.INVALID, p.UNAVAILABLE),
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReviewRequest"}}}}},
)
@offloaded
def review(review_id: ReviewIdPath, caller: CallerDep, raw: JsonBodyDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep) -> Response:
    with services.unit() as conn:
        access, allowed = operation_access(services, conn, caller, QUEUE, "write", request_id=request_id, now=now)
        target = Target("review", RESOURCE, review_id)
        outcome = services.gatekeeper.perform(conn, access, target, allowed, lambda: _close(conn, review_id, raw.raw, caller.subject, now))
    if isinstance(outcome, Refusal):
        refuse(outcome, access)
    return json_response({"review_id": review_id, "status": "reviewed", "outcome": outcome.value, "reviewed_by": caller.subject, "reviewed_at": now})


def _reviews(conn: Connection, status: ReviewStatus | None, after: str | None, wanted: int) -> list[Review]:
    """Up to ``wanted`` reviews after ``after`` with ``status`` (any when None), oldest first."""
    if status != "reviewed":
        return reviews(conn, pending_only=status == "pending", after=after, limit=wanted)
    found: list[Review] = []
    while len(found) < wanted:
        batch = reviews(conn, pending_only=False, after=after, limit=MAX_LIMIT)
        found += [r for r in batch if r.status == "reviewed"]
        if len(batch) < MAX_LIMIT:
            break
        after = batch[-1].review_id
    return found[:wanted]


def _close(conn: Connection, review_id: str, raw: bytes, reviewer: str, now: datetime) -> ReviewOutcome:
    try:
        outcome = validate_body(ReviewRequest, raw).outcome
    except p.ProblemError as exc:
        raise ValidationError(exc.errors) from None
    close_review(conn, review_id, outcome=outcome, reviewed_by=reviewer, now=now)
    return outcome


SCHEMAS = (ReviewRequest, ReviewClosed, ReviewPage)

__all__ = ["SCHEMAS", "router"]
