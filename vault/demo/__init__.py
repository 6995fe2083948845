"""Synthetic demo data (development only; refused in production by vaultctl)."""

from vault.demo.consents import ConsentSeedReport, seed_consents
from vault.demo.seed import SeedReport, SeedTarget, seed_members, seed_members_parallel

__all__ = ["ConsentSeedReport", "SeedReport", "SeedTarget", "seed_consents", "seed_members", "seed_members_parallel"]
