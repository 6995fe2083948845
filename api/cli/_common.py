"""What every vaultctl command shares: settings, the runtime, one-line failures, progress bars."""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy.exc import SQLAlchemyError

from api import logging as oplog
from api.runtime import Runtime, open_runtime
from api.settings import Settings
from audit.event import Actor
from keys.errors import KeysError
from vault.errors import VaultError


def fail(reason: str) -> NoReturn:
    typer.echo(f"vaultctl: {reason}", err=True)
    raise typer.Exit(1)


def settings() -> Settings:
    """The settings from the environment, or a one-line failure naming the bad variables."""
    try:
        built = Settings()
    except ValidationError as exc:
        names = sorted({"VAULT_" + str(err["loc"][0]).upper() for err in exc.errors() if err["loc"]} or {"VAULT_*"})
        fail(f"invalid settings: {', '.join(names)}")
    oplog.configure(built.log_level)
    return built


@contextmanager
def runtime() -> Iterator[Runtime]:
    settings_ = settings()
    try:
        rt = open_runtime(settings_)
    except (KeysError, VaultError) as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(f"database unavailable ({exc.__class__.__name__})")
    try:
        yield rt
    except (KeysError, VaultError) as exc:
        fail(str(exc))
    finally:
        rt.close()


def progress(*, terminal_only: bool = False) -> Progress:
    """A progress bar on standard error; ``terminal_only``: not drawn when standard error is not a terminal (then a failure's reason is its one line)."""
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, disable=terminal_only and not console.is_terminal)


_OPERATOR = re.compile(r"[!-~]{1,200}")


def operator() -> Actor:
    """The person at the terminal, as a vault_admin actor: their login name, else their uid."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):
        name = ""
    subject = f"os-user:{name}" if _OPERATOR.fullmatch(name) else f"os-uid:{os.getuid()}"
    return Actor(subject=subject, roles=("vault_admin",), client_id="vaultctl", acting_staff=None)


__all__ = ["fail", "operator", "progress", "runtime", "settings"]
