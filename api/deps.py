"""FastAPI dependencies, as ``Annotated`` aliases that read naturally in a route.

The short ones (headers, body parsing, the clock) are ``async``: FastAPI runs
a sync dependency in the thread pool, one thread hop each, which costs more
than their work. The two that touch a database — opening the services and
the token's revocation check — are sync, so a slow database never blocks
the event loop (and ``/healthz`` with it).

Order of checks (API.md): authentication (401) → request shape and purpose
(400) → decision (403) → existence (404) → field validation (422). A route
lists ``CallerDep`` first; header and body dependencies come after it, so a
request without a valid token is 401 whatever else is wrong with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, TypeVar

import pydantic
from fastapi import Depends, Header, Request

from api.body import BodyError, parse
from api.caller import Caller
from api.http import request_id_of
from api.problems import BAD_REQUEST, INVALID, UNSUPPORTED_MEDIA, ProblemError
from api.services import Services
from vault.break_glass import BreakGlassReason
from vault.purposes import Purpose, statable

_Model = TypeVar("_Model", bound=pydantic.BaseModel)


def _services(request: Request) -> Services:
    holder = request.app.state.services
    return holder.get()  # type: ignore[no-any-return]  # app.state is untyped; holder is a ServiceHolder


ServicesDep = Annotated[Services, Depends(_services)]


def _caller(request: Request, services: ServicesDep) -> Caller:
    return services.authenticator.authenticate(request.headers.get("authorization"))


CallerDep = Annotated[Caller, Depends(_caller)]


async def _request_id(request: Request) -> str:
    return request_id_of(request.scope)


RequestIdDep = Annotated[str, Depends(_request_id)]


async def _now() -> datetime:
    return datetime.now(UTC)


NowDep = Annotated[datetime, Depends(_now)]


# The purposes a caller may state, as the header's closed value set in the OpenAPI schema.
StatedPurpose = StrEnum("StatedPurpose", {p.value: p.value for p in statable()})  # type: ignore[misc]  # functional API


async def _purpose(
    _caller: CallerDep, x_purpose: Annotated[StatedPurpose, Header(description="why the caller reaches personal data (a purpose id)")]
) -> Purpose:
    """Missing or not a statable purpose → 400 (via the request-validation handler)."""
    return Purpose(x_purpose.value)


PurposeDep = Annotated[Purpose, Depends(_purpose)]


async def _optional_purpose(
    _caller: CallerDep,
    # Typed without ``| None`` so the schema says "one of the purposes, or absent" (never the string "null").
    x_purpose: Annotated[StatedPurpose, Header(description="optional here: a purpose id, to see personal values")] = None,  # type: ignore[assignment]
) -> Purpose | None:
    """Absent → None; present but not a statable purpose → 400 (via the request-validation handler)."""
    stated: StatedPurpose | None = x_purpose
    return None if stated is None else Purpose(stated.value)


OptionalPurposeDep = Annotated[Purpose | None, Depends(_optional_purpose)]


async def _break_glass(
    _caller: CallerDep,
    # Typed without ``| None`` so the schema says "one of the codes, or absent" (never the string "null").
    x_break_glass_reason: Annotated[
        BreakGlassReason, Header(description="break-glass reason code, for a practitioner's emergency read outside their clinics")
    ] = None,  # type: ignore[assignment]
) -> BreakGlassReason | None:
    """An unknown or empty reason code → 400 (via the request-validation handler)."""
    return x_break_glass_reason


BreakGlassDep = Annotated[BreakGlassReason | None, Depends(_break_glass)]


@dataclass(frozen=True, slots=True)
class JsonBody:
    """A request body parsed strictly: the bytes (for typed validation and idempotency) and the value."""

    raw: bytes
    value: object


async def _json_body(_caller: CallerDep, request: Request) -> JsonBody:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    wanted = "application/merge-patch+json" if request.method == "PATCH" else "application/json"
    if media != wanted:
        raise ProblemError(UNSUPPORTED_MEDIA, f"the body must be {wanted}")
    raw = await request.body()
    try:
        value = parse(raw)
    except BodyError as exc:
        raise ProblemError(BAD_REQUEST, f"the body is not acceptable JSON ({exc.reason})") from None
    return JsonBody(raw, value)


JsonBodyDep = Annotated[JsonBody, Depends(_json_body)]


def validate_body(model: type[_Model], raw: bytes) -> _Model:
    """Typed validation of a body already parsed strictly: 422 naming fields and error types, never input."""
    found, errors = model_or_problems(model, raw)
    if found is None:
        raise ProblemError(INVALID, "one or more fields are invalid", errors=errors)
    return found


_NAME = re.compile(r"[A-Za-z_][A-Za-z_]{0,63}")


def _location(loc: tuple[int | str, ...]) -> str:
    """A field path; a key the caller made up is not echoed (it could be a personal value)."""
    return ".".join(p if isinstance(p, str) and _NAME.fullmatch(p) else "*" for p in loc) or "body"


async def _no_query(_caller: CallerDep, request: Request) -> None:
    if request.url.query:
        raise ProblemError(BAD_REQUEST, "this route takes no query string: personal values never travel in URLs")


NoQueryDep = Annotated[None, Depends(_no_query)]


def parse_model(model: type[_Model], raw: bytes) -> _Model | None:
    """Typed validation that does not answer by itself: None when invalid, for a gate to refuse after the decision."""
    try:
        return model.model_validate_json(raw, strict=True)
    except pydantic.ValidationError:
        return None


def model_or_problems(model: type[_Model], raw: bytes) -> tuple[_Model | None, dict[str, str]]:
    """Typed validation for a gate to refuse after the decision: the model, or the field problems (names and error types)."""
    try:
        return model.model_validate_json(raw, strict=True), {}
    except pydantic.ValidationError as exc:
        return None, {_location(e["loc"]): e["type"] for e in exc.errors(include_input=False, include_url=False)}


IdempotencyKeyDep = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255, description="retry-safe create: the first result is returned again")]


__all__ = [
    "BreakGlassDep",
    "CallerDep",
    "IdempotencyKeyDep",
    "JsonBody",
    "JsonBodyDep",
    "NoQueryDep",
    "NowDep",
    "OptionalPurposeDep",
    "PurposeDep",
    "RequestIdDep",
    "ServicesDep",
    "model_or_problems",
    "parse_model",
    "validate_body",
]
