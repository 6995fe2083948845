"""Synthetic demo data (development only; refused in production by vaultctl)."""

from vault.demo.seed import SeedReport, SeedTarget, seed_members, seed_members_parallel

__all__ = ["SeedReport", "SeedTarget", "seed_members", "seed_members_parallel"]
