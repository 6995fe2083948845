"""Live consent enforced over HTTP: health writes need ``health_data`` consent; a consent purpose needs the member's consent.

Invariants: the state is derived from the append-only history on every
request, so a grant counts from the next request and a withdrawal — also
one recorded through another app instance, with its own engine and caches —
refuses the very next request; a material notice version turns earlier
grants stale once its ``effective_at`` plus the grace period has come, and a
grant on the new version counts again; a non-material one changes nothing.
A refusal is 403 ``…/consent-required`` journaled as a deny with reason
``consent_required``; nothing is written or returned.

The default policy lets no role read a member for a consent purpose yet
(marketing contact through pseudonyms comes with issue 7), so the consent
purpose tests run the app on a policy directory of the default files plus
one line letting the clinic manager read contact data for
``marketing_contact``, with a grace period of 0 days so a material notice
takes effect at once.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.runtime import open_runtime
from api.settings import Settings
from policies import DEFAULT_DIRECTORY
from tests.api.conftest import Seeded, Vault
from vault import data_map as dm
from vault.demo import seed_members

CONSENT_REQUIRED = "https://member-vault.example/problems/consent-required"
MANAGER_MARKETING_LINE = "p, clinic_manager, clinic, member:contact, read, marketing_contact, allow"
TEXTS = {"zh": "我们更新了营销联系的告知内容。", "en": "We changed the notice on marketing contact."}


@pytest.fixture
def marketing_vault(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Vault]:
    """The ``vault`` fixture's app on the default policy plus ``MANAGER_MARKETING_LINE``, grace period 0 days; two members, no consent."""
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    shutil.copyfile(DEFAULT_DIRECTORY / "model.conf", policy_dir / "model.conf")
    (policy_dir / "default.csv").write_text((DEFAULT_DIRECTORY / "default.csv").read_text(encoding="utf-8") + MANAGER_MARKETING_LINE + "\n", encoding="utf-8")
    settings = make_settings(policy_dir=policy_dir, consent_grace_days=0)
    runtime = open_runtime(settings)
    try:
        report = seed_members(runtime.data_engine, runtime.keys, runtime.members, count=2, seed=7, now=datetime.now(UTC))
        seeded = []
        with runtime.data_engine.connect() as conn:
            for member_id in report.member_ids:
                membership = runtime.members.read(conn, member_id, {dm.Category.membership}).values[dm.Category.membership]
                seeded.append(Seeded(member_id, str(membership["home_clinic_id"]), str(membership["card_no"])))
        with TestClient(create_app(settings, audit_pump=False), raise_server_exceptions=False) as client:
            yield Vault(client=client, runtime=runtime, settings=settings, members=seeded)
    finally:
        runtime.close()


# -- helpers ---------------------------------------------------------------------------


def stored(vault: Vault, member_id: str, category: dm.Category) -> dict[str, Any]:
    with vault.runtime.data_engine.connect() as conn:
        return dict(vault.runtime.members.read(conn, member_id, {category}).values[category])


def consent(client: TestClient, vault: Vault, seeded: Seeded, body: dict[str, object]) -> httpx.Response:
    headers = vault.headers(vault.token("member", subject="card-app", member_id=seeded.member_id), "self_service")
    return client.post(f"/v1/members/{seeded.member_id}/consents", json=body, headers=headers)


def grant(purpose: str, version: int) -> dict[str, object]:
    return {"purpose": purpose, "decision": "granted", "notice_version": version, "channel": "app"}


def withdraw(purpose: str) -> dict[str, object]:
    return {"purpose": purpose, "decision": "withdrawn", "channel": "app"}


def assert_consent_required(r: httpx.Response) -> None:
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert (body["type"], body["title"], body["detail"]) == (CONSENT_REQUIRED, "Consent required", "the member's live consent does not cover this purpose")


def events_since(vault: Vault, before: int) -> list[dict[str, Any]]:
    return [json.loads(e) for e in vault.journal_events()[before:]]


def decisions(vault: Vault, before: int) -> list[tuple[object, ...]]:
    return [(e["action"], e["resource_type"], e["member_id"], e["purpose"], e["decision"], e["reason_code"], e["outcome"]) for e in events_since(vault, before)]


# -- health data -----------------------------------------------------------------------


def test_a_health_write_needs_live_health_data_consent_from_the_next_request_on(vault: Vault) -> None:
    m = vault.members[2]  # the fixture gave members 2 and 3 no consent
    practitioner = vault.headers(
        vault.token("practitioner", subject="dr-li", clinics=[m.home_clinic_id]), "care", **{"Content-Type": "application/merge-patch+json"}
    )
    url = f"/v1/members/{m.member_id}"
    original = stored(vault, m.member_id, dm.Category.health)["medical_history"]
    before = vault.journal_size()

    def write(history: str) -> httpx.Response:
        return vault.client.patch(url, content=json.dumps({"health": {"medical_history": history}}), headers=practitioner)

    refused = write("penicillin reaction, 2019")
    assert_consent_required(refused)
    assert stored(vault, m.member_id, dm.Category.health)["medical_history"] == original

    assert consent(vault.client, vault, m, grant("health_data", 1)).status_code == 201
    allowed = write("penicillin reaction, 2019")
    assert (allowed.status_code, allowed.json()) == (200, {"member_id": m.member_id, "changed": ["medical_history"]})
    assert stored(vault, m.member_id, dm.Category.health)["medical_history"] == "penicillin reaction, 2019"

    assert consent(vault.client, vault, m, withdraw("health_data")).status_code == 201
    assert_consent_required(write("latex allergy"))
    assert stored(vault, m.member_id, dm.Category.health)["medical_history"] == "penicillin reaction, 2019"

    assert decisions(vault, before) == [
        ("update", "member", m.member_id, "care", "deny", "consent_required", "denied"),
        ("grant_consent", "consent", m.member_id, "self_service", "allow", "allowed", "ok"),
        ("update", "member", m.member_id, "care", "allow", "allowed", "ok"),
        ("withdraw_consent", "consent", m.member_id, "self_service", "allow", "allowed", "ok"),
        ("update", "member", m.member_id, "care", "deny", "consent_required", "denied"),
    ]
    assert all(e["fields"] in (["medical_history"], ["health_data"]) for e in events_since(vault, before))
    assert b"penicillin" not in b"".join(vault.journal_events())


# -- a consent purpose ----------------------------------------------------------------------


def manager_read(vault: Vault, seeded: Seeded, client: TestClient | None = None) -> httpx.Response:
    token = vault.token("clinic_manager", subject="manager-1", clinics=[seeded.home_clinic_id])
    return (client or vault.client).get(f"/v1/members/{seeded.member_id}", headers=vault.headers(token, "marketing_contact"))


def assert_contact_only(vault: Vault, seeded: Seeded, r: httpx.Response) -> None:
    assert r.status_code == 200
    assert r.json() == {
        "member_id": seeded.member_id,
        "contact": json.loads(json.dumps(stored(vault, seeded.member_id, dm.Category.contact))),
        "redacted": ["demographic", "health", "identity", "membership", "preference"],
    }


def test_a_consent_purpose_reads_only_while_the_members_consent_is_live(marketing_vault: Vault) -> None:
    """Granted: contact only; withdrawn in this app or in another app instance: 403 on the very next request."""
    vault, m = marketing_vault, marketing_vault.members[0]
    before = vault.journal_size()

    assert_consent_required(manager_read(vault, m))
    assert consent(vault.client, vault, m, grant("marketing_contact", 1)).status_code == 201
    assert_contact_only(vault, m, manager_read(vault, m))
    assert consent(vault.client, vault, m, withdraw("marketing_contact")).status_code == 201
    assert_consent_required(manager_read(vault, m))
    assert consent(vault.client, vault, m, grant("marketing_contact", 1)).status_code == 201
    assert_contact_only(vault, m, manager_read(vault, m))
    with TestClient(create_app(vault.settings, audit_pump=False), raise_server_exceptions=False) as other_worker:
        assert consent(other_worker, vault, m, withdraw("marketing_contact")).status_code == 201
    assert_consent_required(manager_read(vault, m))

    read = ("read", "member", m.member_id, "marketing_contact")
    assert decisions(vault, before) == [
        (*read, "deny", "consent_required", "denied"),
        ("grant_consent", "consent", m.member_id, "self_service", "allow", "allowed", "ok"),
        (*read, "allow", "allowed", "ok"),
        ("withdraw_consent", "consent", m.member_id, "self_service", "allow", "allowed", "ok"),
        (*read, "deny", "consent_required", "denied"),
        ("grant_consent", "consent", m.member_id, "self_service", "allow", "allowed", "ok"),
        (*read, "allow", "allowed", "ok"),
        ("withdraw_consent", "consent", m.member_id, "self_service", "allow", "allowed", "ok"),
        (*read, "deny", "consent_required", "denied"),
    ]


def test_a_material_notice_turns_a_grant_stale_and_a_grant_on_the_new_version_counts_again(marketing_vault: Vault) -> None:
    vault, m = marketing_vault, marketing_vault.members[0]
    dpo = vault.headers(vault.token("dpo", subject="dpo-1"))
    owner = vault.headers(vault.token("member", subject="card-app", member_id=m.member_id), "self_service")
    assert consent(vault.client, vault, m, grant("marketing_contact", 1)).status_code == 201
    assert_contact_only(vault, m, manager_read(vault, m))
    before = vault.journal_size()

    published = vault.client.post("/v1/purposes/marketing_contact/notices", json={"version": 2, "texts": TEXTS, "material": True}, headers=dpo)

    assert published.status_code == 201
    assert published.json()["stale_from"] == published.json()["effective_at"]  # grace period 0 days
    assert_consent_required(manager_read(vault, m))
    state = vault.client.get(f"/v1/members/{m.member_id}/consents", headers=owner).json()["current"]["marketing_contact"]
    assert state == {"state": "stale", "notice_version": 1, "since": published.json()["effective_at"]}
    old = consent(vault.client, vault, m, grant("marketing_contact", 1))
    assert (old.status_code, "the current version is 2" in old.json()["detail"]) == (409, True)
    assert_consent_required(manager_read(vault, m))
    assert consent(vault.client, vault, m, grant("marketing_contact", 2)).status_code == 201
    assert_contact_only(vault, m, manager_read(vault, m))
    minor = vault.client.post("/v1/purposes/marketing_contact/notices", json={"version": 3, "texts": TEXTS, "material": False}, headers=dpo)
    assert (minor.status_code, minor.json()["stale_from"]) == (201, None)
    assert_contact_only(vault, m, manager_read(vault, m))

    read = ("read", "member", m.member_id, "marketing_contact")
    assert decisions(vault, before) == [
        ("publish_notice", "notice", None, None, "allow", "allowed", "ok"),
        (*read, "deny", "consent_required", "denied"),
        ("read", "consent", m.member_id, "self_service", "allow", "allowed", "ok"),
        ("grant_consent", "consent", m.member_id, "self_service", "allow", "allowed", "conflict"),
        (*read, "deny", "consent_required", "denied"),
        ("grant_consent", "consent", m.member_id, "self_service", "allow", "allowed", "ok"),
        (*read, "allow", "allowed", "ok"),
        ("publish_notice", "notice", None, None, "allow", "allowed", "ok"),
        (*read, "allow", "allowed", "ok"),
    ]
