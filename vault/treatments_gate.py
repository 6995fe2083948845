"""The one way to treatment records: decision checked, one audit event per call.

Routes reach treatments only through ``TreatmentGate``; every method but
``owner`` runs through ``Gatekeeper.perform``:

* ``add`` writes only when ``treatment`` is in ``access.writable``; the
  event names the fields given. The member must exist (404) before its
  values are validated (422); nothing is written otherwise.
* ``page`` and ``read`` decrypt only when ``treatment`` is in
  ``access.readable``. ``page`` for the purpose ``legal_claims`` (the dpo's)
  reads on the retention path, so records held after an erasure stay
  readable there and nowhere else. ``read`` answers the treatment of ``member_id`` only:
  the edge decides on the member a treatment belongs to (``owner``), and a
  treatment that does not exist is ``not_found`` for a caller allowed to
  look, after a decision that does not depend on it.
* ``owner`` returns an id only, never a value, so the edge can decide on the
  right member before any record is read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, select

from vault import data_map as dm
from vault.access import Access, Gatekeeper, PendingRead, Refusal, Target, category_names
from vault.errors import NotFoundError
from vault.ids import TreatmentId, new_id
from vault.members import MemberRepository
from vault.purposes import Purpose
from vault.storage.schema import treatments
from vault.treatments import Treatment, TreatmentRepository

RESOURCE = "treatment"
_FIELDS = dm.fields_by_name(dm.Table.treatments)


@dataclass(frozen=True, slots=True)
class TreatmentPage:
    """One page of a member's treatments, oldest first; ``more`` when later ones follow."""

    items: list[Treatment]
    more: bool


class TreatmentGate:
    def __init__(self, repo: TreatmentRepository, members: MemberRepository, gatekeeper: Gatekeeper) -> None:
        self._repo = repo
        self._members = members
        self._gk = gatekeeper

    def owner(self, conn: Connection, treatment_id: str) -> str | None:
        """The member a treatment belongs to, or None when there is no such treatment."""
        return conn.execute(select(treatments.c.member_id).where(treatments.c.treatment_id == treatment_id)).scalar()

    def add(self, conn: Connection, access: Access, member_id: str, values: Mapping[str, object]) -> TreatmentId | Refusal:
        allowed = dm.Category.treatment in access.writable
        treatment_id = TreatmentId(new_id())
        target = Target("create", RESOURCE, treatment_id, member_id, tuple(sorted(n for n in values if n in _FIELDS)))

        def add() -> TreatmentId:
            if not self._members.exists(conn, member_id):
                raise NotFoundError(f"no member {member_id}")
            return self._repo.add(conn, member_id, values, treatment_id=treatment_id)

        return self._gk.perform(conn, access, target, allowed, add)

    def page(
        self, conn: Connection, access: Access, member_id: str, *, after: str | None, limit: int, then: Callable[[Connection], None] | None = None
    ) -> PendingRead[TreatmentPage]:
        """Treatments after the one ``after`` names (none when it is not one of this member's), at most ``limit``; the caller commits the event first."""
        allowed = dm.Category.treatment in access.readable
        target = Target("list", RESOURCE, None, member_id, category_names(access.readable))

        def page() -> TreatmentPage:
            # Legal claims read on the retention path: held records stay readable after the member's erasure.
            legal = access.purpose == Purpose.legal_claims.value
            every = self._repo.list_retained(conn, member_id) if legal else self._repo.list_for_member(conn, member_id)
            start = 0 if after is None else next((i + 1 for i, t in enumerate(every) if t.treatment_id == after), len(every))
            return TreatmentPage(every[start : start + limit], start + limit < len(every))

        return self._gk.prepare_read(access, target, allowed, page, then=then)

    def read(self, conn: Connection, access: Access, treatment_id: str, member_id: str | None) -> PendingRead[Treatment]:
        """One treatment of ``member_id``; the caller commits the event before it uses the result (``Gatekeeper.prepare_read``)."""
        allowed = dm.Category.treatment in access.readable
        target = Target("read", RESOURCE, treatment_id, member_id, category_names(access.readable))

        def read() -> Treatment:
            found = self._repo.get(conn, treatment_id)
            if found.member_id != member_id:
                raise NotFoundError(f"no treatment {treatment_id}")
            return found

        return self._gk.prepare_read(access, target, allowed, read)


__all__ = ["RESOURCE", "TreatmentGate", "TreatmentPage"]
