"""``vaultctl extract run``: one pseudonymized, k-anonymous extract for a registered consumer, written to a file.

``extract run --consumer ID --format ndjson|csv|parquet --out FILE [--k K] [--since EXTRACT_ID]``
runs the extract as the operator (``vault.extracts.runner``): the file is
written beside ``FILE`` under a temporary name (mode 0600) and moved into
place only once the extract's audit event is committed; its signed manifest
goes to ``FILE.manifest.jws``. The extract id is printed on standard output,
the counts on standard error. A request that cannot reach k within the
consumer's suppression cap is refused: exit status 1, nothing written.
``--since`` makes it incremental: only rows new or changed since the
consumer's extracts up to that one (same pseudonym epoch).
"""

from __future__ import annotations

import functools
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from api.authz import PolicyStore
from api.cli._common import fail, operator, progress, runtime
from api.runtime import open_runtime
from keys.signing import SigningPurpose
from policies import DEFAULT_DIRECTORY
from vault.consent import ConsentService, NoticeBook
from vault.data_requests.spool import spool_directory
from vault.errors import ConflictError, ValidationError
from vault.extracts.consumers import ConsumerRegistry
from vault.extracts.runner import ExtractAudit, ExtractRequest, ExtractRunner, ExtractSigning
from vault.extracts.source import ProfileSource
from vault.extracts.writers import ExtractFormat
from vault.ids import new_id

extract_app = typer.Typer(no_args_is_help=True, help="Pseudonymized, consent-gated, k-anonymous profile extracts.")


@extract_app.command("run")
def extract_run(
    consumer: Annotated[str, typer.Option("--consumer", help="The registered consumer (its client id).", show_default=False)],
    fmt: Annotated[ExtractFormat, typer.Option("--format", help="Output format.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="The file to write (not overwritten if it exists).", show_default=False)],
    k: Annotated[int | None, typer.Option("--k", min=2, max=1000, help="A k above the consumer's own.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Incremental: a done extract of this consumer and epoch; only rows new or changed since.", show_default=False)
    ] = None,
) -> None:
    """Run one extract for a consumer and write it to a file, with its signed manifest beside it."""
    if out.exists():
        fail(f"{out} exists; choose another --out")
    now = datetime.now(UTC)
    extract_id = new_id()
    part = out.with_name(f".{out.name}.{extract_id}.part")
    with runtime() as rt:
        registry = ConsumerRegistry()
        with rt.data_engine.begin() as conn:
            chosen = registry.get(conn, consumer)
            policy_hash = PolicyStore(rt.settings.policy_dir or DEFAULT_DIRECTORY).active(conn).policy.hash
        if fmt not in chosen.formats:
            fail(f"consumer {consumer} does not take {fmt.value}")
        consent = ConsentService(rt.members, NoticeBook(), grace=timedelta(days=rt.settings.consent_grace_days))
        source = ProfileSource(rt.keys, consent)
        # Past one range of members the first pass spreads over worker processes, each opening the vault as this one does.
        opener = functools.partial(open_runtime, rt.settings)
        runner = ExtractRunner(rt.data_engine, rt.keys, source, registry, spool_dir=spool_directory(rt.settings.data_dir / "exports"), opener=opener)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as sink, progress(terminal_only=True) as bar:
                task = bar.add_task(f"extract for {consumer}: members profiled", total=None)
                outcome = runner.run(
                    ExtractRequest(extract_id, chosen, fmt, k, since),
                    sink,
                    audit=ExtractAudit(operator(), f"vaultctl-{uuid.uuid4()}", policy_hash),
                    signing=ExtractSigning(rt.signing.current(SigningPurpose.certificates), rt.settings.issuer),
                    now=now,
                    progress=lambda n: bar.update(task, completed=n),
                )
        except (ValidationError, ConflictError) as exc:
            part.unlink(missing_ok=True)
            fail(f"extract refused: {exc}" if isinstance(exc, ConflictError) else "--since must name a done extract of this consumer")
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        if outcome.status != "done" or outcome.manifest is None or outcome.claims is None:
            part.unlink(missing_ok=True)
            fail(f"extract {extract_id} refused: k={max(chosen.k, k or 0)} cannot be met within the suppression cap; nothing released")
        os.replace(part, out)
        manifest = out.with_name(out.name + ".manifest.jws")
        manifest.write_text(outcome.manifest + "\n", encoding="ascii")
        manifest.chmod(0o600)
    typer.echo(extract_id)
    typer.echo(f"{outcome.rows} rows; {json.dumps(outcome.claims['anonymity'], ensure_ascii=False)}", err=True)


__all__ = ["extract_app"]
