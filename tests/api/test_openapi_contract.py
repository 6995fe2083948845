"""The OpenAPI schema is the contract: every route is in it, and the app answers by it.

schemathesis generates requests from ``/openapi.json`` (bounded examples)
and sends each with several identities — two members, clinic staff, the
dpo, a compliance officer, an administrator — so cross-member and
cross-role answers are exercised too. Checks: no 5xx, status codes,
content types, headers and bodies as documented.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.routing import Route

from api import routers
from api.app import create_app
from api.settings import Settings
from tests.api.conftest import Vault

# A schema-valid value can still be refused with 422: an ID-number checksum, an E.164 number or a date
# against a document number are rules JSON Schema cannot state. Every other check stays on.
EXCLUDED = [positive_data_acceptance]
EXAMPLES = 12  # per operation and identity: bounded, so the suite stays fast
PUBLIC_DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect"}


@pytest.mark.parametrize("backend", ["sqlite"])
def test_every_route_is_documented_and_every_documented_route_exists(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(), audit_pump=False)
    mounted = [route for module in routers.ALL for route in module.router.routes]
    routes = {(route.path_format, method) for route in mounted if isinstance(route, APIRoute) for method in route.methods}
    documented = {(path, method.upper()) for path, item in app.openapi()["paths"].items() for method in item}
    assert routes == documented
    assert all(isinstance(route, APIRoute) for route in mounted)
    assert {r.path for r in app.routes if isinstance(r, Route)} == PUBLIC_DOCS


@pytest.mark.parametrize("backend", ["sqlite"])
def test_every_enum_of_the_data_map_is_in_the_schema(make_settings: Callable[..., Settings]) -> None:
    from vault import value_sets as vs  # noqa: PLC0415

    components = create_app(make_settings(), audit_pump=False).openapi()["components"]["schemas"]
    for value_set in (
        vs.Tier,
        vs.MemberStatus,
        vs.IdType,
        vs.Gender,
        vs.Channel,
        vs.Education,
        vs.IncomeBand,
        vs.MaritalStatus,
        vs.SkinType,
        vs.PregnancyStatus,
    ):
        assert components[value_set.__name__]["enum"] == [v.value for v in value_set]


def _identities(vault: Vault) -> list[dict[str, str]]:
    a, b = vault.members[0], vault.members[1]
    return [
        vault.headers(vault.token("member", subject="member-a", member_id=a.member_id), "self_service"),
        vault.headers(vault.token("member", subject="member-b", member_id=b.member_id), "self_service"),
        vault.headers(vault.token("front_desk", subject="fd", clinics=[a.home_clinic_id]), "care"),
        vault.headers(vault.token("practitioner", subject="pr", clinics=[b.home_clinic_id]), "care"),
        vault.headers(vault.token("dpo", subject="dpo", clinics=["*"]), "legal_claims"),
        vault.headers(vault.token("compliance_officer", subject="co")),
        vault.headers(vault.token("vault_admin", subject="admin")),
    ]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_app_answers_by_its_schema_for_every_role(vault: Vault) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", vault.client.app)
    identities = _identities(vault)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
        def answers_by_schema(case: schemathesis.Case) -> None:
            for headers in identities:
                case.call_and_validate(headers={**(case.headers or {}), **headers}, excluded_checks=EXCLUDED)

        answers_by_schema()
