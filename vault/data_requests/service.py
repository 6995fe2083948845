"""Data-subject requests: filing, the workflow's transitions, the queue; restriction is derived from them.

Invariants:

* One open request (received, verified or in progress) per member and type:
  a second is a ``ConflictError`` naming the open one — checked first, and
  guarded by a partial unique index against a race.
* Only the transitions of ``workflow.TRANSITIONS`` happen, each recorded as an
  append-only step (who, when, reason code, an optional note) in the same
  transaction as the status change, which is conditional on the status read,
  so two dpos racing on one request cannot both move it.
* ``details`` (a rectification's changes, an objection's purposes), the front
  desk's evidence reference and step notes are free text or personal values:
  they are stored encrypted under the member's data key, never in an audit
  event, and erasure shreds them with the rest.
* A member is restricted while a restriction request of theirs is
  ``completed`` (not yet ``lifted``): derived from the requests, never stored
  apart from them.
* Time is a parameter (``now``): tests move the clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, RowMapping, and_, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from keys.errors import DecryptionError, KeyNotFoundError
from keys.field_cipher import FieldCipher, FieldContext, read_header
from keys.member_keys import DATA_SCOPE, MemberKeySet
from vault.data_requests.certificate import ErasureFacts
from vault.data_requests.model import OPEN, DataRequest, FiledBy, ReasonCode, RequestType, Status, Step
from vault.data_requests.workflow import DEFAULT_JURISDICTION, check_transition, due_at
from vault.errors import ConflictError, MemberErasedError, NotFoundError, RecordIntegrityError, ValidationError
from vault.ids import new_id
from vault.members.gate import MemberBody
from vault.members.repository import MemberRepository
from vault.purposes import Purpose, consent_purposes
from vault.storage.readers import DriverRow
from vault.storage.schema import data_request_steps, data_requests, erasures, treatments

REQUESTS_TABLE = "data_requests"
STEPS_TABLE = "data_request_steps"
MAX_NOTE_LENGTH = 2000
EVIDENCE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
JURISDICTION_PATTERN = re.compile(r"[a-z][a-z0-9_]{1,15}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Filer:
    subject: str
    role: FiledBy


@dataclass(frozen=True, slots=True)
class Filing:
    """A request as asked for, before the service's checks."""

    type: RequestType
    details: Mapping[str, object] | None = None
    evidence: str | None = None
    jurisdiction: str = DEFAULT_JURISDICTION


class DataRequestService:
    def __init__(self, members: MemberRepository, *, periods: Mapping[str, str]) -> None:
        self._members = members
        self.periods = dict(periods)

    # -- filing --------------------------------------------------------------

    def file(self, conn: Connection, member_id: str, filing: Filing, filer: Filer, *, dsr_id: str, now: datetime) -> DataRequest:
        key_version = self._members.live_key_version(conn, member_id)
        problems = self._filing_problems(filing, filer)
        if problems:
            raise ValidationError(problems)
        open_one = self._open_of(conn, member_id, filing.type)
        if open_one is not None:
            raise ConflictError(f"an open {filing.type.value} request exists: {open_one}")
        cipher = self._members.data_cipher(member_id, key_version)
        due = due_at(now, filing.jurisdiction, self.periods)
        row = {
            "dsr_id": dsr_id,
            "member_id": member_id,
            "type": filing.type.value,
            "status": Status.received.value,
            "jurisdiction": filing.jurisdiction,
            "filed_by": filer.subject,
            "filed_role": filer.role.value,
            "details": _seal(cipher, REQUESTS_TABLE, dsr_id, "details", None if filing.details is None else json.dumps(filing.details, sort_keys=True)),
            "evidence": _seal(cipher, REQUESTS_TABLE, dsr_id, "evidence", filing.evidence),
            "received_at": now,
            "due_at": due,
            "updated_at": now,
            "closed_at": None,
        }
        try:
            with conn.begin_nested():
                conn.execute(insert(data_requests).values(**row))
        except IntegrityError as exc:  # a concurrent filing of the same type won the partial unique index
            raise ConflictError(f"an open {filing.type.value} request exists") from exc
        self._step(conn, cipher, dsr_id, Step(1, None, Status.received, filer.subject, filer.role.value, ReasonCode.filed, now))
        return self.get(conn, dsr_id)

    def _filing_problems(self, filing: Filing, filer: Filer) -> dict[str, str]:
        problems: dict[str, str] = {}
        if filer.role is FiledBy.front_desk and filing.evidence is None:
            problems["evidence"] = "required"
        if filing.evidence is not None and not EVIDENCE_PATTERN.fullmatch(filing.evidence):
            problems["evidence"] = "invalid"
        if not JURISDICTION_PATTERN.fullmatch(filing.jurisdiction) or (filing.jurisdiction not in self.periods and filing.jurisdiction != DEFAULT_JURISDICTION):
            problems["jurisdiction"] = "unknown"
        problems.update(_details_problems(filing.type, filing.details))
        return problems

    def _open_of(self, conn: Connection, member_id: str, kind: RequestType) -> str | None:
        t = data_requests
        stmt = select(t.c.dsr_id).where(t.c.member_id == member_id, t.c.type == kind.value, t.c.status.in_([s.value for s in OPEN]))
        return conn.execute(stmt).scalar()

    # -- the workflow ----------------------------------------------------------

    def transition(
        self, conn: Connection, dsr_id: str, to: Status, *, actor: str, actor_role: str, reason: ReasonCode | None, note: str | None, now: datetime
    ) -> DataRequest:
        """Move a request one step; ``ConflictError`` for a step the workflow does not have (nothing changes)."""
        found = self.get(conn, dsr_id, decrypt=False)
        if note is not None and (not note.strip() or len(note) > MAX_NOTE_LENGTH or _CONTROL.search(note)):
            raise ValidationError({"note": "invalid"})
        recorded = check_transition(found.type, found.status, to, reason)
        # The key before the first write: an erased member's request is refused with nothing written.
        cipher = self._members.data_cipher(found.member_id, self._members.live_key_version(conn, found.member_id))
        t = data_requests
        closed = now if to in {Status.completed, Status.rejected, Status.lifted} else None
        values: dict[str, object] = {"status": to.value, "updated_at": now}
        if closed is not None:
            values["closed_at"] = closed
        moved = conn.execute(update(t).where(t.c.dsr_id == dsr_id, t.c.status == found.status.value).values(**values)).rowcount
        if moved != 1:
            raise ConflictError(f"request {dsr_id} was moved by someone else; read it again")
        self._step(conn, cipher, dsr_id, Step(len(found.steps) + 1, found.status, to, actor, actor_role, recorded, now, note))
        return self.get(conn, dsr_id)

    def _step(self, conn: Connection, cipher: FieldCipher, dsr_id: str, step: Step) -> None:
        step_id = new_id()
        conn.execute(
            insert(data_request_steps).values(
                step_id=step_id,
                dsr_id=dsr_id,
                seq=step.seq,
                from_status=None if step.from_status is None else step.from_status.value,
                to_status=step.to_status.value,
                actor=step.actor,
                actor_role=step.actor_role,
                reason_code=step.reason_code.value,
                note=_seal(cipher, STEPS_TABLE, step_id, "note", step.note),
                at=step.at,
            )
        )

    # -- reading -------------------------------------------------------------

    def owner(self, conn: Connection, dsr_id: str) -> str | None:
        """The member a request belongs to (an id only), or None when there is no such request."""
        return conn.execute(select(data_requests.c.member_id).where(data_requests.c.dsr_id == dsr_id)).scalar()

    def get(self, conn: Connection, dsr_id: str, *, decrypt: bool = True) -> DataRequest:
        """One request with its steps; ``decrypt`` False leaves details, evidence and notes out (no key needed)."""
        row = conn.execute(select(data_requests).where(data_requests.c.dsr_id == dsr_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"no request {dsr_id}")
        member_id = str(row["member_id"])
        keyset = self._members.data_keys(member_id) if decrypt else None
        step_rows = conn.execute(select(data_request_steps).where(data_request_steps.c.dsr_id == dsr_id).order_by(data_request_steps.c.seq)).mappings()
        steps = []
        for s in step_rows:
            note = _open(keyset, STEPS_TABLE, str(s["step_id"]), "note", s["note"]) if keyset is not None else None
            steps.append(
                Step(
                    seq=int(s["seq"]),
                    from_status=None if s["from_status"] is None else Status(s["from_status"]),
                    to_status=Status(s["to_status"]),
                    actor=str(s["actor"]),
                    actor_role=str(s["actor_role"]),
                    reason_code=ReasonCode(s["reason_code"]),
                    at=s["at"],
                    note=note,
                )
            )
        details = _open(keyset, REQUESTS_TABLE, dsr_id, "details", row["details"]) if keyset is not None else None
        evidence = _open(keyset, REQUESTS_TABLE, dsr_id, "evidence", row["evidence"]) if keyset is not None else None
        return _request(row, details=None if details is None else json.loads(details), evidence=evidence, steps=tuple(steps))

    def queue(self, conn: Connection, *, status: Status | None, overdue: bool | None, now: datetime, after: str | None, limit: int) -> list[DataRequest]:
        """Requests by id order (details, evidence and steps left out): optionally one status, or only (not) overdue ones."""
        t = data_requests
        stmt = select(t).order_by(t.c.dsr_id).limit(limit)
        if after is not None:
            stmt = stmt.where(t.c.dsr_id > after)
        if status is not None:
            stmt = stmt.where(t.c.status == status.value)
        is_overdue = and_(t.c.status.in_([s.value for s in OPEN]), t.c.due_at < now)
        if overdue is True:
            stmt = stmt.where(is_overdue)
        elif overdue is False:
            stmt = stmt.where(~is_overdue)
        return [_request(m, details=None, evidence=None, steps=()) for m in conn.execute(stmt).mappings()]

    def record_settlement(self, conn: Connection, dsr_id: str, entry_id: str) -> None:
        """Note the refund entry that settled the card balance of an erasure (an id, never an amount)."""
        conn.execute(update(data_requests).where(data_requests.c.dsr_id == dsr_id).values(settlement_entry_id=entry_id))

    def unfinished_erasures(self, conn: Connection) -> list[str]:
        """Members whose erasure request is completed but whose crypto-shredding has not finished (a crash in between)."""
        t = data_requests
        done = select(erasures.c.member_id).where(erasures.c.step == "done")
        stmt = select(t.c.member_id).where(t.c.type == RequestType.erasure.value, t.c.status == Status.completed.value, t.c.member_id.not_in(done))
        return list(dict.fromkeys(conn.scalars(stmt)))

    def erasure_facts(self, conn: Connection, dsr_id: str) -> ErasureFacts:
        """What an erasure certificate states; ``ConflictError`` unless the request is a completed erasure that finished."""
        t = data_requests
        row = conn.execute(select(t.c.member_id, t.c.type, t.c.status, t.c.settlement_entry_id).where(t.c.dsr_id == dsr_id)).first()
        if row is None:
            raise NotFoundError(f"no request {dsr_id}")
        if row.type != RequestType.erasure.value or row.status != Status.completed.value:
            raise ConflictError("only a completed erasure request has a certificate")
        finished = conn.execute(select(erasures.c.completed_at).where(erasures.c.member_id == row.member_id, erasures.c.step == "done")).scalar()
        if finished is None:
            raise ConflictError("the erasure is still running; ask again shortly")
        years = conn.scalars(select(treatments.c.retention_year).where(treatments.c.member_id == row.member_id).distinct())
        return ErasureFacts(dsr_id, str(row.member_id), finished, tuple(sorted(int(y) for y in years)), row.settlement_entry_id)

    def is_restricted(self, conn: Connection, member_id: str) -> bool:
        """Asked on every member decision: one prepared statement, one indexed lookup."""
        return _RESTRICTED.first(conn, {"member_id": member_id}) is not None

    def require_live(self, conn: Connection, member_id: str) -> None:
        """``NotFoundError`` or ``MemberErasedError`` unless the member is live (checked before any field is judged)."""
        self._members.live_key_version(conn, member_id)


# A completed (not yet lifted) restriction of the member; built once, since every member decision asks.
_RESTRICTED = DriverRow(
    select(data_requests.c.dsr_id)
    .where(
        data_requests.c.member_id == bindparam("member_id"),
        data_requests.c.type == RequestType.restriction.value,
        data_requests.c.status == Status.completed.value,
    )
    .limit(1)
)


def _details_problems(kind: RequestType, details: Mapping[str, object] | None) -> dict[str, str]:
    if kind is RequestType.rectification:
        changes = None if details is None else details.get("changes")
        if details is None or set(details) != {"changes"} or not isinstance(changes, dict) or not changes:
            return {"details": "changes_required"}
        body = MemberBody.parse(changes)
        return {f"details.changes.{name}": reason for name, reason in body.problems.items()} or ({} if body.values else {"details": "changes_required"})
    if kind is RequestType.objection:
        purposes = None if details is None else details.get("purposes")
        known = {p.value for p in consent_purposes()}
        if details is None or set(details) != {"purposes"} or not isinstance(purposes, list) or not purposes:
            return {"details": "purposes_required"}
        if any(not isinstance(p, str) or p not in known for p in purposes) or len(set(purposes)) != len(purposes):
            return {"details.purposes": "not_consent_purposes"}
        return {}
    return {} if details is None else {"details": "not_for_this_type"}


def objection_purposes(request: DataRequest) -> list[Purpose]:
    purposes = (request.details or {}).get("purposes")
    return [Purpose(p) for p in purposes] if isinstance(purposes, list) else []


def rectification_changes(request: DataRequest) -> dict[str, object]:
    changes = (request.details or {}).get("changes")
    return changes if isinstance(changes, dict) else {}


def _seal(cipher: FieldCipher, table: str, record_id: str, field: str, value: str | None) -> bytes | None:
    return None if value is None else cipher.encrypt(value.encode(), FieldContext(table, record_id, field))


def _open(keyset: MemberKeySet, table: str, record_id: str, field: str, sealed: bytes | None) -> str | None:
    if sealed is None:
        return None
    raw = bytes(sealed)
    if not any(scope == DATA_SCOPE for scope, _ in keyset.ciphers):
        raise MemberErasedError(f"member {keyset.owner_id} has no live data key")  # erased: the key is gone, not a tampered record
    try:
        _, version = read_header(raw)
        return keyset.get(DATA_SCOPE, version).decrypt(raw, FieldContext(table, record_id, field)).decode()
    except (DecryptionError, KeyNotFoundError, UnicodeDecodeError) as exc:
        raise RecordIntegrityError(table, record_id, field) from exc


def _request(m: RowMapping, *, details: dict[str, object] | None, evidence: str | None, steps: Sequence[Step]) -> DataRequest:
    return DataRequest(
        dsr_id=str(m["dsr_id"]),
        member_id=str(m["member_id"]),
        type=RequestType(m["type"]),
        status=Status(m["status"]),
        jurisdiction=str(m["jurisdiction"]),
        filed_by=str(m["filed_by"]),
        filed_role=FiledBy(m["filed_role"]),
        received_at=m["received_at"],
        due_at=m["due_at"],
        closed_at=m["closed_at"],
        details=details,
        evidence=evidence,
        steps=tuple(steps),
    )


__all__ = ["DataRequestService", "Filer", "Filing", "objection_purposes", "rectification_changes"]
