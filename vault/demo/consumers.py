"""The demo's two extract consumers, both for ``loyalty_profiling``: ``loyalty-app`` and ``marketing-analytics``.

``seed_consumers`` registers each as a service client and a consumer unless it
exists already (a re-run changes nothing). Their client secrets are not kept:
``vaultctl clients rotate-secret ID`` issues one when a demo needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection, select

from vault.purposes import Purpose
from vault.roles import Role
from vault.storage.schema import consumers

if TYPE_CHECKING:  # annotations only: the extracts' writers import pyarrow, which a seeding worker process need not load
    from vault.clients import ClientRegistry
    from vault.extracts.consumers import ConsumerRegistry


@dataclass(frozen=True, slots=True)
class DemoConsumer:
    consumer_id: str
    role: Role
    attributes: tuple[str, ...]
    health: bool
    k: int


STATIC = ("gender", "age_band", "region", "income_band", "education", "member_since")
CONSUMPTION = ("tier", "spend_band", "balance_band", "visit_frequency", "recency", "top_categories", "rfm")
DEMO_CONSUMERS = (
    DemoConsumer("loyalty-app", Role.loyalty_service, (*STATIC[:3], *CONSUMPTION, "preferred_categories", "interest_tags"), health=False, k=5),
    DemoConsumer(
        "marketing-analytics",
        Role.loyalty_service,  # an analytics tool reading loyalty profiles: the role the default policy gives extracts
        (*STATIC, "tier", "spend_band", "interest_tags", "preferred_channel", "skin_type", "has_allergies"),
        health=True,
        k=10,
    ),
)


def seed_consumers(conn: Connection, clients: ClientRegistry, registry: ConsumerRegistry, *, now: datetime) -> list[str]:
    """Register the demo consumers that do not exist yet; their ids."""
    added = []
    for demo in DEMO_CONSUMERS:
        if conn.execute(select(consumers.c.consumer_id).where(consumers.c.consumer_id == demo.consumer_id)).first() is not None:
            continue
        clients.add(conn, demo.consumer_id, [demo.role.value], [], now)
        registry.register(conn, demo.consumer_id, purpose=Purpose.loyalty_profiling.value, attributes=demo.attributes, health=demo.health, k=demo.k, now=now)
        added.append(demo.consumer_id)
    return added


__all__ = ["DEMO_CONSUMERS", "DemoConsumer", "seed_consumers"]
