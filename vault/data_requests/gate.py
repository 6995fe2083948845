"""The one way to data-subject requests: decision checked, one audit event per call, the workflow's effects.

* ``file`` records a request for a member (the member, or the front desk on
  the member's behalf); the event is ``file_request`` with the type in
  ``fields``.
* ``transition`` moves a request one step (the dpo); the event is
  ``transition_request`` with the new status in ``fields``. Completing a
  request carries it out in the same transaction, so the step, its effect
  and the event commit together or not at all:

  - ``rectification``: the requested changes go through the members'
    validated write path (``MemberRepository.update``: validation, field
    history, blind index) — the only way the dpo writes member data;
  - ``objection``: each named purpose is withdrawn (a consent event on
    channel ``request``, evidence ``dsr:<id>``, recorded by the dpo);
  - ``restriction``: the member is restricted while the request stays
    ``completed`` (``DataRequestService.is_restricted``), and their
    pseudonyms enter the deletion feed of every consumer that received them;
  - ``erasure``: the member's pseudonyms enter every consumer's deletion
    feed; a positive card balance is settled first — a ``refund``
    ledger entry, whose id the request keeps — never silently destroyed; the
    crypto-shredding itself (``vault.erasure.Eraser``) runs after this
    transaction commits, so the step and its audit event come first, and an
    erasure interrupted after it is resumed (``unfinished_erasures``);
  - ``access``, ``portability``: nothing to write — the archive
    (``vault.data_requests.export``) is assembled when it is downloaded.
* ``export`` checks that a request's archive may be downloaded now — a
  completed access or portability request, within ``export_window`` of its
  completion, its member not erased — and journals the ``export`` event
  before a byte of the archive is built (the edge then streams it).
* ``read`` and ``queue`` read through ``Gatekeeper.perform_read``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from vault import data_map as dm
from vault.access import Access, Gatekeeper, Refusal, Target
from vault.consent import ConsentChannel, ConsentDecision, ConsentRequest, ConsentService, Recorder, RecorderRole
from vault.data_requests.certificate import ErasureFacts
from vault.data_requests.export import ExportTicket
from vault.data_requests.model import DataRequest, ReasonCode, RequestType, Status
from vault.data_requests.service import DataRequestService, Filer, Filing, objection_purposes, rectification_changes
from vault.errors import ConflictError, ValidationError
from vault.extracts.feed import DeletionFeed, LeftReason
from vault.ids import new_id
from vault.ledger import Ledger
from vault.members.gate import MemberBody
from vault.members.repository import MemberRepository

RESOURCE = "data_request"
EXPORTABLE = frozenset({RequestType.access, RequestType.portability})
DEFAULT_EXPORT_WINDOW = timedelta(days=30)
# What an archive holds, named in its ``export`` event: every member category, treatments, ledger, consents, the access log.
EXPORTED = (*sorted(c.value for c in dm.Category), "consent", "access_log")


@dataclass(frozen=True, slots=True)
class Move:
    """A transition as the dpo asked for it."""

    to: Status
    reason: ReasonCode | None = None
    note: str | None = None


class DataRequestGate:
    def __init__(
        self,
        service: DataRequestService,
        members: MemberRepository,
        consent: ConsentService,
        ledger: Ledger,
        gatekeeper: Gatekeeper,
        *,
        export_window: timedelta = DEFAULT_EXPORT_WINDOW,
        feed: DeletionFeed | None = None,
    ) -> None:
        self.service = service
        self._export_window = export_window
        self._feed = feed  # an erasure or a restriction feeds the member's pseudonyms to every consumer that received them
        self._members = members
        self._ledger = ledger
        self._consent = consent
        self._gk = gatekeeper

    def file(
        self, conn: Connection, access: Access, *, allowed: bool, member_id: str, filing: Filing | None, filer: Filer, problems: Mapping[str, str] | None = None
    ) -> DataRequest | Refusal:
        dsr_id = new_id()
        target = Target("file_request", RESOURCE, dsr_id, member_id, () if filing is None else (filing.type.value,))

        def run() -> DataRequest:
            if filing is None:
                self.service.require_live(conn, member_id)
                raise ValidationError(problems or {"body": "invalid"})
            return self.service.file(conn, member_id, filing, filer, dsr_id=dsr_id, now=access.now)

        return self._gk.perform(conn, access, target, allowed, run)

    def transition(
        self,
        conn: Connection,
        access: Access,
        *,
        allowed: bool,
        dsr_id: str,
        member_id: str | None,
        move: Move | None,
        problems: Mapping[str, str] | None = None,
    ) -> DataRequest | Refusal:
        target = Target("transition_request", RESOURCE, dsr_id, member_id, () if move is None else (move.to.value,))

        def run() -> DataRequest:
            if move is None:
                self.service.get(conn, dsr_id, decrypt=False)
                raise ValidationError(problems or {"body": "invalid"})
            moved = self.service.transition(
                conn, dsr_id, move.to, actor=access.actor.subject, actor_role="dpo", reason=move.reason, note=move.note, now=access.now
            )
            if move.to is Status.completed:
                self._carry_out(conn, access, moved)
            return moved

        return self._gk.perform(conn, access, target, allowed, run)

    def _carry_out(self, conn: Connection, access: Access, request: DataRequest) -> None:
        if request.type is RequestType.rectification:
            body = MemberBody.parse(rectification_changes(request))
            self._members.update(conn, request.member_id, body.valid_values())
        elif request.type is RequestType.erasure:
            self._left(conn, request.member_id, LeftReason.erased, access.now)
            balance = self._ledger.balance(conn, request.member_id)
            if balance.amount > 0:
                refund = self._ledger.append(conn, request.member_id, {"entry_type": "refund", "amount": balance.amount})
                self.service.record_settlement(conn, request.dsr_id, refund.entry_id)
        elif request.type is RequestType.restriction:
            self._left(conn, request.member_id, LeftReason.restricted, access.now)
        elif request.type is RequestType.objection:
            recorder = Recorder(access.actor.subject, RecorderRole.dpo)
            for purpose in objection_purposes(request):
                withdrawal = ConsentRequest(purpose, ConsentDecision.withdrawn, ConsentChannel.request, evidence=f"dsr:{request.dsr_id}")
                self._consent.record(conn, request.member_id, withdrawal, recorder, consent_id=new_id(), request_id=access.request_id, now=access.now)

    def _left(self, conn: Connection, member_id: str, reason: LeftReason, now: datetime) -> None:
        if self._feed is not None:
            self._feed.member_left(conn, member_id, reason, purposes=None, now=now)

    def certificate(self, conn: Connection, access: Access, *, allowed: bool, dsr_id: str, member_id: str | None) -> ErasureFacts | Refusal:
        """What the erasure certificate of ``dsr_id`` states (the edge signs it); a request that is no finished erasure is a conflict."""
        target = Target("read_certificate", RESOURCE, dsr_id, member_id, ())
        return self._gk.perform_read(conn, access, target, allowed, lambda: self.service.erasure_facts(conn, dsr_id))

    def export(self, conn: Connection, access: Access, *, allowed: bool, dsr_id: str, member_id: str | None) -> ExportTicket | Refusal:
        """Whether the archive of ``dsr_id`` may be downloaded now; its ``export`` event is committed before the answer."""
        target = Target("export", RESOURCE, dsr_id, member_id, EXPORTED)

        def check() -> ExportTicket:
            request = self.service.get(conn, dsr_id, decrypt=False)
            if request.type not in EXPORTABLE:
                raise ConflictError(f"a {request.type.value} request has no export archive")
            if request.status is not Status.completed or request.closed_at is None:
                raise ConflictError("the request is not completed")
            if access.now > request.closed_at + self._export_window:
                raise ConflictError("the download window of this archive has closed; file a new access request")
            self._members.live_key_version(conn, request.member_id)
            return ExportTicket(request.dsr_id, request.member_id, request.type)

        return self._gk.perform_read(conn, access, target, allowed, check)

    def read(self, conn: Connection, access: Access, *, allowed: bool, dsr_id: str, member_id: str | None, decrypt: bool) -> DataRequest | Refusal:
        target = Target("read", RESOURCE, dsr_id, member_id, ())
        return self._gk.perform_read(conn, access, target, allowed, lambda: self.service.get(conn, dsr_id, decrypt=decrypt))

    def queue(
        self, conn: Connection, access: Access, *, allowed: bool, status: Status | None, overdue: bool | None, after: str | None, limit: int
    ) -> list[DataRequest] | Refusal:
        target = Target("list", RESOURCE, None, None, ())
        return self._gk.perform_read(
            conn, access, target, allowed, lambda: self.service.queue(conn, status=status, overdue=overdue, now=access.now, after=after, limit=limit)
        )


__all__ = ["DEFAULT_EXPORT_WINDOW", "EXPORTABLE", "EXPORTED", "RESOURCE", "DataRequestGate", "Move"]
