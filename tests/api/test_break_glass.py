"""The break-glass review queue over HTTP: who may see and close reviews, paging, and one audit event per decision."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.conftest import Vault

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])
MADE_UP = "0" * 32


def break_glass_read(vault: Vault, member_id: str, request_id: str) -> None:
    """A practitioner outside the member's clinics reads the member with a reason: one pending review."""
    token = vault.token("practitioner", subject="dr-er", clinics=["zz-999"])
    headers = vault.headers(token, "care", **{"X-Break-Glass-Reason": "adverse_event", "X-Request-ID": request_id})
    assert vault.client.get(f"/v1/members/{member_id}", headers=headers).status_code == 200


def last_event(vault: Vault) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(vault.journal_events()[-1])
    return event


def test_a_practitioner_can_neither_list_nor_close_reviews(vault: Vault) -> None:
    break_glass_read(vault, vault.members[0].member_id, "bg-1")
    review_id = vault.client.get("/v1/break-glass", headers=vault.headers(vault.token("dpo"))).json()["items"][0]["review_id"]
    practitioner = vault.headers(vault.token("practitioner", clinics=["*"]), "care")
    before = vault.journal_size()

    listed = vault.client.get("/v1/break-glass", headers=practitioner)
    closed = vault.client.post(f"/v1/break-glass/{review_id}/review", json={"outcome": "justified"}, headers=practitioner)
    made_up = vault.client.post(f"/v1/break-glass/{MADE_UP}/review", json={"outcome": "justified"}, headers=practitioner)

    assert [listed.status_code, closed.status_code, made_up.status_code] == [403, 403, 403]
    assert {k: v for k, v in closed.json().items() if k != "request_id"} == {k: v for k, v in made_up.json().items() if k != "request_id"}
    assert vault.journal_size() == before + 3
    events = [json.loads(e) for e in vault.journal_events()[-3:]]
    assert [(e["action"], e["resource_type"], e["resource_id"], e["decision"], e["purpose"]) for e in events] == [
        ("list", "break_glass", None, "deny", None),
        ("review", "break_glass", review_id, "deny", None),
        ("review", "break_glass", MADE_UP, "deny", None),
    ]
    assert vault.client.get("/v1/break-glass", headers=vault.headers(vault.token("dpo"))).json()["items"][0]["status"] == "pending"


def test_the_dpo_lists_and_closes_a_review_and_a_second_review_is_409(vault: Vault) -> None:
    m = vault.members[0]
    break_glass_read(vault, m.member_id, "bg-2")
    dpo = vault.headers(vault.token("dpo", subject="dpo-1"))
    before = vault.journal_size()

    listed = vault.client.get("/v1/break-glass", params={"status": "pending"}, headers=dpo)

    assert listed.status_code == 200
    (review,) = listed.json()["items"]
    assert listed.json()["next_cursor"] is None
    assert {k: v for k, v in review.items() if k not in ("review_id", "requested_at")} == {
        "member_id": m.member_id,
        "subject": "dr-er",
        "reason_code": "adverse_event",
        "request_id": "bg-2",
        "status": "pending",
        "reviewed_by": None,
        "reviewed_at": None,
        "outcome": None,
    }
    closed = vault.client.post(f"/v1/break-glass/{review['review_id']}/review", json={"outcome": "unjustified"}, headers=dpo)
    assert closed.status_code == 200
    assert {k: v for k, v in closed.json().items() if k != "reviewed_at"} == {
        "review_id": review["review_id"],
        "status": "reviewed",
        "outcome": "unjustified",
        "reviewed_by": "dpo-1",
    }
    again = vault.client.post(f"/v1/break-glass/{review['review_id']}/review", json={"outcome": "justified"}, headers=dpo)
    assert again.status_code == 409
    assert vault.journal_size() == before + 3
    assert [(e["action"], e["decision"], e["outcome"]) for e in (json.loads(b) for b in vault.journal_events()[-3:])] == [
        ("list", "allow", "ok"),
        ("review", "allow", "ok"),
        ("review", "allow", "conflict"),
    ]
    assert vault.client.get("/v1/break-glass", params={"status": "pending"}, headers=dpo).json()["items"] == []
    (done,) = vault.client.get("/v1/break-glass", params={"status": "reviewed"}, headers=dpo).json()["items"]
    assert (done["review_id"], done["outcome"], done["reviewed_by"]) == (review["review_id"], "unjustified", "dpo-1")


def test_a_compliance_officer_works_the_queue_too(vault: Vault) -> None:
    break_glass_read(vault, vault.members[1].member_id, "bg-3")
    officer = vault.headers(vault.token("compliance_officer", subject="co-1"))

    (review,) = vault.client.get("/v1/break-glass", headers=officer).json()["items"]
    closed = vault.client.post(f"/v1/break-glass/{review['review_id']}/review", json={"outcome": "justified"}, headers=officer)

    assert (closed.status_code, closed.json()["reviewed_by"]) == (200, "co-1")


def test_a_made_up_review_is_404_and_a_bad_outcome_is_422_for_the_dpo(vault: Vault) -> None:
    break_glass_read(vault, vault.members[0].member_id, "bg-4")
    dpo = vault.headers(vault.token("dpo"))
    (review,) = vault.client.get("/v1/break-glass", headers=dpo).json()["items"]

    missing = vault.client.post(f"/v1/break-glass/{MADE_UP}/review", json={"outcome": "justified"}, headers=dpo)
    assert (missing.status_code, last_event(vault)["outcome"]) == (404, "not_found")
    bad = vault.client.post(f"/v1/break-glass/{review['review_id']}/review", json={"outcome": "fine", "note": "x"}, headers=dpo)
    assert (bad.status_code, bad.json()["errors"]) == (422, {"note": "extra_forbidden", "outcome": "enum"})
    assert (last_event(vault)["decision"], last_event(vault)["outcome"]) == ("allow", "invalid")
    assert vault.client.get("/v1/break-glass", headers=dpo).json()["items"][0]["status"] == "pending"


def test_paging_walks_every_review_exactly_once_and_bad_queries_are_400(vault: Vault) -> None:
    for i in range(5):
        break_glass_read(vault, vault.members[i % 4].member_id, f"bg-page-{i}")
    dpo = vault.headers(vault.token("dpo"))
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = vault.client.get("/v1/break-glass", params=params, headers=dpo).json()
        seen += [r["request_id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert sorted(seen) == [f"bg-page-{i}" for i in range(5)]
    assert len(seen) == len(set(seen)) == 5
    before = vault.journal_size()
    bad: list[dict[str, str | int]] = [{"status": "closed"}, {"cursor": "garbage!"}, {"limit": 0}]
    for params in bad:
        assert vault.client.get("/v1/break-glass", params=params, headers=dpo).status_code == 400
    assert vault.journal_size() == before
