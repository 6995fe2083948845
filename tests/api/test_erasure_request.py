"""Erasure requests over HTTP: settlement, crypto-shredding, the signed certificate, resumption after a crash.

Invariants: completing an erasure request first pays back a positive card
balance with a ``refund`` ledger entry (whose id the request keeps), then — its
step and audit event committed — crypto-shreds the member: the member's own
read is 404, a search by their old phone finds nothing, and the audit trail
still verifies. The certificate is a JWS (``typ: erasure-certificate+jwt``)
that an independent library (jwcrypto) verifies against the JWKS; it states
what was destroyed and kept (held treatments until the end of their
retention year, readable by the dpo for legal claims only) and names no
personal value. It exists only for a finished
erasure, for the member and the dpo; presented as a bearer token it is a 401.
An erasure interrupted after its completion committed is finished by the pump.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from jwcrypto import jwk, jws
from sqlalchemy import select

from api.runtime import make_checkpointer
from api.services import Services, finish_erasures
from audit.event import Actor
from audit.live_verify import verify_stored
from audit.sequencer import Sequencer
from tests.api.conftest import Vault
from vault import data_map as dm
from vault.access import Access
from vault.data_requests import DataRequest, Move, Status
from vault.storage.engine import write_transaction
from vault.storage.schema import data_requests, ledger_entries, treatments

TOP_UP = 12_345


def _member(vault: Vault, index: int) -> dict[str, str]:
    m = vault.members[index]
    return vault.headers(vault.token("member", subject=f"app-{index}", member_id=m.member_id), "self_service")


def _dpo(vault: Vault) -> dict[str, str]:
    return vault.headers(vault.token("dpo", subject="dpo-1"), "self_service")


def _file(vault: Vault, index: int, kind: str = "erasure") -> str:
    r = vault.client.post(f"/v1/members/{vault.members[index].member_id}/requests", json={"type": kind}, headers=_member(vault, index))
    assert r.status_code == 201, r.text
    return str(r.json()["dsr_id"])


def _move(vault: Vault, dsr_id: str, *steps: str) -> Any:
    r = None
    for to in steps:
        r = vault.client.post(f"/v1/requests/{dsr_id}/transitions", json={"to": to}, headers=_dpo(vault))
        assert r.status_code == 200, r.text
    return r


def _top_up(vault: Vault, member_id: str) -> None:
    with write_transaction(vault.runtime.data_engine) as conn:
        vault.runtime.ledger.append(conn, member_id, {"entry_type": "top_up", "amount": TOP_UP})


def _verified(vault: Vault, certificate: str) -> tuple[dict[str, Any], dict[str, Any]]:
    keys = jwk.JWKSet.from_json(vault.client.get("/.well-known/jwks.json").text)
    token = jws.JWS()
    token.deserialize(certificate)
    key = keys.get_key(token.jose_header["kid"])
    assert key is not None
    token.verify(key, alg="EdDSA")
    return dict(token.jose_header), json.loads(token.payload)


def test_completing_an_erasure_settles_the_balance_shreds_the_member_and_issues_a_verifiable_certificate(vault: Vault) -> None:
    m = vault.members[0]
    _top_up(vault, m.member_id)
    with vault.runtime.data_engine.connect() as conn:
        balance = vault.runtime.ledger.balance(conn, m.member_id).amount
        phone = vault.runtime.members.read(conn, m.member_id, {dm.Category.contact}).values[dm.Category.contact]["phone"]
        name = vault.runtime.members.read(conn, m.member_id, {dm.Category.identity}).values[dm.Category.identity]["full_name"]
        expected_treatments = list(conn.scalars(select(treatments.c.retention_year).where(treatments.c.member_id == m.member_id)))
        years = sorted({int(y) for y in expected_treatments})
    assert balance >= TOP_UP
    assert years  # the seeded member has treatments under the legal hold
    dsr_id = _file(vault, 0)

    done = _move(vault, dsr_id, "verified", "in_progress", "completed")

    assert done.json()["status"] == "completed"
    assert done.headers["link"] == f'</v1/requests/{dsr_id}/certificate>; rel="erasure-certificate"'
    with vault.runtime.data_engine.connect() as conn:
        last = conn.execute(
            select(ledger_entries.c.entry_id, ledger_entries.c.entry_type)
            .where(ledger_entries.c.member_id == m.member_id)
            .order_by(ledger_entries.c.seq.desc())
        ).first()
        settled = conn.execute(select(data_requests.c.settlement_entry_id).where(data_requests.c.dsr_id == dsr_id)).scalar_one()
    assert last is not None
    assert (last.entry_type, settled) == ("refund", last.entry_id)
    assert vault.client.get(f"/v1/members/{m.member_id}", headers=_member(vault, 0)).status_code == 404
    desk = vault.headers(vault.token("front_desk", subject="desk-1", clinics=[m.home_clinic_id]), "care")
    search = vault.client.post("/v1/members/search", json={"phone": phone}, headers=desk)
    assert (search.status_code, search.json()) == (200, {"results": []})

    for headers in (_member(vault, 0), _dpo(vault)):
        r = vault.client.get(f"/v1/requests/{dsr_id}/certificate", headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        certificate = r.json()["certificate"]
        header, claims = _verified(vault, certificate)
        assert {k: header[k] for k in ("alg", "typ")} == {"alg": "EdDSA", "typ": "erasure-certificate+jwt"}
        assert (claims["request_id"], claims["member_id"], claims["settlement"]) == (dsr_id, m.member_id, {"refund_entry_id": last.entry_id})
        assert [k["until"] for k in claims["kept"] if k["what"] == "treatment records"] == [f"{y}-12-31" for y in years]
        assert claims["backups"]["key_store_retention_days"] == vault.settings.keystore_backup_days
        destroyed = {d["table"]: d["fields"] for d in claims["destroyed"]}
        assert {"phone", "full_name", "national_id", "allergies"} <= set(destroyed["members"])
        assert phone not in r.text
        assert str(name) not in json.dumps(claims, ensure_ascii=False)

    treatments_url = f"/v1/members/{m.member_id}/treatments"
    held = vault.client.get(treatments_url, headers=vault.headers(vault.token("dpo", subject="dpo-1"), "legal_claims"))
    assert held.status_code == 200, held.text
    assert len(held.json()["items"]) == len(expected_treatments)
    for headers in (_dpo(vault), vault.headers(vault.token("practitioner", subject="dr-1", clinics=[m.home_clinic_id]), "care")):
        assert vault.client.get(treatments_url, headers=headers).status_code == 404  # only the restricted, legal-claims path

    bearer = vault.client.get(f"/v1/members/{vault.members[1].member_id}", headers={"Authorization": f"Bearer {certificate}", "X-Purpose": "care"})
    assert bearer.status_code == 401

    Sequencer(vault.runtime.data_engine).run_until_idle()
    checkpointer = make_checkpointer(vault.settings, vault.runtime.data_engine, vault.runtime.signing)
    checkpointer.make(now=datetime.now(UTC))
    with vault.runtime.data_engine.connect() as conn:
        report, _ = verify_stored(conn, checkpointer, datetime.now(UTC))
    assert report.finding is None
    assert report.proven_size == vault.journal_size()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_certificate_exists_only_for_a_finished_erasure_and_only_for_the_member_and_the_dpo(vault: Vault) -> None:
    open_erasure = _file(vault, 2)
    restriction = _file(vault, 2, "restriction")
    _move(vault, restriction, "verified", "in_progress", "completed")
    for dsr_id in (open_erasure, restriction):
        r = vault.client.get(f"/v1/requests/{dsr_id}/certificate", headers=_dpo(vault))
        assert r.status_code == 409, r.text
    other = vault.client.get(f"/v1/requests/{open_erasure}/certificate", headers=_member(vault, 3))
    made_up = vault.client.get(f"/v1/requests/{'0' * 32}/certificate", headers=_member(vault, 3))
    assert other.status_code == made_up.status_code == 403
    assert {k: v for k, v in other.json().items() if k != "request_id"} == {k: v for k, v in made_up.json().items() if k != "request_id"}
    officer = vault.client.get(f"/v1/requests/{open_erasure}/certificate", headers=vault.headers(vault.token("compliance_officer", subject="co-1")))
    assert officer.status_code == 400  # no purpose: certificates are read by the member and the dpo only


def test_an_erasure_interrupted_after_its_completion_committed_is_finished_by_the_pump(vault: Vault) -> None:
    m = vault.members[1]
    dsr_id = _file(vault, 1)
    _move(vault, dsr_id, "verified", "in_progress")
    services: Services = vault.client.app.state.services.get()  # type: ignore[attr-defined]
    access = Access(Actor("dpo-1", ("dpo",), None, None), "crash-1", "self_service", "sha256:" + "0" * 64, datetime.now(UTC))
    with services.unit() as conn:  # the completion commits; the process "dies" before it shreds
        moved = services.requests.transition(conn, access, allowed=True, dsr_id=dsr_id, member_id=m.member_id, move=Move(Status.completed))
    assert isinstance(moved, DataRequest)
    assert moved.status is Status.completed
    with vault.runtime.data_engine.connect() as conn:
        assert services.requests.service.unfinished_erasures(conn) == [m.member_id]
    assert vault.client.get(f"/v1/requests/{dsr_id}/certificate", headers=_dpo(vault)).status_code == 409  # still running

    assert finish_erasures(services) == 1

    assert vault.client.get(f"/v1/members/{m.member_id}", headers=_member(vault, 1)).status_code == 404
    assert vault.client.get(f"/v1/requests/{dsr_id}/certificate", headers=_dpo(vault)).status_code == 200
    assert finish_erasures(services) == 0
