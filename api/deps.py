"""FastAPI dependencies, as ``Annotated`` aliases that read naturally in a route.

All are ``async``: FastAPI runs a sync dependency in the thread pool, one
thread hop each, which costs more than the work of these. What may wait on
a network or a slow start runs in a pool, so it never blocks the event loop
(and ``/healthz`` with it): opening the services the first time in the
route pool, the token check unless everything it may touch is local in the
read pool (on a held connection). With embedded databases and the local
keyring the token check (signature, claims, revocation read on the driver)
is done in place.

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
from api.offload import in_pool
from api.problems import BAD_REQUEST, INVALID, UNSUPPORTED_MEDIA, ProblemError
from api.services import ServiceHolder, Services
from vault.break_glass import BreakGlassReason
from vault.purposes import Purpose, statable

_Model = TypeVar("_Model", bound=pydantic.BaseModel)


async def _services(request: Request) -> Services:
    """The opened services; only the first request of a process (or one after a failure) opens them, in a worker thread."""
    holder: ServiceHolder = request.app.state.services
    opened = holder.peek()
    return opened if opened is not None else await in_pool(holder.get)


ServicesDep = Annotated[Services, Depends(_services)]


async def _caller(request: Request) -> Caller:
    """The verified caller, or 401 (``Services.authenticate``: in place when all it may touch is local, else in the read pool).

    The services are taken by a plain call, not as a sub-dependency: FastAPI
    solves a dependency's sub-dependencies again wherever it appears, and
    this one appears in nearly every dependency of every route.
    """
    return await (await _services(request)).authenticate(request.headers.get("authorization"))


CallerDep = Annotated[Caller, Depends(_caller)]


async def _request_id(request: Request) -> str:
    return request_id_of(request.scope)


RequestIdDep = Annotated[str, Depends(_request_id)]


async def _now() -> datetime:
    return datetime.now(UTC)


NowDep = Annotated[datetime, Depends(_now)]


# The purposes a caller may state, as the header's closed value set in the OpenAPI schema.
StatedPurpose = StrEnum("StatedPurpose", {p.value: p.value for p in statable()})  # type: ignore[misc]  # functional API


PurposeHeader = Annotated[StatedPurpose, Header(description="why the caller reaches personal data (a purpose id)")]


async def _purpose(_caller: CallerDep, x_purpose: PurposeHeader) -> Purpose:
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


# Typed without ``| None`` where used, so the schema says "one of the codes, or absent" (never the string "null").
BreakGlassHeader = Annotated[BreakGlassReason, Header(description="break-glass reason code, for a practitioner's emergency read outside their clinics")]


async def _break_glass(_caller: CallerDep, x_break_glass_reason: BreakGlassHeader = None) -> BreakGlassReason | None:  # type: ignore[assignment]
    """An unknown or empty reason code → 400 (via the request-validation handler)."""
    return x_break_glass_reason


BreakGlassDep = Annotated[BreakGlassReason | None, Depends(_break_glass)]


@dataclass(frozen=True, slots=True)
class MemberRead:
    """What a route reading one member's data takes from its request, solved as one dependency.

    The same values as ``ServicesDep``, ``CallerDep``, ``PurposeDep``,
    ``BreakGlassDep``, ``RequestIdDep`` and ``NowDep`` and the same order of
    checks (401, then 400 for the headers), at a fraction of the cost: FastAPI
    solves every dependency node of a route anew on each request, and those
    six made thirteen.
    """

    services: Services
    caller: Caller
    purpose: Purpose
    break_glass: BreakGlassReason | None
    request_id: str
    now: datetime


async def _member_read(
    request: Request,
    caller: CallerDep,
    x_purpose: PurposeHeader,
    x_break_glass_reason: BreakGlassHeader = None,  # type: ignore[assignment]
) -> MemberRead:
    services = await _services(request)  # already opened for CallerDep: no thread hop
    return MemberRead(services, caller, Purpose(x_purpose.value), x_break_glass_reason, request_id_of(request.scope), datetime.now(UTC))


MemberReadDep = Annotated[MemberRead, Depends(_member_read)]


async def _read(request: Request, caller: CallerDep, x_purpose: PurposeHeader) -> MemberRead:
    """``MemberReadDep`` for reads that take no break-glass reason."""
    return await _member_read(request, caller, x_purpose, None)  # type: ignore[arg-type]  # None: no reason given


ReadDep = Annotated[MemberRead, Depends(_read)]


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
    "MemberRead",
    "MemberReadDep",
    "NoQueryDep",
    "NowDep",
    "OptionalPurposeDep",
    "PurposeDep",
    "ReadDep",
    "RequestIdDep",
    "ServicesDep",
    "model_or_problems",
    "parse_model",
    "validate_body",
]
