"""A member's extracts are found extract by extract, through ``extract_members``' primary key, never by scanning it.

``extract_members`` has no index on ``member_id`` alone (migration 0011):
every extract's members would be spread all over one, so each extract would
rewrite it whole and its cost would grow with the history. The queries that
look a member up — the member's access log (``records.holdings``), the
deletion feed (``DeletionFeed.member_left``) and an incremental extract's
digests (``releasing.held_before``) — read the extracts first and seek the key
``(extract_id, member_id)`` once per extract. These tests take the statements
those functions really run and ask each database for its plan: a full scan of
``extract_members`` would read every membership row ever written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlalchemy import Connection, event, insert, inspect

from api.runtime import Runtime
from tests.vault.factories import other_member_values, stored_extract
from vault.clients import ROOT_KEY as CLIENT_ROOT
from vault.clients import ClientRegistry
from vault.extracts import records
from vault.extracts.consumers import ConsumerRegistry
from vault.extracts.feed import DeletionFeed, LeftReason
from vault.extracts.pseudonyms import ROOT_KEY
from vault.extracts.releasing import Releasing, held_before
from vault.purposes import Purpose
from vault.storage.engine import write_transaction
from vault.storage.schema import extract_members

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def held(runtime: Runtime) -> tuple[list[str], list[str]]:
    """Three members, each held by both of two done extracts of ``loyalty-app``; (extract ids, member ids)."""
    with write_transaction(runtime.data_engine) as conn:
        ClientRegistry(runtime.keys.root_key(CLIENT_ROOT)).add(conn, "loyalty-app", ["loyalty_service"], [], NOW)
        ConsumerRegistry().register(conn, "loyalty-app", purpose="loyalty_profiling", attributes=["tier"], health=False, now=NOW)
        member_ids = [runtime.members.create(conn, other_member_values(i)) for i in range(3)]
        extract_ids = [stored_extract(conn, NOW + timedelta(minutes=i)) for i in range(2)]
        conn.execute(
            insert(extract_members),
            [{"extract_id": e, "member_id": m, "row_mac": f"{i:032x}"} for i, (e, m) in enumerate((e, m) for e in extract_ids for m in member_ids)],
        )
    return extract_ids, member_ids


@contextmanager
def _membership_reads(conn: Connection) -> Iterator[list[tuple[str, Any]]]:
    """The SELECTs on ``extract_members`` run on ``conn`` inside the block, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def before(_conn: Connection, _cursor: object, statement: str, parameters: Any, _context: object, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "extract_members" in statement:
            seen.append((statement, parameters))

    event.listen(conn, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(conn, "before_cursor_execute", before)


def _plan(conn: Connection, statement: str, parameters: Any) -> str:
    if conn.dialect.name == "sqlite":
        return "\n".join(str(row[3]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters))
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # tiny test tables: ask whether a path other than a scan exists
    return "\n".join(str(row[0]) for row in conn.exec_driver_sql(f"EXPLAIN {statement}", parameters))


def _assert_seeks_the_key(plan: str, dialect: str) -> None:
    if dialect == "sqlite":
        assert "SCAN extract_members" not in plan
        assert "SEARCH extract_members USING PRIMARY KEY (extract_id=? AND member_id=?)" in plan  # the table is its key (WITHOUT ROWID)
    else:
        assert "Seq Scan on extract_members" not in plan
        assert "pk_extract_members" in plan


def _lookups(runtime: Runtime, member_ids: list[str], extract_ids: list[str]) -> dict[str, Callable[[Connection], object]]:
    feed = DeletionFeed(lambda: runtime.keys.root_key(ROOT_KEY))
    job = cast(Releasing, SimpleNamespace(consumer_id="loyalty-app", epoch=1, since=extract_ids[-1]))
    return {
        "access log": lambda conn: records.holdings(conn, member_ids[0]),
        "deletion feed": lambda conn: feed.member_left(conn, member_ids[0], LeftReason.withdrawn, purposes=[Purpose.loyalty_profiling], now=NOW),
        "incremental digests": lambda conn: held_before(conn, job, member_ids),
    }


@pytest.mark.parametrize("lookup", ["access log", "deletion feed", "incremental digests"])
def test_a_members_extracts_are_found_by_the_primary_key_not_a_scan(runtime: Runtime, held: tuple[list[str], list[str]], lookup: str) -> None:
    extract_ids, member_ids = held
    with runtime.data_engine.connect() as conn, conn.begin() as transaction:
        with _membership_reads(conn) as seen:
            _lookups(runtime, member_ids, extract_ids)[lookup](conn)
        assert seen, "the lookup read extract_members"
        for statement, parameters in seen:
            _assert_seeks_the_key(_plan(conn, statement, parameters), conn.dialect.name)
        transaction.rollback()  # the feed's entries are not kept


def test_the_lookups_still_answer_extract_by_extract(runtime: Runtime, held: tuple[list[str], list[str]]) -> None:
    extract_ids, member_ids = held
    with runtime.data_engine.connect() as conn:
        holdings = records.holdings(conn, member_ids[1])
        digests = held_before(conn, cast(Releasing, SimpleNamespace(consumer_id="loyalty-app", epoch=1, since=extract_ids[-1])), member_ids)
    assert [h.extract_id for h in holdings] == extract_ids  # oldest first
    assert digests == {m: f"{3 + i:032x}" for i, m in enumerate(member_ids)}  # the latest extract's digests


def test_extract_members_has_no_index_on_member_id_alone(runtime: Runtime) -> None:
    indexes = inspect(runtime.data_engine).get_indexes("extract_members")
    assert [ix["column_names"] for ix in indexes if ix["column_names"][:1] == ["member_id"]] == []
