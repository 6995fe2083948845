"""Keys: metadata, rotation jobs and their status (vault_admin; API.md, Keys, clients and operations).

* Every request after authentication journals exactly one event through the
  gatekeeper; decisions ask the policy about ``keys:metadata`` (read) and
  ``keys:rotate`` (write) with no purpose.
* Metadata is versions, ids, dates and counts: never a key, a wrapped blob or
  a seed.
* A rotation runs to completion inside its request (KEK: ``rotate_kek``,
  re-wrapping every stored key; jwt and audit: a new signing key, the old
  one listed for ``SIGNING_OVERLAP``) and answers 202 with a fresh job id.
  There is no job table: the job is its audit event (action ``rotate``,
  resource ``key``, ``resource_id`` the job id, the kind in ``fields``), so
  every worker answers ``GET /v1/keys/jobs/{id}`` alike — ``done`` for
  outcome ``ok``, ``failed`` for a refused request. A key provider or key
  store that fails mid-rotation fails closed (503, transaction and event
  rolled back); the rotations are resumable, so the operator asks again.
* ``pseudonym`` (with ``consumer_id``) starts the consumer's next pseudonym
  epoch: a new key derived for it, and a generalization fixed afresh by its
  next extract. Its past extracts cannot be joined with its future ones.
  An unknown consumer is a 422 on ``consumer_id``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response
from sqlalchemy import Connection, func, select

from api import problems as p
from api.decisions import operation_access
from api.deps import CallerDep, JsonBodyDep, NowDep, RequestIdDep, ServicesDep, validate_body
from api.offload import offloaded
from api.responses import json_response, refuse
from api.runtime import Runtime
from api.schemas.keys import JOB_ID, Job, JobStatus, KeysMetadata, RotateAccepted, RotateKind, RotateRequest
from api.services import Services
from audit import queries
from audit.event import Decision
from audit.queries import MAX_LIMIT
from keys.models import MemberKeyRow
from keys.rotation import rotate_kek
from keys.signing import SigningPurpose
from vault.access import Refusal, Target
from vault.errors import NotFoundError, ValidationError
from vault.ids import new_id

router = APIRouter(prefix="/v1/keys", tags=["keys"])
SIGNING_OVERLAP = timedelta(hours=24)
JOB_ACTION, JOB_RESOURCE = "rotate", "key"
_SIGNING = {RotateKind.jwt: SigningPurpose.jwt, RotateKind.audit: SigningPurpose.audit}
_READ_ERRORS = p.openapi_responses(p.UNAUTHORIZED, p.FORBIDDEN, p.UNAVAILABLE)


@router.get("", summary="Key metadata (never key material)", response_model=None, responses={200: {"model": KeysMetadata}, **_READ_ERRORS})
@offloaded
def key_metadata(caller: CallerDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep) -> Response:
    with services.unit() as conn:
        access, allowed = operation_access(services, conn, caller, "keys:metadata", "read", request_id=request_id, now=now)
        result = services.gatekeeper.perform(conn, access, Target("read", JOB_RESOURCE), allowed, lambda: _metadata(services.runtime))
    if isinstance(result, Refusal):
        refuse(result, access)
    return json_response(result)


@router.post(
    "/rotate",
    status_code=202,
    summary="Rotate a key (kek, jwt, audit); runs to completion, reported as a job",
    response_model=None,
    responses={
        202: {"model": RotateAccepted},
        **p.openapi_responses(p.BAD_REQUEST, p.UNAUTHORIZED, p.FORBIDDEN, p.TOO_LARGE, p.UNSUPPORTED_MEDIA, p.INVALID, p.UNAVAILABLE),
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RotateRequest"}}}}},
)
@offloaded
def rotate_key(caller: CallerDep, raw: JsonBodyDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep) -> Response:
    named = raw.value.get("kind") if isinstance(raw.value, dict) else None
    kinds = tuple(k.value for k in RotateKind if k.value == named)  # a closed code, never other input
    job_id = new_id()
    with services.unit() as conn:
        access, allowed = operation_access(services, conn, caller, "keys:rotate", "write", request_id=request_id, now=now)
        target = Target(JOB_ACTION, JOB_RESOURCE, job_id, None, kinds)
        result = services.gatekeeper.perform(conn, access, target, allowed, lambda: _rotate(services, conn, raw.raw, now))
    if kinds == (RotateKind.jwt.value,) and not isinstance(result, Refusal):
        services.authenticator.keys.refresh()  # this process accepts the new key at once; others within a minute or on first sight of its kid
    if isinstance(result, Refusal):
        refuse(result, access)
    return json_response({"job_id": job_id}, status_code=202, headers={"Location": f"/v1/keys/jobs/{job_id}"})


@router.get(
    "/jobs/{job_id}",
    summary="A rotation job's status",
    response_model=None,
    responses={200: {"model": Job}, **_READ_ERRORS, **p.openapi_responses(p.NOT_FOUND)},
)
@offloaded
def rotation_job(
    job_id: Annotated[str, Path(pattern=JOB_ID, description="the id POST /v1/keys/rotate answered")],
    caller: CallerDep,
    services: ServicesDep,
    request_id: RequestIdDep,
    now: NowDep,
) -> Response:
    services.sequencer.run_until_idle(now=now)  # the job's event gets its leaf, so the audit queries list it
    with services.unit() as conn:
        access, allowed = operation_access(services, conn, caller, "keys:metadata", "read", request_id=request_id, now=now)
        result = services.gatekeeper.perform(conn, access, Target("read", "key_job", job_id), allowed, lambda: _job(conn, job_id))
    if isinstance(result, Refusal):
        refuse(result, access)
    return json_response(result)


def _rotate(services: Services, conn: Connection, raw: bytes, now: datetime) -> None:
    try:
        body = validate_body(RotateRequest, raw)
    except p.ProblemError as exc:
        raise ValidationError(exc.errors) from None
    runtime = services.runtime
    if body.kind is RotateKind.pseudonym:
        if body.consumer_id is None:
            raise ValidationError({"consumer_id": "required_for_pseudonym"})
        try:
            services.consumers.rotate_epoch(conn, body.consumer_id, now)
        except NotFoundError:
            raise ValidationError({"consumer_id": "unknown_consumer"}) from None
        return
    if body.consumer_id is not None:
        raise ValidationError({"consumer_id": "only_for_pseudonym"})
    if body.kind is RotateKind.kek:
        rotate_kek(runtime.keys)
    else:
        runtime.signing.rotate(_SIGNING[body.kind], SIGNING_OVERLAP)


def _job(conn: Connection, job_id: str) -> dict[str, object]:
    """The job's state from its audit event (an allowed ``rotate`` of a ``key`` with this resource id)."""
    cursor: str | None = None
    while True:
        page, cursor = queries.events(conn, action=JOB_ACTION, cursor=cursor, limit=MAX_LIMIT)
        for logged in page:
            e = logged.event
            if e.resource_type == JOB_RESOURCE and e.resource_id == job_id and e.decision is Decision.ALLOW:
                return {
                    "job_id": job_id,
                    "kind": e.fields[0] if e.fields else None,
                    "status": (JobStatus.done if e.outcome == "ok" else JobStatus.failed).value,
                    "requested_by": e.actor.subject,
                    "requested_at": e.time,
                    "index": logged.index,
                }
        if cursor is None:
            raise NotFoundError("no such job")


def _metadata(runtime: Runtime) -> dict[str, object]:
    provider = runtime.provider
    current = provider.current_version()
    wraps, references = runtime.keys.wrap_counts(), runtime.keys.kek_references()
    versions = [
        {
            "version": v.version,
            "created_at": v.created_at,
            "retired": v.retired,
            "current": v.version == current,
            "wraps": wraps.get(v.version, 0),
            "keys_wrapped": references.get(v.version, 0),
        }
        for v in provider.versions()
    ]
    signing = [
        {"purpose": k.purpose.value, "kid": k.key_id, "version": k.version, "created_at": k.created_at, "retire_after": k.retire_after, "current": i == 0}
        for purpose in SigningPurpose
        for i, k in enumerate(runtime.signing.verification_keys(purpose))
    ]
    with runtime.keys_engine.connect() as keys_conn:
        member_keys = int(keys_conn.execute(select(func.count()).select_from(MemberKeyRow)).scalar_one())
    return {"kek": {"provider": provider.name, "current_version": current, "versions": versions}, "signing_keys": signing, "member_keys": member_keys}


SCHEMAS = (RotateRequest, RotateAccepted, Job, KeysMetadata)

__all__ = ["SCHEMAS", "router"]
