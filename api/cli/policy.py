"""``vaultctl policy explain``: a decision of the active policy and the lines behind it."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from api.authz import PolicyStore
from api.cli._common import fail, runtime
from policies import DEFAULT_DIRECTORY, PolicyError

policy_app = typer.Typer(no_args_is_help=True, help="Access-control policy.")


@policy_app.command("explain")
def explain(
    sub: Annotated[str, typer.Argument(help="The caller's roles, comma-separated (e.g. practitioner or dpo,vault_admin).")],
    domain: Annotated[str, typer.Argument(help="self, clinic, break_glass or none.")],
    obj: Annotated[str, typer.Argument(metavar="OBJECT", help="resource:category, e.g. member:health.")],
    action: Annotated[str, typer.Argument(help="read or write.")],
    purpose: Annotated[str, typer.Argument(help="A purpose id, or - for routes without one.")],
) -> None:
    """Decide one request with the active policy version and print the matching policy lines."""
    roles = [r.strip() for r in sub.split(",") if r.strip()]
    if not roles:
        fail("give at least one role")
    with runtime() as rt:
        store = PolicyStore(rt.settings.policy_dir or DEFAULT_DIRECTORY)
        try:
            with rt.data_engine.begin() as conn:
                active = store.active(conn)
        except (SQLAlchemyError, PolicyError) as exc:
            fail(f"cannot load the active policy ({exc.__class__.__name__})")
    explanation = active.policy.explain(roles, domain, obj, action, purpose)
    verdict = "allow" if explanation.allowed else "deny"
    typer.echo(f"{verdict} ({explanation.reason.value}) by policy version {active.version} {active.policy.hash}")
    for line in explanation.lines:
        typer.echo(f"  {line}")


__all__ = ["policy_app"]
