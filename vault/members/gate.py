"""The one way to a member record: decision checked, categories projected, one audit event.

Routes reach members only through ``MemberGate``. Each method takes the
edge's ``Access`` and runs through ``Gatekeeper.perform``: a refused
decision journals a ``deny`` event and touches nothing; an allowed one
reads or writes only the categories the decision names and journals an
``allow`` event with the outcome.

* ``read`` decrypts only ``access.readable``.
* ``create`` and ``update`` are allowed only when every field written belongs
  to a category in ``access.writable``; the event names the fields.
* ``search`` answers member ids only, filtered to the caller's scope (the
  member's own id, or members linked to the caller's clinics).
* ``check_in`` links a member to a clinic only when the card number given
  matches the member's; a mismatch and a made-up id are the same denial.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from sqlalchemy import Connection

from vault import data_map as dm
from vault.access import Access, Gatekeeper, Refusal, Target, category_names
from vault.errors import ValidationError
from vault.ids import MemberId, new_id
from vault.members.clinics import LinkVia, link, linked_members
from vault.members.repository import MemberRepository, MemberView

_FIELDS = dm.fields_by_name(dm.Table.members)
RESOURCE = "member"


@dataclass(frozen=True, slots=True)
class SearchScope:
    """Whose ids a search may answer: one member (a member token), some clinics, or any member (``clinics=None``)."""

    member_id: str | None = None
    clinics: frozenset[str] | None = frozenset()


def written_categories(values: Mapping[str, object]) -> frozenset[dm.Category]:
    """The categories of the known fields in ``values`` (unknown names are refused by validation)."""
    return frozenset(_FIELDS[name].category for name in values if name in _FIELDS)


class MemberGate:
    def __init__(self, repo: MemberRepository, gatekeeper: Gatekeeper) -> None:
        self._repo = repo
        self._gk = gatekeeper

    def read(self, conn: Connection, access: Access, member_id: str) -> MemberView | Refusal:
        target = Target("read", RESOURCE, member_id, member_id, category_names(access.readable))
        return self._gk.perform(conn, access, target, bool(access.readable), lambda: self._repo.read(conn, member_id, access.readable))

    def create(self, conn: Connection, access: Access, values: Mapping[str, object]) -> MemberId | Refusal:
        member_id = MemberId(new_id())
        allowed = _may_write(access, values)
        target = Target("create", RESOURCE, member_id, member_id, _field_names(values))
        return self._gk.perform(conn, access, target, allowed, lambda: self._repo.create(conn, values, member_id=member_id))

    def update(self, conn: Connection, access: Access, member_id: str, changes: Mapping[str, object]) -> list[str] | Refusal:
        allowed = _may_write(access, changes)
        target = Target("update", RESOURCE, member_id, member_id, _field_names(changes))
        return self._gk.perform(conn, access, target, allowed, lambda: self._repo.update(conn, member_id, changes))

    def search(self, conn: Connection, access: Access, *, allowed: bool, field_name: str, value: str, scope: SearchScope) -> list[MemberId] | Refusal:
        target = Target("search", RESOURCE, None, None, (field_name,) if field_name in _FIELDS else ())
        return self._gk.perform(conn, access, target, allowed, lambda: _within(conn, scope, self._repo.search(conn, field_name, value)))

    def check_in(self, conn: Connection, access: Access, *, allowed: bool, member_id: str, clinic_id: str, card_no: str) -> bool | Refusal:
        """Link the member to ``clinic_id``; True if the link is new."""
        if allowed and member_id not in self._repo.search(conn, "card_no", card_no):
            access, allowed = dataclasses.replace(access, reason="card_mismatch"), False
        target = Target("check_in", RESOURCE, member_id, member_id, ("card_no",))
        return self._gk.perform(conn, access, target, allowed, lambda: link(conn, member_id, clinic_id, LinkVia.check_in, access.now))


def _may_write(access: Access, values: Mapping[str, object]) -> bool:
    categories = written_categories(values)
    return bool(values) and bool(categories) and categories <= access.writable


def _field_names(values: Collection[str]) -> tuple[str, ...]:
    return tuple(sorted(name for name in values if name in _FIELDS))


def _within(conn: Connection, scope: SearchScope, found: list[MemberId]) -> list[MemberId]:
    if scope.member_id is not None:
        return [m for m in found if m == scope.member_id]
    if scope.clinics is None:
        return found
    linked = linked_members(conn, found, scope.clinics)
    return [m for m in found if m in linked]


def require_fields(values: Mapping[str, object]) -> None:
    """Refuse unknown field names before any decision is asked for them."""
    unknown = {name: "unknown_field" for name in values if name not in _FIELDS}
    if unknown:
        raise ValidationError(unknown)


__all__ = ["MemberGate", "SearchScope", "require_fields", "written_categories"]
