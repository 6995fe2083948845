"""Audit: events, checkpoints, proofs, export, breach scope and a member's access log (API.md, Audit).

* Every request after authentication journals exactly one event through the
  gatekeeper, whatever the answer. Query values are checked before the
  decision (400, no event, like a missing purpose); numbers that name no leaf,
  tree or page (``ProofRangeError``, ``CursorError``) show only once the
  decision let the route read, so they are journaled (outcome ``invalid``)
  and answered 400.
* Decisions ask the policy about ``audit:*`` objects with no purpose; the
  access log's domain is the caller's relation to the member (``self`` for
  the member's own token), so a member asking about another member is
  refused the same way for a real and a made-up id.
* Events hold ids, codes and field names only, and are returned as stored.
  The export streams the leaf bytes verbatim, after its event committed,
  reading a range fixed at the decision in chunks of their own connection.
* The first checkpoint is made on demand (sequencing the journal first), so
  a fresh vault can answer ``checkpoints/latest`` and access logs at once;
  later ones come from the audit pump.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, TypeVar

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import Connection, select

from api import problems as p
from api.authz import relation
from api.caller import Caller
from api.decisions import operation_access
from api.deps import CallerDep, NowDep, RequestIdDep, ServicesDep
from api.offload import offloaded
from api.responses import json_response, refuse
from api.runtime import make_checkpointer
from api.schemas import audit as shapes
from api.services import Services
from audit import queries, store
from audit.checkpoints import Checkpointer, PublishedCheckpoint, audit_checkpoints
from audit.errors import AuditStoreError, CursorError, ProofRangeError
from audit.merkle import leaf_hash
from vault.access import Access, Refusal, Target
from vault.errors import ValidationError
from vault.extracts.records import Holding, held_by_events, holdings
from vault.extracts.runner import EXTRACT_ACTION

_T = TypeVar("_T")
router = APIRouter(tags=["audit"])
NDJSON = "application/x-ndjson"
RESOURCE = "audit_log"
_ERRORS = p.openapi_responses(p.BAD_REQUEST, p.UNAUTHORIZED, p.FORBIDDEN, p.UNAVAILABLE)


def _decided(
    services: Services,
    conn: Connection,
    caller: Caller,
    obj: str,
    target: Target,
    request_id: str,
    now: datetime,
    operation: Callable[[], _T],
    domain: str = "none",
) -> tuple[_T | Refusal, Access]:
    """Decide ``obj``, journal the one event, and run ``operation`` if allowed (a bad range or cursor is outcome ``invalid``)."""
    access, allowed = operation_access(services, conn, caller, obj, "read", request_id=request_id, now=now, domain=domain)

    def guarded() -> _T:
        try:
            return operation()
        except (ProofRangeError, CursorError) as exc:
            raise ValidationError({"query": "out_of_range"}) from exc

    return services.gatekeeper.perform(conn, access, target, allowed, guarded), access


def _answer(result: _T | Refusal, access: Access) -> _T:
    if not isinstance(result, Refusal):
        return result
    cause = None if result.error is None else result.error.__cause__
    if isinstance(cause, ProofRangeError | CursorError):
        raise p.ProblemError(p.BAD_REQUEST, str(cause))
    refuse(result, access)


@router.get("/v1/audit/events", summary="Audit events, filtered and paged", response_model=None, responses={200: {"model": shapes.EventPage}, **_ERRORS})
@offloaded
def list_events(
    caller: CallerDep,
    services: ServicesDep,
    request_id: RequestIdDep,
    now: NowDep,
    member_id: shapes.MemberIdQuery = None,
    actor: shapes.ActorQuery = None,
    action: shapes.ActionQuery = None,
    decision: shapes.DecisionQuery = None,
    since: shapes.SinceQuery = None,
    until: shapes.UntilQuery = None,
    cursor: shapes.CursorQuery = None,
    limit: shapes.LimitQuery = 100,
) -> Response:
    start, end = shapes.time_window(since, until)
    with services.unit() as conn:

        def page() -> tuple[list[queries.LoggedEvent], str | None]:
            return queries.events(conn, member_id=member_id, actor=actor, action=action, decision=decision, since=start, until=end, cursor=cursor, limit=limit)

        result, access = _decided(services, conn, caller, "audit:events", Target("read", "audit_events"), request_id, now, page)
    found, next_cursor = _answer(result, access)
    return json_response({"items": [{"index": e.index, "event": e.event.to_json_obj()} for e in found], "next_cursor": next_cursor})


@router.get(
    "/v1/audit/checkpoints/latest",
    summary="The latest signed checkpoint and its verifier keys",
    response_model=None,
    responses={200: {"model": shapes.CheckpointView}, **_ERRORS},
)
@offloaded
def latest_checkpoint(caller: CallerDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep) -> Response:
    checkpointer = _first_checkpoint(services, now)
    with services.unit() as conn:
        result, access = _decided(
            services, conn, caller, "audit:checkpoints", Target("read", "audit_checkpoint"), request_id, now, lambda: _latest(checkpointer, conn, now)
        )
    return json_response(_checkpoint_view(_answer(result, access)))


@router.get(
    "/v1/audit/proofs/inclusion",
    summary="RFC 6962 inclusion proof of a leaf in a tree size",
    response_model=None,
    responses={200: {"model": shapes.InclusionProofView}, **_ERRORS},
)
@offloaded
def inclusion_proof(
    caller: CallerDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep, index: shapes.LeafNumber, tree_size: shapes.TreeSize
) -> Response:
    with services.unit() as conn:

        def proof() -> dict[str, object]:
            path = store.inclusion_proof(conn, index, tree_size)
            return {"leaf_index": index, "tree_size": tree_size, "leaf_hash": leaf_hash(store.leaf(conn, index)).hex(), "audit_path": [h.hex() for h in path]}

        result, access = _decided(services, conn, caller, "audit:proofs", Target("read", "audit_proof"), request_id, now, proof)
    return json_response(_answer(result, access))


@router.get(
    "/v1/audit/proofs/consistency",
    summary="RFC 6962 consistency proof between two tree sizes",
    response_model=None,
    responses={200: {"model": shapes.ConsistencyProofView}, **_ERRORS},
)
@offloaded
def consistency_proof(
    caller: CallerDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep, first: shapes.TreeSize, second: shapes.TreeSize
) -> Response:
    with services.unit() as conn:

        def proof() -> dict[str, object]:
            return {"first": first, "second": second, "proof": [h.hex() for h in store.consistency_proof(conn, first, second)]}

        result, access = _decided(services, conn, caller, "audit:proofs", Target("read", "audit_proof"), request_id, now, proof)
    return json_response(_answer(result, access))


@router.get(
    "/v1/audit/export",
    summary="NDJSON export of the leaves [from, to) (default: the whole tree)",
    response_class=StreamingResponse,
    response_model=None,
    responses={200: {"description": "one ExportLine per line", "content": {NDJSON: {"schema": {"$ref": "#/components/schemas/ExportLine"}}}}, **_ERRORS},
)
@offloaded
def export(
    caller: CallerDep,
    services: ServicesDep,
    request_id: RequestIdDep,
    now: NowDep,
    start: Annotated[int, Query(alias="from", ge=0, le=shapes.MAX_TREE_SIZE, description="first leaf index")] = 0,
    end: Annotated[int | None, Query(alias="to", ge=0, le=shapes.MAX_TREE_SIZE, description="end of the range, exclusive (default: the tree size)")] = None,
) -> Response:
    with services.unit() as conn:

        def checked() -> int:
            stop = store.tree_size(conn) if end is None else end
            queries.export(conn, start, stop)  # checks the range; the lines are read below, after the event committed
            return stop

        result, access = _decided(services, conn, caller, "audit:export", Target("export", RESOURCE), request_id, now, checked)
    stop = _answer(result, access)
    return StreamingResponse(_export_chunks(services, start, stop), media_type=NDJSON, headers={"Cache-Control": "no-store"})


def _export_chunks(services: Services, start: int, stop: int) -> Iterator[bytes]:
    for position in range(start, stop, queries.EXPORT_CHUNK):
        with services.runtime.data_engine.connect() as conn:
            lines = list(queries.export(conn, position, min(position + queries.EXPORT_CHUNK, stop)))
        yield "".join(line + "\n" for line in lines).encode("utf-8")


@router.get(
    "/v1/audit/scope",
    summary="Breach scoping: the members whose data an actor or client touched in a window",
    response_model=None,
    responses={200: {"model": shapes.ScopeResult}, **_ERRORS},
)
@offloaded
def breach_scope(
    caller: CallerDep,
    services: ServicesDep,
    request_id: RequestIdDep,
    now: NowDep,
    since: shapes.WindowStart,
    until: shapes.WindowEnd,
    actor: shapes.ActorQuery = None,
    client_id: shapes.ClientIdQuery = None,
) -> Response:
    start, end = shapes.required_window(since, until)
    with services.unit() as conn:

        def touched() -> dict[str, list[str]]:
            direct = queries.scope(conn, actor=actor, client_id=client_id, since=start, until=end)
            # An extract touched every member it held: its event names no member, its membership table does.
            released = queries.allowed_entries(conn, action=EXTRACT_ACTION, actor=actor, client_id=client_id, since=start, until=end)
            extract_ids, held = held_by_events(conn, released)
            return {"member_ids": sorted(set(direct) | set(held)), "extract_ids": extract_ids}

        result, access = _decided(services, conn, caller, "audit:scope", Target("scope", RESOURCE), request_id, now, touched)
    return json_response(_answer(result, access))


@router.get(
    "/v1/members/{member_id}/access-log",
    summary="Who accessed this member's data, each event with its inclusion proof against the latest checkpoint",
    response_model=None,
    responses={200: {"model": shapes.AccessLog}, **_ERRORS},
)
@offloaded
def access_log(
    member_id: Annotated[str, Path(pattern=shapes.HEX32, description="opaque member id")],
    caller: CallerDep,
    services: ServicesDep,
    request_id: RequestIdDep,
    now: NowDep,
    cursor: shapes.CursorQuery = None,
    limit: shapes.LimitQuery = 100,
) -> Response:
    checkpointer = _first_checkpoint(services, now)
    with services.unit() as conn:

        def proven() -> dict[str, object]:
            published = _latest(checkpointer, conn, now)
            items, next_cursor = queries.access_log(conn, member_id, published.tree_size, cursor=cursor, limit=limit)
            listed = [_proven(i) for i in items]
            answer: dict[str, object] = {"checkpoint": _checkpoint_view(published), "items": listed, "next_cursor": next_cursor}
            if cursor is None:  # the first page also lists the extracts that held the member
                held = holdings(conn, member_id)
                proven = queries.proven_entries(conn, [h.journal_id for h in held if h.journal_id is not None], published.tree_size)
                answer["extracts"] = [_holding(h, proven.get(h.journal_id) if h.journal_id is not None else None) for h in held]
            return answer

        domain = relation(conn, caller, member_id, break_glass=False)
        target = Target("read", "access_log", member_id, member_id)
        result, access = _decided(services, conn, caller, "audit:access_log", target, request_id, now, proven, domain=domain)
    return json_response(_answer(result, access))


def _proven(item: queries.ProvenEvent) -> dict[str, object]:
    return {"index": item.index, "event": item.event.to_json_obj(), "leaf_hash": item.leaf_hash.hex(), "audit_path": [h.hex() for h in item.audit_path]}


def _holding(held: Holding, proven: queries.ProvenEvent | None) -> dict[str, object]:
    return {
        "extract_id": held.extract_id,
        "consumer_id": held.consumer_id,
        "purpose": held.purpose,
        "epoch": held.epoch,
        "released_at": held.released_at,
        "proof": None if proven is None else _proven(proven),
    }


def _first_checkpoint(services: Services, now: datetime) -> Checkpointer:
    """The vault's checkpointer, after making the first checkpoint if there is none yet (the pump makes the later ones)."""
    engine = services.runtime.data_engine
    checkpointer = make_checkpointer(services.settings, engine, services.runtime.signing)
    with engine.connect() as conn:
        made = conn.execute(select(audit_checkpoints.c.checkpoint_id).limit(1)).first() is not None
    if not made:
        services.sequencer.run_until_idle(now=now)
        checkpointer.make(now=now)
    return checkpointer


def _latest(checkpointer: Checkpointer, conn: Connection, now: datetime) -> PublishedCheckpoint:
    published = checkpointer.latest(conn, now)
    if published is None:
        raise AuditStoreError("no checkpoint has been made")
    return published


def _checkpoint_view(published: PublishedCheckpoint) -> dict[str, object]:
    return {
        "tree_size": published.tree_size,
        "root_hash": published.root_hash.hex(),
        "checkpoint": published.note,
        "verifier_keys": list(published.verifier_keys),
    }


SCHEMAS = (
    shapes.EventPage,
    shapes.CheckpointView,
    shapes.InclusionProofView,
    shapes.ConsistencyProofView,
    shapes.ExportLine,
    shapes.ScopeResult,
    shapes.AccessLog,
)

__all__ = ["SCHEMAS", "router"]
