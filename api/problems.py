"""RFC 9457 problem details: the one table from errors to HTTP answers.

Every error response is ``application/problem+json`` with ``type``,
``title``, ``status``, ``detail`` and ``request_id``; a detail never quotes a
token, a secret or a personal value (validation problems name fields and
reason codes only). Domain errors map here and nowhere else; anything
unmapped is a 500 that says nothing but the request id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fastapi.responses import JSONResponse

from audit.errors import AuditError, CursorError, ProofRangeError
from keys.errors import KeysError
from policies import PolicyValidationError
from vault.errors import ConflictError, MemberErasedError, NotFoundError, RecordIntegrityError, SchemaNotReadyError, StorageError, ValidationError, VaultError

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://member-vault.example/problems/"


@dataclass(frozen=True, slots=True)
class Kind:
    status: int
    slug: str
    title: str


BAD_REQUEST = Kind(400, "bad-request", "Bad request")
UNAUTHORIZED = Kind(401, "unauthorized", "Unauthorized")
FORBIDDEN = Kind(403, "forbidden", "Forbidden")
CONSENT_REQUIRED = Kind(403, "consent-required", "Consent required")
NOT_FOUND = Kind(404, "not-found", "Not found")
METHOD_NOT_ALLOWED = Kind(405, "method-not-allowed", "Method not allowed")
CONFLICT = Kind(409, "conflict", "Conflict")
TOO_LARGE = Kind(413, "too-large", "Request too large")
UNSUPPORTED_MEDIA = Kind(415, "unsupported-media-type", "Unsupported media type")
INVALID = Kind(422, "invalid-fields", "Invalid fields")
TOO_MANY = Kind(429, "too-many-requests", "Too many requests")
INTERNAL = Kind(500, "internal", "Internal error")
INTEGRITY = Kind(500, "integrity-failure", "Stored data failed its integrity check")
UNAVAILABLE = Kind(503, "unavailable", "Service unavailable")

KINDS: tuple[Kind, ...] = (
    BAD_REQUEST,
    UNAUTHORIZED,
    FORBIDDEN,
    CONSENT_REQUIRED,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    CONFLICT,
    TOO_LARGE,
    UNSUPPORTED_MEDIA,
    INVALID,
    TOO_MANY,
    INTERNAL,
    INTEGRITY,
    UNAVAILABLE,
)


@dataclass(slots=True)
class ProblemError(Exception):
    """Raised at the edge to answer with a problem; ``detail`` must hold no value from the request."""

    kind: Kind
    detail: str
    errors: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


def problem_for(exc: Exception) -> ProblemError:  # noqa: PLR0911 - one return per row of the mapping table
    """The answer to a domain error (the first matching row wins)."""
    match exc:
        case ProblemError():
            return exc
        case ValidationError():
            return ProblemError(INVALID, "one or more fields are invalid", errors=exc.problems)
        case NotFoundError() | MemberErasedError():
            return ProblemError(NOT_FOUND, "no such resource")
        case ConflictError():
            return ProblemError(CONFLICT, str(exc))
        case RecordIntegrityError():
            return ProblemError(INTEGRITY, "a stored value failed its integrity check; the incident was recorded")
        case PolicyValidationError():
            return ProblemError(INVALID, f"the policy files are refused: {exc}")
        case ProofRangeError() | CursorError():
            return ProblemError(BAD_REQUEST, str(exc))
        case SchemaNotReadyError() | StorageError() | AuditError() | KeysError():
            return ProblemError(UNAVAILABLE, "the vault cannot serve this request now")
        case VaultError():
            return ProblemError(INTERNAL, "internal error")
    return ProblemError(INTERNAL, "internal error")


def render(problem: ProblemError, request_id: str) -> JSONResponse:
    body: dict[str, object] = {
        "type": TYPE_BASE + problem.kind.slug,
        "title": problem.kind.title,
        "status": problem.kind.status,
        "detail": problem.detail,
        "request_id": request_id,
    }
    if problem.errors:
        body["errors"] = dict(sorted(problem.errors.items()))
    headers = {"Cache-Control": "no-store", **problem.headers}
    return JSONResponse(body, status_code=problem.kind.status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def openapi_responses(*kinds: Kind) -> dict[int | str, dict[str, object]]:
    """The ``responses=`` entry documenting these problems on a route."""
    return {
        k.status: {"model": None, "description": k.title, "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}} for k in kinds
    }


# What a route that reads or writes one member's data may answer besides its success.
READ_ERRORS = openapi_responses(BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, UNAVAILABLE)
WRITE_ERRORS = openapi_responses(BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, CONFLICT, TOO_LARGE, UNSUPPORTED_MEDIA, INVALID, UNAVAILABLE)

__all__ = ["KINDS", "PROBLEM_MEDIA_TYPE", "READ_ERRORS", "TYPE_BASE", "WRITE_ERRORS", "Kind", "ProblemError", "openapi_responses", "problem_for", "render"]
