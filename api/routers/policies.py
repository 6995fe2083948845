"""Policy reload (vault_admin): validate the policy directory and make it the active version.

* The request journals exactly one event (action ``reload``, resource
  ``policy``), decided under the version active before the reload; events of
  later requests carry the new policy hash.
* The active version lives in the database (``api.authz.PolicyStore``): the
  next request of every process, in any worker, is decided by it.
* Refused files (``PolicyValidationError``) change nothing and answer 422
  with the loader's message, which names the file or line: policy files are
  configuration, not personal data.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from fastapi.responses import Response
from sqlalchemy import Connection

from api import problems as p
from api.authz import ActivePolicy
from api.decisions import operation_access
from api.deps import CallerDep, NowDep, RequestIdDep, ServicesDep
from api.offload import offloaded
from api.responses import json_response, refuse
from api.schemas.keys import PolicyReloaded
from api.services import Services
from policies import PolicyValidationError
from vault.access import Refusal, Target
from vault.errors import ValidationError

router = APIRouter(prefix="/v1/policies", tags=["operations"])


@router.post(
    "/reload",
    summary="Reload and validate the policy files; every process picks the new version up on its next request",
    response_model=None,
    responses={200: {"model": PolicyReloaded}, **p.openapi_responses(p.UNAUTHORIZED, p.FORBIDDEN, p.INVALID, p.UNAVAILABLE)},
)
@offloaded
def reload_policies(caller: CallerDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep) -> Response:
    with services.unit() as conn:
        access, allowed = operation_access(services, conn, caller, "policies:reload", "write", request_id=request_id, now=now)
        result = services.gatekeeper.perform(conn, access, Target("reload", "policy"), allowed, lambda: _reload(services, conn, caller.subject, now))
    if isinstance(result, Refusal):
        cause = None if result.error is None else result.error.__cause__
        if isinstance(cause, PolicyValidationError):
            raise p.ProblemError(p.INVALID, f"the policy files are refused: {cause}", errors={"policy": "invalid"})
        refuse(result, access)
    active, changed = result
    return json_response({"version": active.version, "policy_hash": active.policy.hash, "changed": changed})


def _reload(services: Services, conn: Connection, subject: str, now: datetime) -> tuple[ActivePolicy, bool]:
    try:
        return services.policies.reload(conn, activated_by=subject, now=now)
    except PolicyValidationError as exc:
        raise ValidationError({"policy": "invalid"}) from exc


SCHEMAS = (PolicyReloaded,)

__all__ = ["SCHEMAS", "router"]
