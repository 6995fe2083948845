"""Reads behind the audit routes: filtered events, a member's access log with proofs, breach scope, export.

``events`` and ``access_log`` list sequenced entries in leaf-index order and
page with an opaque cursor naming the last index returned (``limit`` is
capped at ``MAX_LIMIT``). Every filter is a bound parameter compared for
equality, so SQL metacharacters in it (``'``, ``%``, ``_``, ``--``) are data.
Times are aware datetimes, compared with the event's own ``time``: ``since``
inclusive, ``until`` exclusive.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Select, select
from sqlalchemy.sql.elements import ColumnElement

from audit.errors import CursorError, ProofRangeError
from audit.event import AuditEvent, Decision
from audit.merkle import leaf_hash
from audit.store import audit_journal, audit_leaves, check_size, inclusion_proofs
from audit.verify import export_line

MAX_LIMIT = 500
EXPORT_CHUNK = 1000
_CURSOR = re.compile(r"i(0|[1-9][0-9]{0,17})")  # at most 18 digits: always a BIGINT

_journal, _leaves = audit_journal.c, audit_leaves.c


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """A sequenced event and its leaf index."""

    index: int
    event: AuditEvent


@dataclass(frozen=True, slots=True)
class ProvenEvent:
    """A sequenced event with its inclusion proof against ``tree_size`` (``audit_path`` leaf side first)."""

    index: int
    event: AuditEvent
    leaf_hash: bytes
    tree_size: int
    audit_path: tuple[bytes, ...]


def encode_cursor(index: int) -> str:
    """The cursor of the page that follows the entry at ``index``."""
    return base64.urlsafe_b64encode(f"i{index}".encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The last index a cursor names; ``CursorError`` for anything this module did not issue."""
    if not cursor.isascii() or len(cursor) > 40:
        raise CursorError("cursor is malformed")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise CursorError("cursor is malformed") from None
    match = _CURSOR.fullmatch(raw)
    if match is None or encode_cursor(int(match.group(1))) != cursor:  # only the one spelling this module writes
        raise CursorError("cursor is malformed")
    return int(match.group(1))


def events(
    conn: Connection,
    *,
    member_id: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    decision: Decision | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> tuple[list[LoggedEvent], str | None]:
    """One page of sequenced events matching every given filter (``actor`` is the actor's subject)."""
    conditions: list[ColumnElement[bool]] = []
    if member_id is not None:
        conditions.append(_journal.member_id == member_id)
    if actor is not None:
        conditions.append(_journal.actor_subject == actor)
    if action is not None:
        conditions.append(_journal.action == action)
    if decision is not None:
        conditions.append(_journal.decision == Decision(decision).value)
    conditions.extend(_window(since, until))
    rows, next_cursor = _page(conn, _sequenced(*conditions), cursor, limit)
    return [LoggedEvent(index, _event(data)) for index, data in rows], next_cursor


def access_log(conn: Connection, member_id: str, size: int, *, cursor: str | None = None, limit: int = 100) -> tuple[list[ProvenEvent], str | None]:
    """One page of the member's events below ``size``, each with its inclusion proof against ``size``."""
    check_size(conn, size)
    rows, next_cursor = _page(conn, _sequenced(_journal.member_id == member_id, _leaves.leaf_index < size), cursor, limit)
    proofs = inclusion_proofs(conn, [index for index, _ in rows], size)
    items = [
        ProvenEvent(index=index, event=_event(data), leaf_hash=leaf_hash(data), tree_size=size, audit_path=tuple(proof))
        for (index, data), proof in zip(rows, proofs, strict=True)
    ]
    return items, next_cursor


def proven_entries(conn: Connection, journal_ids: Collection[int], size: int) -> dict[int, ProvenEvent]:
    """The given journal entries that are sequenced below ``size``, by journal id, each with its inclusion proof against ``size``."""
    check_size(conn, size)
    wanted = sorted(set(journal_ids))
    if not wanted:
        return {}
    stmt = select(_journal.journal_id, _leaves.leaf_index, _journal.leaf).select_from(
        audit_leaves.join(audit_journal, _journal.journal_id == _leaves.journal_id)
    )
    rows = [
        (int(j), int(i), bytes(d))
        for j, i, d in conn.execute(stmt.where(_journal.journal_id.in_(wanted), _leaves.leaf_index < size).order_by(_leaves.leaf_index))
    ]
    proofs = inclusion_proofs(conn, [index for _, index, _ in rows], size)
    return {
        journal_id: ProvenEvent(index=index, event=_event(data), leaf_hash=leaf_hash(data), tree_size=size, audit_path=tuple(proof))
        for (journal_id, index, data), proof in zip(rows, proofs, strict=True)
    }


def allowed_entries(conn: Connection, *, action: str, actor: str | None, client_id: str | None, since: datetime, until: datetime) -> list[int]:
    """The journal ids of the allowed entries of ``action`` in ``[since, until)`` by that actor and/or client (sequenced or not)."""
    stmt = select(_journal.journal_id).where(_journal.action == action, _journal.decision == Decision.ALLOW.value, *_window(since, until))
    if actor is not None:
        stmt = stmt.where(_journal.actor_subject == actor)
    if client_id is not None:
        stmt = stmt.where(_journal.actor_client_id == client_id)
    return [int(j) for j in conn.execute(stmt).scalars()]


def scope(
    conn: Connection,
    *,
    actor: str | None = None,
    client_id: str | None = None,
    since: datetime,
    until: datetime,
    include_denied: bool = False,
) -> list[str]:
    """Breach scoping: the sorted ids of the members whose data that actor and/or client touched in ``[since, until)``.

    With neither ``actor`` nor ``client_id``, every member touched in the
    window. Reads the whole journal, sequenced or not yet, so nothing
    committed is missed. Denied requests touched no data and count only with
    ``include_denied``.
    """
    stmt = select(_journal.member_id).distinct().where(_journal.member_id.is_not(None), *_window(since, until))
    if actor is not None:
        stmt = stmt.where(_journal.actor_subject == actor)
    if client_id is not None:
        stmt = stmt.where(_journal.actor_client_id == client_id)
    if not include_denied:
        stmt = stmt.where(_journal.decision == Decision.ALLOW.value)
    return sorted(str(member) for member in conn.execute(stmt).scalars())


def export(conn: Connection, start: int, end: int) -> Iterator[str]:
    """The export lines (``audit.verify.export_line``, no newline) of the leaves ``[start, end)``.

    The range is checked at once; the lines are read lazily, ``EXPORT_CHUNK``
    at a time, so keep ``conn`` open while iterating.
    """
    if not 0 <= start <= end:
        raise ProofRangeError("export range needs 0 ≤ from ≤ to")
    check_size(conn, end)
    return _export_lines(conn, start, end)


def _export_lines(conn: Connection, start: int, end: int) -> Iterator[str]:
    position = start
    while position < end:
        stmt = _sequenced(_leaves.leaf_index >= position, _leaves.leaf_index < end).order_by(_leaves.leaf_index).limit(EXPORT_CHUNK)
        rows = conn.execute(stmt).all()
        if not rows:
            return
        for index, data in rows:
            yield export_line(int(index), bytes(data))
        position = int(rows[-1][0]) + 1


def _sequenced(*conditions: ColumnElement[bool]) -> Select[int, bytes]:
    joined = audit_leaves.join(audit_journal, _journal.journal_id == _leaves.journal_id)
    return select(_leaves.leaf_index, _journal.leaf).select_from(joined).where(*conditions)


def _window(since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    window: list[ColumnElement[bool]] = []
    if since is not None:
        window.append(_journal.event_time >= since)
    if until is not None:
        window.append(_journal.event_time < until)
    return window


def _page(conn: Connection, stmt: Select[int, bytes], cursor: str | None, limit: int) -> tuple[list[tuple[int, bytes]], str | None]:
    """The first ``limit`` (1 to ``MAX_LIMIT``) rows after the cursor's index, and the cursor of the next page, if any."""
    size = max(1, min(limit, MAX_LIMIT))
    if cursor is not None:
        stmt = stmt.where(_leaves.leaf_index > decode_cursor(cursor))
    rows = [(int(index), bytes(data)) for index, data in conn.execute(stmt.order_by(_leaves.leaf_index).limit(size + 1))]
    if len(rows) > size:
        return rows[:size], encode_cursor(rows[size - 1][0])
    return rows, None


def _event(data: bytes) -> AuditEvent:
    return AuditEvent.from_json_obj(json.loads(data))


__all__ = [
    "EXPORT_CHUNK",
    "MAX_LIMIT",
    "CursorError",
    "LoggedEvent",
    "ProvenEvent",
    "access_log",
    "allowed_entries",
    "decode_cursor",
    "encode_cursor",
    "events",
    "export",
    "proven_entries",
    "scope",
]
