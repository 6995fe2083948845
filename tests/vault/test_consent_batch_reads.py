"""``live_among`` and ``live_among_on_driver`` give the per-member rule's answer on random consent histories, on both backends.

The extract's first pass asks the gate for a batch of members through
``live_among_on_driver`` (its rows read on the SQLite driver; on PostgreSQL it
is ``live_among``). Histories are written as raw rows, so a grant may name any
version, including ones superseded by a material notice before or after the
moment asked about, and the moment and the grace period vary.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert

from api.runtime import Runtime
from tests.vault.factories import other_member_values
from vault.consent.model import ConsentDecision
from vault.consent.notices import NoticeBook
from vault.consent.service import ConsentService
from vault.ids import new_id
from vault.purposes import Purpose
from vault.storage.engine import read_snapshot, write_transaction
from vault.storage.schema import consent_events

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
MEMBERS = 5
PURPOSES = (Purpose.loyalty_profiling, Purpose.health_data)
# loyalty_profiling's notices after the migration's version 1: material, not material, material (not yet in effect at NOW).
NOTICES = ((2, True, NOW - timedelta(days=60)), (3, False, NOW - timedelta(days=20)), (4, True, NOW + timedelta(days=10)))

EVENTS = st.lists(
    st.tuples(st.integers(0, MEMBERS - 1), st.sampled_from(PURPOSES), st.sampled_from(list(ConsentDecision)), st.integers(1, 4)),
    max_size=12,
)


@pytest.fixture
def vault(runtime: Runtime) -> tuple[Runtime, list[str]]:
    """A vault of ``MEMBERS`` members with no consent yet, and loyalty_profiling's notices up to version 4."""
    book = NoticeBook()
    with write_transaction(runtime.data_engine) as conn:
        ids: list[str] = [runtime.members.create(conn, other_member_values(n)) for n in range(1, MEMBERS + 1)]
        for version, material, effective_at in NOTICES:
            book.publish(
                conn, Purpose.loyalty_profiling, version, text_zh=f"第 {version} 版", text_en=f"version {version}",
                material=material, effective_at=effective_at, published_by="staff:dpo-1", now=NOW - timedelta(days=90),
            )  # fmt: skip
    return runtime, ids


def _append(runtime: Runtime, ids: list[str], events: list[tuple[int, Purpose, ConsentDecision, int]]) -> None:
    """The events as raw rows, in order (a grant may name a version that is not the current one)."""
    with write_transaction(runtime.data_engine) as conn:
        for member, purpose, decision, version in events:
            granted = decision is ConsentDecision.granted
            conn.execute(
                insert(consent_events).values(
                    consent_id=new_id(),
                    member_id=ids[member],
                    purpose=purpose.value,
                    decision=decision.value,
                    notice_version=version if granted else None,
                    notice_hash="ab" * 32 if granted else None,
                    channel="app",
                    given_by="member",
                    evidence=None,
                    recorded_by="member:test",
                    recorded_role="member",
                    request_id="req-1",
                    recorded_at=NOW - timedelta(days=100),
                )
            )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=EVENTS, days=st.integers(-90, 60), grace=st.integers(0, 45), order=st.permutations(range(MEMBERS + 2)))
def test_live_among_and_its_driver_reads_answer_as_the_per_member_rule(
    vault: tuple[Runtime, list[str]], events: list[tuple[int, Purpose, ConsentDecision, int]], days: int, grace: int, order: list[int]
) -> None:
    runtime, ids = vault
    _append(runtime, ids, events)
    service = ConsentService(runtime.members, NoticeBook(), grace=timedelta(days=grace))
    every = [*ids, new_id(), ids[0]]  # an unknown id and a repeated one
    asked = [every[i] for i in order]
    now = NOW + timedelta(days=days)
    with read_snapshot(runtime.data_engine) as conn:
        for purpose in PURPOSES:
            one_by_one = {m for m in asked if service.has_live_consent(conn, m, purpose, now)}  # the per-member rule (``derive``)
            assert service.live_among(conn, asked, purpose, now) == one_by_one
            assert service.live_among_on_driver(conn, asked, purpose, now) == one_by_one


def test_live_among_on_driver_of_no_members_is_empty(vault: tuple[Runtime, list[str]]) -> None:
    runtime, _ = vault
    with read_snapshot(runtime.data_engine) as conn:
        assert ConsentService(runtime.members, NoticeBook()).live_among_on_driver(conn, [], Purpose.loyalty_profiling, NOW) == set()


def test_live_among_on_driver_follows_the_last_event_and_material_notices(vault: tuple[Runtime, list[str]]) -> None:
    """Granted then withdrawn: not live; a grant on version 1 is stale 30 days after version 2 (material), one on 3 until 4 is in effect plus 30 days."""
    runtime, ids = vault
    lp = Purpose.loyalty_profiling
    withdrawn, granted = ConsentDecision.withdrawn, ConsentDecision.granted
    _append(runtime, ids, [(0, lp, granted, 3), (0, lp, withdrawn, 1), (1, lp, granted, 1), (2, lp, granted, 3), (3, Purpose.health_data, granted, 1)])
    service = ConsentService(runtime.members, NoticeBook(), grace=timedelta(days=30))
    with read_snapshot(runtime.data_engine) as conn:
        assert service.live_among_on_driver(conn, ids, lp, NOW - timedelta(days=31)) == {ids[1], ids[2]}
        assert service.live_among_on_driver(conn, ids, lp, NOW - timedelta(days=30)) == {ids[2]}
        assert service.live_among_on_driver(conn, ids, lp, NOW + timedelta(days=39)) == {ids[2]}
        assert service.live_among_on_driver(conn, ids, lp, NOW + timedelta(days=40)) == set()
        assert service.live_among_on_driver(conn, ids, Purpose.health_data, NOW) == {ids[3]}
