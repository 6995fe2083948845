"""The caller roles of DESIGN.md's access-control table: the one list.

Policies, the edge's validation of policy files, token handling and the
tests read this enum; no other module spells a role.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    member = "member"
    front_desk = "front_desk"
    practitioner = "practitioner"
    clinic_manager = "clinic_manager"
    loyalty_service = "loyalty_service"
    marketing_service = "marketing_service"
    compliance_officer = "compliance_officer"
    dpo = "dpo"
    vault_admin = "vault_admin"


# Staff roles work inside clinic domains (the token's ``clinics`` claim).
CLINIC_ROLES = frozenset({Role.front_desk, Role.practitioner, Role.clinic_manager})

__all__ = ["CLINIC_ROLES", "Role"]
