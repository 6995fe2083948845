"""The audit routes' shapes (API.md, Audit): events, checkpoints, proofs, export lines, breach scope, access logs.

Query values are checked here before any decision (a bad one is 400, like a
missing purpose): member ids are 32 hex digits, actions are event codes,
times are RFC 3339 with ``Z`` or an offset (``since`` inclusive, ``until``
exclusive, ``since`` ≤ ``until``), and leaf numbers fit a BIGINT. Hashes are
lower-case hex.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import Query
from pydantic import BaseModel, Field

from api.problems import BAD_REQUEST, ProblemError
from audit.event import Decision
from audit.queries import MAX_LIMIT

MAX_TREE_SIZE = 2**63 - 1
HEX32 = r"^[0-9a-f]{32}$"
_HEX_HASH = r"^[0-9a-f]{64}$"
_RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
_FRACTION = re.compile(r"\.([0-9]{1,9})")

MemberIdQuery = Annotated[str | None, Query(pattern=HEX32, description="events about this member (opaque id)")]
ActorQuery = Annotated[str | None, Query(min_length=1, max_length=256, description="the actor's subject, compared exactly")]
ClientIdQuery = Annotated[str | None, Query(min_length=1, max_length=256, description="the service client id, compared exactly")]
ActionQuery = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$", description="event action code")]
DecisionQuery = Annotated[Decision | None, Query(description="allow or deny")]
SinceQuery = Annotated[str | None, Query(pattern=_RFC3339, description="RFC 3339 time, inclusive")]
UntilQuery = Annotated[str | None, Query(pattern=_RFC3339, description="RFC 3339 time, exclusive")]
WindowStart = Annotated[str, Query(pattern=_RFC3339, description="RFC 3339 time, inclusive")]
WindowEnd = Annotated[str, Query(pattern=_RFC3339, description="RFC 3339 time, exclusive")]
CursorQuery = Annotated[str | None, Query(min_length=1, max_length=40, description="next_cursor of the previous page")]
LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"page size (at most {MAX_LIMIT})")]
LeafNumber = Annotated[int, Query(ge=0, le=MAX_TREE_SIZE)]
TreeSize = Annotated[int, Query(ge=1, le=MAX_TREE_SIZE)]


def time_window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """The aware datetimes of two optional RFC 3339 query values (already matched by their pattern); 400 if one names no instant."""
    if since is None or until is None:
        return (None if since is None else _instant(since, "since")), (None if until is None else _instant(until, "until"))
    return required_window(since, until)


def required_window(since: str, until: str) -> tuple[datetime, datetime]:
    """``time_window`` of two given values; 400 unless ``since`` ≤ ``until``."""
    start, end = _instant(since, "since"), _instant(until, "until")
    if start > end:
        raise ProblemError(BAD_REQUEST, "since must not be after until")
    return start, end


def _instant(text: str, name: str) -> datetime:
    try:
        # fromisoformat keeps microseconds: a longer fraction is cut to six digits first.
        return datetime.fromisoformat(_FRACTION.sub(lambda m: "." + m.group(1)[:6], text))
    except ValueError:
        raise ProblemError(BAD_REQUEST, f"{name} is not a valid RFC 3339 time") from None


class AuditActor(BaseModel):
    subject: str
    roles: list[str]
    client_id: str | None
    acting_staff: str | None


class AuditEventBody(BaseModel):
    """One audit event, exactly as its leaf bytes hold it (ids, codes and field names, never values)."""

    v: int
    time: str
    request_id: str
    actor: AuditActor
    action: str
    resource_type: str
    resource_id: str | None
    member_id: str | None
    fields: list[str]
    purpose: str | None
    decision: Decision
    reason_code: str
    policy_hash: str
    outcome: str


class EventItem(BaseModel):
    index: Annotated[int, Field(description="leaf index in the audit tree")]
    event: AuditEventBody


class EventPage(BaseModel):
    items: list[EventItem]
    next_cursor: str | None


class CheckpointView(BaseModel):
    tree_size: int
    root_hash: Annotated[str, Field(pattern=_HEX_HASH, description="RFC 6962 root, hex")]
    checkpoint: Annotated[str, Field(description="C2SP tlog-checkpoint signed note (Ed25519)")]
    verifier_keys: Annotated[list[str], Field(description="C2SP verifier key strings, current first (as `vaultctl audit keys` prints them)")]


class InclusionProofView(BaseModel):
    leaf_index: int
    tree_size: int
    leaf_hash: Annotated[str, Field(pattern=_HEX_HASH)]
    audit_path: Annotated[list[str], Field(description="RFC 6962 audit path, hex, leaf side first")]


class ConsistencyProofView(BaseModel):
    first: int
    second: int
    proof: Annotated[list[str], Field(description="RFC 6962 consistency proof, hex")]


class ExportLine(BaseModel):
    """One line of the NDJSON export."""

    index: int
    leaf: Annotated[str, Field(description="the leaf bytes (RFC 8785 canonical JSON of event) as a JSON string")]
    event: AuditEventBody


class ScopeResult(BaseModel):
    member_ids: Annotated[list[str], Field(description="members whose data the actor or client touched in the window (directly or in an extract), sorted")]
    extract_ids: Annotated[list[str], Field(description="the extracts the actor or client received in the window, sorted: their members are in member_ids")]


class ProvenItem(BaseModel):
    index: int
    event: AuditEventBody
    leaf_hash: Annotated[str, Field(pattern=_HEX_HASH)]
    audit_path: list[str]


class ExtractHolding(BaseModel):
    """A pseudonymized extract that held the member: the consumer received a row for them (under a pseudonym)."""

    extract_id: Annotated[str, Field(pattern=HEX32)]
    consumer_id: str
    purpose: str
    epoch: int
    released_at: datetime | None
    proof: Annotated[ProvenItem | None, Field(description="the extract's audit event with its inclusion proof; null until it is in a checkpoint")]


class AccessLog(BaseModel):
    """The member's access events, each with its inclusion proof against ``checkpoint``; the first page also lists the extracts that held them."""

    checkpoint: CheckpointView
    items: list[ProvenItem]
    next_cursor: str | None
    extracts: Annotated[list[ExtractHolding] | None, Field(description="first page only (no cursor): every extract that held the member, oldest first")] = None


__all__ = [
    "HEX32",
    "MAX_TREE_SIZE",
    "AccessLog",
    "ActionQuery",
    "ActorQuery",
    "AuditEventBody",
    "CheckpointView",
    "ClientIdQuery",
    "ConsistencyProofView",
    "CursorQuery",
    "DecisionQuery",
    "EventPage",
    "ExportLine",
    "InclusionProofView",
    "LeafNumber",
    "LimitQuery",
    "MemberIdQuery",
    "ScopeResult",
    "SinceQuery",
    "TreeSize",
    "UntilQuery",
    "WindowEnd",
    "WindowStart",
    "required_window",
    "time_window",
]
