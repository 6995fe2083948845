"""Run and check Alembic migrations of the data database and the key store.

Each database has its own migration history (``vault/migrations/data`` and
``vault/migrations/keystore``). ``upgrade`` runs as the migration role;
``require_current`` is called at start-up with the application role and
refuses to run on a database that is not at the code's head revision.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from vault.errors import SchemaNotReadyError

_ROOT = Path(__file__).resolve().parent.parent / "migrations"


class Database(StrEnum):
    data = "data"
    keystore = "keystore"


def _config(which: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_ROOT / which.value))
    return cfg


def head(which: Database) -> str:
    revision = ScriptDirectory.from_config(_config(which)).get_current_head()
    if revision is None:
        raise SchemaNotReadyError(f"no migrations for the {which.value} database")
    return revision


def upgrade(engine: Engine, which: Database) -> None:
    cfg = _config(which)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def require_current(engine: Engine, which: Database) -> None:
    try:
        found = current(engine)
    except SQLAlchemyError as exc:
        raise SchemaNotReadyError(f"the {which.value} database cannot be read") from exc
    if found != head(which):
        raise SchemaNotReadyError(f"the {which.value} database is not migrated (run vaultctl init)")


__all__ = ["Database", "head", "require_current", "upgrade"]
