"""Authorization at the edge: which policy version decides, and what it decides for a caller.

* ``vocabulary()`` hands ``policies`` the one list of roles, domains,
  objects, actions and purposes (from ``vault.roles``, ``vault.purposes`` and
  the data map) that policy files are validated against.
* ``PolicyStore`` keeps the active policy in the database
  (``policy_versions``): every request reads the highest version number, and a
  process whose loaded set is older loads the stored text — so a reload by
  one worker is seen by every worker on its next request. The first process
  to start stores version 1 from the policy directory. Decisions are cached
  inside each ``PolicySet``, which is immutable; a new version is a new set.
* ``relation`` is the request's domain: ``self``, ``clinic``, ``break_glass``
  or ``none``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, func, insert, select

from api.caller import Caller
from policies import PolicySet, Vocabulary
from vault import data_map as dm
from vault.members.clinics import is_linked
from vault.purposes import statable
from vault.roles import Role
from vault.storage.readers import DriverRow
from vault.storage.schema import policy_versions
from vault.storage.upsert import insert_ignore

NO_PURPOSE = "-"
DOMAINS = ("self", "clinic", "break_glass", "none")
ACTIONS = ("read", "write")
# Objects besides ``member:<category>``; each route names the one it asks about.
OPERATIONS = (
    "member:lookup",
    "member:clinics",
    "audit:events",
    "audit:scope",
    "audit:export",
    "audit:checkpoints",
    "audit:proofs",
    "audit:access_log",
    "break_glass:queue",
    "keys:metadata",
    "keys:rotate",
    "policies:reload",
    "consent:records",
    "purposes:notices",
    "requests:records",
    "requests:queue",
    "requests:transitions",
    "extracts:profiles",
)


def member_object(category: dm.Category) -> str:
    return f"member:{category.value}"


def vocabulary() -> Vocabulary:
    categories = {member_object(c) for t in dm.Table for c in dm.categories_of(t)}
    return Vocabulary(
        roles=frozenset(r.value for r in Role),
        domains=frozenset(DOMAINS),
        objects=frozenset(categories | set(OPERATIONS)),
        actions=frozenset(ACTIONS),
        purposes=frozenset({p.value for p in statable()} | {NO_PURPOSE}),
    )


# Asked on every request: built once (building the statement cost three times its execution).
_ACTIVE_VERSION = DriverRow(select(func.max(policy_versions.c.version)))


@dataclass(frozen=True, slots=True)
class ActivePolicy:
    version: int
    policy: PolicySet


class PolicyStore:
    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._vocabulary = vocabulary()
        self._active: ActivePolicy | None = None
        self._lock = threading.Lock()

    def active(self, conn: Connection) -> ActivePolicy:
        found = _ACTIVE_VERSION.first(conn, {})
        version = None if found is None else found[0]
        if version is None:
            self._store_files(conn, 1, "bootstrap", None)
            return self.active(conn)
        cached = self._active
        if cached is not None and cached.version == version:
            return cached
        row = conn.execute(select(policy_versions).where(policy_versions.c.version == version)).one()
        loaded = ActivePolicy(int(version), PolicySet.parse(row.model, row.policy, self._vocabulary))
        with self._lock:
            if self._active is None or self._active.version < loaded.version:
                self._active = loaded
        return loaded

    def reload(self, conn: Connection, activated_by: str, now: datetime) -> tuple[ActivePolicy, bool]:
        """Validate the policy directory and make it the next version (unless it is already active)."""
        fresh = PolicySet.from_directory(self._directory, self._vocabulary)
        current = self.active(conn)
        if fresh.hash == current.policy.hash:
            return current, False
        conn.execute(
            insert(policy_versions).values(
                version=current.version + 1,
                policy_hash=fresh.hash,
                model=fresh.model_text,
                policy=fresh.policy_text,
                activated_by=activated_by,
                activated_at=now,
            )
        )
        return self.active(conn), True

    def _store_files(self, conn: Connection, version: int, activated_by: str, now: datetime | None) -> None:
        fresh = PolicySet.from_directory(self._directory, self._vocabulary)
        conn.execute(
            insert_ignore(conn, policy_versions).values(
                version=version,
                policy_hash=fresh.hash,
                model=fresh.model_text,
                policy=fresh.policy_text,
                activated_by=activated_by,
                activated_at=now or func.now(),
            )
        )


def relation(conn: Connection, caller: Caller, member_id: str, break_glass: bool) -> str:
    """The caller's domain for ``member_id``: its own record, a linked clinic, break-glass, or none."""
    if caller.own_member_id is not None:
        return "self" if caller.own_member_id == member_id else "none"
    if caller.is_staff and (caller.all_clinics or is_linked(conn, member_id, caller.clinics)):
        return "clinic"
    return "break_glass" if break_glass and Role.practitioner in caller.roles else "none"


def categories_allowed(
    policy: PolicySet, caller: Caller, domain: str, *, action: str, purpose: str, categories: tuple[dm.Category, ...]
) -> frozenset[dm.Category]:
    roles = caller.roles
    return frozenset(c for c in categories if policy.decide(roles, domain, member_object(c), action, purpose).allowed)


__all__ = ["ACTIONS", "DOMAINS", "NO_PURPOSE", "OPERATIONS", "ActivePolicy", "PolicyStore", "categories_allowed", "member_object", "relation", "vocabulary"]
