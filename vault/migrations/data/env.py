"""Alembic environment for the data database; run through vault.storage.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import audit.checkpoints
import audit.store
import vault.storage.schema

# The data database holds the vault's tables and the audit log's.
target_metadata = [vault.storage.schema.metadata, audit.store.metadata, audit.checkpoints.metadata]


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through vaultctl init / vault.storage.migrate")
_run(connection)
