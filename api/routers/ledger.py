"""The card ledger: append an entry, list a member's entries by ``seq`` (decision object ``member:financial``).

A spend, refund or redemption beyond the balance is a 409 and writes
nothing. A created entry is answered with ids only (``entry_id``, ``seq``):
that is also all an ``Idempotency-Key`` keeps.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from sqlalchemy import Connection

from api import problems as p
from api.decisions import MemberDecision, member_access
from api.deps import CallerDep, IdempotencyKeyDep, JsonBodyDep, NowDep, PurposeDep, ReadDep, RequestIdDep, ServicesDep
from api.idempotency import StoredResponse, replay_if_retry
from api.offload import offloaded
from api.paging import DEFAULT_LIMIT, CursorQuery, LimitQuery, capped, decode_cursor, encode_cursor
from api.responses import json_response, refuse
from api.routers.members import MemberIdPath
from api.schemas.ledger import SEQ_PATTERN, LedgerEntryCreate, LedgerEntryCreated, LedgerEntryResource, LedgerPage
from vault import data_map as dm
from vault import ledger_gate
from vault.access import PendingRead, Refusal
from vault.ledger import LedgerEntry
from vault.ledger_gate import RESOURCE

router = APIRouter(tags=["ledger"])
FINANCIAL = (dm.Category.financial,)


@router.post(
    "/v1/members/{member_id}/ledger",
    status_code=201,
    summary="Append a card ledger entry (a spend beyond the balance is 409)",
    response_model=None,
    responses={201: {"model": LedgerEntryCreated}, **p.WRITE_ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LedgerEntryCreate"}}}}},
)
@offloaded
def append_entry(
    member_id: MemberIdPath,
    caller: CallerDep,
    purpose: PurposeDep,
    raw: JsonBodyDep,
    services: ServicesDep,
    request_id: RequestIdDep,
    now: NowDep,
    idempotency_key: IdempotencyKeyDep = None,
) -> Response:
    digest = services.idempotency.digest("POST", f"/v1/members/{member_id}/ledger", raw.raw)
    with services.unit() as conn:
        decision = member_access(services, conn, caller, purpose, member_id, action="write", categories=FINANCIAL, request_id=request_id, now=now)
        prior = replay_if_retry(
            conn,
            services.idempotency,
            services.gatekeeper,
            caller_key=caller.key,
            key=idempotency_key,
            digest=digest,
            access=decision.access,
            allowed=dm.Category.financial in decision.access.writable,
            resource=RESOURCE,
            id_field="entry_id",
            member_id=member_id,
        )
        if isinstance(prior, StoredResponse):
            return json_response(prior.body, status_code=prior.status_code)
        entry = prior if prior is not None else services.ledger.append(conn, decision.access, member_id, raw.value if isinstance(raw.value, dict) else {})
        if not isinstance(entry, Refusal) and idempotency_key is not None:
            services.idempotency.remember(conn, caller.key, idempotency_key, digest, response=StoredResponse(201, _created(entry)), now=now)
    if isinstance(entry, Refusal):
        refuse(entry, decision.access)
    return json_response(_created(entry), status_code=201)


@router.get(
    "/v1/members/{member_id}/ledger",
    summary="A member's ledger entries in order, paged",
    response_model=None,
    responses={200: {"model": LedgerPage}, **p.READ_ERRORS},
)
async def list_entries(member_id: MemberIdPath, r: ReadDep, cursor: CursorQuery = None, limit: LimitQuery = DEFAULT_LIMIT) -> Response:
    after = decode_cursor(cursor, SEQ_PATTERN)

    def read(conn: Connection) -> tuple[MemberDecision, PendingRead[ledger_gate.LedgerPage]]:
        decision = member_access(r.services, conn, r.caller, r.purpose, member_id, action="read", categories=FINANCIAL, request_id=r.request_id, now=r.now)
        return decision, r.services.ledger.page(conn, decision.access, member_id, after_seq=int(after or 0), limit=capped(limit))

    decision, page = await r.services.audited_read(read)
    if isinstance(page, Refusal):
        refuse(page, decision.access)
    items: list[object] = [{"entry_id": e.entry_id, "seq": e.seq, **e.values} for e in page.items]
    return json_response({"items": items, "next_cursor": encode_cursor(str(page.items[-1].seq)) if page.more else None})


def _created(entry: LedgerEntry) -> dict[str, object]:
    return {"entry_id": entry.entry_id, "seq": entry.seq}


SCHEMAS = (LedgerEntryCreate, LedgerEntryCreated, LedgerEntryResource, LedgerPage)

__all__ = ["SCHEMAS", "router"]
