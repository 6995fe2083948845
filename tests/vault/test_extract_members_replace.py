"""``extract_members`` refuses INSERT OR REPLACE, also through the driver's ``executemany`` the runner's bulk insert uses.

Every append-only table of the data database keeps both its no-delete and its
no-replace trigger (a ``BEFORE INSERT`` lookup). Dropping the latter for
``extract_members`` and refusing a REPLACE through the no-delete trigger with
``PRAGMA recursive_triggers=ON`` instead was measured (about 2 s of one core
at a million members) and not kept: a connection opened without that pragma
(the ``sqlite3`` shell, a script) could then replace a membership row
unrefused. PostgreSQL has no REPLACE; its row triggers refuse UPDATE and
DELETE.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from api.runtime import Runtime
from tests.vault.factories import other_member_values, stored_extract
from vault.clients import ROOT_KEY, ClientRegistry
from vault.extracts.consumers import ConsumerRegistry
from vault.storage.engine import write_transaction
from vault.storage.schema import extract_members

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
MESSAGE = "extract membership and the deletion feed are append-only"
# Every append-only table of the data database (migrations 0002, 0003, 0005, 0006, 0007, 0010, 0012).
APPEND_ONLY = (
    "audit_journal",
    "audit_leaves",
    "audit_nodes",
    "audit_checkpoints",
    "consent_notices",
    "consent_events",
    "data_request_steps",
    "data_requests",
    "extract_members",
    "deletion_feed",
    "deletion_feed_sweeps",
    "extract_departures",
)


@pytest.fixture
def held(runtime: Runtime) -> tuple[str, str]:
    """One extract holding one member with digest ``aa…``."""
    with write_transaction(runtime.data_engine) as conn:
        member_id = runtime.members.create(conn, other_member_values(5))
        ClientRegistry(runtime.keys.root_key(ROOT_KEY)).add(conn, "loyalty-app", ["loyalty_service"], [], NOW)
        ConsumerRegistry().register(conn, "loyalty-app", purpose="loyalty_profiling", attributes=["tier"], health=False, now=NOW)
        extract_id = stored_extract(conn, NOW)
        conn.execute(insert(extract_members).values(extract_id=extract_id, member_id=member_id, row_mac="aa" * 16))
    return extract_id, member_id


def _members(runtime: Runtime) -> list[tuple[object, ...]]:
    with runtime.data_engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(extract_members).order_by(extract_members.c.extract_id))]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_every_append_only_table_keeps_its_no_delete_and_no_replace_triggers(runtime: Runtime) -> None:
    with runtime.data_engine.connect() as conn:
        triggers = {str(name) for name in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'").scalars()}
    assert {f"{t}_no_delete" for t in APPEND_ONLY} <= triggers
    assert {f"{t}_no_replace" for t in APPEND_ONLY} <= triggers


@pytest.mark.parametrize("backend", ["sqlite"])
def test_replace_of_a_held_member_with_another_digest_is_refused_and_nothing_changes(runtime: Runtime, held: tuple[str, str]) -> None:
    extract_id, member_id = held
    before = _members(runtime)
    with pytest.raises(DBAPIError, match=MESSAGE), runtime.data_engine.begin() as conn:
        conn.execute(
            text("INSERT OR REPLACE INTO extract_members (extract_id, member_id, row_mac) VALUES (:e, :m, :mac)"),
            {"e": extract_id, "m": member_id, "mac": "bb" * 16},
        )
    assert _members(runtime) == before == [(extract_id, member_id, "aa" * 16)]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_replace_through_the_driver_executemany_is_refused_and_rolls_back_the_whole_batch(runtime: Runtime, held: tuple[str, str]) -> None:
    """The runner's bulk insert runs on the driver: a REPLACE among new rows is refused there too, and the new rows go with it."""
    extract_id, member_id = held
    with write_transaction(runtime.data_engine) as conn:
        other = runtime.members.create(conn, other_member_values(6))
    before = _members(runtime)
    with pytest.raises(DBAPIError, match=MESSAGE), write_transaction(runtime.data_engine) as conn:
        conn.exec_driver_sql(
            "INSERT OR REPLACE INTO extract_members (extract_id, member_id, row_mac) VALUES (?, ?, ?)",
            [(extract_id, other, "cc" * 16), (extract_id, member_id, "bb" * 16)],
        )
    assert _members(runtime) == before


def test_a_member_held_twice_by_one_extract_is_refused_and_another_extract_may_hold_it(runtime: Runtime, held: tuple[str, str]) -> None:
    extract_id, member_id = held
    with pytest.raises(IntegrityError), write_transaction(runtime.data_engine) as conn:
        conn.execute(insert(extract_members).values(extract_id=extract_id, member_id=member_id, row_mac="bb" * 16))
    with write_transaction(runtime.data_engine) as conn:
        second = stored_extract(conn, NOW)
        conn.execute(insert(extract_members).values(extract_id=second, member_id=member_id, row_mac="bb" * 16))
    assert sorted(_members(runtime)) == sorted([(extract_id, member_id, "aa" * 16), (second, member_id, "bb" * 16)])
