"""The card ledger over HTTP: entries, balances, 409 beyond the balance, idempotent retries, paging, one audit event per decision."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.api.conftest import Vault
from vault.ledger import Balance

SQLITE = pytest.mark.parametrize("backend", ["sqlite"])


def balance(vault: Vault, member_id: str) -> Balance:
    with vault.runtime.data_engine.connect() as conn:
        return vault.runtime.ledger.balance(conn, member_id)


def last_event(vault: Vault) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(vault.journal_events()[-1])
    return event


def front_desk(vault: Vault, clinic: str, **extra: str) -> dict[str, str]:
    return vault.headers(vault.token("front_desk", subject="desk-1", clinics=[clinic]), "care", **extra)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_top_up_then_a_spend_within_the_balance_are_recorded_in_order(vault: Vault) -> None:
    m = vault.members[0]
    start = balance(vault, m.member_id)
    assert start.seq >= 1  # the demo seed gives each member some entries
    url = f"/v1/members/{m.member_id}/ledger"
    before = vault.journal_size()

    top_up = vault.client.post(url, json={"entry_type": "top_up", "amount": 100_000}, headers=front_desk(vault, m.home_clinic_id))
    spend = vault.client.post(url, json={"entry_type": "spend", "amount": start.amount + 30_000}, headers=front_desk(vault, m.home_clinic_id))

    assert (top_up.status_code, spend.status_code) == (201, 201)
    assert top_up.json() == {"entry_id": top_up.json()["entry_id"], "seq": start.seq + 1}
    assert spend.json() == {"entry_id": spend.json()["entry_id"], "seq": start.seq + 2}
    assert balance(vault, m.member_id) == Balance(70_000, start.points, start.seq + 2)
    assert vault.journal_size() == before + 2
    event = last_event(vault)
    assert (event["action"], event["resource_type"], event["member_id"], event["fields"], event["decision"], event["outcome"]) == (
        "create",
        "ledger_entry",
        m.member_id,
        ["amount", "entry_type"],
        "allow",
        "ok",
    )
    page = vault.client.get(url, params={"cursor": _seq_cursor(start.seq)}, headers=front_desk(vault, m.home_clinic_id))
    assert page.status_code == 200
    items = page.json()["items"]
    assert [{k: v for k, v in item.items() if k != "occurred_at"} for item in items] == [
        {
            "entry_id": top_up.json()["entry_id"],
            "seq": start.seq + 1,
            "entry_type": "top_up",
            "amount": 100_000,
            "points": 0,
            "balance_after": start.amount + 100_000,
            "points_balance_after": start.points,
        },
        {
            "entry_id": spend.json()["entry_id"],
            "seq": start.seq + 2,
            "entry_type": "spend",
            "amount": start.amount + 30_000,
            "points": 0,
            "balance_after": 70_000,
            "points_balance_after": start.points,
        },
    ]
    assert page.json()["next_cursor"] is None


@SQLITE
def test_a_spend_beyond_the_balance_is_409_writes_nothing_and_journals_a_conflict(vault: Vault) -> None:
    m = vault.members[0]
    start = balance(vault, m.member_id)
    before = vault.journal_size()

    r = vault.client.post(
        f"/v1/members/{m.member_id}/ledger", json={"entry_type": "spend", "amount": start.amount + 1}, headers=front_desk(vault, m.home_clinic_id)
    )

    assert r.status_code == 409
    assert r.json()["type"] == "https://member-vault.example/problems/conflict"
    assert str(start.amount + 1) not in r.text
    assert balance(vault, m.member_id) == start
    assert vault.journal_size() == before + 1
    event = last_event(vault)
    assert (event["decision"], event["outcome"]) == ("allow", "conflict")


@SQLITE
def test_points_are_earned_and_a_redemption_beyond_them_is_409(vault: Vault) -> None:
    m = vault.members[0]
    start = balance(vault, m.member_id)
    url = f"/v1/members/{m.member_id}/ledger"

    earn = vault.client.post(url, json={"entry_type": "points_earn", "amount": 0, "points": 500}, headers=front_desk(vault, m.home_clinic_id))
    redeem = vault.client.post(
        url, json={"entry_type": "points_redeem", "amount": 0, "points": start.points + 501}, headers=front_desk(vault, m.home_clinic_id)
    )

    assert (earn.status_code, redeem.status_code) == (201, 409)
    assert balance(vault, m.member_id) == Balance(start.amount, start.points + 500, start.seq + 1)


@SQLITE
def test_a_retry_with_the_same_idempotency_key_writes_once_and_another_body_is_409(vault: Vault) -> None:
    m = vault.members[0]
    start = balance(vault, m.member_id)
    url = f"/v1/members/{m.member_id}/ledger"
    headers = front_desk(vault, m.home_clinic_id, **{"Idempotency-Key": "till-7-receipt-1"})
    before = vault.journal_size()

    first = vault.client.post(url, json={"entry_type": "top_up", "amount": 5_000}, headers=headers)
    again = vault.client.post(url, json={"entry_type": "top_up", "amount": 5_000}, headers=headers)
    other = vault.client.post(url, json={"entry_type": "top_up", "amount": 6_000}, headers=headers)

    assert (first.status_code, again.status_code, other.status_code) == (201, 201, 409)
    assert again.json() == first.json() == {"entry_id": first.json()["entry_id"], "seq": start.seq + 1}
    assert balance(vault, m.member_id) == Balance(start.amount + 5_000, start.points, start.seq + 1)
    assert vault.journal_size() == before + 2  # the write, and the retry's decision (outcome replayed)
    assert json.loads(vault.journal_events()[-1])["outcome"] == "replayed"


@SQLITE
def test_a_retry_is_decided_again_and_a_caller_who_lost_the_right_gets_no_replay(vault: Vault) -> None:
    m = vault.members[0]
    url = f"/v1/members/{m.member_id}/ledger"
    first = vault.client.post(url, json={"entry_type": "top_up", "amount": 700}, headers=front_desk(vault, m.home_clinic_id, **{"Idempotency-Key": "k-1"}))
    elsewhere = vault.headers(vault.token("front_desk", subject="desk-1", clinics=["zz-999"]), "care", **{"Idempotency-Key": "k-1"})

    again = vault.client.post(url, json={"entry_type": "top_up", "amount": 700}, headers=elsewhere)

    assert (first.status_code, again.status_code) == (201, 403)
    assert first.json()["entry_id"] not in again.text
    event = json.loads(vault.journal_events()[-1])
    assert (event["decision"], event["outcome"]) == ("deny", "denied")


@SQLITE
def test_a_member_reads_their_own_ledger_but_cannot_write_it(vault: Vault) -> None:
    m, other = vault.members[0], vault.members[1]
    start = balance(vault, m.member_id)
    token = vault.token("member", subject="card-app", member_id=m.member_id)

    own = vault.client.get(f"/v1/members/{m.member_id}/ledger", params={"limit": 200}, headers=vault.headers(token, "self_service"))
    theirs = vault.client.get(f"/v1/members/{other.member_id}/ledger", headers=vault.headers(token, "self_service"))
    before = vault.journal_size()
    write = vault.client.post(f"/v1/members/{m.member_id}/ledger", json={"entry_type": "top_up", "amount": 1}, headers=vault.headers(token, "self_service"))

    assert own.status_code == 200
    assert [e["seq"] for e in own.json()["items"]] == list(range(1, start.seq + 1))
    assert (theirs.status_code, write.status_code) == (403, 403)
    assert vault.journal_size() == before + 1
    event = last_event(vault)
    assert (event["decision"], event["outcome"], event["purpose"]) == ("deny", "denied", "self_service")
    assert balance(vault, m.member_id) == start


@SQLITE
def test_a_practitioner_cannot_read_the_ledger(vault: Vault) -> None:
    m = vault.members[0]
    r = vault.client.get(f"/v1/members/{m.member_id}/ledger", headers=vault.headers(vault.token("practitioner", clinics=[m.home_clinic_id]), "care"))
    assert r.status_code == 403
    assert (last_event(vault)["decision"], last_event(vault)["fields"]) == ("deny", [])


@SQLITE
def test_paging_walks_every_entry_exactly_once_by_seq(vault: Vault) -> None:
    m = vault.members[0]
    headers = front_desk(vault, m.home_clinic_id)
    for amount in (1, 2, 3):
        vault.client.post(f"/v1/members/{m.member_id}/ledger", json={"entry_type": "top_up", "amount": amount}, headers=headers)
    total = balance(vault, m.member_id).seq
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = vault.client.get(f"/v1/members/{m.member_id}/ledger", params=params, headers=headers).json()
        assert len(page["items"]) <= 3
        seen += [e["seq"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == list(range(1, total + 1))


@SQLITE
@pytest.mark.parametrize("cursor", ["0", base64.urlsafe_b64encode(b"0").decode(), base64.urlsafe_b64encode(b"-1").decode(), "a" * 32])
def test_a_cursor_the_ledger_did_not_hand_out_is_400(vault: Vault, cursor: str) -> None:
    m = vault.members[0]
    before = vault.journal_size()
    r = vault.client.get(f"/v1/members/{m.member_id}/ledger", params={"cursor": cursor}, headers=front_desk(vault, m.home_clinic_id))
    assert r.status_code == 400
    assert vault.journal_size() == before


@SQLITE
@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"entry_type": "top_up", "amount": 10, "balance_after": 10}, {"balance_after": "read_only"}),
        ({"entry_type": "top_up", "amount": 10, "occurred_at": "2020-01-01T00:00:00Z"}, {"occurred_at": "read_only"}),
        ({"entry_type": "gift", "amount": 10}, {"entry_type": "not_in_value_set"}),
        ({"entry_type": "top_up", "amount": -10}, {"amount": "out_of_range"}),
    ],
)
def test_an_entry_the_ledger_does_not_accept_is_422_and_writes_nothing(vault: Vault, body: dict[str, object], errors: dict[str, str]) -> None:
    m = vault.members[0]
    start = balance(vault, m.member_id)

    r = vault.client.post(f"/v1/members/{m.member_id}/ledger", json=body, headers=front_desk(vault, m.home_clinic_id))

    assert r.status_code == 422
    assert r.json()["errors"] == errors
    assert (last_event(vault)["decision"], last_event(vault)["outcome"]) == ("allow", "invalid")
    assert balance(vault, m.member_id) == start


def _seq_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(str(seq).encode()).rstrip(b"=").decode()


@SQLITE
def test_an_integer_of_thousands_of_digits_is_a_400_not_a_500(vault: Vault) -> None:
    m = vault.members[0]
    body = b'{"entry_type": "top_up", "amount": ' + b"9" * 5000 + b"}"
    r = vault.client.post(
        f"/v1/members/{m.member_id}/ledger", content=body, headers={**front_desk(vault, m.home_clinic_id), "Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["detail"] == "the body is not acceptable JSON (integer_out_of_range)"
