"""Clinic links: which clinic domains a member belongs to.

A member is linked to a clinic by the home clinic (at creation, and when the
home clinic changes), by a treatment performed there, and by a front-desk
check-in that presented the member's card number. Links are only added, never
removed here (erasure removes the member's rows). Staff reach a member only
through a link to one of their clinics — the access decision's ``clinic``
domain — and search answers only within the caller's clinics.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, select

from vault.storage.schema import member_clinics
from vault.storage.upsert import insert_ignore


class LinkVia(StrEnum):
    home = "home"
    treatment = "treatment"
    check_in = "check_in"


def link(conn: Connection, member_id: str, clinic_id: str, via: LinkVia, now: datetime) -> bool:
    """Link ``member_id`` to ``clinic_id``; False if it already was (the first link's ``via`` stays)."""
    statement = insert_ignore(conn, member_clinics).values(member_id=member_id, clinic_id=clinic_id, via=via.value, linked_at=now)
    # psycopg reports -1 for an INSERT's rowcount unless SQLAlchemy is asked to keep it.
    result = conn.execute(statement, execution_options={"preserve_rowcount": True})
    return result.rowcount == 1


def is_linked(conn: Connection, member_id: str, clinic_ids: Collection[str]) -> bool:
    if not clinic_ids:
        return False
    stmt = select(member_clinics.c.clinic_id).where(member_clinics.c.member_id == member_id, member_clinics.c.clinic_id.in_(list(clinic_ids))).limit(1)
    return conn.execute(stmt).first() is not None


def linked_members(conn: Connection, member_ids: Collection[str], clinic_ids: Collection[str]) -> set[str]:
    """Those of ``member_ids`` linked to at least one of ``clinic_ids``."""
    if not member_ids or not clinic_ids:
        return set()
    stmt = select(member_clinics.c.member_id).where(member_clinics.c.member_id.in_(list(member_ids)), member_clinics.c.clinic_id.in_(list(clinic_ids)))
    return set(conn.scalars(stmt))


__all__ = ["LinkVia", "is_linked", "link", "linked_members"]
