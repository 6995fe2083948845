"""Members: create, read (projected by policy), rectify, search, check in."""

from __future__ import annotations

import dataclasses
import functools
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response
from sqlalchemy import Connection
from starlette.convertors import Convertor, register_url_convertor

from api import problems as p
from api.caller import Caller
from api.decisions import MemberDecision, member_access, operation_access, restricted
from api.deps import (
    CallerDep,
    IdempotencyKeyDep,
    JsonBodyDep,
    MemberRead,
    MemberReadDep,
    NoQueryDep,
    NowDep,
    PurposeDep,
    RequestIdDep,
    ServicesDep,
    parse_model,
)
from api.idempotency import StoredResponse, replay_if_retry
from api.offload import offloaded
from api.responses import RESTRICTED_REASON, json_response, refuse, review_queuer
from api.schemas.members import (
    MEMBER_CATEGORIES,
    CheckIn,
    CheckInResult,
    MemberChanged,
    MemberCreate,
    MemberCreated,
    MemberPatch,
    MemberResource,
    SearchRequest,
    SearchResults,
    parse_term,
)
from vault.access import Access, PendingRead, Refusal
from vault.members.gate import MemberBody, SearchScope
from vault.members.repository import MemberView
from vault.roles import Role

router = APIRouter(prefix="/v1/members", tags=["members"])
MemberIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="opaque member id")]


class _MemberIdConvertor(Convertor[str]):
    """Only a member id matches ``{member_id:member_id}``: ``GET /v1/members/search`` is then 405, not a bad id."""

    regex = "[0-9a-f]{32}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("member_id", _MemberIdConvertor())


@router.post(
    "",
    status_code=201,
    summary="Create a member",
    response_model=None,
    responses={201: {"model": MemberCreated}, **p.WRITE_ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MemberCreate"}}}}},
)
@offloaded
def create_member(
    caller: CallerDep,
    purpose: PurposeDep,
    raw: JsonBodyDep,
    services: ServicesDep,
    request_id: RequestIdDep,
    now: NowDep,
    idempotency_key: IdempotencyKeyDep = None,
) -> Response:
    digest = services.idempotency.digest("POST", "/v1/members", raw.raw)
    with services.unit() as conn:
        membership = raw.value.get("membership") if isinstance(raw.value, dict) else None
        home = membership.get("home_clinic_id") if isinstance(membership, dict) else None
        domain = "clinic" if caller.is_staff and (caller.all_clinics or home in caller.clinics) else "none"
        body = MemberBody.parse(raw.value)
        decision = member_access(services, conn, caller, purpose, "", action="write", categories=body.categories, request_id=request_id, now=now, domain=domain)
        allowed = bool(body.categories) and body.categories <= decision.access.writable
        prior = replay_if_retry(
            conn,
            services.idempotency,
            services.gatekeeper,
            caller_key=caller.key,
            key=idempotency_key,
            digest=digest,
            access=decision.access,
            allowed=allowed,
            resource="member",
            id_field="member_id",
        )
        if isinstance(prior, StoredResponse):
            return _created(prior)
        result = prior if prior is not None else services.members.create(conn, decision.access, body)
        if isinstance(result, Refusal):
            stored = None
        else:
            stored = StoredResponse(201, {"member_id": result})
            if idempotency_key is not None:
                services.idempotency.remember(conn, caller.key, idempotency_key, digest, response=stored, now=now)
    if stored is None:
        refuse(result, decision.access)  # type: ignore[arg-type]  # result is the Refusal here
    return _created(stored)


def _created(stored: StoredResponse) -> Response:
    member_id = str(stored.body["member_id"])
    return json_response(stored.body, status_code=stored.status_code, headers={"Location": f"/v1/members/{member_id}"})


@router.get(
    "/{member_id:member_id}", summary="Read a member, projected by policy", response_model=None, responses={200: {"model": MemberResource}, **p.READ_ERRORS}
)
async def read_member(member_id: MemberIdPath, r: MemberReadDep) -> Response:
    """Decide and read (on the event loop for an embedded database), then await the event's durable commit, then answer."""
    decision, view = await r.services.audited_read(functools.partial(_decide_and_read, member_id, r))
    if isinstance(view, Refusal):
        refuse(view, decision.access)
    body: dict[str, object] = {"member_id": view.member_id}
    body.update({c.value: values for c, values in view.values.items()})
    body["redacted"] = sorted(c.value for c in MEMBER_CATEGORIES if c not in decision.access.readable)
    return json_response(body)


def _decide_and_read(member_id: str, r: MemberRead, conn: Connection) -> tuple[MemberDecision, PendingRead[MemberView]]:
    decision = member_access(
        r.services,
        conn,
        r.caller,
        r.purpose,
        member_id,
        action="read",
        categories=MEMBER_CATEGORIES,
        request_id=r.request_id,
        now=r.now,
        break_glass=r.break_glass,
    )
    flag = review_queuer(member_id, r.caller.subject, decision.break_glass, r.request_id, r.now)
    return decision, r.services.members.prepare_read(conn, decision.access, member_id, then=flag)


@router.patch(
    "/{member_id:member_id}",
    summary="Rectify some fields (RFC 7396 merge patch); previous values stay in the member's history",
    response_model=None,
    responses={200: {"model": MemberChanged}, **p.WRITE_ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {"application/merge-patch+json": {"schema": {"$ref": "#/components/schemas/MemberPatch"}}}}},
)
@offloaded
def patch_member(
    member_id: MemberIdPath, caller: CallerDep, purpose: PurposeDep, raw: JsonBodyDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep
) -> Response:
    with services.unit() as conn:
        body = MemberBody.parse(raw.value)
        decision = member_access(services, conn, caller, purpose, member_id, action="write", categories=body.categories, request_id=request_id, now=now)
        access = _home_within_callers_clinics(caller, decision.access, body)
        result = services.members.update(conn, access, member_id, body)
    if isinstance(result, Refusal):
        refuse(result, access)
    return json_response({"member_id": member_id, "changed": sorted(result)})


def _home_within_callers_clinics(caller: Caller, access: Access, body: MemberBody) -> Access:
    """A new home clinic links the member to it: only to one of the caller's own clinics (else check-in is the way)."""
    home = body.values.get("home_clinic_id")
    if home is None or caller.all_clinics or home in caller.clinics:
        return access
    return dataclasses.replace(access, writable=frozenset(), reason="clinic_outside_caller")


@router.post(
    "/search",
    summary="Find members by phone, e-mail, document number or card number (ids only, within the caller's clinics)",
    response_model=None,
    responses={200: {"model": SearchResults}, **p.WRITE_ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}}}}},
)
@offloaded
def search_members(
    caller: CallerDep, _no_query: NoQueryDep, purpose: PurposeDep, raw: JsonBodyDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep
) -> Response:
    term = parse_term(raw.raw)
    if caller.own_member_id is not None:
        scope = SearchScope(member_id=caller.own_member_id, clinics=frozenset())
    elif caller.all_clinics or Role.dpo in caller.roles:
        scope = SearchScope(clinics=None)
    else:
        scope = SearchScope(clinics=caller.clinics if caller.is_staff else frozenset())
    with services.unit() as conn:
        domain = "self" if caller.own_member_id is not None else "none"
        access, allowed = operation_access(services, conn, caller, "member:lookup", "read", request_id=request_id, now=now, purpose=purpose, domain=domain)
        found = services.members.search(conn, access, allowed=allowed, term=term, scope=scope)
        if not isinstance(found, Refusal):  # staff and services no longer find a restricted member
            found = [m for m in found if not restricted(services, conn, m, purpose=purpose, domain=domain)]
    if isinstance(found, Refusal):
        refuse(found, access)
    return json_response({"results": [{"member_id": m} for m in found]})


@router.post(
    "/{member_id}/clinics",
    summary="Check in: link the member to the caller's clinic (front desk), with the member's card number as proof of presence",
    response_model=None,
    responses={200: {"model": CheckInResult}, **p.WRITE_ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CheckIn"}}}}},
)
@offloaded
def check_in(
    member_id: MemberIdPath, caller: CallerDep, purpose: PurposeDep, raw: JsonBodyDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep
) -> Response:
    body = parse_model(CheckIn, raw.raw)
    with services.unit() as conn:
        access, allowed = operation_access(services, conn, caller, "member:clinics", "write", request_id=request_id, now=now, purpose=purpose, domain="none")
        in_clinic = body is None or caller.all_clinics or body.clinic_id in caller.clinics
        if allowed and restricted(services, conn, member_id, purpose=purpose, domain="none"):
            access, allowed = dataclasses.replace(access, reason=RESTRICTED_REASON), False  # no new clinic may use a restricted member's data
        proof = None if body is None else (body.clinic_id, body.card_no)
        linked = services.members.check_in(conn, access, allowed=allowed and in_clinic, member_id=member_id, proof=proof)
    if isinstance(linked, Refusal):
        refuse(linked, access)
    assert body is not None  # noqa: S101 - an invalid body is a Refusal above
    return json_response({"member_id": member_id, "clinic_id": body.clinic_id, "linked": linked})


SCHEMAS = (MemberCreate, MemberPatch, SearchRequest, CheckIn, MemberResource, MemberCreated, MemberChanged, SearchResults, CheckInResult)

__all__ = ["SCHEMAS", "router"]
