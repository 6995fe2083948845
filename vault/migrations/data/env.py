"""Alembic environment for the data database; run through vault.storage.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from vault.storage.schema import metadata as target_metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through vaultctl init / vault.storage.migrate")
_run(connection)
