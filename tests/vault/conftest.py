"""Fixtures of the vault's tests beyond the suite's own (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from api.runtime import Runtime
from vault.storage.engine import make_engine


@pytest.fixture
def owner(runtime: Runtime) -> Iterator[Engine]:
    """The test's data database as the migration (owner) role: migrations, triggers, rights."""
    engine = make_engine(runtime.settings.data_migration_url)
    yield engine
    engine.dispose()
