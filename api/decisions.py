"""From a caller, a purpose and a target to the ``Access`` value the vault's gates take.

One decision per category, asked of the active policy set (cached there by
the full request tuple); then, for purposes that need consent, the member's
live consent, and for a write of the health category the separate
``health_data`` consent (PIPL Art. 29); and a member whose restriction
request is carried out is reached by nobody but themselves and legal claims.
The result names the readable and writable categories, the
policy hash and the reason code that the audit event records.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from api.authz import NO_PURPOSE, categories_allowed, member_object, relation
from api.caller import Caller
from api.responses import CONSENT_REQUIRED_REASON, RESTRICTED_REASON
from api.services import Services
from policies import PolicySet, Reason
from vault import data_map as dm
from vault.access import Access
from vault.break_glass import BreakGlassReason
from vault.purposes import Purpose


@dataclass(frozen=True, slots=True)
class MemberDecision:
    access: Access
    domain: str
    break_glass: BreakGlassReason | None


def member_access(
    services: Services,
    conn: Connection,
    caller: Caller,
    purpose: Purpose,
    member_id: str,
    *,
    action: str,
    categories: Collection[dm.Category],
    request_id: str,
    now: datetime,
    break_glass: BreakGlassReason | None = None,
    domain: str | None = None,
) -> MemberDecision:
    """Decide ``action`` on each of ``categories`` of one member (``domain`` overrides the computed relation)."""
    active = services.policies.active(conn)
    where = domain if domain is not None else relation(conn, caller, member_id, break_glass is not None)
    wanted = tuple(categories)
    allowed = categories_allowed(active.policy, caller, where, action=action, purpose=purpose.value, categories=wanted)
    if action == "write" and allowed != frozenset(wanted):
        # A write is all or nothing: one category the caller may not write refuses the whole request.
        refused = tuple(c for c in wanted if c not in allowed)
        allowed, reason = (
            frozenset(),
            _denial(active.policy, caller, where, action=action, purpose=purpose.value, categories=refused) if refused else Reason.NO_MATCHING_RULE.value,
        )
    else:
        reason = "allowed" if allowed else _denial(active.policy, caller, where, action=action, purpose=purpose.value, categories=wanted)
    if allowed and not _consent_covers(services, conn, member_id, purpose, action=action, categories=allowed, now=now):
        allowed, reason = frozenset(), CONSENT_REQUIRED_REASON
    if allowed and restricted(services, conn, member_id, purpose=purpose, domain=where):
        allowed, reason = frozenset(), RESTRICTED_REASON
    flagged = break_glass if where == "break_glass" else None
    if allowed and flagged is not None:
        reason = f"break_glass:{flagged.value}"
    access = Access(
        actor=caller.actor,
        request_id=request_id,
        purpose=purpose.value,
        policy_hash=active.policy.hash,
        now=now,
        readable=allowed if action == "read" else frozenset(),
        writable=allowed if action == "write" else frozenset(),
        reason=reason,
    )
    return MemberDecision(access, where, flagged)


def operation_access(
    services: Services,
    conn: Connection,
    caller: Caller,
    obj: str,
    action: str,
    *,
    request_id: str,
    now: datetime,
    purpose: Purpose | None = None,
    domain: str = "none",
) -> tuple[Access, bool]:
    """Decide one operation (an object that is not a member category); returns the access value and whether it is allowed."""
    active = services.policies.active(conn)
    verdict = active.policy.decide(caller.roles, domain, obj, action, purpose.value if purpose else NO_PURPOSE)
    access = Access(
        actor=caller.actor,
        request_id=request_id,
        purpose=purpose.value if purpose else None,
        policy_hash=active.policy.hash,
        now=now,
        reason=verdict.reason.value,
    )
    return access, verdict.allowed


def restricted(services: Services, conn: Connection, member_id: str, *, purpose: Purpose, domain: str) -> bool:
    """The member's restriction request is carried out: their data is stored but not used — except for legal claims, or by themselves."""
    return domain != "self" and purpose is not Purpose.legal_claims and services.requests.service.is_restricted(conn, member_id)


def _consent_covers(
    services: Services, conn: Connection, member_id: str, purpose: Purpose, *, action: str, categories: frozenset[dm.Category], now: datetime
) -> bool:
    """A consent purpose needs the member's live consent; writing the health category needs live ``health_data`` consent."""
    if purpose.needs_consent and not services.consent.has_live_consent(conn, member_id, purpose, now):
        return False
    return not (action == "write" and dm.Category.health in categories and not services.consent.has_live_consent(conn, member_id, Purpose.health_data, now))


def _denial(policy: PolicySet, caller: Caller, domain: str, *, action: str, purpose: str, categories: tuple[dm.Category, ...]) -> str:
    reasons = {policy.decide(caller.roles, domain, member_object(c), action, purpose).reason for c in categories}
    return Reason.DENIED_BY_RULE.value if Reason.DENIED_BY_RULE in reasons else Reason.NO_MATCHING_RULE.value


__all__ = ["MemberDecision", "member_access", "operation_access", "restricted"]
