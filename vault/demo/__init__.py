"""Synthetic demo data (development only; refused in production by vaultctl)."""

from vault.demo.seed import SeedReport, seed_members

__all__ = ["SeedReport", "seed_members"]
