"""Stale consent over HTTP: after the stale moment, the extract sweep feeds the held members and only their consumer reads them.

On the real app (``rig`` of ``test_extracts_api``: SQLite and PostgreSQL,
the real policy, key store and audit journal): ``loyalty-app`` takes an
extract over HTTP; the dpo publishes a material version 2 of the
``loyalty_profiling`` notice; one member grants again under it. The extract
sweep (``ExtractJobs.sweep`` with the app's consent service and feed) at
``effective_at`` plus the configured grace period puts every other member the
extract held in ``loyalty-app``'s feed with reason ``stale``;
``other-app``, whose extracts held nobody, reads an empty feed. A second
services instance on the same database sweeping the same moment adds nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from api.extract_jobs import ExtractJobs
from api.services import Services, build
from tests.api import test_extracts_api
from tests.api.test_extracts_api import Rig
from vault.consent import ConsentChannel, ConsentDecision, ConsentRequest, Recorder, RecorderRole
from vault.extracts.pseudonyms import ROOT_KEY, Pseudonymizer
from vault.extracts.stale import StaleConsentFeed
from vault.ids import new_id
from vault.purposes import Purpose
from vault.storage.engine import write_transaction
from vault.storage.schema import extract_members

P = Purpose.loyalty_profiling
rig = test_extracts_api.rig  # the extract tests' fixture, reused


def _jobs(services: Services) -> ExtractJobs:
    """The services' extract jobs, sweeping stale consent with the services' own consent service and deletion feed."""
    stale = StaleConsentFeed(services.consents.service, services.feed)
    return ExtractJobs(services.runtime.data_engine, services.extracts, services.extract_jobs.store, stale=stale)


def _held(rig: Rig, extract_id: str) -> list[str]:
    with rig.runtime.data_engine.connect() as conn:
        return sorted(conn.scalars(select(extract_members.c.member_id).where(extract_members.c.extract_id == extract_id)))


def _publish_and_regrant(rig: Rig, member_id: str) -> datetime:
    """Version 2 of the notice, material, effective in a second; ``member_id`` grants under it once it is; its stale moment."""
    service = rig.services.consents.service
    effective = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0) + timedelta(seconds=1)
    with write_transaction(rig.runtime.data_engine) as conn:
        service.notices.publish(
            conn, P, 2, text_zh="新的说明", text_en="a new notice", material=True, effective_at=effective, published_by="dpo", now=datetime.now(UTC)
        )
    request = ConsentRequest(P, ConsentDecision.granted, ConsentChannel.app, notice_version=2)
    with write_transaction(rig.runtime.data_engine) as conn:
        service.record(
            conn, member_id, request, Recorder("app", RecorderRole.member), consent_id=new_id(), request_id="test", now=effective + timedelta(hours=1)
        )
    return effective + timedelta(days=rig.settings.consent_grace_days)


def test_the_sweep_feeds_stale_members_to_the_consumer_that_held_them_and_only_it_reads_them(rig: Rig) -> None:
    status, _ = rig.done("loyalty-app")
    held = set(_held(rig, str(status["extract_id"])))
    regranted = min(held)
    stale_at = _publish_and_regrant(rig, regranted)
    jobs = _jobs(rig.services)
    try:
        jobs.sweep(stale_at - timedelta(seconds=1), force=True)
        assert rig.client.get("/v1/extracts/deletions", headers=rig.headers("loyalty-app")).json() == {"items": [], "next_cursor": None}

        jobs.sweep(stale_at, force=True)
    finally:
        jobs.close()

    mine = rig.client.get("/v1/extracts/deletions?limit=500", headers=rig.headers("loyalty-app"))
    other = rig.client.get("/v1/extracts/deletions", headers=rig.headers("other-app"))

    assert mine.status_code == other.status_code == 200
    pseudonymize = Pseudonymizer(rig.runtime.keys.root_key(ROOT_KEY), "loyalty-app", 1)
    items = mine.json()["items"]
    assert {(i["epoch"], i["pseudonym"], i["reason"]) for i in items} == {(1, pseudonymize(m), "stale") for m in held - {regranted}}
    assert len(items) == len(held) - 1
    assert other.json() == {"items": [], "next_cursor": None}
    assert len(held) >= len(rig.members) // 2  # k=2 suppresses only a few


def test_a_second_services_instance_sweeping_the_same_moment_adds_nothing(rig: Rig) -> None:
    status, _ = rig.done("loyalty-app")
    held = _held(rig, str(status["extract_id"]))
    stale_at = _publish_and_regrant(rig, held[0])
    second = build(rig.settings)
    jobs, again = _jobs(rig.services), _jobs(second)
    try:
        jobs.sweep(stale_at, force=True)
        first = rig.client.get("/v1/extracts/deletions?limit=500", headers=rig.headers("loyalty-app")).json()
        again.sweep(stale_at + timedelta(minutes=1), force=True)
    finally:
        jobs.close()
        again.close()
        second.close()

    assert len(first["items"]) == len(held) - 1
    assert rig.client.get("/v1/extracts/deletions?limit=500", headers=rig.headers("loyalty-app")).json() == first
    assert [e["action"] for e in rig.events("loyalty_profiling:2")] == ["feed_stale_consent"]
