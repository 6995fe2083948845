"""``vaultctl audit …``: the audit log's keys, checkpoints, export and verification.

- ``audit keys`` prints the C2SP verifier key string
  (``<origin>+<key id>+<base64(0x01 ‖ public key)>``) of every audit signing key
  a verifier should accept now — the current key first, then the older keys
  still in their rotation overlap — one per line, and nothing else on standard
  output. The first audit key is created if there is none yet.
- ``audit checkpoint`` sequences every waiting journal entry, then signs,
  stores and publishes a checkpoint (``audit.checkpoints``) and prints the
  signed note. It refuses, with the reason, to sign a checkpoint the database
  does not extend; ``--accept-restore`` is the operator's audited resolution
  (SECURITY.md, "Resolving a checkpoint conflict").
- ``audit export --out FILE [--from N] [--to M]`` writes the NDJSON export of
  leaves ``[N, M)`` (default: the whole tree), one API.md line each.
- ``audit verify`` checks the live database against every stored checkpoint and
  the published one; ``audit verify --export FILE --checkpoint FILE …
  --verifier-key KEY …`` checks an export offline and never reads the settings,
  the database or the keys (``audit.verify.verify_export_file``: a large
  export is checked in byte ranges by one worker process per CPU). Either
  prints ``ok: N entries, checkpoints verified up to size S``, or one line on
  standard error naming the first bad index and the reason, and exits 1.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from api.cli._common import fail, operator, progress, runtime
from api.runtime import Runtime, make_checkpointer
from audit.checkpoint import parse_verifier_key, verifier_key_string
from audit.checkpoints import Checkpointer
from audit.errors import AuditError, CheckpointConflictError, VerifierKeyError
from audit.live_verify import verify_stored
from audit.queries import export
from audit.sequencer import Sequencer
from audit.store import tree_size
from audit.verify import Finding, Report, verify_export_file
from keys.signing import SigningPurpose

audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")

MAX_CHECKPOINT_BYTES = 64 * 1024
_RESOLVE = "resolve it with `vaultctl audit checkpoint --accept-restore` (SECURITY.md: Resolving a checkpoint conflict)"


@audit_app.command("keys")
def audit_keys() -> None:
    """Print the verifier keys of the audit checkpoints, current first, one per line."""
    with runtime() as rt:
        rt.signing.current(SigningPurpose.audit)
        listed = rt.signing.verification_keys(SigningPurpose.audit)
        origin = rt.settings.audit_origin
    for key in listed:
        typer.echo(verifier_key_string(origin, key.public_key))


@audit_app.command("checkpoint")
def audit_checkpoint(
    accept_restore: Annotated[
        bool, typer.Option("--accept-restore", help="Resolve a checkpoint conflict: keep the old published checkpoint aside, audit the decision, sign afresh.")
    ] = False,
) -> None:
    """Sequence waiting audit events, then sign and publish a checkpoint; print the signed note."""
    with runtime() as rt:
        checkpointer = _checkpointer(rt)
        now = datetime.now(UTC)
        try:
            if accept_restore:
                readiness = checkpointer.status()
                if readiness.ok:
                    fail("no checkpoint conflict to resolve: the database extends the published checkpoint")
                reset = checkpointer.accept_restore(operator(), request_id=f"vaultctl-{uuid.uuid4()}", now=now)
                note = reset.checkpoint.note
                typer.echo(f"resolved: {readiness.reason}; old checkpoint kept as {reset.kept_as or 'nothing (it was missing)'}", err=True)
            else:
                Sequencer(rt.data_engine).run_until_idle(now=now)
                note = checkpointer.make(now=now).note
        except CheckpointConflictError as conflict:
            fail(f"{conflict}; {_RESOLVE}")
        except (AuditError, OSError) as exc:
            fail(f"no checkpoint made: {exc}")
    typer.echo(note, nl=False)


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option("--out", help="The NDJSON file to write (replaced atomically, mode 600).")],
    start: Annotated[int, typer.Option("--from", min=0, help="First leaf index.")] = 0,
    end: Annotated[int | None, typer.Option("--to", min=0, help="End of the range, exclusive (default: the tree size).")] = None,
) -> None:
    """Write the NDJSON export of the leaves [FROM, TO), one line per entry."""
    with runtime() as rt, rt.data_engine.connect() as conn:
        stop = tree_size(conn) if end is None else end
        try:
            lines = export(conn, start, stop)
        except AuditError as exc:
            fail(str(exc))
        try:
            _write_export(out, lines, stop - start)
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror}")
    typer.echo(f"exported {stop - start} entries [{start}, {stop}) to {out}")


@audit_app.command("verify")
def audit_verify(
    export_file: Annotated[Path | None, typer.Option("--export", help="An NDJSON export to check offline.")] = None,
    checkpoints: Annotated[list[Path] | None, typer.Option("--checkpoint", help="A signed checkpoint file (repeat for several).")] = None,
    verifier_keys: Annotated[list[str] | None, typer.Option("--verifier-key", help="A pinned verifier key string (repeat for several).")] = None,
) -> None:
    """Check the live audit log, or (with --export) an export offline, end to end."""
    if export_file is None and not checkpoints and not verifier_keys:
        report, labels = _verify_live()
    else:
        if export_file is None or not checkpoints or not verifier_keys:
            fail("offline verification needs --export, at least one --checkpoint and at least one --verifier-key")
        report, labels = _verify_offline(export_file, checkpoints, verifier_keys)
    if not report.ok:
        fail(_failure(report, labels))
    typer.echo(f"ok: {report.entries} entries, checkpoints verified up to size {report.proven_size}")


def _checkpointer(rt: Runtime) -> Checkpointer:
    return make_checkpointer(rt.settings, rt.data_engine, rt.signing)


def _write_export(out: Path, lines: Iterator[str], total: int) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as file, progress() as bar:
            task = bar.add_task("exporting audit entries", total=total)
            for count, line in enumerate(lines, start=1):
                file.write(line + "\n")
                if count % 1000 == 0 or count == total:
                    bar.update(task, completed=count)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _verify_live() -> tuple[Report, tuple[str, ...]]:
    with runtime() as rt, rt.data_engine.connect() as conn:
        try:
            report, labels = verify_stored(conn, _checkpointer(rt), datetime.now(UTC))
        except AuditError as exc:
            fail(str(exc))
    if report.finding is Finding.NO_CHECKPOINT:
        fail("no checkpoint has been made yet: run `vaultctl audit checkpoint`")
    return report, labels


def _verify_offline(export_file: Path, checkpoints: Sequence[Path], verifier_keys: Sequence[str]) -> tuple[Report, tuple[str, ...]]:
    for number, key in enumerate(verifier_keys, start=1):
        try:
            parse_verifier_key(key)
        except VerifierKeyError as exc:
            fail(f"--verifier-key {number}: {exc}")
    notes = [_read_checkpoint(path) for path in checkpoints]
    try:
        report = verify_export_file(export_file, notes, verifier_keys)
    except OSError as exc:
        fail(f"cannot read {export_file}: {exc.strerror}")
    except VerifierKeyError as exc:
        fail(f"--verifier-key: {exc}")
    return report, tuple(f"checkpoint {n}, {path}" for n, path in enumerate(checkpoints, start=1))


def _read_checkpoint(path: Path) -> str:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CHECKPOINT_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    if len(data) > MAX_CHECKPOINT_BYTES:
        fail(f"{path} is larger than {MAX_CHECKPOINT_BYTES} bytes: not a checkpoint")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        fail(f"{path} is not UTF-8 text: not a checkpoint")


def _failure(report: Report, labels: Sequence[str]) -> str:
    where = "verification failed" if report.first_bad_index is None else f"verification failed at index {report.first_bad_index}"
    reason = str(report.finding)
    if report.checkpoint_number is not None:
        reason = f"{reason} ({labels[report.checkpoint_number]})"
    return f"{where}: {reason}"


__all__ = ["audit_app"]
