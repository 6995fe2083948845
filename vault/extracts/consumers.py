"""Registered downstream consumers of extracts, and their pseudonym epochs.

A consumer is a service client (``clients``) registered for one purpose that
needs consent (``loyalty_profiling``, …), with the profile attributes it may
receive, whether it may receive health-derived attributes (only ever for
members with ``health_data`` consent), its k, its suppression cap (per mille
of the rows) and its output formats. Its tokens' subject is its id.

Each consumer has pseudonym epochs numbered from 1. A member's pseudonym is
keyed per (consumer, epoch) (``vault.extracts.pseudonyms``), so two consumers
cannot join their extracts, and a new epoch (``rotate_epoch``) unlinks the
consumer's past extracts from its future ones. The first extract of an epoch
fixes the epoch's generalization (one level per quasi-identifier); later
extracts of the epoch reuse it, so incremental extracts cannot be intersected
to single members out.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from vault.errors import ConflictError, NotFoundError, ValidationError
from vault.extracts import profile
from vault.extracts.writers import ExtractFormat
from vault.purposes import Purpose
from vault.storage.schema import clients, consumers, pseudonym_epochs

DEFAULT_K = 5
DEFAULT_SUPPRESSION_CAP_PERMILLE = 50  # 5 % of the rows
ALL_FORMATS = tuple(f.value for f in ExtractFormat)


@dataclass(frozen=True, slots=True)
class Consumer:
    consumer_id: str
    purpose: Purpose
    attributes: tuple[str, ...]  # in the catalog's order
    health: bool
    k: int
    suppression_cap_permille: int
    formats: tuple[ExtractFormat, ...]


@dataclass(frozen=True, slots=True)
class Epoch:
    consumer_id: str
    epoch: int
    started_at: datetime
    generalization: dict[str, str] | None  # attribute -> level name, once the epoch's first extract fixed it


def _checked(
    *, purpose: str, attributes: Collection[str], health: bool, k: int, cap: int, formats: Collection[str]
) -> tuple[Purpose, tuple[str, ...], tuple[ExtractFormat, ...]]:
    problems: dict[str, str] = {}
    chosen: Purpose | None = None
    try:
        chosen = Purpose(purpose)
    except ValueError:
        problems["purpose"] = "unknown"
    if chosen is not None and not chosen.needs_consent:
        problems["purpose"] = "not_a_consent_purpose"
    known = {a.name: a for a in profile.ATTRIBUTES}
    unknown = sorted(set(attributes) - set(known))
    if unknown or not attributes:
        problems["attributes"] = "unknown" if unknown else "required"
    if not health and any(known[a].health_derived for a in attributes if a in known):
        problems["attributes"] = "health_derived_needs_health"
    if not 2 <= k <= 1000:
        problems["k"] = "out_of_range"
    if not 0 <= cap <= 500:
        problems["suppression_cap_permille"] = "out_of_range"
    bad_formats = sorted(set(formats) - {f.value for f in ExtractFormat})
    if bad_formats or not formats:
        problems["formats"] = "unknown" if bad_formats else "required"
    if problems or chosen is None:
        raise ValidationError(problems)
    ordered = tuple(a.name for a in profile.ATTRIBUTES if a.name in set(attributes))
    return chosen, ordered, tuple(f for f in ExtractFormat if f.value in set(formats))


class ConsumerRegistry:
    def register(
        self,
        conn: Connection,
        consumer_id: str,
        *,
        purpose: str,
        attributes: Collection[str],
        health: bool,
        k: int = DEFAULT_K,
        suppression_cap_permille: int = DEFAULT_SUPPRESSION_CAP_PERMILLE,
        formats: Collection[str] = ALL_FORMATS,
        now: datetime,
    ) -> Consumer:
        """Register the service client ``consumer_id`` as a consumer, with pseudonym epoch 1."""
        chosen, ordered, kinds = _checked(purpose=purpose, attributes=attributes, health=health, k=k, cap=suppression_cap_permille, formats=formats)
        if conn.execute(select(clients.c.client_id).where(clients.c.client_id == consumer_id)).first() is None:
            raise NotFoundError(f"no client {consumer_id}")
        if conn.execute(select(consumers.c.consumer_id).where(consumers.c.consumer_id == consumer_id)).first() is not None:
            raise ConflictError(f"client {consumer_id} is already a consumer")
        conn.execute(
            insert(consumers).values(
                consumer_id=consumer_id,
                purpose=chosen.value,
                attributes=json.dumps(list(ordered)),
                health=health,
                k=k,
                suppression_cap_permille=suppression_cap_permille,
                formats=json.dumps([f.value for f in kinds]),
                created_at=now,
            )
        )
        conn.execute(insert(pseudonym_epochs).values(consumer_id=consumer_id, epoch=1, started_at=now, generalization=None))
        return Consumer(consumer_id, chosen, ordered, health, k, suppression_cap_permille, kinds)

    def get(self, conn: Connection, consumer_id: str) -> Consumer:
        row = conn.execute(select(consumers).where(consumers.c.consumer_id == consumer_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"no consumer {consumer_id}")
        return Consumer(
            consumer_id=str(row["consumer_id"]),
            purpose=Purpose(row["purpose"]),
            attributes=tuple(json.loads(row["attributes"])),
            health=bool(row["health"]),
            k=int(row["k"]),
            suppression_cap_permille=int(row["suppression_cap_permille"]),
            formats=tuple(ExtractFormat(f) for f in json.loads(row["formats"])),
        )

    def epoch(self, conn: Connection, consumer_id: str) -> Epoch:
        """The consumer's current (latest) epoch."""
        row = (
            conn.execute(select(pseudonym_epochs).where(pseudonym_epochs.c.consumer_id == consumer_id).order_by(pseudonym_epochs.c.epoch.desc()).limit(1))
            .mappings()
            .first()
        )
        if row is None:
            raise NotFoundError(f"no consumer {consumer_id}")
        fixed = row["generalization"]
        return Epoch(consumer_id, int(row["epoch"]), row["started_at"], None if fixed is None else dict(json.loads(fixed)))

    def rotate_epoch(self, conn: Connection, consumer_id: str, now: datetime) -> Epoch:
        """Start the consumer's next pseudonym epoch (a new key, a generalization to be fixed afresh)."""
        current = self.epoch(conn, consumer_id)
        conn.execute(insert(pseudonym_epochs).values(consumer_id=consumer_id, epoch=current.epoch + 1, started_at=now, generalization=None))
        return Epoch(consumer_id, current.epoch + 1, now, None)

    def fix_generalization(self, conn: Connection, consumer_id: str, epoch: int, generalization: Mapping[str, str]) -> None:
        """Fix the epoch's generalization (its first extract); a second, different one is a conflict."""
        t = pseudonym_epochs
        done = conn.execute(
            update(t)
            .where(t.c.consumer_id == consumer_id, t.c.epoch == epoch, t.c.generalization.is_(None))
            .values(generalization=json.dumps(dict(generalization), sort_keys=True))
        )
        if done.rowcount == 1:
            return
        stored = conn.execute(select(t.c.generalization).where(t.c.consumer_id == consumer_id, t.c.epoch == epoch)).scalar_one_or_none()
        if stored is None or json.loads(stored) != dict(generalization):
            raise ConflictError("this epoch's generalization is already fixed")


__all__ = ["DEFAULT_K", "DEFAULT_SUPPRESSION_CAP_PERMILLE", "Consumer", "ConsumerRegistry", "Epoch"]
