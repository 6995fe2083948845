"""The audit routes over HTTP: events, checkpoints, proofs, export, scope and access logs, each request journaling one event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from api.runtime import make_checkpointer
from audit import store
from audit.checkpoint import open_note, parse_checkpoint, parse_verifier_key, verifier_key_string
from audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from audit.sequencer import Sequencer
from audit.verify import verify_export
from keys.signing import SigningPurpose
from tests.api.conftest import Vault

MADE_UP = "0" * 32


def checkpoint(vault: Vault) -> None:
    """Sequence the journal and sign a checkpoint covering every event so far (the audit pump's work)."""
    Sequencer(vault.runtime.data_engine).run_until_idle()
    make_checkpointer(vault.settings, vault.runtime.data_engine, vault.runtime.signing).make()


def read_member(vault: Vault, index: int = 0, subject: str = "dr-a") -> None:
    m = vault.members[index]
    r = vault.client.get(f"/v1/members/{m.member_id}", headers=vault.headers(vault.token("practitioner", subject=subject, clinics=[m.home_clinic_id]), "care"))
    assert r.status_code == 200


def last_event(vault: Vault) -> dict[str, object]:
    event: dict[str, object] = json.loads(vault.journal_events()[-1])
    return event


def strip(body: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in body.items() if k != "request_id"}


# -- events --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_compliance_officer_lists_events_filtered_by_member_and_decision(vault: Vault) -> None:
    read_member(vault, 0)
    read_member(vault, 1)
    denied = vault.client.get(f"/v1/members/{vault.members[0].member_id}", headers=vault.headers(vault.token("front_desk", clinics=["zz-9"]), "care"))
    assert denied.status_code == 403
    Sequencer(vault.runtime.data_engine).run_until_idle()
    before = vault.journal_size()
    token = vault.token("compliance_officer", subject="co-1")

    r = vault.client.get("/v1/audit/events", params={"member_id": vault.members[0].member_id, "decision": "allow"}, headers=vault.headers(token))

    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["next_cursor"] is None
    assert [(i["event"]["actor"]["subject"], i["event"]["member_id"], i["event"]["decision"]) for i in body["items"]] == [
        ("dr-a", vault.members[0].member_id, "allow")
    ]
    assert body["items"][0]["index"] == 0
    assert json.loads(vault.journal_events()[body["items"][0]["index"]]) == body["items"][0]["event"]
    assert vault.journal_size() == before + 1
    assert {k: last_event(vault)[k] for k in ("action", "resource_type", "decision", "outcome", "purpose")} == {
        "action": "read",
        "resource_type": "audit_events",
        "decision": "allow",
        "outcome": "ok",
        "purpose": None,
    }


@pytest.mark.parametrize("backend", ["sqlite"])
def test_events_page_with_a_cursor_and_filter_by_actor_action_and_time(vault: Vault) -> None:
    for index in range(3):
        read_member(vault, index, subject="dr-b")
    Sequencer(vault.runtime.data_engine).run_until_idle()
    headers = vault.headers(vault.token("dpo"))
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    query: dict[str, str | int] = {"actor": "dr-b", "action": "read", "since": since, "until": "2999-01-01T00:00:00Z", "limit": 2}

    first = vault.client.get("/v1/audit/events", params=query, headers=headers).json()
    second = vault.client.get("/v1/audit/events", params={**query, "cursor": first["next_cursor"]}, headers=headers).json()

    assert [i["index"] for i in first["items"]] == [0, 1]
    assert [i["index"] for i in second["items"]] == [2]
    assert second["next_cursor"] is None
    future = vault.client.get("/v1/audit/events", params={"since": "2999-01-01T00:00:00+08:00"}, headers=headers).json()
    assert future == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sql_metacharacters_in_actor_are_data(vault: Vault) -> None:
    read_member(vault)
    Sequencer(vault.runtime.data_engine).run_until_idle()
    headers = vault.headers(vault.token("compliance_officer"))
    for actor in ("' OR '1'='1", "%", "dr-_", "dr-a'; DROP TABLE audit_journal; --"):
        r = vault.client.get("/v1/audit/events", params={"actor": actor}, headers=headers)
        assert (r.status_code, r.json()) == (200, {"items": [], "next_cursor": None})
    assert len(vault.client.get("/v1/audit/events", params={"actor": "dr-a"}, headers=headers).json()["items"]) == 1


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    "query",
    [
        {"member_id": "ABC"},
        {"member_id": "0" * 31},
        {"decision": "maybe"},
        {"since": "2026-01-01"},
        {"since": "2026-13-01T00:00:00Z"},
        {"until": "yesterday"},
        {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"limit": "0"},
        {"limit": "501"},
        {"action": "read me"},
    ],
)
def test_bad_event_filters_are_400_before_the_decision(vault: Vault, query: dict[str, str]) -> None:
    before = vault.journal_size()
    r = vault.client.get("/v1/audit/events", params=query, headers=vault.headers(vault.token("compliance_officer")))
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert vault.journal_size() == before


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_cursor_the_vault_did_not_issue_is_400_and_journaled(vault: Vault) -> None:
    before = vault.journal_size()
    r = vault.client.get("/v1/audit/events", params={"cursor": "bm9wZQ"}, headers=vault.headers(vault.token("compliance_officer")))
    assert (r.status_code, r.json()["detail"]) == (400, "cursor is malformed")
    assert vault.journal_size() == before + 1
    assert (last_event(vault)["decision"], last_event(vault)["outcome"]) == ("allow", "invalid")


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("role", ["front_desk", "practitioner", "member", "vault_admin", "loyalty_service"])
def test_roles_without_the_audit_trail_get_403_and_one_deny_event(vault: Vault, role: str) -> None:
    before = vault.journal_size()
    token = vault.token(role, clinics=["sh-001"], member_id=vault.members[0].member_id if role == "member" else None)
    r = vault.client.get("/v1/audit/events", headers=vault.headers(token))
    assert r.status_code == 403
    assert vault.journal_size() == before + 1
    assert (last_event(vault)["decision"], last_event(vault)["outcome"]) == ("deny", "denied")


# -- checkpoints and proofs ------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_first_latest_checkpoint_is_made_on_demand_and_pins_the_cli_verifier_keys(vault: Vault) -> None:
    read_member(vault)
    before = vault.journal_size()

    r = vault.client.get("/v1/audit/checkpoints/latest", headers=vault.headers(vault.token("member", member_id=vault.members[0].member_id)))

    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"tree_size", "root_hash", "checkpoint", "verifier_keys"}
    cli_keys = [verifier_key_string(vault.settings.audit_origin, k.public_key) for k in vault.runtime.signing.verification_keys(SigningPurpose.audit)]
    assert body["verifier_keys"] == cli_keys
    opened = parse_checkpoint(open_note(body["checkpoint"], [parse_verifier_key(k) for k in cli_keys]).body)
    assert (opened.origin, opened.size, opened.root_hash.hex()) == (vault.settings.audit_origin, body["tree_size"], body["root_hash"])
    assert body["tree_size"] == before  # every event committed before this request
    with vault.runtime.data_engine.connect() as conn:
        assert store.root(conn, body["tree_size"]).hex() == body["root_hash"]
    assert vault.journal_size() == before + 1
    assert last_event(vault)["resource_type"] == "audit_checkpoint"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_inclusion_and_consistency_proofs_verify_against_the_stored_roots(vault: Vault) -> None:
    for index in range(4):
        read_member(vault, index)
    Sequencer(vault.runtime.data_engine).run_until_idle()
    headers = vault.headers(vault.token("loyalty_service", client_id="loyalty"))
    with vault.runtime.data_engine.connect() as conn:
        root_3, root_4 = store.root(conn, 3), store.root(conn, 4)

    inclusion = vault.client.get("/v1/audit/proofs/inclusion", params={"index": 1, "tree_size": 4}, headers=headers)
    consistency = vault.client.get("/v1/audit/proofs/consistency", params={"first": 3, "second": 4}, headers=headers)

    assert inclusion.status_code == consistency.status_code == 200
    proof = inclusion.json()
    assert (proof["leaf_index"], proof["tree_size"]) == (1, 4)
    assert proof["leaf_hash"] == leaf_hash(vault.journal_events()[1]).hex()
    assert verify_inclusion(bytes.fromhex(proof["leaf_hash"]), 1, 4, [bytes.fromhex(h) for h in proof["audit_path"]], root_4)
    body = consistency.json()
    assert (body["first"], body["second"]) == (3, 4)
    assert verify_consistency(3, 4, [bytes.fromhex(h) for h in body["proof"]], root_3, root_4)
    assert [json.loads(e)["resource_type"] for e in vault.journal_events()[-2:]] == ["audit_proof", "audit_proof"]


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    ("path", "query", "journaled"),
    [
        ("inclusion", {"index": "2", "tree_size": "2"}, True),
        ("inclusion", {"index": "0", "tree_size": "99"}, True),
        ("inclusion", {"index": "-1", "tree_size": "2"}, False),
        ("inclusion", {"index": "0", "tree_size": "0"}, False),
        ("inclusion", {"index": "x", "tree_size": "2"}, False),
        ("inclusion", {"index": str(2**64), "tree_size": "2"}, False),
        ("inclusion", {"tree_size": "2"}, False),
        ("consistency", {"first": "0", "second": "2"}, False),
        ("consistency", {"first": "2", "second": "1"}, True),
        ("consistency", {"first": "1", "second": "99"}, True),
        ("consistency", {"first": "1.5", "second": "2"}, False),
    ],
)
def test_bad_or_out_of_range_proof_numbers_are_400(vault: Vault, path: str, query: dict[str, str], journaled: bool) -> None:
    read_member(vault, 0)
    read_member(vault, 1)
    Sequencer(vault.runtime.data_engine).run_until_idle()
    before = vault.journal_size()
    r = vault.client.get(f"/v1/audit/proofs/{path}", params=query, headers=vault.headers(vault.token("dpo")))
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert vault.journal_size() == before + (1 if journaled else 0)
    if journaled:
        assert (last_event(vault)["decision"], last_event(vault)["outcome"]) == ("allow", "invalid")


# -- export and offline verification ----------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_export_verifies_offline_against_the_published_checkpoint(vault: Vault) -> None:
    for index in range(3):
        read_member(vault, index)
    checkpoint(vault)
    latest = vault.client.get("/v1/audit/checkpoints/latest", headers=vault.headers(vault.token("dpo"))).json()
    before = vault.journal_size()

    r = vault.client.get("/v1/audit/export", params={"from": 0, "to": latest["tree_size"]}, headers=vault.headers(vault.token("compliance_officer")))

    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    assert r.headers["cache-control"] == "no-store"
    lines = r.text.splitlines()
    assert len(lines) == latest["tree_size"] == 3
    first = json.loads(lines[0])
    assert (first["index"], first["leaf"].encode()) == (0, vault.journal_events()[0])
    report = verify_export(lines, [latest["checkpoint"]], latest["verifier_keys"])
    assert (report.ok, report.entries, report.proven_size) == (True, 3, 3)
    tampered = [lines[0], lines[1].replace('"read"', '"create"'), lines[2]]
    assert verify_export(tampered, [latest["checkpoint"]], latest["verifier_keys"]).first_bad_index == 1
    assert vault.journal_size() == before + 1
    assert (last_event(vault)["action"], last_event(vault)["outcome"]) == ("export", "ok")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_default_export_is_the_whole_tree_and_a_range_beyond_it_is_400(vault: Vault) -> None:
    read_member(vault)
    Sequencer(vault.runtime.data_engine).run_until_idle()
    headers = vault.headers(vault.token("dpo"))

    whole = vault.client.get("/v1/audit/export", headers=headers)
    beyond = vault.client.get("/v1/audit/export", params={"to": 50}, headers=headers)
    backwards = vault.client.get("/v1/audit/export", params={"from": 1, "to": 0}, headers=headers)

    assert [json.loads(line)["index"] for line in whole.text.splitlines()] == [0]
    assert (beyond.status_code, backwards.status_code) == (400, 400)
    assert [(json.loads(e)["action"], json.loads(e)["outcome"]) for e in vault.journal_events()[-3:]] == [
        ("export", "ok"),
        ("export", "invalid"),
        ("export", "invalid"),
    ]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_front_desk_cannot_export(vault: Vault) -> None:
    r = vault.client.get("/v1/audit/export", headers=vault.headers(vault.token("front_desk", clinics=["sh-001"])))
    assert r.status_code == 403
    assert (last_event(vault)["action"], last_event(vault)["decision"]) == ("export", "deny")


# -- breach scope -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_scope_lists_the_members_an_actor_touched_in_the_window(vault: Vault) -> None:
    read_member(vault, 2, subject="dr-leak")
    read_member(vault, 0, subject="dr-leak")
    read_member(vault, 1, subject="dr-other")
    vault.client.get(f"/v1/members/{vault.members[3].member_id}", headers=vault.headers(vault.token("front_desk", subject="dr-leak", clinics=["zz"]), "care"))
    window = {"since": (datetime.now(UTC) - timedelta(hours=1)).isoformat(), "until": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    headers = vault.headers(vault.token("compliance_officer"))
    before = vault.journal_size()

    r = vault.client.get("/v1/audit/scope", params={**window, "actor": "dr-leak"}, headers=headers)

    assert r.status_code == 200
    assert r.json() == {"member_ids": sorted([vault.members[0].member_id, vault.members[2].member_id]), "extract_ids": []}
    assert vault.journal_size() == before + 1
    assert (last_event(vault)["action"], last_event(vault)["member_id"]) == ("scope", None)
    assert vault.client.get("/v1/audit/scope", params=window, headers=vault.headers(vault.token("front_desk", clinics=["sh-001"]))).status_code == 403
    assert vault.client.get("/v1/audit/scope", params={"actor": "dr-leak"}, headers=headers).status_code == 400


# -- a member's access log ----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_member_reads_their_access_log_with_proofs_against_the_latest_checkpoint(vault: Vault) -> None:
    me = vault.members[0]
    read_member(vault, 0, subject="dr-a")
    read_member(vault, 1, subject="dr-a")
    read_member(vault, 0, subject="dr-b")
    checkpoint(vault)
    before = vault.journal_size()

    r = vault.client.get(f"/v1/members/{me.member_id}/access-log", headers=vault.headers(vault.token("member", subject="m-0", member_id=me.member_id)))

    assert r.status_code == 200
    body = r.json()
    cp = body["checkpoint"]
    assert cp["tree_size"] == 3
    root = bytes.fromhex(cp["root_hash"])
    assert [(i["index"], i["event"]["actor"]["subject"]) for i in body["items"]] == [(0, "dr-a"), (2, "dr-b")]
    for item in body["items"]:
        assert item["leaf_hash"] == leaf_hash(vault.journal_events()[item["index"]]).hex()
        assert verify_inclusion(bytes.fromhex(item["leaf_hash"]), item["index"], cp["tree_size"], [bytes.fromhex(h) for h in item["audit_path"]], root)
    assert body["next_cursor"] is None
    assert vault.journal_size() == before + 1
    assert {k: last_event(vault)[k] for k in ("action", "resource_type", "member_id", "decision")} == {
        "action": "read",
        "resource_type": "access_log",
        "member_id": me.member_id,
        "decision": "allow",
    }


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_member_asking_for_another_members_access_log_gets_the_same_403_for_a_real_and_a_made_up_id(vault: Vault) -> None:
    token = vault.token("member", member_id=vault.members[0].member_id)
    before = vault.journal_size()

    real = vault.client.get(f"/v1/members/{vault.members[1].member_id}/access-log", headers=vault.headers(token))
    made_up = vault.client.get(f"/v1/members/{MADE_UP}/access-log", headers=vault.headers(token))

    assert real.status_code == made_up.status_code == 403
    assert strip(real.json()) == strip(made_up.json())
    events = [json.loads(e) for e in vault.journal_events()[before:]]
    assert [(e["decision"], e["member_id"]) for e in events] == [("deny", vault.members[1].member_id), ("deny", MADE_UP)]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_dpo_reads_any_access_log_and_a_compliance_officer_does_not(vault: Vault) -> None:
    read_member(vault, 1)
    checkpoint(vault)
    path = f"/v1/members/{vault.members[1].member_id}/access-log"

    dpo = vault.client.get(path, headers=vault.headers(vault.token("dpo")))
    officer = vault.client.get(path, headers=vault.headers(vault.token("compliance_officer")))
    bad = vault.client.get("/v1/members/not-an-id/access-log", headers=vault.headers(vault.token("dpo")))

    assert dpo.status_code == 200
    assert [i["index"] for i in dpo.json()["items"]] == [0]
    assert officer.status_code == 403
    assert bad.status_code == 400
