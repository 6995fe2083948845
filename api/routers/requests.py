"""Data-subject requests: file one for a member, the dpo's queue and transitions, one request with its steps.

Decision objects: ``requests:records`` (filing: the member in ``self``, the
front desk in ``clinic``; reading one with its details and notes: the member
in ``self``, the dpo), ``requests:queue`` (the queue and a request's metadata
without details or notes: the dpo and compliance officers, no purpose) and
``requests:transitions`` (the dpo, purpose ``self_service``). A request is
decided on the member it belongs to, and an id that does not exist is decided
with domain ``none``: a caller who could not see it gets the same 403 as for
a real one it may not see.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Path, Query
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from api import problems as p
from api.authz import relation
from api.caller import Caller
from api.decisions import operation_access
from api.deps import CallerDep, IdempotencyKeyDep, JsonBodyDep, NowDep, OptionalPurposeDep, PurposeDep, RequestIdDep, ServicesDep, model_or_problems
from api.idempotency import StoredResponse, replay_if_retry
from api.offload import offloaded
from api.paging import DEFAULT_LIMIT, ID_PATTERN, CursorQuery, LimitQuery, capped, decode_cursor, encode_cursor
from api.responses import json_response, refuse
from api.routers.consents import event_body
from api.routers.members import MemberIdPath
from api.runtime import make_checkpointer
from api.schemas.requests import ErasureCertificate, RequestFile, RequestFiled, RequestOut, RequestPage, TransitionIn
from api.services import Services
from audit.errors import AuditStoreError
from keys.errors import KeysError
from keys.signing import SigningPurpose
from vault.access import Access, Refusal
from vault.data_requests import DataRequest, FiledBy, Filer, Filing, Move, RequestType, Status
from vault.data_requests.certificate import sign_certificate
from vault.data_requests.export import ExportSigning
from vault.data_requests.gate import EXPORTABLE, RESOURCE
from vault.errors import VaultError
from vault.purposes import Purpose
from vault.roles import Role
from vault.storage.engine import read_snapshot
from vault.times import json_value

router = APIRouter(tags=["data requests"])
log = structlog.get_logger("api.requests")
DsrIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="opaque data-subject request id")]


def _filer(caller: Caller) -> Filer | None:
    if caller.own_member_id is not None:
        return Filer(caller.subject, FiledBy.member)
    if Role.front_desk in caller.roles:
        return Filer(caller.subject, FiledBy.front_desk)
    return None


@router.post(
    "/v1/members/{member_id}/requests",
    status_code=201,
    summary="File a data-subject request (the member, or the front desk on the member's behalf with evidence)",
    response_model=None,
    responses={201: {"model": RequestFiled}, **p.WRITE_ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RequestFile"}}}}},
)
@offloaded
def file_request(
    member_id: MemberIdPath,
    caller: CallerDep,
    purpose: PurposeDep,
    raw: JsonBodyDep,
    services: ServicesDep,
    request_id: RequestIdDep,
    now: NowDep,
    idempotency_key: IdempotencyKeyDep = None,
) -> Response:
    digest = services.idempotency.digest("POST", f"/v1/members/{member_id}/requests", raw.raw)
    body, problems = model_or_problems(RequestFile, raw.raw)
    filer = _filer(caller)
    with services.unit() as conn:
        domain = relation(conn, caller, member_id, break_glass=False)
        access, allowed = operation_access(services, conn, caller, "requests:records", "write", request_id=request_id, now=now, purpose=purpose, domain=domain)
        allowed = allowed and filer is not None
        prior = replay_if_retry(
            conn,
            services.idempotency,
            services.gatekeeper,
            caller_key=caller.key,
            key=idempotency_key,
            digest=digest,
            access=access,
            allowed=allowed,
            resource=RESOURCE,
            id_field="dsr_id",
            member_id=member_id,
        )
        if prior is not None:
            answer: StoredResponse | Refusal = prior
        else:
            filing = None if body is None else Filing(body.type, body.details, body.evidence, body.jurisdiction)
            filed = services.requests.file(
                conn, access, allowed=allowed, member_id=member_id, filing=filing, filer=filer or Filer(caller.subject, FiledBy.member), problems=problems
            )
            # The first answer itself is kept (an id, a status and a time: no personal value), so a retry gets it again
            # even after the request has moved on.
            answer = (
                filed
                if isinstance(filed, Refusal)
                else StoredResponse(201, {"dsr_id": filed.dsr_id, "status": filed.status.value, "due_at": json_value(filed.due_at)})
            )
            if isinstance(answer, StoredResponse) and idempotency_key is not None:
                services.idempotency.remember(conn, caller.key, idempotency_key, digest, response=answer, now=now)
    if isinstance(answer, Refusal):
        refuse(answer, access)
    return json_response(answer.body, status_code=answer.status_code, headers={"Location": f"/v1/requests/{answer.body['dsr_id']}"})


@router.get(
    "/v1/requests",
    summary="The data-request queue (dpo, compliance officers): by status, overdue or not, paged",
    response_model=None,
    responses={200: {"model": RequestPage}, **p.openapi_responses(p.BAD_REQUEST, p.UNAUTHORIZED, p.FORBIDDEN, p.UNAVAILABLE)},
)
@offloaded
def request_queue(
    caller: CallerDep,
    services: ServicesDep,
    request_id: RequestIdDep,
    now: NowDep,
    status: Annotated[Status | None, Query(description="only requests in this status")] = None,
    overdue: Annotated[bool | None, Query(description="only requests past (true) or within (false) their due date")] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = DEFAULT_LIMIT,
) -> Response:
    after = decode_cursor(cursor, ID_PATTERN)
    size = capped(limit)
    with services.reading() as conn:
        access, allowed = operation_access(services, conn, caller, "requests:queue", "read", request_id=request_id, now=now)
        page = services.requests.queue(conn, access, allowed=allowed, status=status, overdue=overdue, after=after, limit=size + 1)
    if isinstance(page, Refusal):
        refuse(page, access)
    items = [_summary(r, now) for r in page[:size]]
    next_cursor = encode_cursor(page[size - 1].dsr_id) if len(page) > size else None
    return json_response({"items": items, "next_cursor": next_cursor})


@router.get(
    "/v1/requests/{dsr_id}",
    summary="One request with its step history (details and notes for the member and the dpo, who state a purpose)",
    response_model=None,
    responses={200: {"model": RequestOut}, **p.READ_ERRORS},
)
@offloaded
def read_request(dsr_id: DsrIdPath, caller: CallerDep, purpose: OptionalPurposeDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep) -> Response:
    with services.reading() as conn:
        owner = services.requests.service.owner(conn, dsr_id)
        if purpose is None:
            access, allowed = operation_access(services, conn, caller, "requests:queue", "read", request_id=request_id, now=now)
        else:
            domain = relation(conn, caller, owner or "", break_glass=False)
            access, allowed = operation_access(
                services, conn, caller, "requests:records", "read", request_id=request_id, now=now, purpose=purpose, domain=domain
            )
        found = services.requests.read(conn, access, allowed=allowed, dsr_id=dsr_id, member_id=owner, decrypt=purpose is not None)
    if isinstance(found, Refusal):
        refuse(found, access)
    return json_response(_full(found, now))


@router.post(
    "/v1/requests/{dsr_id}/transitions",
    summary="Move a request one step (dpo); completing it carries it out",
    response_model=None,
    responses={200: {"model": RequestOut}, **p.WRITE_ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TransitionIn"}}}}},
)
@offloaded
def transition_request(
    dsr_id: DsrIdPath, caller: CallerDep, purpose: PurposeDep, raw: JsonBodyDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep
) -> Response:
    body, problems = model_or_problems(TransitionIn, raw.raw)
    move = None if body is None else Move(body.to, body.reason_code, body.note)
    with services.unit() as conn:
        owner = services.requests.service.owner(conn, dsr_id)
        access, allowed = _decide_transition(services, conn, caller, purpose, owner, request_id=request_id, now=now)
        moved = services.requests.transition(conn, access, allowed=allowed, dsr_id=dsr_id, member_id=owner, move=move, problems=problems)
    if isinstance(moved, Refusal):
        refuse(moved, access)
    if moved.type is RequestType.erasure and moved.status is Status.completed:
        _shred(services, moved.member_id)
    return json_response(_full(moved, now), headers=_certificate_link(moved))


def _shred(services: Services, member_id: str) -> None:
    """Crypto-shred after the completion committed (its step and audit event come first); a failure is finished by the pump."""
    try:
        services.runtime.eraser.erase(member_id)
    except (VaultError, KeysError, SQLAlchemyError) as exc:
        log.warning("erasure.deferred", member_id=member_id, error=type(exc).__name__.lower())


def _certificate_link(r: DataRequest) -> dict[str, str]:
    if r.status is not Status.completed:
        return {}
    if r.type is RequestType.erasure:
        return {"Link": f'</v1/requests/{r.dsr_id}/certificate>; rel="erasure-certificate"'}
    if r.type in EXPORTABLE:
        return {"Link": f'</v1/requests/{r.dsr_id}/export>; rel="export"'}
    return {}


@router.get(
    "/v1/requests/{dsr_id}/export",
    summary="The archive of a completed access or portability request (the member, the dpo): a zip with a signed manifest",
    response_model=None,
    responses={
        200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}, "description": "the archive, streamed"},
        **p.openapi_responses(p.BAD_REQUEST, p.UNAUTHORIZED, p.FORBIDDEN, p.NOT_FOUND, p.CONFLICT, p.UNAVAILABLE),
    },
)
@offloaded
def export_archive(dsr_id: DsrIdPath, caller: CallerDep, purpose: PurposeDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep) -> Response:
    with services.reading() as conn:
        owner = services.requests.service.owner(conn, dsr_id)
        domain = relation(conn, caller, owner or "", break_glass=False)
        access, allowed = operation_access(services, conn, caller, "requests:records", "read", request_id=request_id, now=now, purpose=purpose, domain=domain)
        ticket = services.requests.export(conn, access, allowed=allowed, dsr_id=dsr_id, member_id=owner)
    if isinstance(ticket, Refusal):
        refuse(ticket, access)
    # The export's own event is committed: sequence it and sign a checkpoint, so the archive's access log proves it too.
    engine = services.runtime.data_engine
    services.sequencer.run_until_idle(now=now)
    checkpointer = make_checkpointer(services.settings, engine, services.runtime.signing)
    checkpointer.make(now=now)
    settings = services.settings
    receipts_key = services.runtime.signing.current(SigningPurpose.receipts)
    signing = ExportSigning(
        manifest_key=services.runtime.signing.current(SigningPurpose.certificates),
        consent_view=lambda event: event_body(services, event, receipts_key),
        issuer=settings.issuer,
        controller=settings.controller_name,
    )

    def archive() -> Iterator[bytes]:
        with read_snapshot(engine) as snapshot:
            published = checkpointer.latest(snapshot, now)
            if published is None:
                raise AuditStoreError("no checkpoint has been made")
            yield from services.exports.stream(snapshot, ticket, now=now, checkpoint=published, signing=signing)

    headers = {"Cache-Control": "no-store", "Content-Disposition": f'attachment; filename="member-vault-export-{dsr_id}.zip"'}
    return StreamingResponse(archive(), media_type="application/zip", headers=headers)


@router.get(
    "/v1/requests/{dsr_id}/certificate",
    summary="The signed erasure certificate of a completed erasure request (the member, the dpo)",
    response_model=None,
    responses={200: {"model": ErasureCertificate}, **p.openapi_responses(p.BAD_REQUEST, p.UNAUTHORIZED, p.FORBIDDEN, p.NOT_FOUND, p.CONFLICT, p.UNAVAILABLE)},
)
@offloaded
def erasure_certificate(dsr_id: DsrIdPath, caller: CallerDep, purpose: PurposeDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep) -> Response:
    with services.reading() as conn:
        owner = services.requests.service.owner(conn, dsr_id)
        domain = relation(conn, caller, owner or "", break_glass=False)
        access, allowed = operation_access(services, conn, caller, "requests:records", "read", request_id=request_id, now=now, purpose=purpose, domain=domain)
        facts = services.requests.certificate(conn, access, allowed=allowed, dsr_id=dsr_id, member_id=owner)
    if isinstance(facts, Refusal):
        refuse(facts, access)
    settings = services.settings
    key = services.runtime.signing.current(SigningPurpose.certificates)
    signed = sign_certificate(key, facts, issuer=settings.issuer, controller=settings.controller_name, backup_days=settings.keystore_backup_days)
    return json_response({"dsr_id": dsr_id, "certificate": signed})


def _decide_transition(
    services: Services, conn: Connection, caller: Caller, purpose: Purpose, owner: str | None, *, request_id: str, now: datetime
) -> tuple[Access, bool]:
    domain = relation(conn, caller, owner or "", break_glass=False)
    return operation_access(services, conn, caller, "requests:transitions", "write", request_id=request_id, now=now, purpose=purpose, domain=domain)


def _summary(r: DataRequest, now: datetime) -> dict[str, object]:
    return {
        "dsr_id": r.dsr_id,
        "member_id": r.member_id,
        "type": r.type.value,
        "status": r.status.value,
        "jurisdiction": r.jurisdiction,
        "filed_role": r.filed_role.value,
        "received_at": r.received_at,
        "due_at": r.due_at,
        "closed_at": r.closed_at,
        "overdue": r.overdue(now),
    }


def _full(r: DataRequest, now: datetime) -> dict[str, object]:
    steps = [
        {
            "seq": s.seq,
            "from_status": None if s.from_status is None else s.from_status.value,
            "to_status": s.to_status.value,
            "actor": s.actor,
            "actor_role": s.actor_role,
            "reason_code": s.reason_code.value,
            "at": s.at,
            "note": s.note,
        }
        for s in r.steps
    ]
    return _summary(r, now) | {"filed_by": r.filed_by, "details": r.details, "evidence": r.evidence, "steps": steps}


SCHEMAS = (RequestFile, RequestFiled, TransitionIn, RequestOut, RequestPage, ErasureCertificate)

__all__ = ["SCHEMAS", "router"]
