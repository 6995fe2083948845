"""The one way to a member record: decision checked, categories projected, one audit event.

Routes reach members only through ``MemberGate``. Each method takes the
edge's ``Access`` and runs through ``Gatekeeper.perform``: a refused
decision journals a ``deny`` event and touches nothing; an allowed one
reads or writes only the categories the decision names and journals an
``allow`` event with the outcome.

* ``prepare_read`` decrypts only ``access.readable``; the caller commits its
  event (``Gatekeeper.prepare_read``) before it uses the view.
* ``create`` and ``update`` are allowed only when every field written belongs
  to a category in ``access.writable``; the event names the fields.
* ``search`` answers member ids only, filtered to the caller's scope (the
  member's own id, or members linked to the caller's clinics).
* ``check_in`` links a member to a clinic only when the card number given
  matches the member's; a mismatch and a made-up id are the same denial.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from sqlalchemy import Connection

from vault import data_map as dm
from vault.access import Access, Gatekeeper, PendingRead, Refusal, Target, category_names
from vault.errors import ValidationError
from vault.ids import MemberId, new_id
from vault.members.clinics import LinkVia, link, linked_members
from vault.members.repository import MemberRepository, MemberView
from vault.validation import shown_name

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


_CATEGORIES = {c.value: c for c in dm.categories_of(dm.Table.members)}


@dataclass(frozen=True, slots=True)
class MemberBody:
    """A member write as sent — ``{category: {field: value}}`` — before validation.

    ``categories`` and ``values`` are what the decision and the event need;
    ``problems`` are shape errors (an unknown top-level key such as
    ``member_id`` or ``redacted``, a category that is not an object, a field
    filed under another category, an unknown field), raised as a
    ``ValidationError`` inside the gated operation so the request's event still
    records the decision. A made-up name is echoed only if shaped like a field
    name (``shown_name``), never if it could be a value.
    """

    categories: frozenset[dm.Category]
    values: dict[str, object]
    problems: dict[str, str]

    @classmethod
    def parse(cls, document: object) -> MemberBody:
        if not isinstance(document, dict):
            return cls(frozenset(), {}, {"body": "not_an_object"})
        categories: set[dm.Category] = set()
        values: dict[str, object] = {}
        problems: dict[str, str] = {}
        for key, group in document.items():
            category = _CATEGORIES.get(key)
            if category is None:
                problems[shown_name(key)] = "unknown_field"
            elif not isinstance(group, dict):
                problems[key] = "not_an_object"
            else:
                categories.add(category)
                for name, value in group.items():
                    f = _FIELDS.get(name)
                    if f is None:
                        problems[shown_name(name)] = "unknown_field"
                    elif f.category is not category:
                        problems[f"{key}.{name}"] = "wrong_category"
                    else:
                        values[name] = value
        return cls(frozenset(categories), values, problems)

    def valid_values(self) -> dict[str, object]:
        if self.problems:
            raise ValidationError(self.problems)
        return self.values


class MemberGate:
    def __init__(self, repo: MemberRepository, gatekeeper: Gatekeeper) -> None:
        self._repo = repo
        self._gk = gatekeeper

    def prepare_read(self, conn: Connection, access: Access, member_id: str, *, then: Callable[[Connection], None] | None = None) -> PendingRead[MemberView]:
        """Read in the caller's (read) transaction, up to its event: the caller commits the event before it uses the view (``Gatekeeper.prepare_read``)."""
        target = Target("read", RESOURCE, member_id, member_id, category_names(access.readable))
        return self._gk.prepare_read(access, target, bool(access.readable), lambda: self._repo.read(conn, member_id, access.readable), then=then)

    def create(self, conn: Connection, access: Access, body: MemberBody) -> MemberId | Refusal:
        member_id = MemberId(new_id())
        allowed = _may_write(access, body)
        target = Target("create", RESOURCE, member_id, member_id, _field_names(body.values))
        return self._gk.perform(conn, access, target, allowed, lambda: self._repo.create(conn, body.valid_values(), member_id=member_id))

    def update(self, conn: Connection, access: Access, member_id: str, body: MemberBody) -> list[str] | Refusal:
        allowed = _may_write(access, body)
        target = Target("update", RESOURCE, member_id, member_id, _field_names(body.values))
        return self._gk.perform(conn, access, target, allowed, lambda: self._repo.update(conn, member_id, body.valid_values()))

    def search(self, conn: Connection, access: Access, *, allowed: bool, term: tuple[str, str] | None, scope: SearchScope) -> list[MemberId] | Refusal:
        """``term`` is (field, value), or None for a body that names no single searchable field (refused as invalid)."""
        target = Target("search", RESOURCE, None, None, (term[0],) if term and term[0] in _FIELDS else ())

        def run() -> list[MemberId]:
            if term is None:
                raise ValidationError({"body": "one_search_field"})
            return _within(conn, scope, self._repo.search(conn, *term))

        return self._gk.perform(conn, access, target, allowed, run)

    def check_in(self, conn: Connection, access: Access, *, allowed: bool, member_id: str, proof: tuple[str, str] | None) -> bool | Refusal:
        """Link the member to a clinic given ``proof`` = (clinic id, card number); True if the link is new.

        ``proof`` None is an invalid body, refused after the decision.
        """
        if allowed and proof is not None and member_id not in self._repo.search(conn, "card_no", proof[1]):
            access, allowed = dataclasses.replace(access, reason="card_mismatch"), False
        target = Target("check_in", RESOURCE, member_id, member_id, ("card_no",))

        def run() -> bool:
            if proof is None:
                raise ValidationError({"body": "clinic_id_and_card_no"})
            return link(conn, member_id, proof[0], LinkVia.check_in, access.now)

        return self._gk.perform(conn, access, target, allowed, run)


def _may_write(access: Access, body: MemberBody) -> bool:
    """Every category the body writes must be writable (a body with only unknown keys decides nothing: denied)."""
    return bool(body.categories) and body.categories <= access.writable


def _field_names(values: Collection[str]) -> tuple[str, ...]:
    return tuple(sorted(name for name in values if name in _FIELDS))


def _within(conn: Connection, scope: SearchScope, found: list[MemberId]) -> list[MemberId]:
    if scope.member_id is not None:
        return [m for m in found if m == scope.member_id]
    if scope.clinics is None:
        return found
    linked = linked_members(conn, found, scope.clinics)
    return [m for m in found if m in linked]


__all__ = ["MemberBody", "MemberGate", "SearchScope", "written_categories"]
