"""``DriverRow``: a one-row SELECT on the driver's cursor on PostgreSQL, an ordinary execute elsewhere — the same answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, bindparam, func, insert, select, text
from sqlalchemy.exc import DBAPIError

from api.settings import Settings
from tests.conftest import PgServer
from vault.storage.engine import make_engine
from vault.storage.readers import DriverRow
from vault.storage.schema import revoked_tokens

_REVOKED = DriverRow(select(revoked_tokens.c.token_id, revoked_tokens.c.revoked_at.is_not(None)).where(revoked_tokens.c.token_id == bindparam("jti")))
_COUNT = DriverRow(select(func.count()).select_from(revoked_tokens).where(revoked_tokens.c.token_id.not_in(["x"])).limit(1))


@pytest.fixture
def engine(make_settings: Callable[..., Settings]) -> Iterator[Engine]:
    made = make_engine(make_settings().data_migration_url)
    yield made
    made.dispose()


def _revoke(engine: Engine, jti: str) -> None:
    with engine.begin() as conn:
        conn.execute(insert(revoked_tokens).values(token_id=jti, revoked_at=datetime.now(UTC), expires_at=datetime.now(UTC)))


@pytest.mark.parametrize("autocommit", [False, True])
def test_the_first_row_is_the_statements_own_with_bound_and_literal_parameters(engine: Engine, autocommit: bool) -> None:
    _revoke(engine, "j-1")
    _revoke(engine, "j-2")
    with engine.connect() as conn:
        if autocommit and conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT")
        assert _REVOKED.first(conn, {"jti": "j-2"}) == ("j-2", True)
        assert _REVOKED.first(conn, {"jti": "nobody"}) is None
        assert _COUNT.first(conn, {}) == (2,)  # the literal "x" and the limit travel as the compiled statement's own parameters
        assert _REVOKED.first(conn, {"jti": "j-1"}) == tuple(conn.execute(_REVOKED.statement, {"jti": "j-1"}).one())


@pytest.mark.parametrize("backend", ["postgres"])
def test_a_row_committed_meanwhile_is_seen_by_the_next_read_in_autocommit(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        assert _REVOKED.first(conn, {"jti": "later"}) is None
        _revoke(engine, "later")
        assert _REVOKED.first(conn, {"jti": "later"}) == ("later", True)


def test_a_failed_statement_is_sqlalchemys_error(engine: Engine) -> None:
    broken = DriverRow(select(text("no_such_column")).select_from(revoked_tokens))
    with engine.connect() as conn, pytest.raises(DBAPIError):  # the edge answers SQLAlchemy's errors with 503, never 500
        broken.first(conn, {})


@pytest.mark.parametrize("backend", ["postgres"])
def test_a_connection_that_died_is_invalidated_not_returned_to_the_pool(engine: Engine, pg_server: PgServer) -> None:
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        assert _REVOKED.first(conn, {"jti": "x"}) is None
        backend_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        pg_server.admin(f"SELECT pg_terminate_backend({backend_pid})")
        with pytest.raises(DBAPIError) as failed:
            _REVOKED.first(conn, {"jti": "x"})
        assert failed.value.connection_invalidated
        assert conn.invalidated
    with engine.connect() as fresh:
        assert fresh.execute(text("SELECT pg_backend_pid()")).scalar_one() != backend_pid


@pytest.mark.parametrize("backend", ["postgres"])
def test_values_pass_their_column_types_result_processing_as_through_sqlalchemy(engine: Engine) -> None:
    _revoke(engine, "j-tz")
    revoked_at = DriverRow(select(revoked_tokens.c.revoked_at).where(revoked_tokens.c.token_id == bindparam("jti")))
    with engine.connect() as conn:
        conn.exec_driver_sql("SET TIME ZONE 'Asia/Shanghai'")  # the driver alone would hand back +08:00
        (found,) = revoked_at.first(conn, {"jti": "j-tz"}) or (None,)
        assert found is not None
        assert found.tzinfo is UTC  # UtcDateTime's processing, as SQLAlchemy applies it
        assert found == conn.execute(revoked_at.statement, {"jti": "j-tz"}).scalar_one()
