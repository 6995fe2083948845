"""The member repository: encrypt on write, decrypt only the categories asked for.

Invariants:

* Every data-map field marked encrypted is stored only as a field-cipher
  ciphertext under the member's data key, bound to (members, member id, field,
  key version).
* Blind-indexed fields get one ``blind_index`` row per field with the HMAC of
  the normalized value; a search hit counts only while the member's data key is
  live and the member is not erased.
* A rectification keeps each previous value, encrypted, in ``field_history``.
* Methods take the caller's connection (one transaction per unit of work) and
  never commit it. The key store is a separate database: a member's key is
  created (and committed there) before the member row; a key whose row never
  commits is found and removed by the orphan sweep.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from keys.blind_index import BlindIndex
from keys.errors import KeyNotFoundError
from keys.field_cipher import FieldCipher
from keys.member_keys import DATA_SCOPE, MemberKeys, MemberKeySet
from vault import data_map as dm
from vault.codec import open_sealed, seal, to_columns
from vault.errors import MemberErasedError, NotFoundError, ValidationError
from vault.ids import MemberId, new_id
from vault.members.clinics import LinkVia, link
from vault.storage.readers import DriverRow
from vault.storage.schema import blind_index, field_history, members
from vault.validation import blind_index_normal_form, shown_name, validate_values

BLIND_INDEX_ROOT = "blind-index"
HISTORY_TABLE = "field_history"
_MEMBER_FIELDS = dm.fields_of(dm.Table.members)
_BY_NAME = {f.name: f for f in _MEMBER_FIELDS}
_SEARCHABLE = {f.name: f for f in _MEMBER_FIELDS if f.blind_indexed}
_CROSS_CHECKED = ("id_type", "national_id", "date_of_birth")


@dataclass(frozen=True, slots=True)
class MemberView:
    """A member projected to some categories; ``values[category][field]``."""

    member_id: MemberId
    values: dict[dm.Category, dict[str, object]]


class MemberRepository:
    def __init__(self, keys: MemberKeys, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._keys = keys
        self._now = now
        self._index_keys: dict[str, BlindIndex] | None = None

    @property
    def _indexes(self) -> dict[str, BlindIndex]:
        """Per-field blind-index keys, derived on first use (the root key is created then)."""
        if self._index_keys is None:
            root = self._keys.root_key(BLIND_INDEX_ROOT)
            self._index_keys = {name: BlindIndex(root, f.qualified_name) for name, f in _SEARCHABLE.items()}
        return self._index_keys

    # -- create --------------------------------------------------------------

    def create(self, conn: Connection, values: Mapping[str, object], *, member_id: MemberId | None = None) -> MemberId:
        clean = validate_values(dm.Table.members, values, partial=False)
        member_id = MemberId(new_id()) if member_id is None else member_id
        cipher = self._keys.create([member_id])[member_id]
        self.insert_validated(conn, member_id, cipher, clean)
        return member_id

    def insert_validated(self, conn: Connection, member_id: MemberId, cipher: FieldCipher, clean: Mapping[str, object]) -> None:
        """Insert a member whose values were validated and whose data key exists (bulk loaders)."""
        now = self._now()
        row = to_columns(cipher, _MEMBER_FIELDS, member_id, clean)
        conn.execute(insert(members).values(member_id=member_id, key_version=cipher.key_version, created_at=now, updated_at=now, **row))
        entries = self.index_entries(member_id, clean)
        if entries:
            conn.execute(insert(blind_index), entries)
        link(conn, member_id, str(clean["home_clinic_id"]), LinkVia.home, now)

    def index_entries(self, member_id: str, clean: Mapping[str, object]) -> list[dict[str, object]]:
        entries: list[dict[str, object]] = []
        for name, index in self._indexes.items():
            value = clean.get(name)
            if isinstance(value, str):
                entries.append({"field": name, "digest": index.digest(value), "member_id": member_id})
        return entries

    # -- read ----------------------------------------------------------------

    def read(self, conn: Connection, member_id: str, categories: Collection[dm.Category]) -> MemberView:
        wanted, plan = _read_plan(frozenset(categories))
        values: dict[dm.Category, dict[str, object]] = {c: {} for c in dm.categories_of(dm.Table.members) if c in categories}
        for f, value in zip(wanted, self._opened(conn, member_id, wanted, plan), strict=True):
            values[f.category][f.name] = value
        return MemberView(MemberId(member_id), values)

    def read_field(self, conn: Connection, member_id: str, name: str) -> object:
        """One field of a live member, and only it decrypted (a check that needs one value opens no other)."""
        wanted, plan = _field_plan(name)
        return self._opened(conn, member_id, wanted, plan)[0]

    def _opened(self, conn: Connection, member_id: str, wanted: tuple[dm.Field, ...], plan: DriverRow) -> list[object]:
        row = plan.first(conn, {"member_id": member_id})
        if row is None:
            raise NotFoundError(f"no member {member_id}")
        key_version, erased_at, *stored = row
        if erased_at is not None:
            raise MemberErasedError(f"member {member_id} was erased")
        cipher = self.data_cipher(member_id, key_version) if any(f.encrypted for f in wanted) else None
        return [open_sealed(cipher, f, member_id, raw) if cipher is not None and f.encrypted else raw for f, raw in zip(wanted, stored, strict=True)]

    # -- the member's data key, for records kept beside the member (consent evidence, request notes) --------

    def live_key_version(self, conn: Connection, member_id: str) -> int:
        """The member's data key version; ``NotFoundError`` or ``MemberErasedError`` unless the member is live."""
        row = conn.execute(select(members.c.erased_at, members.c.key_version).where(members.c.member_id == member_id)).first()
        if row is None:
            raise NotFoundError(f"no member {member_id}")
        if row.erased_at is not None:
            raise MemberErasedError(f"member {member_id} was erased")
        return int(row.key_version)

    def data_cipher(self, member_id: str, key_version: int) -> FieldCipher:
        """The member's data key of ``key_version``; ``MemberErasedError`` once it is shredded."""
        try:
            return self.data_keys(member_id).get(DATA_SCOPE, key_version)
        except KeyNotFoundError:
            raise MemberErasedError(f"member {member_id} has no live data key") from None

    def data_keys(self, member_id: str) -> MemberKeySet:
        """Every live version of the member's data key (empty once shredded), in one key-store read."""
        return self._keys.load(member_id, scopes=(DATA_SCOPE,))

    def exists(self, conn: Connection, member_id: str) -> bool:
        """Not tombstoned and the data key is live (a restored backup carries no tombstone)."""
        row = conn.execute(select(members.c.erased_at).where(members.c.member_id == member_id)).first()
        return row is not None and row.erased_at is None and bool(self._keys.live_owners([member_id]))

    # -- rectify -------------------------------------------------------------

    def update(self, conn: Connection, member_id: str, changes: Mapping[str, object]) -> list[str]:
        """Apply a merge-patch of fields; returns the names of the fields that changed."""
        unknown = {shown_name(name): "unknown_field" for name in changes if name not in _BY_NAME}
        if unknown:
            raise ValidationError(unknown)
        touched = {_BY_NAME[name].category for name in changes} | {dm.Category.identity}
        current = self.read(conn, member_id, touched)
        flat = {name: value for group in current.values.values() for name, value in group.items()}
        context = {name: flat.get(name) for name in _CROSS_CHECKED}
        clean = validate_values(dm.Table.members, changes, partial=True, current=context)
        changed = [name for name, value in clean.items() if flat.get(name) != value]
        if not changed:
            return []
        key_version = conn.execute(select(members.c.key_version).where(members.c.member_id == member_id)).scalar_one()
        cipher = self.data_cipher(member_id, key_version)
        now, change_id = self._now(), new_id()
        history = []
        for name in changed:
            history_id = new_id()
            f = _BY_NAME[name]
            history.append(
                {
                    "history_id": history_id,
                    "member_id": member_id,
                    "change_id": change_id,
                    "table_name": f.table.value,
                    "record_id": member_id,
                    "field": name,
                    "key_version": key_version,
                    "previous": seal(cipher, f, history_id, flat.get(name), table=HISTORY_TABLE),
                    "changed_at": now,
                }
            )
        conn.execute(insert(field_history), history)
        row = to_columns(cipher, [_BY_NAME[n] for n in changed], member_id, clean)
        conn.execute(update(members).where(members.c.member_id == member_id).values(updated_at=now, **row))
        for name in changed:
            if name in self._indexes:
                conn.execute(delete(blind_index).where(blind_index.c.member_id == member_id, blind_index.c.field == name))
        entries = [e for e in self.index_entries(member_id, clean) if e["field"] in changed]
        if entries:
            conn.execute(insert(blind_index), entries)
        if "home_clinic_id" in changed:
            link(conn, member_id, str(clean["home_clinic_id"]), LinkVia.home, now)
        return changed

    def history(self, conn: Connection, member_id: str) -> list[dict[str, object]]:
        """Previous values of rectified fields, oldest first."""
        rows = conn.execute(select(field_history).where(field_history.c.member_id == member_id).order_by(field_history.c.changed_at)).all()
        if not rows:
            return []
        keyset = self._keys.load(member_id, scopes=(DATA_SCOPE,))
        out = []
        for r in rows:
            f = dm.field(dm.Table(r.table_name), r.field)
            try:
                cipher = keyset.get(DATA_SCOPE, r.key_version)
            except KeyNotFoundError:
                raise MemberErasedError(f"member {member_id} has no live data key") from None
            out.append(
                {
                    "field": r.field,
                    "changed_at": r.changed_at,
                    "change_id": r.change_id,
                    "previous": open_sealed(cipher, f, r.history_id, r.previous, table=HISTORY_TABLE),
                }
            )
        return out

    # -- search --------------------------------------------------------------

    def search(self, conn: Connection, field_name: str, raw: str) -> list[MemberId]:
        """Members whose ``field_name`` equals ``raw`` (normalized), live keys only."""
        f = _SEARCHABLE.get(field_name)
        if f is None:
            raise ValidationError({field_name: "not_searchable"})
        try:
            normal = blind_index_normal_form(f, raw)
        except ValidationError:
            return []
        digest = self._indexes[field_name].digest(normal)
        stmt = (
            select(blind_index.c.member_id)
            .join(members, members.c.member_id == blind_index.c.member_id)
            .where(blind_index.c.field == field_name, blind_index.c.digest == digest, members.c.erased_at.is_(None))
        )
        found = list(conn.scalars(stmt))
        live = self._keys.live_owners(found)
        return [MemberId(m) for m in found if m in live]


@functools.lru_cache(maxsize=64)
def _read_plan(categories: frozenset[dm.Category]) -> tuple[tuple[dm.Field, ...], DriverRow]:
    """The fields of some categories and the one statement that reads them (key version, tombstone, the fields; built once per set)."""
    return _plan(tuple(f for f in _MEMBER_FIELDS if f.category in categories))


@functools.lru_cache(maxsize=64)
def _field_plan(name: str) -> tuple[tuple[dm.Field, ...], DriverRow]:
    """One field of ``members`` (``KeyError`` for another name) and the statement that reads it."""
    return _plan((dm.fields_by_name(dm.Table.members)[name],))


def _plan(wanted: tuple[dm.Field, ...]) -> tuple[tuple[dm.Field, ...], DriverRow]:
    stmt = select(members.c.key_version, members.c.erased_at, *(members.c[f.name] for f in wanted)).where(members.c.member_id == bindparam("member_id"))
    return wanted, DriverRow(stmt)


__all__ = ["BLIND_INDEX_ROOT", "MemberRepository", "MemberView"]
