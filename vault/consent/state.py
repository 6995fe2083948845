"""The current state of one purpose for one member, derived from the history — never stored.

Only the member's last event for the purpose and the purpose's notices
matter:

* no event → ``none``;
* the last event a withdrawal → ``withdrawn`` since it was recorded;
* the last event a grant under notice version *v* → ``stale`` from the
  earliest ``effective_at + grace`` of a *material* notice with a version
  above *v*, once that moment has come; ``granted`` since the grant before
  it. A non-material new version leaves earlier grants counting.

A grant always names the notice current when it was made, so a material
version above it takes effect after the grant. The property tests check this
against a plain fold over the whole timeline of events and notices.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from vault.consent.model import ConsentDecision, ConsentEvent, ConsentState, Notice, PurposeState
from vault.purposes import Purpose


def stale_from(granted_version: int, notices: Iterable[Notice], grace: timedelta) -> datetime | None:
    """When a grant under ``granted_version`` stops counting: the first material change after it plus the grace period."""
    return min((n.effective_at + grace for n in notices if n.material and n.version > granted_version), default=None)


def derive(purpose: Purpose, last: ConsentEvent | None, notices: Iterable[Notice], *, now: datetime, grace: timedelta) -> PurposeState:
    """The state at ``now`` given the member's last event for ``purpose`` and that purpose's notices."""
    if last is None:
        return PurposeState(purpose, ConsentState.none)
    if last.decision is ConsentDecision.withdrawn:
        return PurposeState(purpose, ConsentState.withdrawn, None, last.recorded_at)
    if last.notice_version is None:
        raise ValueError("a grant names its notice version")  # the schema's check constraint makes this unreachable
    stale_at = stale_from(last.notice_version, notices, grace)
    if stale_at is not None and stale_at <= now:
        return PurposeState(purpose, ConsentState.stale, last.notice_version, stale_at)
    return PurposeState(purpose, ConsentState.granted, last.notice_version, last.recorded_at)


__all__ = ["derive", "stale_from"]
