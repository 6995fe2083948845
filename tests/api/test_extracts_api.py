"""Extract jobs over HTTP: a consumer starts one, polls it, verifies its manifest, downloads its rows; nobody else can.

Checked on a real app (FastAPI's test client, real SQLite and PostgreSQL,
the real policy, key store and audit journal):

* a consumer's extract runs as a job (202), ends ``done`` with a signed
  manifest that verifies against the JWKS, and its data's SHA-256 matches the
  manifest, ``Repr-Digest`` and ``Content-Length``; the sealed file on disk
  never holds a row in the clear;
* a consumer cannot start an extract under another purpose or as an
  unregistered client, and cannot read or download another consumer's
  extract: 403, the same as for a made-up id, each decision journaled;
* an ``Idempotency-Key`` retry answers the same job and starts nothing new;
* a member's withdrawal in the app puts the pseudonym in the consumer's
  deletion feed, read page by page with ``since``;
* an incremental extract (``since``) releases only the rows that are new or
  changed since its base; a base from another consumer or an earlier epoch
  is refused;
* ``POST /v1/keys/rotate {kind: pseudonym}`` starts a new epoch: new pseudonyms;
* the sweep purges kept data past its time (key shredded, file gone, 409
  after) and marks a job whose heartbeats stopped ``failed``/``interrupted``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

from api.app import create_app
from api.runtime import Runtime, open_runtime
from api.services import Services
from api.settings import Settings
from api.tokens import DEV_ISSUER, issue_token
from audit.merkle import verify_inclusion
from audit.store import audit_journal
from keys.models import MemberKeyRow
from keys.signing import SigningPurpose
from vault.clients import ROOT_KEY as CLIENT_ROOT
from vault.clients import ClientRegistry
from vault.consent import ConsentChannel, ConsentDecision, ConsentRequest, ConsentService, NoticeBook, Recorder, RecorderRole
from vault.demo import seed_members
from vault.extracts.consumers import ConsumerRegistry
from vault.extracts.pseudonyms import ROOT_KEY, Pseudonymizer
from vault.extracts.store import SCOPE
from vault.ids import new_id
from vault.purposes import Purpose
from vault.storage.engine import write_transaction
from vault.storage.schema import extract_members, extracts

NOW = datetime.now(UTC)
ATTRIBUTES = ["gender", "age_band", "tier", "spend_band", "interest_tags"]
WAIT_SECONDS = 60


@dataclass
class Rig:
    client: TestClient
    runtime: Runtime
    settings: Settings
    members: list[str]

    @property
    def services(self) -> Services:
        return self.client.app.state.services.get()  # type: ignore[attr-defined,no-any-return]

    def token(self, subject: str, *roles: str) -> str:
        key = self.runtime.signing.current(SigningPurpose.dev_jwt)
        token, _ = issue_token(
            key,
            issuer=DEV_ISSUER,
            audience=self.settings.audience,
            subject=subject,
            roles=list(roles or ("loyalty_service",)),
            ttl=timedelta(minutes=10),
            now=datetime.now(UTC),
            client_id=subject,
        )
        return token

    def headers(self, subject: str, purpose: str | None = "loyalty_profiling", **extra: str) -> dict[str, str]:
        out = {"Authorization": f"Bearer {self.token(subject)}", **extra}
        if purpose is not None:
            out["X-Purpose"] = purpose
        return out

    def start(self, subject: str = "loyalty-app", body: dict[str, object] | None = None, **extra: str) -> tuple[int, dict[str, object]]:
        r = self.client.post("/v1/extracts", json=body if body is not None else {"format": "ndjson"}, headers=self.headers(subject, **extra))
        return r.status_code, r.json()

    def wait(self, extract_id: str, subject: str = "loyalty-app") -> dict[str, object]:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            r = self.client.get(f"/v1/extracts/{extract_id}", headers=self.headers(subject))
            assert r.status_code == 200, r.text
            status = r.json()
            if status["status"] != "running" or time.monotonic() > deadline:
                return dict(status)
            time.sleep(0.05)

    def done(self, subject: str = "loyalty-app", body: dict[str, object] | None = None) -> tuple[dict[str, object], bytes]:
        code, started = self.start(subject, body)
        assert code == 202, started
        status = self.wait(str(started["extract_id"]), subject)
        assert status["status"] == "done", status
        data = self.client.get(f"/v1/extracts/{started['extract_id']}/data", headers=self.headers(subject))
        assert data.status_code == 200, data.text
        return status, data.content

    def consent(self, member_id: str, decision: ConsentDecision) -> None:
        request = ConsentRequest(Purpose.loyalty_profiling, decision, ConsentChannel.app, notice_version=1 if decision is ConsentDecision.granted else None)
        consent = self.services.consent  # the app's, which feeds the deletion feed (built before the write lock is taken)
        with write_transaction(self.runtime.data_engine) as conn:
            consent.record(conn, member_id, request, Recorder("app", RecorderRole.member), consent_id=new_id(), request_id="test", now=datetime.now(UTC))

    def events(self, resource_id: str) -> list[dict[str, object]]:
        with self.runtime.data_engine.connect() as conn:
            leaves = [json.loads(bytes(b)) for b in conn.scalars(select(audit_journal.c.leaf).order_by(audit_journal.c.journal_id))]
        return [e for e in leaves if e.get("resource_id") == resource_id]


@pytest.fixture
def rig(make_settings: Callable[..., Settings]) -> Iterator[Rig]:
    settings = make_settings()
    runtime = open_runtime(settings)
    try:
        members = list(seed_members(runtime.data_engine, runtime.keys, runtime.members, count=40, seed=5, now=NOW - timedelta(days=30)).member_ids)
        registry = ConsumerRegistry()
        with write_transaction(runtime.data_engine) as conn:
            for consumer_id in ("loyalty-app", "other-app"):
                ClientRegistry(runtime.keys.root_key(CLIENT_ROOT)).add(conn, consumer_id, ["loyalty_service"], [], NOW)
                registry.register(
                    conn, consumer_id, purpose="loyalty_profiling", attributes=ATTRIBUTES, health=False, k=2, suppression_cap_permille=500, now=NOW
                )
        service = ConsentService(runtime.members, NoticeBook())
        with write_transaction(runtime.data_engine) as conn:
            for member_id in members:
                request = ConsentRequest(Purpose.loyalty_profiling, ConsentDecision.granted, ConsentChannel.app, notice_version=1)
                service.record(
                    conn, member_id, request, Recorder("app", RecorderRole.member), consent_id=new_id(), request_id="seed", now=NOW - timedelta(days=1)
                )
        with TestClient(create_app(settings, audit_pump=False), raise_server_exceptions=False) as client:
            yield Rig(client, runtime, settings, members)
    finally:
        runtime.close()


def _rows(data: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def test_a_consumer_starts_an_extract_and_downloads_rows_matching_its_signed_manifest(rig: Rig) -> None:
    code, started = rig.start()
    assert code == 202
    assert started["status"] == "running"
    extract_id = str(started["extract_id"])

    status = rig.wait(extract_id)
    data = rig.client.get(f"/v1/extracts/{extract_id}/data", headers=rig.headers("loyalty-app"))

    assert status["status"] == "done"
    assert data.status_code == 200
    assert data.headers["content-type"] == "application/x-ndjson"
    assert data.headers["cache-control"] == "no-store"
    assert int(data.headers["content-length"]) == len(data.content) == status["content_bytes"]
    digest = hashlib.sha256(data.content).digest()
    assert data.headers["repr-digest"] == f"sha-256=:{base64.b64encode(digest).decode()}:"
    jwks = jwt.PyJWKSet.from_dict(rig.client.get("/.well-known/jwks.json").json())
    header = jwt.get_unverified_header(str(status["manifest"]))
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims = jwt.decode(str(status["manifest"]), key.key, algorithms=["EdDSA"], options={"verify_aud": False})
    assert header["typ"] == "extract-manifest+jwt"
    assert claims["content_sha256"] == digest.hex() == status["content_sha256"]
    assert (claims["extract_id"], claims["consumer"], claims["purpose"]) == (extract_id, "loyalty-app", "loyalty_profiling")
    rows = _rows(data.content)
    assert len(rows) == claims["row_count"] == status["row_count"] > 0
    assert all(set(r) == {"pseudonym", *ATTRIBUTES} for r in rows)
    sealed = (rig.settings.data_dir / "exports" / "extracts" / f"{extract_id}.sealed").read_bytes()
    assert all(str(r["pseudonym"]).encode() not in sealed for r in rows)
    assert data.content[:64] not in sealed
    events = rig.events(extract_id)
    assert events[0]["action"] == "create"
    assert events[-1]["action"] == "download"
    assert {(e["action"], e["decision"], e["outcome"]) for e in events} == {
        ("create", "allow", "ok"),
        ("read", "allow", "ok"),  # each poll
        ("extract", "allow", "ok"),
        ("download", "allow", "ok"),
    }
    extract_event = next(e for e in events if e["action"] == "extract")
    assert extract_event["details"]["rows"] == len(rows)
    assert extract_event["details"]["consumer"] == "loyalty-app"


def test_another_consumer_or_a_made_up_id_gets_the_same_403_and_each_is_journaled(rig: Rig) -> None:
    status, _ = rig.done()
    extract_id = str(status["extract_id"])
    made_up = new_id()

    for path in (f"/v1/extracts/{extract_id}", f"/v1/extracts/{extract_id}/data", f"/v1/extracts/{made_up}", f"/v1/extracts/{made_up}/data"):
        before = _journal_size(rig)
        r = rig.client.get(path, headers=rig.headers("other-app"))
        assert (r.status_code, r.json()["title"]) == (403, "Forbidden"), path
        assert _journal_size(rig) == before + 1
        assert extract_id not in r.text


@pytest.mark.parametrize(
    ("subject", "roles", "purpose", "expected"),
    [
        ("unregistered", ("loyalty_service",), "loyalty_profiling", 403),  # a loyalty client that is not a consumer
        ("loyalty-app", ("loyalty_service",), "marketing_contact", 403),  # not its registered purpose (and not the policy's)
        ("loyalty-app", ("marketing_service",), "loyalty_profiling", 403),  # the policy gives extracts to loyalty_service only
        ("loyalty-app", ("loyalty_service",), None, 400),  # no X-Purpose
        ("loyalty-app", ("loyalty_service",), "health_data", 400),  # a consent, not a purpose
    ],
)
def test_starting_an_extract_needs_the_policy_the_registration_and_the_registered_purpose(
    rig: Rig, subject: str, roles: tuple[str, ...], purpose: str | None, expected: int
) -> None:
    headers = {"Authorization": f"Bearer {rig.token(subject, *roles)}"} | ({"X-Purpose": purpose} if purpose else {})
    before = _extract_count(rig)

    r = rig.client.post("/v1/extracts", json={"format": "ndjson"}, headers=headers)

    assert r.status_code == expected, r.text
    assert _extract_count(rig) == before


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"format": "xml"}, {"format": "enum"}),
        ({}, {"format": "missing"}),
        ({"format": "ndjson", "k": 1}, {"k": "greater_than_equal"}),
        ({"format": "ndjson", "extra": 1}, {"extra": "extra_forbidden"}),
        ({"format": "ndjson", "since": "not-an-id"}, {"since": "string_pattern_mismatch"}),
        ({"format": "ndjson", "since": "0" * 32}, {"since": "not_a_done_extract_of_this_consumer"}),
    ],
)
def test_bad_bodies_are_422_after_the_decision_and_start_nothing(rig: Rig, body: dict[str, object], errors: dict[str, str]) -> None:
    before = _extract_count(rig)

    code, answer = rig.start(body=body)

    assert code == 422
    assert answer["errors"] == errors
    assert _extract_count(rig) == before


def test_a_format_the_consumer_is_not_registered_for_is_422(rig: Rig) -> None:
    with write_transaction(rig.runtime.data_engine) as conn:
        ClientRegistry(rig.runtime.keys.root_key(CLIENT_ROOT)).add(conn, "csv-only", ["loyalty_service"], [], NOW)
        ConsumerRegistry().register(conn, "csv-only", purpose="loyalty_profiling", attributes=ATTRIBUTES, health=False, k=2, formats=["csv"], now=NOW)

    code, answer = rig.start("csv-only", {"format": "parquet"})

    assert (code, answer["errors"]) == (422, {"format": "not_registered_for_consumer"})


def test_an_idempotent_retry_answers_the_same_job_and_starts_nothing_new(rig: Rig) -> None:
    code, first = rig.start(**{"Idempotency-Key": "extract-1"})
    assert code == 202
    rig.wait(str(first["extract_id"]))
    before = _extract_count(rig)

    code, again = rig.start(**{"Idempotency-Key": "extract-1"})

    assert (code, again) == (202, first)
    assert _extract_count(rig) == before
    assert [e["outcome"] for e in rig.events(str(first["extract_id"])) if e["action"] == "create"] == ["ok", "replayed"]


def test_a_withdrawal_in_the_app_reaches_the_consumers_deletion_feed_page_by_page(rig: Rig) -> None:
    released, _ = rig.done()
    leaving = rig.members[:3]

    for member_id in leaving:
        rig.consent(member_id, ConsentDecision.withdrawn)

    first = rig.client.get("/v1/extracts/deletions?limit=2", headers=rig.headers("loyalty-app")).json()
    rest = rig.client.get(f"/v1/extracts/deletions?since={first['next_cursor']}&limit=2", headers=rig.headers("loyalty-app")).json()
    other = rig.client.get("/v1/extracts/deletions", headers=rig.headers("other-app")).json()
    assert len(first["items"]) == 2
    assert first["next_cursor"] == str(first["items"][-1]["seq"])
    assert len(rest["items"]) == 1
    assert rest["next_cursor"] is None
    assert other == {"items": [], "next_cursor": None}  # it never received them
    pseudonym = Pseudonymizer(rig.runtime.keys.root_key(ROOT_KEY), "loyalty-app", 1)
    fed = [(i["pseudonym"], i["reason"], i["epoch"]) for i in first["items"] + rest["items"]]
    assert sorted(fed) == sorted((pseudonym(m), "withdrawn", 1) for m in leaving)
    assert isinstance(released["feed_seq"], int)
    assert all(i["seq"] > released["feed_seq"] for i in first["items"] + rest["items"])  # entries after the extract apply to its rows
    later, data = rig.done()
    assert not {p for p, _, _ in fed} & {r["pseudonym"] for r in _rows(data)}
    assert later["feed_seq"] == max(i["seq"] for i in rest["items"])


def test_an_incremental_extract_releases_only_rows_new_or_changed_since_its_base(rig: Rig) -> None:
    newcomer = rig.members[0]
    rig.consent(newcomer, ConsentDecision.withdrawn)
    base, data = rig.done()
    assert len(_rows(data)) > 0

    unchanged, nothing = rig.done(body={"format": "ndjson", "since": base["extract_id"]})
    rig.consent(newcomer, ConsentDecision.granted)
    grown, added = rig.done(body={"format": "ndjson", "since": unchanged["extract_id"]})

    assert (unchanged["row_count"], nothing) == (0, b"")
    assert unchanged["since"] == base["extract_id"]
    pseudonym = Pseudonymizer(rig.runtime.keys.root_key(ROOT_KEY), "loyalty-app", 1)
    released = {str(r["pseudonym"]): r for r in _rows(added)}
    assert pseudonym(newcomer) in released
    assert grown["row_count"] == len(released)
    # Others are released only if new to the consumer: the newcomer may lift a class to k, out of suppression.
    held = {str(r["pseudonym"]): r for r in _rows(data)}
    assert not set(released) & set(held)
    # A member joining only grows classes: the base plus its increments is exactly a full extract now.
    _, full = rig.done()
    assert held | released == {str(r["pseudonym"]): r for r in _rows(full)}


def test_an_incremental_base_of_another_consumer_or_an_earlier_epoch_is_refused(rig: Rig) -> None:
    theirs, _ = rig.done("other-app")
    mine, _ = rig.done()

    code, answer = rig.start(body={"format": "ndjson", "since": theirs["extract_id"]})
    assert (code, answer["errors"]) == (422, {"since": "not_a_done_extract_of_this_consumer"})

    admin = {"Authorization": f"Bearer {rig.token('admin-1', 'vault_admin')}"}
    rotated = rig.client.post("/v1/keys/rotate", json={"kind": "pseudonym", "consumer_id": "loyalty-app"}, headers=admin)
    assert rotated.status_code == 202

    code, answer = rig.start(body={"format": "ndjson", "since": mine["extract_id"]})
    assert code == 409


def test_a_pseudonym_rotation_over_http_gives_the_next_extract_new_pseudonyms(rig: Rig) -> None:
    before, first = rig.done()
    admin = {"Authorization": f"Bearer {rig.token('admin-1', 'vault_admin')}"}

    rotated = rig.client.post("/v1/keys/rotate", json={"kind": "pseudonym", "consumer_id": "loyalty-app"}, headers=admin)
    after, second = rig.done()

    assert rotated.status_code == 202
    assert (before["epoch"], after["epoch"]) == (1, 2)
    old, new = {r["pseudonym"] for r in _rows(first)}, {r["pseudonym"] for r in _rows(second)}
    assert old
    assert new
    assert not old & new
    job = rig.client.get(f"/v1/keys/jobs/{rotated.json()['job_id']}", headers=admin).json()
    assert (job["kind"], job["status"]) == ("pseudonym", "done")


def test_the_sweep_purges_kept_data_past_its_time_and_fails_silent_jobs(rig: Rig) -> None:
    status, _ = rig.done()
    extract_id = str(status["extract_id"])
    expires = datetime.fromisoformat(str(status["expires_at"]))
    path = rig.settings.data_dir / "exports" / "extracts" / f"{extract_id}.sealed"
    silent = new_id()
    with write_transaction(rig.runtime.data_engine) as conn:
        conn.execute(
            insert(extracts).values(
                extract_id=silent, consumer_id="loyalty-app", purpose="loyalty_profiling", format="ndjson", epoch=1, status="running", k=2,
                requested_by="loyalty-app", created_at=NOW - timedelta(hours=1), heartbeat_at=NOW - timedelta(hours=1),
            )
        )  # fmt: skip
    assert path.exists()

    assert rig.services.extract_jobs.sweep(datetime.now(UTC), force=True) == (1, 0)
    assert rig.services.extract_jobs.sweep(expires - timedelta(seconds=1), force=True) == (0, 0)
    assert rig.services.extract_jobs.sweep(expires + timedelta(seconds=1), force=True) == (0, 1)

    assert not path.exists()
    with rig.runtime.keys_engine.connect() as conn:
        assert (
            conn.execute(select(func.count()).select_from(MemberKeyRow).where(MemberKeyRow.owner_id == extract_id, MemberKeyRow.scope == SCOPE)).scalar_one()
            == 0
        )
    after = rig.client.get(f"/v1/extracts/{extract_id}", headers=rig.headers("loyalty-app")).json()
    assert after["purged"] is True
    assert after["manifest"] == status["manifest"]  # the manifest stays
    assert "link" not in rig.client.get(f"/v1/extracts/{extract_id}", headers=rig.headers("loyalty-app")).headers
    gone = rig.client.get(f"/v1/extracts/{extract_id}/data", headers=rig.headers("loyalty-app"))
    assert gone.status_code == 409
    interrupted = rig.client.get(f"/v1/extracts/{silent}", headers=rig.headers("loyalty-app")).json()
    assert (interrupted["status"], interrupted["reason"]) == ("failed", "interrupted")


def _journal_size(rig: Rig) -> int:
    with rig.runtime.data_engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_journal)).scalar_one())


def _extract_count(rig: Rig) -> int:
    with rig.runtime.data_engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(extracts)).scalar_one())


def test_a_members_access_log_shows_the_extracts_that_held_them_with_proofs(rig: Rig) -> None:
    status, _ = rig.done()
    extract_id = str(status["extract_id"])
    with rig.runtime.data_engine.connect() as conn:
        held = set(conn.scalars(select(extract_members.c.member_id).where(extract_members.c.extract_id == extract_id)))
    inside = next(m for m in rig.members[1:] if m in held)
    outside = rig.members[0]
    rig.consent(outside, ConsentDecision.withdrawn)
    later, _ = rig.done()  # the member who withdrew is in the first extract only

    def log(member_id: str) -> dict[str, object]:
        token = issue_token(
            rig.runtime.signing.current(SigningPurpose.dev_jwt),
            issuer=DEV_ISSUER,
            audience=rig.settings.audience,
            subject=f"m-{member_id[:6]}",
            roles=["member"],
            ttl=timedelta(minutes=5),
            now=datetime.now(UTC),
            member_id=member_id,
        )[0]
        r = rig.client.get(f"/v1/members/{member_id}/access-log", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return dict(r.json())

    mine = log(inside)
    listed = mine["extracts"]
    assert [(h["extract_id"], h["consumer_id"], h["purpose"]) for h in listed] == [
        (extract_id, "loyalty-app", "loyalty_profiling"),
        (later["extract_id"], "loyalty-app", "loyalty_profiling"),
    ]
    checkpoint = mine["checkpoint"]
    for holding in listed:
        proof = holding["proof"]
        assert proof is not None
        assert (proof["event"]["action"], proof["event"]["resource_id"]) == ("extract", holding["extract_id"])
        assert inside not in json.dumps(proof["event"])  # the event names no member
        assert verify_inclusion(
            bytes.fromhex(proof["leaf_hash"]),
            proof["index"],
            checkpoint["tree_size"],
            [bytes.fromhex(h) for h in proof["audit_path"]],
            bytes.fromhex(checkpoint["root_hash"]),
        )
    assert [h["extract_id"] for h in log(outside)["extracts"]] == ([extract_id] if outside in held else [])


def test_breach_scoping_of_a_consumer_covers_every_member_its_extracts_held(rig: Rig) -> None:
    status, _ = rig.done()
    rig.done("other-app")
    with rig.runtime.data_engine.connect() as conn:
        held = sorted(conn.scalars(select(extract_members.c.member_id).where(extract_members.c.extract_id == status["extract_id"])))
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    officer = {"Authorization": f"Bearer {rig.token('officer-1', 'compliance_officer')}"}

    scoped = rig.client.get("/v1/audit/scope", params={"client_id": "loyalty-app", "since": since, "until": until}, headers=officer)
    none = rig.client.get("/v1/audit/scope", params={"client_id": "nobody", "since": since, "until": until}, headers=officer)

    assert scoped.status_code == 200, scoped.text
    assert held
    assert scoped.json() == {"member_ids": held, "extract_ids": [status["extract_id"]]}
    assert none.json() == {"member_ids": [], "extract_ids": []}


def test_a_consumer_runs_one_extract_at_a_time_and_a_running_one_has_no_data_yet(rig: Rig) -> None:
    running = new_id()
    with write_transaction(rig.runtime.data_engine) as conn:
        conn.execute(
            insert(extracts).values(
                extract_id=running, consumer_id="loyalty-app", purpose="loyalty_profiling", format="ndjson", epoch=1, status="running", k=2,
                requested_by="loyalty-app", created_at=datetime.now(UTC), heartbeat_at=datetime.now(UTC),
            )
        )  # fmt: skip
    before = _extract_count(rig)

    code, answer = rig.start()
    data = rig.client.get(f"/v1/extracts/{running}/data", headers=rig.headers("loyalty-app"))
    other, started = rig.start("other-app")
    rig.wait(str(started["extract_id"]), "other-app")

    assert (code, answer["title"]) == (409, "Conflict")
    assert data.status_code == 409
    assert other == 202  # another consumer is not held up
    assert _extract_count(rig) == before + 1
