"""``vaultctl clients …``: the service clients of the vault's token endpoint (``vault.clients``).

- ``clients add CLIENT_ID --role R [--role R]… [--clinic ID]…`` registers a
  client and prints its secret alone on standard output — the only time it
  is ever shown (a reminder goes to standard error). With ``--consumer
  --purpose P --attribute A…`` [``--health``] [``--k K``]
  [``--suppression-cap PERMILLE``] [``--format F``…] it also registers the
  client as an extract consumer (``vault.extracts.consumers``).
- ``clients list`` prints one line per client (id, roles, clinics, created,
  status), never a secret or its digest.
- ``clients revoke CLIENT_ID``: the client's tokens stop working at once.
- ``clients rotate-secret CLIENT_ID`` prints a new secret alone on standard
  output; the old one stops working.

Each change is journaled in the audit log as the operator's action
(``add_client``, ``revoke_client``, ``rotate_client_secret`` on resource
``client``), in the same transaction as the change.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

import typer
from sqlalchemy import Connection

from api.cli._common import fail, operator, runtime
from api.runtime import Runtime
from audit.event import AuditEvent, Decision, event_time
from audit.store import AuditJournal
from vault.clients import ROOT_KEY, Client, ClientRegistry
from vault.extracts.consumers import DEFAULT_K, DEFAULT_SUPPRESSION_CAP_PERMILLE, ConsumerRegistry
from vault.extracts.writers import ExtractFormat
from vault.storage.engine import write_transaction

clients_app = typer.Typer(no_args_is_help=True, help="Service clients of the token endpoint (client credentials).")

_SHOWN_ONCE = "the secret is shown only this once: store it now"
ClientIdArgument = Annotated[str, typer.Argument(help="The client id: 3 to 64 of a-z 0-9 . _ - (starting with a letter or digit).", show_default=False)]


@clients_app.command("add")
def clients_add(
    client_id: ClientIdArgument,
    roles: Annotated[list[str] | None, typer.Option("--role", help="A role of the client's tokens (repeat for several).", show_default=False)] = None,
    clinics: Annotated[
        list[str] | None, typer.Option("--clinic", help="A clinic id of the client's tokens, or * (repeat for several).", show_default=False)
    ] = None,
    consumer: Annotated[bool, typer.Option("--consumer", help="Also register the client as an extract consumer (needs --purpose and --attribute).")] = False,
    purpose: Annotated[str | None, typer.Option("--purpose", help="The consumer's purpose (a consent purpose, e.g. loyalty_profiling).")] = None,
    attributes: Annotated[
        list[str] | None, typer.Option("--attribute", help="A profile attribute the consumer may receive (repeat).", show_default=False)
    ] = None,
    health: Annotated[bool, typer.Option("--health", help="The consumer may receive health-derived attributes (health_data consent only).")] = False,
    k: Annotated[int, typer.Option("--k", min=2, max=1000, help="The consumer's k (each released class has at least k members).")] = DEFAULT_K,
    cap: Annotated[
        int, typer.Option("--suppression-cap", min=0, max=500, help="Rows that may be suppressed to reach k, per mille; beyond it an extract is refused.")
    ] = DEFAULT_SUPPRESSION_CAP_PERMILLE,
    formats: Annotated[list[ExtractFormat] | None, typer.Option("--format", help="An output format the consumer takes (repeat; default all).")] = None,
) -> None:
    """Register a client (with --consumer, also an extract consumer); print its secret (shown once)."""
    now = datetime.now(UTC)
    if consumer and (purpose is None or not attributes):
        fail("--consumer needs --purpose and at least one --attribute")
    with runtime() as rt, write_transaction(rt.data_engine) as conn:
        secret = _registry(rt).add(conn, client_id, roles or [], clinics or [], now)
        record_operator_action(conn, "add_client", "client", client_id, now)
        if consumer and purpose is not None:
            chosen = [f.value for f in formats] if formats else [f.value for f in ExtractFormat]
            ConsumerRegistry().register(
                conn, client_id, purpose=purpose, attributes=attributes or [], health=health, k=k, suppression_cap_permille=cap, formats=chosen, now=now
            )
            record_operator_action(conn, "add_consumer", "consumer", client_id, now)
    typer.echo(secret)
    typer.echo(_SHOWN_ONCE, err=True)


@clients_app.command("list")
def clients_list() -> None:
    """List the clients (never their secrets)."""
    with runtime() as rt, rt.data_engine.connect() as conn:
        listed = _registry(rt).list(conn)
    typer.echo("client_id\troles\tclinics\tcreated\tstatus")
    for client in listed:
        typer.echo(_line(client))


@clients_app.command("revoke")
def clients_revoke(client_id: ClientIdArgument) -> None:
    """Revoke a client: its tokens stop working at once."""
    now = datetime.now(UTC)
    with runtime() as rt, write_transaction(rt.data_engine) as conn:
        client = _registry(rt).revoke(conn, client_id, now)
        record_operator_action(conn, "revoke_client", "client", client_id, now)
    typer.echo(f"revoked client {client.client_id} at {event_time(client.revoked_at or now)}")


@clients_app.command("rotate-secret")
def clients_rotate_secret(client_id: ClientIdArgument) -> None:
    """Give a client a new secret (shown once); the old one stops working."""
    now = datetime.now(UTC)
    with runtime() as rt, write_transaction(rt.data_engine) as conn:
        secret = _registry(rt).rotate_secret(conn, client_id, now)
        record_operator_action(conn, "rotate_client_secret", "client", client_id, now)
    typer.echo(secret)
    typer.echo(_SHOWN_ONCE, err=True)


def record_operator_action(conn: Connection, action: str, resource_type: str, resource_id: str, now: datetime) -> None:
    """Journal an administrator's change (not a policy decision: the policy hash is ``none``) in the caller's transaction."""
    event = AuditEvent(
        time=event_time(now),
        request_id=f"vaultctl-{uuid.uuid4()}",
        actor=operator(),
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        member_id=None,
        fields=(),
        purpose=None,
        decision=Decision.ALLOW,
        reason_code="operator",
        policy_hash="none",
        outcome="ok",
    )
    AuditJournal().append(conn, event, now=now)


def _registry(rt: Runtime) -> ClientRegistry:
    return ClientRegistry(rt.keys.root_key(ROOT_KEY))


def _line(client: Client) -> str:
    status = "active" if client.revoked_at is None else f"revoked {event_time(client.revoked_at)}"
    roles = ",".join(r.value for r in client.roles) or "-"
    return f"{client.client_id}\t{roles}\t{','.join(client.clinics) or '-'}\t{event_time(client.created_at)}\t{status}"


__all__ = ["clients_app", "record_operator_action"]
