"""The consent service: record grants and withdrawals, derive the current state, answer live-consent checks.

Invariants:

* The history is append-only (database triggers) and is the only truth; the
  state is derived from it on every call (``vault.consent.state``). Nothing
  is cached in a process, so a withdrawal committed by any process counts
  for the very next request in every process.
* A grant names the notice version current when it is recorded; a grant on
  another existing version is a ``ConflictError`` naming the current one, an
  unknown version a ``ValidationError``. A withdrawal needs no version.
* Only purposes whose legal basis is consent take consent events.
* The member records in the app (channel ``app``); the front desk records
  on the member's behalf on ``front_desk`` or ``paper``, and the dpo
  carrying out an objection on ``request``, each with an evidence reference,
  which is stored encrypted under the member's data key.
* A member under 14 grants through a guardian (PIPL Art. 31): the event
  records ``given_by = guardian``; a guardian cannot act for a member of 14
  or over, nor for one whose date of birth is unknown.
* Checks run in the API's order: the member exists (404) before any field
  is judged (422), and a version conflict (409) after that.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, func, insert, select

from keys.errors import DecryptionError
from keys.field_cipher import FieldContext, read_header
from vault.consent.model import (
    ConsentChannel,
    ConsentDecision,
    ConsentEvent,
    ConsentRequest,
    ConsentState,
    GivenBy,
    Notice,
    PurposeState,
    Recorder,
    RecorderRole,
)
from vault.consent.notices import NoticeBook
from vault.consent.state import derive, stale_from
from vault.errors import ConflictError, NotFoundError, RecordIntegrityError, ValidationError
from vault.extracts.feed import DeletionFeed, LeftReason
from vault.members.repository import MemberRepository
from vault.purposes import Purpose, consent_purposes
from vault.storage.among import among
from vault.storage.schema import consent_events, members

TABLE = "consent_events"
# Each member's last event for a purpose (``live_among_on_driver``): the row of the highest seq of (member_id, purpose).
# SQLite takes a bare column of a ``max()`` aggregate from the row holding the maximum, so the whole answer comes
# from ``ix_consent_events_last_event`` alone: no seek of the table per member.
_LAST_EVENTS = (
    "SELECT member_id, decision, notice_version, max(seq) FROM consent_events "
    "WHERE member_id IN (SELECT value FROM json_each(?)) AND purpose = ? GROUP BY member_id"
)
# One statement object for every event: ``insert().values(**row)`` built a new statement, its bound parameters and
# its cache key on each call (about a third of recording an event, SQLAlchemy's work).
_INSERT_EVENT = insert(consent_events).returning(consent_events.c.seq)
GUARDIAN_AGE = 14
DEFAULT_GRACE = timedelta(days=30)
EVIDENCE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
_CHANNELS = {
    RecorderRole.member: frozenset({ConsentChannel.app}),
    RecorderRole.front_desk: frozenset({ConsentChannel.front_desk, ConsentChannel.paper}),
    RecorderRole.dpo: frozenset({ConsentChannel.request}),
}


def age_on(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


class ConsentService:
    def __init__(self, members: MemberRepository, notices: NoticeBook, *, grace: timedelta = DEFAULT_GRACE, feed: DeletionFeed | None = None) -> None:
        self._members = members
        self.notices = notices
        self.grace = grace
        self._feed = feed  # a withdrawal feeds the member's pseudonyms to the purpose's consumers

    # -- recording -----------------------------------------------------------

    def record(
        self, conn: Connection, member_id: str, request: ConsentRequest, recorder: Recorder, *, consent_id: str, request_id: str, now: datetime
    ) -> ConsentEvent:
        key_version = self._members.live_key_version(conn, member_id)
        problems = _request_problems(request, recorder)
        if problems:
            raise ValidationError(problems)
        self._check_guardian(conn, member_id, request, now)
        notice = self._notice_for(conn, request, now) if request.decision is ConsentDecision.granted else None
        evidence = None
        if request.evidence is not None:
            evidence = self._members.data_cipher(member_id, key_version).encrypt(request.evidence.encode(), FieldContext(TABLE, consent_id, "evidence"))
        values = {
            "consent_id": consent_id,
            "member_id": member_id,
            "purpose": request.purpose.value,
            "decision": request.decision.value,
            "notice_version": notice.version if notice else None,
            "notice_hash": notice.notice_hash if notice else None,
            "channel": request.channel.value,
            "given_by": request.given_by.value,
            "evidence": evidence,
            "recorded_by": recorder.subject,
            "recorded_role": recorder.role.value,
            "request_id": request_id,
            "recorded_at": now,
        }
        seq = conn.execute(_INSERT_EVENT, values).scalar_one()
        if request.decision is ConsentDecision.withdrawn and self._feed is not None:
            self._feed.member_left(conn, member_id, LeftReason.withdrawn, purposes=(request.purpose,), now=now)
        return _event({**values, "seq": seq}, evidence=request.evidence)

    def _notice_for(self, conn: Connection, request: ConsentRequest, now: datetime) -> Notice:
        versions = self.notices.of(conn, request.purpose)
        named = next((n for n in versions if n.version == request.notice_version), None)
        if named is None:
            raise ValidationError({"notice_version": "unknown"})
        if request.notice_hash is not None and request.notice_hash != named.notice_hash:
            raise ValidationError({"notice_hash": "mismatch"})
        current = self.notices.current_of(versions, now)
        if current is None or named.version != current.version:
            shown = "none is in effect" if current is None else f"the current version is {current.version} (hash {current.notice_hash})"
            raise ConflictError(f"version {named.version} of the {request.purpose.value} notice is not current; {shown}")
        return named

    def _check_guardian(self, conn: Connection, member_id: str, request: ConsentRequest, now: datetime) -> None:
        if request.decision is ConsentDecision.withdrawn and request.given_by is GivenBy.member:
            return  # a member's own withdrawal always counts, whatever their age: nothing to decrypt
        born = self._members.read_field(conn, member_id, "date_of_birth")  # the one value the rule needs: no other field is opened
        age = age_on(born, now.date()) if isinstance(born, date) else None
        if request.given_by is GivenBy.guardian and (age is None or age >= GUARDIAN_AGE):
            raise ValidationError({"given_by": "guardian_not_applicable"})
        if request.decision is ConsentDecision.granted and request.given_by is GivenBy.member and age is not None and age < GUARDIAN_AGE:
            raise ValidationError({"given_by": "guardian_required"})

    # -- reading -------------------------------------------------------------

    def history(self, conn: Connection, member_id: str) -> list[ConsentEvent]:
        """Every event of a live member, oldest first, evidence decrypted."""
        self._members.live_key_version(conn, member_id)
        rows = conn.execute(select(consent_events).where(consent_events.c.member_id == member_id).order_by(consent_events.c.seq)).mappings().all()
        return [self._decrypted(m) for m in rows]

    def event(self, conn: Connection, member_id: str, consent_id: str) -> ConsentEvent:
        """One event of a live member (``NotFoundError`` for an id that is not this member's)."""
        self._members.live_key_version(conn, member_id)
        t = consent_events
        row = conn.execute(select(t).where(t.c.consent_id == consent_id, t.c.member_id == member_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"no consent event {consent_id}")
        return self._decrypted(row)

    def current(self, conn: Connection, member_id: str, now: datetime, history: Sequence[ConsentEvent] | None = None) -> dict[Purpose, PurposeState]:
        """The state of every consent purpose at ``now`` (from ``history`` when the caller has it)."""
        events = self.history(conn, member_id) if history is None else history
        last: dict[Purpose, ConsentEvent] = {}
        for e in events:
            last[e.purpose] = e
        notices = self.notices.every(conn)
        return {p: derive(p, last.get(p), notices[p], now=now, grace=self.grace) for p in consent_purposes()}

    def state(self, conn: Connection, member_id: str, purpose: Purpose, now: datetime) -> PurposeState:
        """One purpose's state, from the member's last event for it (no decryption); ``none`` for an erased or unknown member."""
        erased = conn.execute(select(members.c.erased_at).where(members.c.member_id == member_id)).first()
        if erased is None or erased.erased_at is not None:
            return PurposeState(purpose, ConsentState.none)
        t = consent_events
        stmt = select(t).where(t.c.member_id == member_id, t.c.purpose == purpose.value).order_by(t.c.seq.desc()).limit(1)
        row = conn.execute(stmt).mappings().first()
        last = None if row is None else _event(row, evidence=None)
        return derive(purpose, last, self.notices.of(conn, purpose), now=now, grace=self.grace)

    def live_among(self, conn: Connection, member_ids: Sequence[str], purpose: Purpose, now: datetime) -> set[str]:
        """Those of ``member_ids`` whose consent for ``purpose`` is live at ``now`` (bulk readers: one query for the batch)."""
        if not member_ids:
            return set()
        t = consent_events
        last = (
            select(t.c.member_id, func.max(t.c.seq).label("seq"))
            .where(t.c.purpose == purpose.value, among(conn.dialect, t.c.member_id, member_ids))
            .group_by(t.c.member_id)
            .subquery()
        )
        rows = conn.execute(
            select(t.c.member_id, t.c.decision, t.c.notice_version, last.c.seq)  # the columns of ``_LAST_EVENTS``
            .join(last, and_(t.c.member_id == last.c.member_id, t.c.seq == last.c.seq))
            .where(t.c.purpose == purpose.value)
        )
        return self._live(rows, self.notices.of(conn, purpose), now)

    def live_among_on_driver(
        self, conn: Connection, member_ids: Sequence[str], purpose: Purpose, now: datetime, *, notices: Sequence[Notice] | None = None
    ) -> set[str]:
        """``live_among``'s answer for bulk readers, its statement and rows straight on the SQLite driver (other dialects: ``live_among``).

        The same rule: a member's last event for ``purpose`` (highest ``seq``)
        is a grant under a notice version whose first later material change,
        plus the grace period, is not yet reached at ``now``. One short range
        of ``ix_consent_events_last_event`` a member (its events for the
        purpose), which also holds the decision and the notice version (no
        read of the table), in the caller's
        transaction, without SQLAlchemy's row processing. ``notices``:
        the purpose's notices (``NoticeBook.of``) as the caller read them in
        the same transaction, so that a reader of many batches reads them once.
        """
        raw = conn.connection.driver_connection if conn.dialect.name == "sqlite" else None
        if not member_ids or not isinstance(raw, sqlite3.Connection):
            return self.live_among(conn, member_ids, purpose, now)
        rows = raw.execute(_LAST_EVENTS, (json.dumps(list(member_ids)), purpose.value)).fetchall()
        return self._live(rows, self.notices.of(conn, purpose) if notices is None else notices, now)

    def _live(self, last_events: Iterable[Sequence[Any]], notices: Sequence[Notice], now: datetime) -> set[str]:
        """The rule of ``live_among``: of each member's last event (member id, decision, notice version, seq), the live grants at ``now``."""
        granted = ConsentDecision.granted.value
        live: set[str] = set()
        stale: dict[int, datetime | None] = {}  # per granted notice version: when its grants stop counting (``stale_from``), worked out once
        for member_id, decision, version, _seq in last_events:
            if decision != granted or version is None:
                continue
            granted_version = int(version)
            if granted_version in stale:
                stale_at = stale[granted_version]
            else:
                stale_at = stale[granted_version] = stale_from(granted_version, notices, self.grace)
            if stale_at is None or stale_at > now:
                live.add(str(member_id))
        return live

    def has_live_consent(self, conn: Connection, member_id: str, purpose: Purpose, now: datetime) -> bool:
        return self.state(conn, member_id, purpose, now).live

    def require_live(self, conn: Connection, member_id: str) -> None:
        """``NotFoundError`` or ``MemberErasedError`` unless the member is live (checked before any field is judged)."""
        self._members.live_key_version(conn, member_id)

    def _decrypted(self, m: RowMapping) -> ConsentEvent:
        sealed = m["evidence"]
        if sealed is None:
            return _event(m, evidence=None)
        consent_id, member_id = str(m["consent_id"]), str(m["member_id"])
        try:
            _, key_version = read_header(bytes(sealed))
            plain = self._members.data_cipher(member_id, key_version).decrypt(bytes(sealed), FieldContext(TABLE, consent_id, "evidence"))
        except (DecryptionError, UnicodeDecodeError) as exc:
            raise RecordIntegrityError(TABLE, consent_id, "evidence") from exc
        return _event(m, evidence=plain.decode())


def _request_problems(request: ConsentRequest, recorder: Recorder) -> dict[str, str]:
    problems: dict[str, str] = {}
    if not request.purpose.needs_consent:
        problems["purpose"] = "not_consent_based"
    if request.channel not in _CHANNELS[recorder.role]:
        problems["channel"] = "not_for_recorder"
    if recorder.role is RecorderRole.dpo and request.decision is ConsentDecision.granted:
        problems["decision"] = "not_for_recorder"  # the dpo withdraws (carrying out an objection), never grants
    if request.evidence is None and request.channel is not ConsentChannel.app:
        problems["evidence"] = "required"
    if request.evidence is not None and not EVIDENCE_PATTERN.fullmatch(request.evidence):
        problems["evidence"] = "invalid"
    if request.decision is ConsentDecision.granted and request.notice_version is None:
        problems["notice_version"] = "required"
    return problems


def _event(m: RowMapping | dict[str, object], *, evidence: str | None) -> ConsentEvent:
    version = m["notice_version"]
    return ConsentEvent(
        seq=int(str(m["seq"])),
        consent_id=str(m["consent_id"]),
        member_id=str(m["member_id"]),
        purpose=Purpose(str(m["purpose"])),
        decision=ConsentDecision(str(m["decision"])),
        notice_version=None if version is None else int(str(version)),
        notice_hash=None if m["notice_hash"] is None else str(m["notice_hash"]),
        channel=ConsentChannel(str(m["channel"])),
        given_by=GivenBy(str(m["given_by"])),
        recorded_by=str(m["recorded_by"]),
        recorded_role=RecorderRole(str(m["recorded_role"])),
        recorded_at=m["recorded_at"],  # type: ignore[arg-type]  # a UtcDateTime column
        request_id=str(m["request_id"]),
        evidence=evidence,
    )


__all__ = ["DEFAULT_GRACE", "EVIDENCE_PATTERN", "GUARDIAN_AGE", "ConsentService", "age_on"]
