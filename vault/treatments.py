"""Treatment records, encrypted under the member's retention key for their expiry year.

A treatment's clinical fields are kept for ``MEDICAL_RETENTION_YEARS`` after
it was performed, erasure or not. So they are not encrypted under the
member's data key but under a per-member key for the year the retention ends
(scope ``retention-<YYYY>`` in the key store). Erasure shreds the data key and
leaves these; the retention job shreds a year's key when that year is over.
``clinic_id``, ``category`` and ``performed_at`` are plain for queries.

Two read paths: ``list_for_member`` is the normal one and refuses an erased
member; ``list_retained`` is the retention path (the restricted,
legal-claims read the policy layer grants only to the dpo).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Row, and_, insert, or_, select

from keys.member_keys import MemberKeys, retention_scope
from vault import data_map as dm
from vault.codec import open_sealed, to_columns
from vault.errors import MemberErasedError, NotFoundError
from vault.ids import TreatmentId, new_id
from vault.members.clinics import LinkVia, link
from vault.storage.schema import members, treatments
from vault.validation import validate_values

_FIELDS = dm.fields_of(dm.Table.treatments)


@dataclass(frozen=True, slots=True)
class Treatment:
    treatment_id: TreatmentId
    member_id: str
    retention_year: int
    values: dict[str, object]


def retention_year(performed_at: datetime) -> int:
    return performed_at.year + dm.MEDICAL_RETENTION_YEARS


class TreatmentRepository:
    def __init__(self, keys: MemberKeys, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._keys = keys
        self._now = now

    def add(self, conn: Connection, member_id: str, values: Mapping[str, object], *, treatment_id: TreatmentId | None = None) -> TreatmentId:
        if not self._is_live(conn, member_id):
            raise NotFoundError(f"no member {member_id}")
        clean = validate_values(dm.Table.treatments, values, partial=False)
        performed_at = clean["performed_at"]
        if not isinstance(performed_at, datetime):
            raise TypeError("validated performed_at is a datetime")
        year = retention_year(performed_at)
        cipher = self._keys.get_or_create(member_id, retention_scope(year))
        treatment_id = TreatmentId(new_id()) if treatment_id is None else treatment_id
        row = to_columns(cipher, _FIELDS, treatment_id, clean)
        now = self._now()
        conn.execute(insert(treatments).values(treatment_id=treatment_id, member_id=member_id, retention_year=year, created_at=now, **row))
        link(conn, member_id, str(clean["clinic_id"]), LinkVia.treatment, now)
        return treatment_id

    def list_for_member(self, conn: Connection, member_id: str) -> list[Treatment]:
        if not self._is_live(conn, member_id):
            raise MemberErasedError(f"member {member_id} is not readable")
        return self._decrypt_rows(member_id, self._rows(conn, member_id))

    def batches(self, conn: Connection, member_id: str, *, size: int) -> Iterator[list[Treatment]]:
        """The live member's treatments in ``list_for_member``'s order, read and decrypted ``size`` at a time."""
        if not self._is_live(conn, member_id):
            raise MemberErasedError(f"member {member_id} is not readable")
        stmt = select(treatments).where(treatments.c.member_id == member_id).order_by(treatments.c.performed_at, treatments.c.treatment_id).limit(size)
        page = list(conn.execute(stmt).all())
        while page:
            yield self._decrypt_rows(member_id, page)
            if len(page) < size:
                return
            last = page[-1]._mapping
            after = or_(
                treatments.c.performed_at > last["performed_at"],
                and_(treatments.c.performed_at == last["performed_at"], treatments.c.treatment_id > last["treatment_id"]),
            )
            page = list(conn.execute(stmt.where(after)).all())

    def list_retained(self, conn: Connection, member_id: str) -> list[Treatment]:
        """The retention path: treatments whose retention key is still live, erased member or not."""
        return self._decrypt_rows(member_id, self._rows(conn, member_id))

    def get(self, conn: Connection, treatment_id: str) -> Treatment:
        row = conn.execute(select(treatments).where(treatments.c.treatment_id == treatment_id)).first()
        if row is None:
            raise NotFoundError(f"no treatment {treatment_id}")
        if not self._is_live(conn, row.member_id):
            raise MemberErasedError(f"member {row.member_id} is not readable")
        return self._decrypt_rows(row.member_id, [row])[0]

    def _rows(self, conn: Connection, member_id: str) -> list[Row[tuple[object, ...]]]:
        stmt = select(treatments).where(treatments.c.member_id == member_id).order_by(treatments.c.performed_at, treatments.c.treatment_id)
        return list(conn.execute(stmt).all())

    def _decrypt_rows(self, member_id: str, rows: list[Row[tuple[object, ...]]]) -> list[Treatment]:
        if not rows:
            return []
        keyset = self._keys.load(member_id, scopes={retention_scope(int(r._mapping["retention_year"])) for r in rows})
        out = []
        for r in rows:
            m = r._mapping
            scope = retention_scope(int(m["retention_year"]))
            if (scope, 1) not in keyset.ciphers:
                continue
            cipher = keyset.get(scope, 1)
            tid = str(m["treatment_id"])
            values = {f.name: open_sealed(cipher, f, tid, m[f.name]) if f.encrypted else m[f.name] for f in _FIELDS}
            out.append(Treatment(TreatmentId(tid), member_id, int(m["retention_year"]), values))
        return out

    def _is_live(self, conn: Connection, member_id: str) -> bool:
        """Not tombstoned here, and the data key is live (a restored backup has no tombstone)."""
        row = conn.execute(select(members.c.erased_at).where(members.c.member_id == member_id)).first()
        return row is not None and row.erased_at is None and bool(self._keys.live_owners([member_id]))


__all__ = ["Treatment", "TreatmentRepository", "retention_year"]
