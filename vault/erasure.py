"""Crypto-shredding of one member, the orphan-key sweep, and retention expiry.

``erase`` runs ordered, idempotent steps, each committed before the next, so
an interrupted erasure resumes where it stopped and a crash never leaves a
member half-readable:

1. ``tombstoned``    the ``erasures`` row and ``members.erased_at`` are written
                     first: from here on no read or search returns the member;
2. ``scrubbed``      blind-index rows and field history are deleted and the
                     member row's ciphertexts cleared (defence in depth: the
                     key shredding below is what makes copies unreadable);
3. ``keys_shredded`` the member's data key is deleted from the key store, whose
                     WAL is then checkpointed; retention keys (``retention-YYYY``)
                     stay, so held treatment records remain readable through the
                     retention path only;
4. ``done``          the data database's WAL is checkpointed too.

A restored backup of the data database cannot bring the member back: its
ciphertexts need the shredded key, and a blind-index hit counts only while
the key is live.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import Connection, Engine, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from keys.member_keys import MemberKeys, retention_scope
from keys.models import MemberKeyRow
from vault import data_map as dm
from vault.errors import NotFoundError
from vault.storage.engine import write_transaction
from vault.storage.schema import blind_index, erasures, field_history, members, treatments

log = structlog.get_logger(__name__)
STEPS = ("tombstoned", "scrubbed", "keys_shredded", "done")
_ENCRYPTED_MEMBER_COLUMNS = {f.name: None for f in dm.fields_of(dm.Table.members) if f.encrypted}


@dataclass(frozen=True, slots=True)
class ErasureReport:
    member_id: str
    keys_shredded: int
    retained_scopes: tuple[str, ...]


class Eraser:
    def __init__(self, engine: Engine, keys: MemberKeys, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._engine = engine
        self._keys = keys
        self._now = now

    def erase(self, member_id: str) -> ErasureReport:
        self._tombstone(member_id)
        with write_transaction(self._engine) as conn:
            conn.execute(delete(blind_index).where(blind_index.c.member_id == member_id))
            conn.execute(delete(field_history).where(field_history.c.member_id == member_id))
            conn.execute(update(members).where(members.c.member_id == member_id).values(**_ENCRYPTED_MEMBER_COLUMNS))
            self._step(conn, member_id, "scrubbed")
        scopes = self._keys.scopes_of(member_id)
        doomed = [s for s in scopes if not s.startswith("retention-")]
        shredded = self._keys.shred(member_id, doomed) if doomed else 0
        with write_transaction(self._engine) as conn:
            self._step(conn, member_id, "keys_shredded")
        self._checkpoint()
        with write_transaction(self._engine) as conn:
            self._step(conn, member_id, "done", completed=True)
        log.info("member.erased", member_id=member_id, count=shredded)
        return ErasureReport(member_id, shredded, tuple(sorted(s for s in scopes if s.startswith("retention-"))))

    def pending(self) -> list[str]:
        """Erasures that started but did not finish (resume them with ``erase``)."""
        with self._engine.connect() as conn:
            return list(conn.scalars(select(erasures.c.member_id).where(erasures.c.step != "done")))

    def sweep_orphan_keys(self, *, older_than: timedelta = timedelta(hours=1), page: int = 1000) -> int:
        """Shred data keys that no member row refers to (a create that never committed)."""
        cutoff = self._now() - older_than
        shredded, after = 0, ""
        while owners := self._keys.owners(after=after, limit=page):
            after = owners[-1]
            with self._engine.connect() as conn:
                known = set(conn.scalars(select(members.c.member_id).where(members.c.member_id.in_(owners))))
            for owner in owners:
                if owner not in known and self._created_before(owner, cutoff):
                    shredded += self._keys.shred(owner, self._keys.scopes_of(owner))
        return shredded

    def expire_retention(self, today: datetime) -> int:
        """Shred retention keys whose year has ended and delete the records they protected."""
        with self._engine.connect() as conn:
            expired = list(
                conn.execute(
                    select(treatments.c.member_id, treatments.c.retention_year).where(treatments.c.retention_year < today.astimezone(UTC).year).distinct()
                )
            )
        for member_id, year in expired:
            self._keys.shred(member_id, [retention_scope(year)])
            with write_transaction(self._engine) as conn:
                conn.execute(delete(treatments).where(treatments.c.member_id == member_id, treatments.c.retention_year == year))
        return len(expired)

    def _created_before(self, owner: str, cutoff: datetime) -> bool:
        with self._keys.engine.connect() as conn:
            created = conn.scalar(select(MemberKeyRow.created_at).where(MemberKeyRow.owner_id == owner).limit(1))
        if created is None:
            return False
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return bool(created < cutoff)

    def _tombstone(self, member_id: str) -> None:
        with write_transaction(self._engine) as conn:
            if conn.execute(select(members.c.member_id).where(members.c.member_id == member_id)).first() is None:
                raise NotFoundError(f"no member {member_id}")
            now = self._now()
            insert_ignore = postgresql.insert if self._engine.dialect.name == "postgresql" else sqlite.insert
            conn.execute(insert_ignore(erasures).values(member_id=member_id, step="tombstoned", started_at=now).on_conflict_do_nothing())
            conn.execute(update(members).where(members.c.member_id == member_id, members.c.erased_at.is_(None)).values(erased_at=now))

    def _step(self, conn: Connection, member_id: str, step: str, *, completed: bool = False) -> None:
        values: dict[str, object] = {"step": step}
        if completed:
            values["completed_at"] = self._now()
        conn.execute(update(erasures).where(erasures.c.member_id == member_id).values(**values))

    def _checkpoint(self) -> None:
        if self._engine.dialect.name == "sqlite":
            with self._engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


__all__ = ["STEPS", "Eraser", "ErasureReport"]
