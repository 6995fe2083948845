"""One router per resource; each route parses, authorizes, calls the vault and shapes the reply.

``ALL`` lists the router modules the app mounts, in order. Each has a
``router`` and a ``SCHEMAS`` tuple: the pydantic models its routes name in
``openapi_extra`` (request bodies) that the OpenAPI schema must carry.
"""

from __future__ import annotations

from types import ModuleType

from api.routers import audit, break_glass, consents, extracts, health, keys, ledger, members, oauth, policies, purposes, requests, treatments

ALL: tuple[ModuleType, ...] = (health, members, oauth, audit, keys, policies, treatments, ledger, break_glass, purposes, consents, requests, extracts)

__all__ = ["ALL"]
