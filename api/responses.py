"""JSON responses of personal data, and how a gated refusal becomes an HTTP problem."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import NoReturn

from fastapi.responses import Response
from sqlalchemy import Connection

from api.problems import CONSENT_REQUIRED, FORBIDDEN, ProblemError, problem_for
from vault.access import Access, Outcome, Refusal
from vault.break_glass import BreakGlassReason, queue_review
from vault.times import json_value

JSON_MEDIA_TYPE = "application/json"
CONSENT_REQUIRED_REASON = "consent_required"
RESTRICTED_REASON = "restricted"


def json_response(body: Mapping[str, object] | list[object], status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """``body`` as UTF-8 JSON, never cached (``Cache-Control: no-store``)."""
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=json_value).encode("utf-8")
    return Response(content, status_code=status_code, media_type=JSON_MEDIA_TYPE, headers={"Cache-Control": "no-store", **(headers or {})})


def review_queuer(member_id: str, subject: str, reason: BreakGlassReason | None, request_id: str, now: datetime) -> Callable[[Connection], None] | None:
    """For a break-glass read: queue its review in the transaction that commits the read's event."""
    if reason is None:
        return None

    def queue(conn: Connection) -> None:
        queue_review(conn, member_id=member_id, subject=subject, reason=reason, request_id=request_id, now=now)

    return queue


def refuse(refusal: Refusal, access: Access) -> NoReturn:
    """Answer a refusal: 403 (the same for every id), or the problem of the domain error."""
    if refusal.outcome is Outcome.denied:
        if access.reason == CONSENT_REQUIRED_REASON:
            raise ProblemError(CONSENT_REQUIRED, "the member's live consent does not cover this purpose")
        if access.reason == RESTRICTED_REASON:
            raise ProblemError(FORBIDDEN, "the member restricted the use of their data; only legal claims may reach it")
        raise ProblemError(FORBIDDEN, "the policy does not allow this request")
    raise problem_for(refusal.error) if refusal.error is not None else ProblemError(FORBIDDEN, "the policy does not allow this request")


__all__ = ["CONSENT_REQUIRED_REASON", "JSON_MEDIA_TYPE", "RESTRICTED_REASON", "json_response", "refuse", "review_queuer"]
