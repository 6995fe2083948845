"""Each member's last consent event for a purpose is read from ``ix_consent_events_last_event`` alone (migration 0013).

* On SQLite, the statement ``live_among_on_driver`` runs asks for a search of
  that index as a covering index and no search of the table: the extract's
  first pass runs it for every member of the vault.
* Migration ``0013_consent_last_event`` on real SQLite and PostgreSQL: the
  upgrade replaces ``(member_id, purpose, seq)`` by the covering index, the
  downgrade puts it back; events recorded before either keep their answer.
  (That the answer is ``live_among``'s on random histories is
  ``test_consent_batch_reads``'.)
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, inspect

from api.runtime import Runtime
from tests.vault.factories import migrate_data, other_member_values
from vault.consent import ConsentChannel, ConsentDecision, ConsentRequest, ConsentService, NoticeBook, Recorder, RecorderRole
from vault.consent.service import _LAST_EVENTS
from vault.ids import new_id
from vault.purposes import Purpose
from vault.storage.engine import read_snapshot, write_transaction

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
BEFORE = "0012_feed_again"
NARROW = "ix_consent_events_member_id_purpose_seq"
COVERING = "ix_consent_events_last_event"


@pytest.fixture
def members(runtime: Runtime) -> list[str]:
    """Three members: one granted, one granted then withdrawn, one never asked."""
    service = ConsentService(runtime.members, NoticeBook())
    recorder = Recorder("app", RecorderRole.member)
    with write_transaction(runtime.data_engine) as conn:
        ids = [runtime.members.create(conn, other_member_values(n)) for n in range(1, 4)]
        decisions = [(ids[0], ConsentDecision.granted), (ids[1], ConsentDecision.granted), (ids[1], ConsentDecision.withdrawn)]
        for at, (member_id, decision) in enumerate(decisions):
            request = ConsentRequest(Purpose.loyalty_profiling, decision, ConsentChannel.app, notice_version=1 if decision is ConsentDecision.granted else None)
            service.record(conn, member_id, request, recorder, consent_id=new_id(), request_id="req-1", now=NOW + timedelta(minutes=at))
    return ids


def _indexes(engine: Engine) -> dict[str, list[str | None]]:
    with engine.connect() as conn:
        return {str(ix["name"]): list(ix["column_names"]) for ix in inspect(conn).get_indexes("consent_events")}


def _live(runtime: Runtime, ids: list[str]) -> set[str]:
    with read_snapshot(runtime.data_engine) as conn:
        return ConsentService(runtime.members, NoticeBook()).live_among_on_driver(conn, ids, Purpose.loyalty_profiling, NOW + timedelta(hours=1))


def test_the_last_event_of_each_member_is_read_from_the_covering_index_alone(runtime: Runtime, members: list[str]) -> None:
    if runtime.data_engine.dialect.name != "sqlite":
        pytest.skip("the statement runs on the SQLite driver; PostgreSQL runs live_among")
    with read_snapshot(runtime.data_engine) as conn:
        plan = [str(row[3]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {_LAST_EVENTS}", (json.dumps(members), Purpose.loyalty_profiling.value))]

    reads = [step for step in plan if step.startswith(("SEARCH", "SCAN")) and "json_each" not in step]  # every read of consent_events
    assert reads, plan
    assert all(f"USING COVERING INDEX {COVERING}" in step for step in reads), plan  # none of the table, by rowid or otherwise
    assert _live(runtime, members) == {members[0]}


def test_0013_replaces_the_narrow_index_and_its_downgrade_restores_it(runtime: Runtime, owner: Engine, members: list[str]) -> None:
    assert _indexes(runtime.data_engine)[COVERING] == ["member_id", "purpose", "seq", "decision", "notice_version"]
    assert NARROW not in _indexes(runtime.data_engine)

    migrate_data(owner, BEFORE, down=True)

    assert _indexes(runtime.data_engine)[NARROW] == ["member_id", "purpose", "seq"]
    assert COVERING not in _indexes(runtime.data_engine)
    assert _live(runtime, members) == {members[0]}

    migrate_data(owner, "head")

    assert COVERING in _indexes(runtime.data_engine)
    assert NARROW not in _indexes(runtime.data_engine)
    assert _live(runtime, members) == {members[0]}
