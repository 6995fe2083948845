"""Extracts for registered consumers: start a job, read its status and manifest, download its rows, read the deletion feed.

The caller is a consumer: a service client registered with ``vaultctl clients
add --consumer``, calling with its own token (the consumer is the token's
``sub``) and its registered purpose in ``X-Purpose``. Every route asks the
policy about ``extracts:profiles`` (write to start, read otherwise) with that
purpose, and then requires the caller to be a consumer registered for it;
reading an extract also requires it to be the caller's own. Anything else is
the same 403, whether the extract exists or not.

``POST /v1/extracts`` records the job and its decision event in one
transaction, then runs it in this process's background thread
(``api.extract_jobs``): 202 with the extract id. The run itself journals the
extract's one ``extract`` event (row count, SHA-256 of the included member
ids). Its rows are kept sealed for ``VAULT_EXTRACT_RETENTION_HOURS`` and then
purged; every download is journaled.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import Connection

from api import problems as p
from api.caller import Caller
from api.decisions import operation_access
from api.deps import CallerDep, IdempotencyKeyDep, JsonBodyDep, NowDep, PurposeDep, RequestIdDep, ServicesDep, model_or_problems
from api.idempotency import StoredResponse, replay_if_retry
from api.offload import offloaded
from api.paging import DEFAULT_LIMIT, LimitQuery, capped
from api.responses import json_response, refuse
from api.schemas.extracts import EXTRACT_ID, DeletionPage, ExtractOut, ExtractStart, ExtractStarted
from api.services import Services
from keys.signing import SigningPurpose
from vault.access import Access, Refusal, Target
from vault.errors import ConflictError, NotFoundError, ValidationError
from vault.extracts.consumers import Consumer
from vault.extracts.records import ExtractRecord, extract_record
from vault.extracts.runner import RESOURCE, ExtractAudit, ExtractRequest, ExtractSigning
from vault.extracts.writers import ExtractFormat
from vault.ids import new_id
from vault.purposes import Purpose

router = APIRouter(prefix="/v1/extracts", tags=["extracts"])
OBJECT = "extracts:profiles"
FEED_RESOURCE = "deletion_feed"
ExtractIdPath = Annotated[str, Path(pattern=EXTRACT_ID, description="the id POST /v1/extracts answered")]
MEDIA_TYPES = {
    ExtractFormat.ndjson: "application/x-ndjson",
    ExtractFormat.csv: "text/csv; charset=utf-8",
    ExtractFormat.parquet: "application/vnd.apache.parquet",
}
_READ_ERRORS = p.openapi_responses(p.BAD_REQUEST, p.UNAUTHORIZED, p.FORBIDDEN, p.UNAVAILABLE)


def _consumer(services: Services, conn: Connection, caller: Caller, purpose: Purpose) -> Consumer | None:
    """The caller as a consumer registered for ``purpose``, or None."""
    try:
        consumer = services.consumers.get(conn, caller.subject)
    except NotFoundError:
        return None
    return consumer if consumer.purpose is purpose else None


def _decide(
    services: Services, conn: Connection, caller: Caller, purpose: Purpose, action: str, *, request_id: str, now: datetime
) -> tuple[Access, Consumer | None]:
    access, allowed = operation_access(services, conn, caller, OBJECT, action, request_id=request_id, now=now, purpose=purpose)
    consumer = _consumer(services, conn, caller, purpose) if allowed else None
    return access, consumer


@router.post(
    "",
    status_code=202,
    summary="Start an extract for the calling consumer (202; poll GET /v1/extracts/{extract_id})",
    response_model=None,
    responses={202: {"model": ExtractStarted}, **p.WRITE_ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExtractStart"}}}}},
)
@offloaded
def start_extract(
    caller: CallerDep,
    purpose: PurposeDep,
    raw: JsonBodyDep,
    services: ServicesDep,
    request_id: RequestIdDep,
    now: NowDep,
    idempotency_key: IdempotencyKeyDep = None,
) -> Response:
    digest = services.idempotency.digest("POST", "/v1/extracts", raw.raw)
    body, problems = model_or_problems(ExtractStart, raw.raw)
    extract_id = new_id()
    keep_until = now + timedelta(hours=services.settings.extract_retention_hours)
    with services.unit() as conn:
        access, consumer = _decide(services, conn, caller, purpose, "write", request_id=request_id, now=now)
        prior = replay_if_retry(
            conn,
            services.idempotency,
            services.gatekeeper,
            caller_key=caller.key,
            key=idempotency_key,
            digest=digest,
            access=access,
            allowed=consumer is not None,
            resource=RESOURCE,
            id_field="extract_id",
            about_member=False,
        )
        started: StoredResponse | ExtractRequest | Refusal
        if prior is not None:
            started = prior
        else:

            def begin() -> ExtractRequest:
                assert consumer is not None  # noqa: S101 - perform runs this only when allowed
                if body is None:
                    raise ValidationError(problems)
                if body.format not in consumer.formats:
                    raise ValidationError({"format": "not_registered_for_consumer"})
                request = ExtractRequest(extract_id, consumer, body.format, body.k, body.since, keep_until=keep_until)
                services.extracts.begin(conn, request, requested_by=caller.subject, now=now)
                return request

            target = Target("create", RESOURCE, extract_id, None, consumer.attributes if consumer else ())
            started = services.gatekeeper.perform(conn, access, target, consumer is not None, begin)
            if isinstance(started, ExtractRequest) and idempotency_key is not None:
                answer = StoredResponse(202, {"extract_id": extract_id, "status": "running"})
                services.idempotency.remember(conn, caller.key, idempotency_key, digest, response=answer, now=now)
    if isinstance(started, Refusal):
        refuse(started, access)
    if isinstance(started, ExtractRequest):
        signing = ExtractSigning(services.runtime.signing.current(SigningPurpose.certificates), services.settings.issuer)
        services.extract_jobs.submit(started, ExtractAudit(caller.actor, request_id, access.policy_hash), signing)
        body_out: dict[str, object] = {"extract_id": extract_id, "status": "running"}
    else:
        body_out = started.body
    return json_response(body_out, status_code=202, headers={"Location": f"/v1/extracts/{body_out['extract_id']}"})


@router.get(
    "/deletions",
    summary="The calling consumer's deletion feed: pseudonyms to delete downstream (withdrawn, erased, restricted, stale consent, suppressed later)",
    response_model=None,
    responses={200: {"model": DeletionPage}, **_READ_ERRORS},
)
@offloaded
def deletions(
    caller: CallerDep,
    purpose: PurposeDep,
    services: ServicesDep,
    request_id: RequestIdDep,
    now: NowDep,
    since: Annotated[int, Query(ge=0, le=2**62, description="the last feed position seen (0: from the start)")] = 0,
    limit: LimitQuery = DEFAULT_LIMIT,
) -> Response:
    limit = capped(limit)
    with services.reading() as conn:
        access, consumer = _decide(services, conn, caller, purpose, "read", request_id=request_id, now=now)
        consumer_id = consumer.consumer_id if consumer else None
        target = Target("read", FEED_RESOURCE, consumer_id)
        page = services.gatekeeper.perform_read(
            conn, access, target, consumer is not None, lambda: services.feed.since(conn, consumer_id or "", after=since, limit=limit + 1)
        )
    if isinstance(page, Refusal):
        refuse(page, access)
    items = [{"seq": e.seq, "epoch": e.epoch, "pseudonym": e.pseudonym, "reason": e.reason.value, "at": e.at} for e in page[:limit]]
    more = len(page) > limit
    return json_response({"items": items, "next_cursor": str(items[-1]["seq"]) if more else None})


def _own(
    services: Services, conn: Connection, caller: Caller, purpose: Purpose, extract_id: str, *, request_id: str, now: datetime
) -> tuple[Access, ExtractRecord | None]:
    """The decision on one extract, and the extract if the caller is its consumer (None otherwise: made-up or another's, alike)."""
    access, consumer = _decide(services, conn, caller, purpose, "read", request_id=request_id, now=now)
    record = extract_record(conn, extract_id) if consumer is not None else None
    if record is None or consumer is None or record.consumer_id != consumer.consumer_id or record.purpose != purpose.value:
        return access, None
    return access, record


@router.get(
    "/{extract_id}",
    summary="An extract's status, and once done its signed manifest",
    response_model=None,
    responses={200: {"model": ExtractOut}, **_READ_ERRORS},
)
@offloaded
def extract_status(extract_id: ExtractIdPath, caller: CallerDep, purpose: PurposeDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep) -> Response:
    with services.reading() as conn:
        access, record = _own(services, conn, caller, purpose, extract_id, request_id=request_id, now=now)
        result = services.gatekeeper.perform_read(conn, access, Target("read", RESOURCE, extract_id), record is not None, lambda: _status(record))
    if isinstance(result, Refusal):
        refuse(result, access)
    links = {"Link": f'</v1/extracts/{extract_id}/data>; rel="data"'} if record is not None and record.downloadable(now) else {}
    return json_response(result, headers=links)


@router.get(
    "/{extract_id}/data",
    summary="An extract's rows in its format, streamed (while the vault keeps them)",
    response_model=None,
    responses={
        200: {
            "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in MEDIA_TYPES.values()},
            "description": "the extract's file; its SHA-256 is in Repr-Digest and in the signed manifest",
        },
        **p.openapi_responses(p.BAD_REQUEST, p.UNAUTHORIZED, p.FORBIDDEN, p.CONFLICT, p.UNAVAILABLE),
    },
)
@offloaded
def extract_data(extract_id: ExtractIdPath, caller: CallerDep, purpose: PurposeDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep) -> Response:
    with services.reading() as conn:
        access, record = _own(services, conn, caller, purpose, extract_id, request_id=request_id, now=now)

        def open_rows() -> tuple[ExtractRecord, Iterator[bytes]]:
            assert record is not None  # noqa: S101 - perform_read runs this only when allowed
            if not record.downloadable(now) or record.content_bytes is None:
                raise ConflictError("the extract is still running" if record.status == "running" else "the extract has no data to download")
            return record, services.extract_jobs.store.open(extract_id, record.content_bytes)

        target = Target("download", RESOURCE, extract_id)
        opened = services.gatekeeper.perform_read(conn, access, target, record is not None, open_rows)
    if isinstance(opened, Refusal):
        refuse(opened, access)
    found, chunks = opened
    fmt = ExtractFormat(found.format)
    headers = {
        "Cache-Control": "no-store",
        "Content-Length": str(found.content_bytes),
        "Content-Disposition": f'attachment; filename="extract-{extract_id}.{fmt.value}"',
        "Repr-Digest": f"sha-256=:{base64.b64encode(bytes.fromhex(found.content_sha256 or '')).decode('ascii')}:",
    }
    return StreamingResponse(chunks, media_type=MEDIA_TYPES[fmt], headers=headers)


def _status(record: ExtractRecord | None) -> dict[str, object]:
    assert record is not None  # noqa: S101 - perform_read runs this only when allowed
    return {
        "extract_id": record.extract_id,
        "status": record.status,
        "format": record.format,
        "k": record.k,
        "since": record.since,
        "epoch": record.epoch,
        "row_count": record.row_count,
        "content_sha256": record.content_sha256,
        "content_bytes": record.content_bytes,
        "reason": record.reason,
        "created_at": record.created_at,
        "finished_at": record.finished_at,
        "expires_at": record.expires_at,
        "purged": record.purged_at is not None,
        "manifest": record.manifest if record.status == "done" else None,
        "feed_seq": record.feed_seq if record.status == "done" else None,
    }


SCHEMAS = (ExtractStart, ExtractStarted, ExtractOut, DeletionPage)

__all__ = ["SCHEMAS", "router"]
