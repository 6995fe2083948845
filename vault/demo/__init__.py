"""Synthetic demo data (development only; refused in production by vaultctl)."""

from vault.demo.consents import DEMO_CHANNELS, ConsentSeedReport, seed_consents
from vault.demo.consumers import DEMO_CONSUMERS, seed_consumers
from vault.demo.seed import SeedReport, SeedWorkerError, seed_members, seed_members_parallel

__all__ = [
    "DEMO_CHANNELS",
    "DEMO_CONSUMERS",
    "ConsentSeedReport",
    "SeedReport",
    "SeedWorkerError",
    "seed_consents",
    "seed_consumers",
    "seed_members",
    "seed_members_parallel",
]
