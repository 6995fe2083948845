"""The consent API over HTTP: the purpose catalog, notice publishing, recording and reading consent, FHIR.

Invariants: ``GET /v1/purposes`` is public and journals nothing; only the
dpo publishes a notice version; a member records their own consent in the
app and the front desk records it on the member's behalf with evidence; a
grant names the current notice version; a withdrawal always succeeds; a
member token for another member, or staff outside the member's clinics, get
the same 403 for a real and a made-up member and nothing is written; a retry
with the same ``Idempotency-Key`` records one event. Every request that
reaches a decision journals exactly one event (fields name the purpose,
never a value); one refused before the decision (401, 400) journals none,
and so does an ``Idempotency-Key`` reused for another body (409), as on
every creating route.
Every answer is ``Cache-Control: no-store``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx
import pytest
from fhir.resources.R4B.consent import Consent
from sqlalchemy import func, select

from tests.api.conftest import Vault
from vault.storage.schema import consent_events

MADE_UP = "0" * 32
# Refusals and conflicts that no storage difference reaches run on SQLite only (as in test_bola), to keep the file fast on
# PostgreSQL; what stores or reads back consent events and notices runs on both (the stale-grant 409 runs on both in
# test_consent_enforcement.py).
SQLITE = pytest.mark.parametrize("backend", ["sqlite"])
OTHER_CLINIC = "zz-999"  # a clinic none of the seeded members is linked to
PROBLEMS = "https://member-vault.example/problems/"
TEXTS = {"zh": "经您同意，我们会在新开业的门店活动前联系您。", "en": "With your consent we contact you before events at newly opened clinics."}
EVIDENCE = "scan:paper-form/2026-0042"

# The catalog as DESIGN.md fixes it: (id, legal basis, needs consent, sensitive, statable).
CATALOG = [
    ("care", "contract", False, True, True),
    ("health_data", "consent", True, True, False),
    ("marketing_contact", "consent", True, False, True),
    ("loyalty_profiling", "consent", True, False, True),
    ("third_party_sharing", "consent", True, False, True),
    ("photo_use", "consent", True, True, True),
    ("cross_border_transfer", "consent", True, True, True),
    ("self_service", "contract", False, False, True),
    ("legal_claims", "legal_obligation", False, True, True),
]
CONSENT_PURPOSES = ["health_data", "marketing_contact", "loyalty_profiling", "third_party_sharing", "photo_use", "cross_border_transfer"]


# -- helpers ---------------------------------------------------------------------------


def url(member_id: str, *rest: str) -> str:
    return "/".join((f"/v1/members/{member_id}/consents", *rest))


def grant(purpose: str = "marketing_contact", version: int | None = 1, channel: str = "app", **more: object) -> dict[str, object]:
    body: dict[str, object] = {"purpose": purpose, "decision": "granted", "channel": channel, **more}
    if version is not None:
        body["notice_version"] = version
    return body


def withdraw(purpose: str = "marketing_contact", channel: str = "app", **more: object) -> dict[str, object]:
    return {"purpose": purpose, "decision": "withdrawn", "channel": channel, **more}


def member(vault: Vault, index: int, **extra: str) -> dict[str, str]:
    """Headers of member ``index``'s own token in the card app."""
    m = vault.members[index]
    return vault.headers(vault.token("member", subject=f"app-{index}", member_id=m.member_id), "self_service", **extra)


def desk(vault: Vault, clinic: str, **extra: str) -> dict[str, str]:
    return vault.headers(vault.token("front_desk", subject="desk-1", clinics=[clinic]), "care", **extra)


def dpo(vault: Vault) -> dict[str, str]:
    return vault.headers(vault.token("dpo", subject="dpo-1"))


def events_since(vault: Vault, before: int) -> list[dict[str, Any]]:
    return [json.loads(e) for e in vault.journal_events()[before:]]


def summary(e: dict[str, Any]) -> tuple[object, ...]:
    return (e["action"], e["resource_type"], e["member_id"], e["fields"], e["decision"], e["reason_code"], e["outcome"])


def count_events(vault: Vault) -> int:
    with vault.runtime.data_engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(consent_events)).scalar_one())


def ok(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["cache-control"] == "no-store"
    body: dict[str, Any] = r.json()
    return body


def problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """The problem+json body of ``r`` without its request id (checked against the header)."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["cache-control"] == "no-store"
    body: dict[str, Any] = r.json()
    assert body.pop("request_id") == r.headers["x-request-id"]
    assert (body["type"], body["status"]) == (PROBLEMS + slug, status)
    return body


def notice_hash(purpose: str, version: int, effective_at: str, *, material: bool, texts: dict[str, str]) -> str:
    """The notice hash as vault/consent/notices.py documents it."""
    doc = {
        "effective_at": effective_at,
        "material": material,
        "purpose": purpose,
        "texts": {lang: hashlib.sha256(texts[lang].encode()).hexdigest() for lang in ("en", "zh")},
        "version": version,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def in_days(days: int) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)


def catalog_entry(vault: Vault, purpose: str) -> dict[str, Any]:
    return next(i for i in vault.client.get("/v1/purposes").json()["items"] if i["id"] == purpose)


# -- the purpose catalog and notices ---------------------------------------------------------


def test_the_purpose_catalog_is_public_lists_all_nine_purposes_and_journals_nothing(vault: Vault) -> None:
    before = vault.journal_size()

    body = ok(vault.client.get("/v1/purposes"), 200)

    items = body["items"]
    assert [(i["id"], i["legal_basis"], i["needs_consent"], i["sensitive"], i["statable"]) for i in items] == CATALOG
    for i in items:
        texts = {lang: i["texts"][lang]["text"] for lang in ("zh", "en")}
        assert all(texts.values())
        for lang, text in texts.items():
            assert i["texts"][lang]["sha256"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
        assert (i["notice_version"], i["effective_at"], i["material"], i["upcoming"]) == (1, "2026-01-01T00:00:00Z", True, [])
        assert i["notice_hash"] == notice_hash(i["id"], 1, "2026-01-01T00:00:00Z", material=True, texts=texts)
    assert vault.journal_size() == before


def test_the_dpo_publishes_a_material_and_a_non_material_notice_version(vault: Vault) -> None:
    effective = in_days(2)
    before = vault.journal_size()

    material = ok(
        vault.client.post(
            "/v1/purposes/marketing_contact/notices",
            json={"version": 2, "texts": TEXTS, "material": True, "effective_at": rfc3339(effective)},
            headers=dpo(vault),
        ),
        201,
    )
    minor = ok(
        vault.client.post(
            "/v1/purposes/photo_use/notices", json={"version": 2, "texts": TEXTS, "material": False, "effective_at": rfc3339(effective)}, headers=dpo(vault)
        ),
        201,
    )

    texts_out = {lang: {"text": text, "sha256": hashlib.sha256(text.encode()).hexdigest()} for lang, text in TEXTS.items()}
    assert material == {
        "purpose": "marketing_contact",
        "version": 2,
        "notice_hash": notice_hash("marketing_contact", 2, rfc3339(effective), material=True, texts=TEXTS),
        "material": True,
        "effective_at": rfc3339(effective),
        "texts": texts_out,
        "stale_from": rfc3339(effective + timedelta(days=30)),
    }
    assert minor == {
        "purpose": "photo_use",
        "version": 2,
        "notice_hash": notice_hash("photo_use", 2, rfc3339(effective), material=False, texts=TEXTS),
        "material": False,
        "effective_at": rfc3339(effective),
        "texts": texts_out,
        "stale_from": None,
    }
    events = events_since(vault, before)
    assert [(e["action"], e["resource_type"], e["resource_id"], e["member_id"], e["purpose"], e["decision"], e["outcome"]) for e in events] == [
        ("publish_notice", "notice", "marketing_contact:2", None, None, "allow", "ok"),
        ("publish_notice", "notice", "photo_use:2", None, None, "allow", "ok"),
    ]
    leaves = b"".join(vault.journal_events()).decode()
    assert all(text not in leaves for text in TEXTS.values())
    entry = catalog_entry(vault, "marketing_contact")
    assert (entry["notice_version"], [n["version"] for n in entry["upcoming"]]) == (1, [2])
    assert {k: v for k, v in material.items() if k != "stale_from"} == entry["upcoming"][0]


@SQLITE
@pytest.mark.parametrize("role", ["front_desk", "vault_admin"])
def test_only_the_dpo_publishes_notices(vault: Vault, role: str) -> None:
    """SECURITY-BAR H11: a role without ``purposes:notices`` gets 403, journaled as a deny, and nothing is published."""
    token = vault.token(role, subject=f"{role}-1", clinics=[vault.members[0].home_clinic_id])
    before = vault.journal_size()

    r = vault.client.post("/v1/purposes/marketing_contact/notices", json={"version": 2, "texts": TEXTS, "material": True}, headers=vault.headers(token, "care"))

    assert problem(r, 403, "forbidden")["detail"] == "the policy does not allow this request"
    (event,) = events_since(vault, before)
    assert (event["action"], event["resource_id"], event["actor"]["roles"], event["decision"], event["reason_code"], event["outcome"]) == (
        "publish_notice",
        "marketing_contact:2",
        [role],
        "deny",
        "no_matching_rule",
        "denied",
    )
    entry = catalog_entry(vault, "marketing_contact")
    assert (entry["notice_version"], entry["upcoming"]) == (1, [])


@SQLITE
def test_a_notice_version_not_above_the_latest_is_409_and_an_effective_at_in_the_past_is_422(vault: Vault) -> None:
    path = "/v1/purposes/loyalty_profiling/notices"
    assert (
        vault.client.post(path, json={"version": 2, "texts": TEXTS, "material": True, "effective_at": rfc3339(in_days(3))}, headers=dpo(vault)).status_code
        == 201
    )
    before = vault.journal_size()

    again = vault.client.post(path, json={"version": 2, "texts": TEXTS, "material": False, "effective_at": rfc3339(in_days(4))}, headers=dpo(vault))
    lower = vault.client.post(path, json={"version": 1, "texts": TEXTS, "material": False, "effective_at": rfc3339(in_days(4))}, headers=dpo(vault))
    past = vault.client.post(path, json={"version": 3, "texts": TEXTS, "material": True, "effective_at": rfc3339(in_days(-1))}, headers=dpo(vault))
    earlier = vault.client.post(path, json={"version": 3, "texts": TEXTS, "material": True, "effective_at": rfc3339(in_days(1))}, headers=dpo(vault))

    detail = "version 2 of the loyalty_profiling notice exists; publish version 3 or higher"
    assert problem(again, 409, "conflict")["detail"] == detail
    assert problem(lower, 409, "conflict")["detail"] == detail
    assert problem(past, 422, "invalid-fields")["errors"] == {"effective_at": "in_the_past"}
    assert problem(earlier, 422, "invalid-fields")["errors"] == {"effective_at": "before_previous_version"}
    assert [(e["action"], e["resource_id"], e["decision"], e["outcome"]) for e in events_since(vault, before)] == [
        ("publish_notice", "loyalty_profiling:2", "allow", "conflict"),
        ("publish_notice", "loyalty_profiling:1", "allow", "conflict"),
        ("publish_notice", "loyalty_profiling:3", "allow", "invalid"),
        ("publish_notice", "loyalty_profiling:3", "allow", "invalid"),
    ]
    assert [n["version"] for n in catalog_entry(vault, "loyalty_profiling")["upcoming"]] == [2]


@SQLITE
def test_regression_notice_effective_at_overflow_a_notice_beyond_2999_is_422_and_the_purpose_keeps_working(vault: Vault) -> None:
    """An ``effective_at`` whose stale moment no datetime can hold was published, answered 500 and broke every later state of the purpose."""
    m = vault.members[2]
    before, stored = vault.journal_size(), count_events(vault)

    r = vault.client.post(
        "/v1/purposes/marketing_contact/notices",
        json={"version": 2, "texts": TEXTS, "material": True, "effective_at": "9999-12-31T23:59:59Z"},
        headers=dpo(vault),
    )

    assert problem(r, 422, "invalid-fields")["errors"] == {"effective_at": "less_than_equal"}
    (event,) = events_since(vault, before)
    assert (event["action"], event["resource_id"], event["decision"], event["outcome"]) == ("publish_notice", None, "allow", "invalid")
    assert catalog_entry(vault, "marketing_contact")["upcoming"] == []
    ok(vault.client.post(url(m.member_id), json=grant(), headers=member(vault, 2)), 201)
    assert ok(vault.client.get(url(m.member_id), headers=member(vault, 2)), 200)["current"]["marketing_contact"]["state"] == "granted"
    assert count_events(vault) == stored + 1


@SQLITE
def test_publishing_for_an_unknown_purpose_is_400_and_without_a_token_401_and_neither_is_journaled(vault: Vault) -> None:
    body = {"version": 2, "texts": TEXTS, "material": True}
    before = vault.journal_size()

    unknown = vault.client.post("/v1/purposes/newsletter/notices", json=body, headers=dpo(vault))
    anonymous = vault.client.post("/v1/purposes/marketing_contact/notices", json=body)
    anonymous_unknown = vault.client.post("/v1/purposes/newsletter/notices", json=body)

    assert problem(unknown, 400, "bad-request")["detail"] == "malformed request (path)"
    problem(anonymous, 401, "unauthorized")
    problem(anonymous_unknown, 401, "unauthorized")
    assert vault.journal_size() == before
    assert catalog_entry(vault, "marketing_contact")["upcoming"] == []


# -- recording and reading consent -------------------------------------------------------------


def test_a_member_grants_and_withdraws_marketing_contact_in_the_app_and_reads_history_and_state(vault: Vault) -> None:
    m = vault.members[2]
    marketing = catalog_entry(vault, "marketing_contact")
    before, stored = vault.journal_size(), count_events(vault)

    created = vault.client.post(url(m.member_id), json=grant(), headers=member(vault, 2))

    granted = ok(created, 201)
    assert created.headers["location"] == url(m.member_id, granted["consent_id"])
    assert set(granted) == {*grant(), "consent_id", "notice_hash", "given_by", "evidence", "recorded_by", "recorded_role", "recorded_at", "receipt"}
    assert {k: v for k, v in granted.items() if k not in {"consent_id", "recorded_at", "receipt"}} == {
        "purpose": "marketing_contact",
        "decision": "granted",
        "notice_version": 1,
        "notice_hash": marketing["notice_hash"],
        "channel": "app",
        "given_by": "member",
        "evidence": None,
        "recorded_by": "app-2",
        "recorded_role": "member",
    }
    assert granted["receipt"].count(".") == 2

    withdrawn = ok(vault.client.post(url(m.member_id), json=withdraw(), headers=member(vault, 2)), 201)

    assert (withdrawn["decision"], withdrawn["notice_version"], withdrawn["notice_hash"]) == ("withdrawn", None, None)
    overview = ok(vault.client.get(url(m.member_id), headers=member(vault, 2)), 200)
    assert overview["member_id"] == m.member_id
    assert overview["history"] == [granted, withdrawn]
    assert overview["current"] == {p: {"state": "none", "notice_version": None, "since": None} for p in CONSENT_PURPOSES} | {
        "marketing_contact": {"state": "withdrawn", "notice_version": None, "since": withdrawn["recorded_at"]}
    }
    assert ok(vault.client.get(url(m.member_id, granted["consent_id"]), headers=member(vault, 2)), 200) == granted
    assert count_events(vault) == stored + 2
    assert [summary(e) for e in events_since(vault, before)] == [
        ("grant_consent", "consent", m.member_id, ["marketing_contact"], "allow", "allowed", "ok"),
        ("withdraw_consent", "consent", m.member_id, ["marketing_contact"], "allow", "allowed", "ok"),
        ("read", "consent", m.member_id, [], "allow", "allowed", "ok"),
        ("read", "consent", m.member_id, [], "allow", "allowed", "ok"),
    ]
    assert [e["resource_id"] for e in events_since(vault, before)] == [granted["consent_id"], withdrawn["consent_id"], None, granted["consent_id"]]


def test_the_front_desk_records_a_paper_consent_with_evidence_and_without_evidence_gets_422(vault: Vault) -> None:
    m = vault.members[3]
    headers = desk(vault, m.home_clinic_id)
    before, stored = vault.journal_size(), count_events(vault)

    recorded = vault.client.post(url(m.member_id), json=grant("photo_use", channel="paper", evidence=EVIDENCE), headers=headers)
    missing = vault.client.post(url(m.member_id), json=grant("loyalty_profiling", channel="front_desk"), headers=headers)

    body = ok(recorded, 201)
    assert (body["channel"], body["evidence"], body["recorded_by"], body["recorded_role"], body["given_by"]) == (
        "paper",
        EVIDENCE,
        "desk-1",
        "front_desk",
        "member",
    )
    assert problem(missing, 422, "invalid-fields")["errors"] == {"evidence": "required"}
    assert count_events(vault) == stored + 1
    overview = ok(vault.client.get(url(m.member_id), headers=headers), 200)
    assert overview["history"] == [body]
    assert (overview["current"]["photo_use"]["state"], overview["current"]["loyalty_profiling"]["state"]) == ("granted", "none")
    assert [summary(e) for e in events_since(vault, before)] == [
        ("grant_consent", "consent", m.member_id, ["photo_use"], "allow", "allowed", "ok"),
        ("grant_consent", "consent", m.member_id, ["loyalty_profiling"], "allow", "allowed", "invalid"),
        ("read", "consent", m.member_id, [], "allow", "allowed", "ok"),
    ]
    leaves = b"".join(vault.journal_events())
    assert EVIDENCE.encode() not in leaves
    assert b"paper-form" not in leaves


@SQLITE
@pytest.mark.parametrize(
    ("body", "errors"),
    [
        pytest.param(grant("newsletter"), {"purpose": "enum"}, id="unknown-purpose"),
        pytest.param(grant("care"), {"purpose": "enum"}, id="a-purpose-that-takes-no-consent"),
        pytest.param(grant(version=99), {"notice_version": "unknown"}, id="unknown-notice-version"),
        pytest.param(grant(version=None), {"notice_version": "required"}, id="grant-without-a-version"),
        pytest.param(grant(channel="paper", evidence=EVIDENCE), {"channel": "not_for_recorder"}, id="member-on-paper"),
        pytest.param(grant(given_by="guardian"), {"given_by": "guardian_not_applicable"}, id="guardian-for-an-adult"),
    ],
)
def test_a_bad_consent_body_is_422_naming_the_field_journaled_invalid_and_writes_nothing(vault: Vault, body: dict[str, object], errors: dict[str, str]) -> None:
    m = vault.members[2]
    before, stored = vault.journal_size(), count_events(vault)

    r = vault.client.post(url(m.member_id), json=body, headers=member(vault, 2))

    assert problem(r, 422, "invalid-fields")["errors"] == errors
    assert count_events(vault) == stored
    (event,) = events_since(vault, before)
    assert (event["member_id"], event["decision"], event["outcome"]) == (m.member_id, "allow", "invalid")
    assert event["action"] == ("record_consent" if body["purpose"] in {"newsletter", "care"} else "grant_consent")


@SQLITE
def test_health_data_as_x_purpose_is_400_before_any_decision(vault: Vault) -> None:
    """``health_data`` is a consent, not a purpose a caller states: refused as a malformed request, nothing journaled or written."""
    m = vault.members[2]
    token = vault.token("member", subject="app-2", member_id=m.member_id)
    before, stored = vault.journal_size(), count_events(vault)

    post = vault.client.post(url(m.member_id), json=grant("health_data"), headers=vault.headers(token, "health_data"))
    get = vault.client.get(url(m.member_id), headers=vault.headers(token, "health_data"))

    assert problem(post, 400, "bad-request")["detail"] == problem(get, 400, "bad-request")["detail"] == "malformed request (header)"
    assert (vault.journal_size(), count_events(vault)) == (before, stored)


@SQLITE
def test_a_grant_on_a_notice_version_that_is_no_longer_current_is_409_naming_the_current_one(vault: Vault) -> None:
    m = vault.members[2]
    published = ok(vault.client.post("/v1/purposes/marketing_contact/notices", json={"version": 2, "texts": TEXTS, "material": True}, headers=dpo(vault)), 201)
    before, stored = vault.journal_size(), count_events(vault)

    old = vault.client.post(url(m.member_id), json=grant(version=1), headers=member(vault, 2))
    current = vault.client.post(url(m.member_id), json=grant(version=2), headers=member(vault, 2))

    assert problem(old, 409, "conflict")["detail"] == (
        f"version 1 of the marketing_contact notice is not current; the current version is 2 (hash {published['notice_hash']})"
    )
    assert (ok(current, 201)["notice_version"], current.json()["notice_hash"]) == (2, published["notice_hash"])
    assert count_events(vault) == stored + 1
    assert [(e["action"], e["decision"], e["outcome"]) for e in events_since(vault, before)] == [
        ("grant_consent", "allow", "conflict"),
        ("grant_consent", "allow", "ok"),
    ]


@SQLITE
def test_a_member_token_for_another_member_is_the_same_403_for_a_real_and_a_made_up_member_and_writes_nothing(vault: Vault) -> None:
    """SECURITY-BAR H10: member 2's token reaches neither member 3's consent nor a made-up member's, and the answers cannot tell them apart."""
    headers = member(vault, 2)
    before, stored = vault.journal_size(), count_events(vault)

    answers = [
        request
        for target in (vault.members[3].member_id, MADE_UP)
        for request in (
            vault.client.post(url(target), json=grant(), headers=headers),
            vault.client.post(url(target), json=withdraw(), headers=headers),
            vault.client.get(url(target), headers=headers),
        )
    ]

    bodies = [problem(r, 403, "forbidden") for r in answers]
    assert bodies[:3] == bodies[3:]
    assert all(b == bodies[0] for b in bodies)
    assert count_events(vault) == stored
    assert [summary(e) for e in events_since(vault, before)] == [
        (action, "consent", target, fields, "deny", "no_matching_rule", "denied")
        for target in (vault.members[3].member_id, MADE_UP)
        for action, fields in (("grant_consent", ["marketing_contact"]), ("withdraw_consent", ["marketing_contact"]), ("read", []))
    ]


@SQLITE
def test_the_front_desk_of_another_clinic_is_refused_like_for_a_made_up_member(vault: Vault) -> None:
    headers = desk(vault, OTHER_CLINIC)
    before, stored = vault.journal_size(), count_events(vault)

    answers = [
        vault.client.post(url(target), json=grant(channel="front_desk", evidence=EVIDENCE), headers=headers) for target in (vault.members[0].member_id, MADE_UP)
    ] + [vault.client.get(url(vault.members[0].member_id), headers=headers)]

    bodies = [problem(r, 403, "forbidden") for r in answers]
    assert all(b == bodies[0] for b in bodies)
    assert count_events(vault) == stored
    assert [(e["action"], e["member_id"], e["decision"], e["reason_code"], e["outcome"]) for e in events_since(vault, before)] == [
        ("grant_consent", vault.members[0].member_id, "deny", "no_matching_rule", "denied"),
        ("grant_consent", MADE_UP, "deny", "no_matching_rule", "denied"),
        ("read", vault.members[0].member_id, "deny", "no_matching_rule", "denied"),
    ]


def test_a_retry_with_the_same_idempotency_key_records_one_event_and_another_body_is_409(vault: Vault) -> None:
    m = vault.members[3]
    headers = desk(vault, m.home_clinic_id, **{"Idempotency-Key": "desk-1-form-42"})
    body = grant("third_party_sharing", channel="front_desk", evidence=EVIDENCE)
    before, stored = vault.journal_size(), count_events(vault)

    first = vault.client.post(url(m.member_id), json=body, headers=headers)
    again = vault.client.post(url(m.member_id), json=body, headers=headers)
    other = vault.client.post(url(m.member_id), json=withdraw("third_party_sharing", channel="front_desk", evidence=EVIDENCE), headers=headers)

    assert ok(again, 201) == ok(first, 201)
    assert again.headers["location"] == first.headers["location"]
    assert problem(other, 409, "conflict")["detail"] == "this Idempotency-Key was used for a different request"
    assert count_events(vault) == stored + 1
    consent_id = first.json()["consent_id"]
    # The key-reuse 409 is answered before any event: like every other creating route (api/idempotency.py), it journals nothing.
    assert [(e["action"], e["resource_id"], e["member_id"], e["decision"], e["outcome"]) for e in events_since(vault, before)] == [
        ("grant_consent", consent_id, m.member_id, "allow", "ok"),
        ("create", consent_id, m.member_id, "allow", "replayed"),
    ]


@SQLITE
def test_a_consent_id_that_is_not_this_members_is_404_for_the_member(vault: Vault) -> None:
    theirs = ok(vault.client.post(url(vault.members[3].member_id), json=grant(), headers=member(vault, 3)), 201)["consent_id"]
    mine = vault.members[2].member_id
    before = vault.journal_size()

    answers = [vault.client.get(url(mine, consent_id, *tail), headers=member(vault, 2)) for consent_id in (theirs, MADE_UP) for tail in ((), ("fhir",))]

    bodies = [problem(r, 404, "not-found") for r in answers]
    assert all(b == {"type": PROBLEMS + "not-found", "title": "Not found", "status": 404, "detail": "no such resource"} for b in bodies)
    assert [(e["action"], e["resource_id"], e["member_id"], e["decision"], e["outcome"]) for e in events_since(vault, before)] == [
        ("read", consent_id, mine, "allow", "not_found") for consent_id in (theirs, theirs, MADE_UP, MADE_UP)
    ]


def test_every_event_renders_as_a_fhir_r4b_consent_permit_for_a_grant_and_deny_for_a_withdrawal(vault: Vault) -> None:
    m = vault.members[3]
    headers = desk(vault, m.home_clinic_id)
    granted = ok(vault.client.post(url(m.member_id), json=grant("photo_use", channel="paper", evidence=EVIDENCE), headers=headers), 201)
    withdrawn = ok(vault.client.post(url(m.member_id), json=withdraw("photo_use", channel="front_desk", evidence=EVIDENCE), headers=headers), 201)
    before = vault.journal_size()

    rendered = {}
    for event in (granted, withdrawn):
        r = vault.client.get(url(m.member_id, event["consent_id"], "fhir"), headers=headers)
        assert (r.status_code, r.headers["content-type"], r.headers["cache-control"]) == (200, "application/fhir+json; charset=utf-8", "no-store")
        rendered[event["decision"]] = Consent.model_validate(r.json())
        assert EVIDENCE not in r.text

    permit, deny = rendered["granted"], rendered["withdrawn"]
    assert (permit.id, deny.id) == (granted["consent_id"], withdrawn["consent_id"])
    assert (permit.status, permit.provision.type, deny.provision.type) == ("active", "permit", "deny")
    assert permit.patient.reference == deny.patient.reference == f"Patient/{m.member_id}"
    assert [c.code for c in permit.provision.purpose] == [c.code for c in deny.provision.purpose] == ["photo_use"]
    assert permit.policyRule.coding[0].code == "consent"
    assert [p.uri for p in permit.policy] == [f"urn:member-vault:notice:photo_use:1:sha256:{granted['notice_hash']}"]
    assert deny.policy is None
    assert [e.valueCode for e in permit.extension] == ["paper"]
    assert [e.valueCode for e in deny.extension] == ["front_desk"]
    assert permit.performer[0].reference == f"Patient/{m.member_id}"
    assert [(e["action"], e["resource_id"], e["outcome"]) for e in events_since(vault, before)] == [
        ("read", granted["consent_id"], "ok"),
        ("read", withdrawn["consent_id"], "ok"),
    ]
