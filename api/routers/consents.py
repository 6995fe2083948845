"""A member's consent: the current state and history, recording a grant or withdrawal, a FHIR rendering.

Decisions are on the operation ``consent:records`` in the caller's domain
for the member (``self``, ``clinic`` or ``none``), so a member token for
another member, or staff outside the member's clinics, get the same 403 for
an existing and a made-up id. The member records in the app; the front desk
records on the member's behalf. Every event is answered with its receipt, a
JWS the vault signs (``vault.consent.receipts``); a retried POST with the same
``Idempotency-Key`` answers the first event and its receipt again and records
nothing new.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response
from sqlalchemy import Connection

from api import problems as p
from api.authz import relation
from api.caller import Caller
from api.decisions import operation_access, restricted
from api.deps import CallerDep, IdempotencyKeyDep, JsonBodyDep, NowDep, PurposeDep, RequestIdDep, ServicesDep, model_or_problems
from api.idempotency import StoredResponse, replay_if_retry
from api.offload import offloaded
from api.responses import RESTRICTED_REASON, json_response, refuse
from api.routers.members import MemberIdPath
from api.schemas.consent import ConsentEventOut, ConsentOverviewOut, ConsentRecordIn
from api.services import Services
from keys.signing import SigningKey, SigningPurpose
from vault.access import Access, Refusal
from vault.consent import ConsentEvent, ConsentRequest, Recorder, RecorderRole
from vault.consent.fhir import to_fhir_consent
from vault.consent.gate import RESOURCE
from vault.consent.receipts import sign_receipt
from vault.purposes import Purpose
from vault.roles import Role

router = APIRouter(tags=["consent"])
ConsentIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="opaque consent event id")]
OBJECT = "consent:records"
FHIR_MEDIA_TYPE = "application/fhir+json"


def _recorder(caller: Caller) -> Recorder | None:
    if caller.own_member_id is not None:
        return Recorder(caller.subject, RecorderRole.member)
    if Role.front_desk in caller.roles:
        return Recorder(caller.subject, RecorderRole.front_desk)
    return None


def event_body(services: Services, event: ConsentEvent, key: SigningKey | None = None) -> dict[str, object]:
    """An event as the API shows it, with its receipt (signed with ``key``, by default the current receipts key)."""
    key = key or services.runtime.signing.current(SigningPurpose.receipts)
    settings = services.settings
    return {
        "consent_id": event.consent_id,
        "purpose": event.purpose.value,
        "decision": event.decision.value,
        "notice_version": event.notice_version,
        "notice_hash": event.notice_hash,
        "channel": event.channel.value,
        "given_by": event.given_by.value,
        "evidence": event.evidence,
        "recorded_by": event.recorded_by,
        "recorded_role": event.recorded_role.value,
        "recorded_at": event.recorded_at,
        "receipt": sign_receipt(key, event, issuer=settings.issuer, controller=settings.controller_name),
    }


@router.post(
    "/v1/members/{member_id}/consents",
    status_code=201,
    summary="Record a grant or withdrawal of consent (the member in the app, or the front desk on the member's behalf)",
    response_model=None,
    responses={201: {"model": ConsentEventOut}, **p.WRITE_ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ConsentRecordIn"}}}}},
)
@offloaded
def record_consent(
    member_id: MemberIdPath,
    caller: CallerDep,
    purpose: PurposeDep,
    raw: JsonBodyDep,
    services: ServicesDep,
    request_id: RequestIdDep,
    now: NowDep,
    idempotency_key: IdempotencyKeyDep = None,
) -> Response:
    digest = services.idempotency.digest("POST", f"/v1/members/{member_id}/consents", raw.raw)
    body, problems = model_or_problems(ConsentRecordIn, raw.raw)
    recorder = _recorder(caller)
    with services.unit() as conn:
        access, allowed = _decide(services, conn, caller, purpose, member_id, "write", request_id=request_id, now=now)
        allowed = allowed and recorder is not None
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
            id_field="consent_id",
            member_id=member_id,
        )
        if isinstance(prior, StoredResponse):
            event: ConsentEvent | Refusal = services.consents.service.event(conn, member_id, str(prior.body["consent_id"]))
        elif prior is not None:
            event = prior
        else:
            request = None if body is None else _request(body)
            event = services.consents.record(
                conn,
                access,
                allowed=allowed,
                member_id=member_id,
                request=request,
                recorder=recorder or Recorder(caller.subject, RecorderRole.member),
                problems=problems,
            )
            if not isinstance(event, Refusal) and idempotency_key is not None:
                services.idempotency.remember(
                    conn, caller.key, idempotency_key, digest, response=StoredResponse(201, {"consent_id": event.consent_id}), now=now
                )
    if isinstance(event, Refusal):
        refuse(event, access)
    return json_response(event_body(services, event), status_code=201, headers={"Location": f"/v1/members/{member_id}/consents/{event.consent_id}"})


def _request(body: ConsentRecordIn) -> ConsentRequest:
    return ConsentRequest(
        purpose=Purpose(body.purpose.value),
        decision=body.decision,
        channel=body.channel,
        notice_version=body.notice_version,
        notice_hash=body.notice_hash,
        evidence=body.evidence,
        given_by=body.given_by,
    )


@router.get(
    "/v1/members/{member_id}/consents",
    summary="The member's consent: the current state of every consent purpose and the full history with receipts",
    response_model=None,
    responses={200: {"model": ConsentOverviewOut}, **p.READ_ERRORS},
)
@offloaded
def read_consents(member_id: MemberIdPath, caller: CallerDep, purpose: PurposeDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep) -> Response:
    with services.reading() as conn:
        access, allowed = _decide(services, conn, caller, purpose, member_id, "read", request_id=request_id, now=now)
        overview = services.consents.overview(conn, access, allowed=allowed, member_id=member_id)
    if isinstance(overview, Refusal):
        refuse(overview, access)
    current = {p.value: {"state": s.state.value, "notice_version": s.notice_version, "since": s.since} for p, s in overview.current.items()}
    key = services.runtime.signing.current(SigningPurpose.receipts)  # one key-store read for the whole history
    history: list[object] = [event_body(services, e, key) for e in overview.history]
    return json_response({"member_id": member_id, "current": current, "history": history})


@router.get(
    "/v1/members/{member_id}/consents/{consent_id}",
    summary="One consent event, with its receipt",
    response_model=None,
    responses={200: {"model": ConsentEventOut}, **p.READ_ERRORS},
)
@offloaded
def read_consent_event(
    member_id: MemberIdPath, consent_id: ConsentIdPath, caller: CallerDep, purpose: PurposeDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep
) -> Response:
    event = _one_event(services, caller, purpose, member_id, consent_id, request_id=request_id, now=now)
    return json_response(event_body(services, event))


@router.get(
    "/v1/members/{member_id}/consents/{consent_id}/fhir",
    summary="One consent event as a FHIR R4B Consent resource",
    response_model=None,
    responses={200: {"description": "a FHIR R4B Consent", "content": {FHIR_MEDIA_TYPE: {"schema": {"type": "object"}}}}, **p.READ_ERRORS},
)
@offloaded
def consent_as_fhir(
    member_id: MemberIdPath, consent_id: ConsentIdPath, caller: CallerDep, purpose: PurposeDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep
) -> Response:
    event = _one_event(services, caller, purpose, member_id, consent_id, request_id=request_id, now=now)
    response = json_response(to_fhir_consent(event, controller=services.settings.controller_name))
    response.headers["Content-Type"] = f"{FHIR_MEDIA_TYPE}; charset=utf-8"
    return response


def _one_event(services: Services, caller: Caller, purpose: Purpose, member_id: str, consent_id: str, *, request_id: str, now: datetime) -> ConsentEvent:
    with services.reading() as conn:
        access, allowed = _decide(services, conn, caller, purpose, member_id, "read", request_id=request_id, now=now)
        event = services.consents.event(conn, access, allowed=allowed, member_id=member_id, consent_id=consent_id)
    if isinstance(event, Refusal):
        refuse(event, access)
    return event


def _decide(
    services: Services, conn: Connection, caller: Caller, purpose: Purpose, member_id: str, action: str, *, request_id: str, now: datetime
) -> tuple[Access, bool]:
    domain = relation(conn, caller, member_id, break_glass=False)
    access, allowed = operation_access(services, conn, caller, OBJECT, action, request_id=request_id, now=now, purpose=purpose, domain=domain)
    if allowed and action == "read" and restricted(services, conn, member_id, purpose=purpose, domain=domain):
        # A restricted member's consent is stored but not read by staff; recording a withdrawal on their behalf stays possible.
        return dataclasses.replace(access, reason=RESTRICTED_REASON), False
    return access, allowed


SCHEMAS = (ConsentRecordIn, ConsentEventOut, ConsentOverviewOut)

__all__ = ["SCHEMAS", "event_body", "router"]
