"""Treatment records: record one, list a member's, read one (decision object ``member:treatment``).

Every decision is on the member the treatment belongs to. A new treatment's
``clinic_id`` must be one of the caller's clinics (or the caller holds
``["*"]``); otherwise the write is refused like any other denial. A
treatment id that does not exist is decided on with domain ``none``, so a
caller who could not see it gets the same 403 as for a real one it may not
see, and only a caller allowed everywhere (the dpo) learns it is missing
(404). A break-glass list read is flagged and queued for review.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response
from sqlalchemy import Connection

from api import problems as p
from api.caller import Caller
from api.decisions import MemberDecision, member_access
from api.deps import CallerDep, IdempotencyKeyDep, JsonBody, JsonBodyDep, MemberReadDep, NowDep, PurposeDep, ReadDep, RequestIdDep, ServicesDep
from api.idempotency import StoredResponse, replay_if_retry
from api.offload import offloaded
from api.paging import DEFAULT_LIMIT, ID_PATTERN, CursorQuery, LimitQuery, capped, decode_cursor, encode_cursor
from api.responses import json_response, refuse, review_queuer
from api.routers.members import MemberIdPath
from api.schemas.treatments import TreatmentCreate, TreatmentCreated, TreatmentPage, TreatmentResource
from vault import data_map as dm
from vault import treatments_gate
from vault.access import Access, PendingRead, Refusal
from vault.treatments import Treatment
from vault.treatments_gate import RESOURCE

router = APIRouter(tags=["treatments"])
TreatmentIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="opaque treatment id")]
TREATMENT = (dm.Category.treatment,)
OUTSIDE_CALLERS_CLINICS = "clinic_outside_caller"


@router.post(
    "/v1/members/{member_id}/treatments",
    status_code=201,
    summary="Record a treatment (practitioners, in their clinics)",
    response_model=None,
    responses={201: {"model": TreatmentCreated}, **p.WRITE_ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TreatmentCreate"}}}}},
)
@offloaded
def create_treatment(
    member_id: MemberIdPath,
    caller: CallerDep,
    purpose: PurposeDep,
    raw: JsonBodyDep,
    services: ServicesDep,
    request_id: RequestIdDep,
    now: NowDep,
    idempotency_key: IdempotencyKeyDep = None,
) -> Response:
    digest = services.idempotency.digest("POST", f"/v1/members/{member_id}/treatments", raw.raw)
    with services.unit() as conn:
        decision = member_access(services, conn, caller, purpose, member_id, action="write", categories=TREATMENT, request_id=request_id, now=now)
        access = _within_callers_clinics(caller, decision.access, raw)
        prior = replay_if_retry(
            conn,
            services.idempotency,
            services.gatekeeper,
            caller_key=caller.key,
            key=idempotency_key,
            digest=digest,
            access=access,
            allowed=dm.Category.treatment in access.writable,
            resource=RESOURCE,
            id_field="treatment_id",
            member_id=member_id,
        )
        if isinstance(prior, StoredResponse):
            return _created(prior)
        created = prior if prior is not None else services.treatments.add(conn, access, member_id, raw.value if isinstance(raw.value, dict) else {})
        if not isinstance(created, Refusal) and idempotency_key is not None:
            services.idempotency.remember(conn, caller.key, idempotency_key, digest, response=StoredResponse(201, {"treatment_id": created}), now=now)
    if isinstance(created, Refusal):
        refuse(created, access)
    return _created(StoredResponse(201, {"treatment_id": created}))


@router.get(
    "/v1/members/{member_id}/treatments",
    summary="A member's treatments, oldest first, paged",
    response_model=None,
    responses={200: {"model": TreatmentPage}, **p.READ_ERRORS},
)
async def list_treatments(member_id: MemberIdPath, r: MemberReadDep, cursor: CursorQuery = None, limit: LimitQuery = DEFAULT_LIMIT) -> Response:
    after = decode_cursor(cursor, ID_PATTERN)

    def read(conn: Connection) -> tuple[MemberDecision, PendingRead[treatments_gate.TreatmentPage]]:
        decision = member_access(
            r.services, conn, r.caller, r.purpose, member_id, action="read", categories=TREATMENT, request_id=r.request_id, now=r.now, break_glass=r.break_glass
        )
        flag = review_queuer(member_id, r.caller.subject, decision.break_glass, r.request_id, r.now)
        return decision, r.services.treatments.page(conn, decision.access, member_id, after=after, limit=capped(limit), then=flag)

    decision, page = await r.services.audited_read(read)
    if isinstance(page, Refusal):
        refuse(page, decision.access)
    next_cursor = encode_cursor(page.items[-1].treatment_id) if page.more else None
    return json_response({"items": [_resource(t) for t in page.items], "next_cursor": next_cursor})


@router.get(
    "/v1/treatments/{treatment_id}",
    summary="Read one treatment (decided on the member it belongs to)",
    response_model=None,
    responses={200: {"model": TreatmentResource}, **p.READ_ERRORS},
)
async def read_treatment(treatment_id: TreatmentIdPath, r: ReadDep) -> Response:
    def read(conn: Connection) -> tuple[MemberDecision, PendingRead[Treatment]]:
        owner = r.services.treatments.owner(conn, treatment_id)
        domain = None if owner is not None else "none"
        decision = member_access(
            r.services, conn, r.caller, r.purpose, owner or "", action="read", categories=TREATMENT, request_id=r.request_id, now=r.now, domain=domain
        )
        return decision, r.services.treatments.read(conn, decision.access, treatment_id, owner)

    decision, found = await r.services.audited_read(read)
    if isinstance(found, Refusal):
        refuse(found, decision.access)
    return json_response(_resource(found))


def _within_callers_clinics(caller: Caller, access: Access, raw: JsonBody) -> Access:
    """The decision, refused when the treatment's clinic is not one of the caller's."""
    clinic = raw.value.get("clinic_id") if isinstance(raw.value, dict) else None
    if not access.writable or caller.all_clinics or (isinstance(clinic, str) and clinic in caller.clinics):
        return access
    return dataclasses.replace(access, writable=frozenset(), reason=OUTSIDE_CALLERS_CLINICS)


def _created(stored: StoredResponse) -> Response:
    treatment_id = str(stored.body["treatment_id"])
    return json_response(stored.body, status_code=stored.status_code, headers={"Location": f"/v1/treatments/{treatment_id}"})


def _resource(treatment: Treatment) -> dict[str, object]:
    return {"treatment_id": treatment.treatment_id, "member_id": treatment.member_id, **treatment.values}


SCHEMAS = (TreatmentCreate, TreatmentCreated, TreatmentResource, TreatmentPage)

__all__ = ["SCHEMAS", "router"]
