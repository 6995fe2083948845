"""``vaultctl``: the vault's command line (Typer).

Exit status 0 on success; otherwise non-zero with a one-line reason on
standard error. Long work shows a progress bar on standard error.
"""

from __future__ import annotations

import functools
import os
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

import structlog
import typer
import uvicorn
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from api.cli._common import fail as _fail
from api.cli._common import progress as _progress
from api.cli._common import runtime as _runtime
from api.cli._common import settings as _settings
from api.cli.audit import audit_app
from api.cli.clients import clients_app, record_operator_action
from api.cli.demo_tokens import write_demo_tokens
from api.cli.extracts import extract_app
from api.cli.policy import policy_app
from api.cli.tokens import revoke_token_command, token_command
from api.runtime import init_vault, open_runtime
from keys.errors import KeysError
from keys.rotation import rotate_kek
from vault.clients import ROOT_KEY as CLIENT_SECRETS_ROOT
from vault.clients import ClientRegistry
from vault.consent import ConsentService, ConsentState, NoticeBook
from vault.demo import DEMO_CHANNELS, ConsentSeedReport, SeedWorkerError, seed_consents, seed_consumers, seed_members_parallel
from vault.errors import VaultError
from vault.extracts.consumers import ConsumerRegistry
from vault.storage.engine import write_transaction
from vault.storage.schema import members

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Member Vault administration.")
demo_app = typer.Typer(no_args_is_help=True, help="Synthetic demo data (development only).")
keys_app = typer.Typer(no_args_is_help=True, help="Key management.")
app.add_typer(demo_app, name="demo")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(clients_app, name="clients")
app.add_typer(policy_app, name="policy")
app.add_typer(extract_app, name="extract")


log = structlog.get_logger("vaultctl")


@app.callback()
def _private_files() -> None:
    """Everything vaultctl creates (databases, keyring, exports) is readable by its owner only."""
    os.umask(0o077)


class KeyKind(StrEnum):
    kek = "kek"
    pseudonym = "pseudonym"


@app.command()
def init() -> None:
    """Create the data directory and keyring, and migrate both databases (idempotent)."""
    settings = _settings()
    try:
        for line in init_vault(settings):
            typer.echo(line)
    except (KeysError, VaultError) as exc:
        _fail(str(exc))
    except SQLAlchemyError as exc:
        _fail(f"database unavailable ({exc.__class__.__name__})")
    except OSError as exc:
        _fail(f"cannot prepare the data directory {settings.data_dir}: {exc.strerror}")
    typer.echo(f"vault ready in {settings.data_dir}")


@demo_app.command("seed")
def demo_seed(
    members_: Annotated[int, typer.Option("--members", min=1, max=10_000_000, help="How many members to create.")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the deterministic generator.")] = 1,
    if_empty: Annotated[bool, typer.Option("--if-empty", help="Do nothing if the vault already has members.")] = False,
    workers: Annotated[int, typer.Option("--workers", min=0, max=32, help="Processes seeding members, this one included; 0: one per CPU, at most 4.")] = 0,
) -> None:
    """Create synthetic members with treatments, card-ledger entries and consent histories.

    Standard output carries only the members line; the consent counts go to
    standard error with the progress bars.
    """
    if _settings().is_production:
        _fail("demo data is refused in production mode")
    with _runtime() as rt:
        if if_empty:
            with rt.data_engine.connect() as conn:
                if conn.scalar(select(func.count()).select_from(members)):
                    typer.echo("vault already has members; not seeding")
                    return
        now = datetime.now(UTC)
        consent = ConsentService(rt.members, NoticeBook(), grace=timedelta(days=rt.settings.consent_grace_days))
        with _progress() as bar:
            task = bar.add_task("seeding members", total=members_)
            try:
                report = seed_members_parallel(
                    functools.partial(open_runtime, rt.settings),
                    count=members_,
                    seed=seed,
                    now=now,
                    workers=workers or min(4, os.cpu_count() or 1),
                    progress=lambda n: bar.update(task, completed=n),
                )
            except SeedWorkerError as exc:
                _fail(f"seeding failed: {exc}")  # the worker's error class only, never a value
            consent_task = bar.add_task("seeding consents", total=report.members)
            consents = seed_consents(
                rt.data_engine, consent, rt.members, report.member_ids, seed=seed, now=now, progress=lambda n: bar.update(consent_task, completed=n)
            )
        with write_transaction(rt.data_engine) as conn:
            added = seed_consumers(conn, ClientRegistry(rt.keys.root_key(CLIENT_SECRETS_ROOT)), ConsumerRegistry(), now=now)
            for consumer_id in added:
                record_operator_action(conn, "add_consumer", "consumer", consumer_id, now)
        log.info("demo.seeded", count=report.members)
        typer.echo(_consent_counts(consents), err=True)
        if added:
            typer.echo(f"registered extract consumers: {', '.join(added)}", err=True)
        typer.echo(f"seeded {report.members} members, {report.treatments} treatments, {report.ledger_entries} ledger entries")


def _consent_counts(report: ConsentSeedReport) -> str:
    channels = ", ".join(f"{report.channels.get(c, 0)} {c.value}" for c in DEMO_CHANNELS)
    states = ", ".join(
        f"{sum(n for (_, s), n in report.states.items() if s is state)} {state.value}" for state in ConsentState if state is not ConsentState.none
    )
    published = f"; published {report.published.purpose.value} notice version {report.published.version} (material)" if report.published else ""
    return f"seeded {report.events} consent events ({channels}; {report.withdrawals} withdrawals); consents now {states}{published}"


@demo_app.command("tokens")
def demo_tokens(
    clinic: Annotated[str, typer.Option("--clinic", help="The clinic of the staff tokens.")] = "sh-001",
    ttl: Annotated[int, typer.Option("--ttl", min=60, max=3600, help="Lifetime in seconds (at most the 1 h cap).")] = 3600,
) -> None:
    """Write a development-issuer token for every role to tokens/ROLE.jwt (mode 600); the member token is the first member's."""
    settings = _settings()
    if settings.is_production:
        _fail("the development issuer is refused in production mode")
    with _runtime() as rt:
        with rt.data_engine.connect() as conn:
            first = conn.scalar(select(members.c.member_id).where(members.c.home_clinic_id == clinic).order_by(members.c.member_id).limit(1))
        written = write_demo_tokens(rt, settings.data_dir / "tokens", clinic=clinic, member_id=first, ttl=timedelta(seconds=ttl), now=datetime.now(UTC))
    for path in written:
        typer.echo(str(path))


@keys_app.command("rotate")
def keys_rotate(
    kind: Annotated[KeyKind, typer.Option("--kind", help="Which key to rotate.")],
    batch: Annotated[int, typer.Option("--batch", min=1, max=100_000, help="Keys re-wrapped per transaction.")] = 5000,
    consumer: Annotated[str | None, typer.Option("--consumer", help="The extract consumer whose pseudonym key rotates (--kind pseudonym).")] = None,
) -> None:
    """Rotate the KEK (add a version, re-wrap every stored key online, retire unreferenced versions), or a consumer's pseudonym key.

    An interrupted KEK rotation is resumed by running the command again. A
    pseudonym rotation starts the consumer's next epoch: new pseudonyms, and a
    generalization fixed afresh by the epoch's first extract.
    """
    if kind is KeyKind.pseudonym:
        if consumer is None:
            _fail("--kind pseudonym needs --consumer")
        now = datetime.now(UTC)
        with _runtime() as rt, write_transaction(rt.data_engine) as conn:
            epoch = ConsumerRegistry().rotate_epoch(conn, consumer, now)
            record_operator_action(conn, "rotate_pseudonym_key", "consumer", consumer, now)
        typer.echo(f"consumer {consumer}: pseudonym epoch {epoch.epoch} started")
        return
    if consumer is not None:
        _fail("--consumer applies to --kind pseudonym only")
    with _runtime() as rt, _progress() as bar:
        task = bar.add_task(f"re-wrapping under a new {kind.value}", total=None)
        report = rotate_kek(rt.keys, batch=batch, progress=lambda done, total: bar.update(task, completed=done, total=total))
    log.info("kek.rotated", kek_version=report.kek_version, count=report.rewrapped, retired=list(report.retired))
    action = "rotated to" if report.started_new_version else "resumed rotation to"
    retired = ", ".join(str(v) for v in report.retired) or "none"
    typer.echo(f"{action} KEK version {report.kek_version}; re-wrapped {report.rewrapped} keys; retired versions: {retired}")


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Worker processes.")] = 1,
) -> None:
    """Serve the HTTP API with uvicorn (access log without query strings)."""
    uvicorn.run("api.app:app_from_environment", factory=True, host=host, port=port, workers=workers, access_log=False, server_header=False)


app.command("token")(token_command)
app.command("revoke-token")(revoke_token_command)


def main() -> None:
    app(prog_name="vaultctl")


if __name__ == "__main__":
    main()
