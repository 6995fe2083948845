"""The authenticated caller: verified claims, as the edge and the audit log see them."""

from __future__ import annotations

from dataclasses import dataclass

from api.tokens import Claims
from audit.event import Actor
from vault.roles import CLINIC_ROLES, Role

ALL_CLINICS = "*"


@dataclass(frozen=True, slots=True)
class Caller:
    claims: Claims
    # The subject as audit records it: ``sub`` for the vault's own issuers, ``iss|sub`` for others (iss+sub is the identity).
    subject: str

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.claims.roles)

    @property
    def clinics(self) -> frozenset[str]:
        return frozenset(self.claims.clinics)

    @property
    def all_clinics(self) -> bool:
        return ALL_CLINICS in self.claims.clinics

    @property
    def is_staff(self) -> bool:
        return any(r in CLINIC_ROLES for r in self.claims.roles)

    @property
    def own_member_id(self) -> str | None:
        """The member a member token may reach (None for any other token)."""
        return self.claims.member_id if Role.member in self.claims.roles else None

    @property
    def actor(self) -> Actor:
        return Actor(subject=self.subject, roles=tuple(sorted(self.roles)), client_id=self.claims.client_id, acting_staff=self.claims.acting_staff)

    @property
    def key(self) -> str:
        """A stable, non-reassignable key for per-caller state (idempotency): iss and sub."""
        return f"{self.claims.issuer}\x00{self.claims.subject}"


__all__ = ["ALL_CLINICS", "Caller"]
