"""The one way to consent records and notices: decision checked, one audit event per call.

* ``record`` enters a grant or withdrawal when the decision allows it; the
  event's action is ``grant_consent`` or ``withdraw_consent`` (``record_consent``
  for a body too malformed to say which) and its ``fields`` name the consent
  purpose. A malformed body's ``problems`` are raised inside the gated
  operation, after the decision and after the member's existence is checked,
  so the request still leaves its one event and the API's order of answers
  (403, 404, 422) holds.
* ``overview`` and ``event`` read the member's consent history
  (``Gatekeeper.perform_read``).
* ``publish`` publishes a notice version (``publish_notice`` on resource
  ``notice``, id ``<purpose>:<version>``); no member is involved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from vault.access import Access, Gatekeeper, Refusal, Target
from vault.consent.model import ConsentDecision, ConsentEvent, ConsentRequest, Notice, PurposeState, Recorder
from vault.consent.service import ConsentService
from vault.errors import ValidationError
from vault.ids import new_id
from vault.purposes import Purpose

RESOURCE = "consent"
NOTICE_RESOURCE = "notice"


@dataclass(frozen=True, slots=True)
class ConsentOverview:
    current: dict[Purpose, PurposeState]
    history: list[ConsentEvent]


@dataclass(frozen=True, slots=True)
class NoticeDraft:
    """A notice version as the dpo sent it (``effective_at`` None: now)."""

    purpose: Purpose
    version: int
    text_zh: str
    text_en: str
    material: bool
    effective_at: datetime | None = None


def _action(request: ConsentRequest | None) -> str:
    if request is None:
        return "record_consent"
    return "grant_consent" if request.decision is ConsentDecision.granted else "withdraw_consent"


class ConsentGate:
    def __init__(self, service: ConsentService, gatekeeper: Gatekeeper) -> None:
        self.service = service
        self._gk = gatekeeper

    def record(
        self,
        conn: Connection,
        access: Access,
        *,
        allowed: bool,
        member_id: str,
        request: ConsentRequest | None,
        recorder: Recorder,
        problems: Mapping[str, str] | None = None,
    ) -> ConsentEvent | Refusal:
        """Record ``request`` — or refuse ``problems`` (a body that did not parse into one) — if ``allowed``."""
        consent_id = new_id()
        target = Target(_action(request), RESOURCE, consent_id, member_id, () if request is None else (request.purpose.value,))

        def run() -> ConsentEvent:
            if request is None:
                self.service.require_live(conn, member_id)
                raise ValidationError(problems or {"body": "invalid"})
            return self.service.record(conn, member_id, request, recorder, consent_id=consent_id, request_id=access.request_id, now=access.now)

        return self._gk.perform(conn, access, target, allowed, run)

    def overview(self, conn: Connection, access: Access, *, allowed: bool, member_id: str) -> ConsentOverview | Refusal:
        target = Target("read", RESOURCE, None, member_id, ())

        def run() -> ConsentOverview:
            history = self.service.history(conn, member_id)
            return ConsentOverview(self.service.current(conn, member_id, access.now, history), history)

        return self._gk.perform_read(conn, access, target, allowed, run)

    def event(self, conn: Connection, access: Access, *, allowed: bool, member_id: str, consent_id: str) -> ConsentEvent | Refusal:
        target = Target("read", RESOURCE, consent_id, member_id, ())
        return self._gk.perform_read(conn, access, target, allowed, lambda: self.service.event(conn, member_id, consent_id))

    def publish(
        self, conn: Connection, access: Access, *, allowed: bool, draft: NoticeDraft | None, problems: Mapping[str, str] | None = None
    ) -> Notice | Refusal:
        """Publish ``draft`` if ``allowed`` (None with ``problems``: a body that did not parse)."""
        resource_id = None if draft is None else f"{draft.purpose.value}:{draft.version}"
        target = Target("publish_notice", NOTICE_RESOURCE, resource_id, None, ())

        def run() -> Notice:
            if draft is None:
                raise ValidationError(problems or {"body": "invalid"})
            return self.service.notices.publish(
                conn,
                draft.purpose,
                draft.version,
                text_zh=draft.text_zh,
                text_en=draft.text_en,
                material=draft.material,
                effective_at=draft.effective_at or access.now,
                published_by=access.actor.subject,
                now=access.now,
            )

        return self._gk.perform(conn, access, target, allowed, run)


__all__ = ["NOTICE_RESOURCE", "RESOURCE", "ConsentGate", "ConsentOverview", "NoticeDraft"]
