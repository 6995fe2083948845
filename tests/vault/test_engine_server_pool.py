"""PostgreSQL engines: a pooled connection is pinged only after it sat idle, and a dead one is replaced then."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import OperationalError

from api.settings import Settings
from tests.conftest import PgServer
from vault.storage import engine as engine_module
from vault.storage.engine import make_engine

pytestmark = pytest.mark.parametrize("backend", ["postgres"])


@pytest.fixture
def engine(make_settings: Callable[..., Settings]) -> Iterator[Engine]:
    made = make_engine(make_settings().data_url)
    yield made
    made.dispose()


def _connects(engine: Engine) -> list[object]:
    made: list[object] = []
    event.listen(engine, "connect", lambda dbapi_connection, _record: made.append(dbapi_connection))
    return made


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _end_backend(pg_server: PgServer, pid: int) -> None:
    pg_server.admin(f"SELECT pg_terminate_backend({pid})")


def test_a_connection_in_steady_use_is_not_pinged(engine: Engine, pg_server: PgServer) -> None:
    first = _backend_pid(engine)
    connects = _connects(engine)
    for _ in range(20):
        assert _backend_pid(engine) == first  # the one pooled connection, checked out again and again
    assert connects == []
    # No ping before a checkout of a connection used moments ago (pool_pre_ping made one on every checkout), so a
    # connection that died in steady use fails its next statement:
    _end_backend(pg_server, first)
    with pytest.raises(OperationalError):  # no ping: the dead connection fails its statement ...
        _backend_pid(engine)
    assert _backend_pid(engine) != first  # ... and SQLAlchemy invalidated it: the next checkout opens a new one


def test_a_connection_idle_past_the_limit_is_pinged_and_a_dead_one_replaced(engine: Engine, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _backend_pid(engine)
    _end_backend(pg_server, first)
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", 0.0)  # every connection counts as idle long enough
    connects = _connects(engine)
    assert _backend_pid(engine) != first  # the ping found it dead; the pool replaced it without an error
    assert len(connects) == 1


def test_the_pool_keeps_ten_connections_of_at_most_fifteen(engine: Engine) -> None:
    connects = _connects(engine)
    held = [engine.connect() for _ in range(15)]
    for conn in held:
        conn.execute(text("SELECT 1"))
    assert len(connects) == 15
    assert engine.pool.overflow() == 5  # type: ignore[attr-defined]  # QueuePool's: connections beyond its size
    for conn in held:
        conn.close()
    assert engine.pool.checkedin() == 10  # type: ignore[attr-defined]  # the five beyond the size were closed on return
