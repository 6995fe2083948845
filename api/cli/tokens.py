"""``vaultctl token`` and ``vaultctl revoke-token``: development tokens, and refusing a token by its ``jti``.

- ``token --role ROLE [--role ROLE]… --sub SUB [--clinic ID]… [--member-id ID] [--ttl S]``
  prints an access token of the development issuer (``member-vault-dev``,
  ``dev-jwt`` keys) alone on standard output. That issuer is trusted only
  outside production mode, and in production mode the command refuses to
  sign anything (no key is created either).
- ``revoke-token JTI --expires-at RFC3339`` records the token id in
  ``revoked_tokens``: the vault refuses the token from the next request on,
  whichever issuer signed it. The change is journaled as the operator's
  ``revoke_token`` on resource ``token``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from api.cli._common import fail, runtime, settings
from api.cli.clients import record_operator_action
from api.tokens import DEV_ISSUER, MAX_TTL, issue_token
from keys.signing import SigningPurpose
from vault.clients import revoke_token
from vault.roles import Role
from vault.storage.engine import write_transaction

_ROLE_NAMES = frozenset(r.value for r in Role)
_ROLES = ", ".join(r.value for r in Role)


def token_command(
    roles: Annotated[list[str], typer.Option("--role", help=f"A role of the token (repeat for several): {_ROLES}.", show_default=False)],
    subject: Annotated[str, typer.Option("--sub", help="The token's subject.", show_default=False)],
    clinics: Annotated[list[str] | None, typer.Option("--clinic", help="A clinic id, or * (repeat for several).", show_default=False)] = None,
    member_id: Annotated[str | None, typer.Option("--member-id", help="The one member a member token may reach.", show_default=False)] = None,
    ttl: Annotated[int, typer.Option("--ttl", min=1, max=int(MAX_TTL.total_seconds()), help="Lifetime in seconds.")] = 3600,
) -> None:
    """Print an access token of the development issuer (refused in production mode)."""
    if settings().is_production:
        fail("the development issuer is refused in production mode")
    if not set(roles) <= _ROLE_NAMES:
        fail(f"--role must be one of: {_ROLES}")
    with runtime() as rt:
        key = rt.signing.current(SigningPurpose.dev_jwt)
        try:
            signed, _ = issue_token(
                key,
                issuer=DEV_ISSUER,
                audience=rt.settings.audience,
                subject=subject,
                roles=list(dict.fromkeys(roles)),
                ttl=timedelta(seconds=ttl),
                now=datetime.now(UTC),
                clinics=list(dict.fromkeys(clinics or [])),
                member_id=member_id,
            )
        except ValueError as exc:
            fail(str(exc))
    typer.echo(signed)


def revoke_token_command(
    token_id: Annotated[str, typer.Argument(metavar="JTI", help="The token's jti.", show_default=False)],
    expires_at: Annotated[str, typer.Option("--expires-at", help="The token's expiry (RFC 3339, e.g. 2026-11-22T16:00:00Z).", show_default=False)],
) -> None:
    """Refuse one access token by its jti, from the next request on."""
    try:
        expires = datetime.fromisoformat(expires_at)
    except ValueError:
        expires = None
    if expires is None or expires.tzinfo is None:
        fail("--expires-at must be an RFC 3339 time with a zone, e.g. 2026-11-22T16:00:00Z")
    now = datetime.now(UTC)
    with runtime() as rt, write_transaction(rt.data_engine) as conn:
        fresh = revoke_token(conn, token_id, expires, now)
        if fresh:
            record_operator_action(conn, "revoke_token", "token", token_id, now)
    typer.echo("revoked the token" if fresh else "the token was already revoked")


__all__ = ["revoke_token_command", "token_command"]
