"""Extracts end to end on a real vault: consent gate, k-anonymity, pseudonyms, the deletion feed, manifest, audit.

Invariants, checked on the file a run writes (parsed back, never the
runner's own counts): every equivalence class over the released
quasi-identifiers has at least k rows; health-derived attributes are
l-diverse within each class and appear only for a consumer registered for
them and members with ``health_data`` consent; no row carries a direct
identifier (every seeded name, phone, e-mail, document and card number and
member id is searched for in the bytes); only members with live consent,
not restricted and not erased, are included; a member's pseudonym differs
between consumers and between epochs and is stable within one; a
withdrawal, an erasure or a restriction removes the member from the next
extract and puts their pseudonym in the consumer's deletion feed; the
manifest's signature verifies and its hash matches the bytes; a request that
cannot reach k within the cap is refused with nothing written; each run is
one audit event naming the row count and the SHA-256 of the sorted member ids.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from sqlalchemy import select, update

from api.runtime import Runtime
from audit.event import Actor, AuditEvent
from audit.store import AuditJournal, audit_journal
from keys.signing import SigningPurpose
from vault import data_map as dm
from vault.access import Access, Gatekeeper
from vault.clients import ROOT_KEY as CLIENT_ROOT
from vault.clients import ClientRegistry
from vault.consent import ConsentChannel, ConsentDecision, ConsentRequest, ConsentService, NoticeBook, Recorder, RecorderRole
from vault.data_requests import DataRequestGate, DataRequestService, FiledBy, Filer, Filing, Move, RequestType, Status
from vault.demo import seed_members
from vault.errors import ValidationError
from vault.extracts import runner
from vault.extracts.consumers import ConsumerRegistry
from vault.extracts.feed import DeletionFeed, LeftReason
from vault.extracts.pseudonyms import ROOT_KEY, Pseudonymizer
from vault.extracts.runner import ExtractAudit, ExtractOutcome, ExtractRequest, ExtractRunner, ExtractSigning
from vault.extracts.source import ProfileSource
from vault.extracts.writers import ExtractFormat
from vault.ids import new_id
from vault.purposes import Purpose
from vault.storage.engine import read_snapshot, write_transaction
from vault.storage.schema import consumers, extract_members, extracts

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
STATIC = ["gender", "age_band", "region", "education", "income_band"]
CONSUMPTION = ["tier", "spend_band", "balance_band", "visit_frequency", "recency", "rfm", "interest_tags", "preferred_categories"]
HEALTH = ["skin_type", "has_allergies", "has_contraindications"]
DPO = Actor("staff:dpo-1", ("dpo",), None, None)
IDENTIFIERS = ("full_name", "phone", "email", "national_id", "card_no", "wechat_id", "address")


class Vault:
    """A seeded vault with consumers, consents and a runner."""

    def __init__(self, runtime: Runtime, tmp_path: Path, members: int = 120) -> None:
        self.rt = runtime
        self.feed = DeletionFeed(lambda: runtime.keys.root_key(ROOT_KEY))
        self.consent = ConsentService(runtime.members, NoticeBook(), feed=self.feed)
        self.registry = ConsumerRegistry()
        self.members = list(seed_members(runtime.data_engine, runtime.keys, runtime.members, count=members, seed=11, now=NOW - timedelta(days=30)).member_ids)
        self.runner = ExtractRunner(runtime.data_engine, runtime.keys, ProfileSource(runtime.keys, self.consent), self.registry, spool_dir=tmp_path)
        self.signing = ExtractSigning(runtime.signing.current(SigningPurpose.certificates), "member-vault")

    def consumer(self, consumer_id: str, attributes: list[str], *, health: bool = False, k: int = 3, cap: int = 500) -> None:
        with write_transaction(self.rt.data_engine) as conn:
            ClientRegistry(self.rt.keys.root_key(CLIENT_ROOT)).add(conn, consumer_id, ["loyalty_service"], [], NOW)
            self.registry.register(
                conn, consumer_id, purpose="loyalty_profiling", attributes=attributes, health=health, k=k, suppression_cap_permille=cap, now=NOW
            )

    def record(self, member_id: str, purpose: Purpose, decision: ConsentDecision, at: datetime = NOW - timedelta(days=1)) -> None:
        request = ConsentRequest(purpose, decision, ConsentChannel.app, notice_version=1 if decision is ConsentDecision.granted else None)
        with write_transaction(self.rt.data_engine) as conn:
            self.consent.record(conn, member_id, request, Recorder("app", RecorderRole.member), consent_id=new_id(), request_id="test", now=at)

    def run(
        self, consumer_id: str, fmt: ExtractFormat = ExtractFormat.ndjson, *, k: int | None = None, since: str | None = None, now: datetime = NOW
    ) -> tuple[ExtractOutcome, bytes]:
        with self.rt.data_engine.connect() as conn:
            consumer = self.registry.get(conn, consumer_id)
        out = io.BytesIO()
        outcome = self.runner.run(
            ExtractRequest(new_id(), consumer, fmt, k, since),
            out,
            audit=ExtractAudit(DPO, f"req-{new_id()[:8]}", "policy-test-1"),
            signing=self.signing,
            now=now,
        )
        return outcome, out.getvalue()

    def included(self, extract_id: str) -> set[str]:
        with self.rt.data_engine.connect() as conn:
            return set(conn.scalars(select(extract_members.c.member_id).where(extract_members.c.extract_id == extract_id)))

    def pseudonym(self, consumer_id: str, epoch: int, member_id: str) -> str:
        return Pseudonymizer(self.rt.keys.root_key(ROOT_KEY), consumer_id, epoch)(member_id)


def _rows(data: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def _classes(rows: list[dict[str, object]], qi: list[str]) -> Counter[tuple[object, ...]]:
    return Counter(tuple(r[a] for a in qi) for r in rows)


@pytest.fixture
def vault(runtime: Runtime, tmp_path: Path) -> Vault:
    return Vault(runtime, tmp_path)


def _grant_all(vault: Vault, purpose: Purpose = Purpose.loyalty_profiling) -> None:
    for m in vault.members:
        vault.record(m, purpose, ConsentDecision.granted)


@pytest.mark.parametrize("k", [2, 4, 7])
def test_every_released_class_has_k_rows_and_no_row_carries_a_direct_identifier(vault: Vault, k: int) -> None:
    vault.consumer("loyalty-app", [*STATIC, *CONSUMPTION], k=k)
    _grant_all(vault)

    outcome, data = vault.run("loyalty-app")

    assert outcome.status == "done"
    rows = _rows(data)
    assert rows, "a cap of 50 % leaves rows to release"
    assert min(_classes(rows, [*STATIC, "spend_band", "balance_band"]).values()) >= k
    assert len(rows) == outcome.rows == len(vault.included(outcome.extract_id))
    with vault.rt.data_engine.connect() as conn:
        for m in vault.members:
            view = vault.rt.members.read(conn, m, [dm.Category.identity, dm.Category.contact, dm.Category.membership])
            values = {name: value for fields in view.values.values() for name, value in fields.items()}
            for name in IDENTIFIERS:
                if isinstance(values.get(name), str) and values[name]:
                    assert str(values[name]).encode() not in data, name
            assert m.encode() not in data
    assert set(rows[0]) == {"pseudonym", *STATIC, *CONSUMPTION}


def test_only_members_with_live_consent_not_restricted_not_erased_are_extracted(vault: Vault) -> None:
    vault.consumer("loyalty-app", ["tier", "interest_tags"], k=2)
    granted = vault.members[: len(vault.members) // 2]
    for m in granted:
        vault.record(m, Purpose.loyalty_profiling, ConsentDecision.granted)
    vault.record(granted[0], Purpose.loyalty_profiling, ConsentDecision.withdrawn, NOW - timedelta(hours=1))

    outcome, data = vault.run("loyalty-app")

    assert vault.included(outcome.extract_id) == set(granted[1:])
    assert {r["pseudonym"] for r in _rows(data)} == {vault.pseudonym("loyalty-app", 1, m) for m in granted[1:]}


def test_a_source_yields_one_at_a_time_the_members_it_yields_batch_by_batch(vault: Vault) -> None:
    """``ProfileSource.rows`` (how a first-pass range is read) gives the members and facts ``batches`` gives, in the same order."""
    for m in vault.members[::2]:
        vault.record(m, Purpose.loyalty_profiling, ConsentDecision.granted)
    source = ProfileSource(vault.rt.keys, vault.consent, batch=7)
    ids = sorted(vault.members)
    after, until = ids[10], ids[90]
    fields = ("city", "date_of_birth", "interest_tags")

    with read_snapshot(vault.rt.data_engine) as conn:
        batches = list(source.batches(conn, Purpose.loyalty_profiling, fields=fields, want_health=False, now=NOW, after=after, until=until))
        rows = list(source.rows(conn, Purpose.loyalty_profiling, fields=fields, want_health=False, now=NOW, after=after, until=until))

    assert [r.member_id for r in rows] == sorted(set(vault.members[::2]) & set(ids[11:91]))
    assert rows == [row for batch in batches for row in batch]
    assert len(batches) == 12  # 80 ids, 7 a batch


def test_pseudonyms_differ_between_consumers_and_epochs_and_are_stable_within_one(vault: Vault) -> None:
    vault.consumer("loyalty-app", ["tier"], k=2)
    vault.consumer("marketing-analytics", ["tier"], k=2)
    _grant_all(vault)

    _, a1 = vault.run("loyalty-app")
    _, a2 = vault.run("loyalty-app")
    _, b = vault.run("marketing-analytics")
    with write_transaction(vault.rt.data_engine) as conn:
        assert vault.registry.rotate_epoch(conn, "loyalty-app", NOW).epoch == 2
    _, a3 = vault.run("loyalty-app")

    ours, twice, theirs, later = ({r["pseudonym"] for r in _rows(d)} for d in (a1, a2, b, a3))
    assert ours == twice
    assert len(ours) == len(vault.members)
    assert not ours & theirs
    assert not ours & later
    assert ours == {vault.pseudonym("loyalty-app", 1, m) for m in vault.members}
    assert later == {vault.pseudonym("loyalty-app", 2, m) for m in vault.members}


def test_health_attributes_only_for_a_health_consumer_and_members_with_health_consent_and_l_diverse(vault: Vault) -> None:
    with pytest.raises(ValidationError) as refused:
        vault.consumer("loyalty-app", [*STATIC[:2], *HEALTH], k=3)
    assert refused.value.problems == {"attributes": "health_derived_needs_health"}
    vault.consumer("loyalty-app", STATIC[:2], k=3)
    vault.consumer("marketing-analytics", [*STATIC[:2], *HEALTH], health=True, k=3)
    _grant_all(vault)
    with_health = set(vault.members[::2])
    for m in with_health:
        vault.record(m, Purpose.health_data, ConsentDecision.granted)

    _, plain_data = vault.run("loyalty-app")
    health, health_data = vault.run("marketing-analytics")

    assert all(not set(HEALTH) & set(r) for r in _rows(plain_data))
    by_pseudonym = {vault.pseudonym("marketing-analytics", 1, m): m for m in vault.members}
    rows = _rows(health_data)
    released = [r for r in rows if any(r[a] is not None for a in HEALTH)]
    assert released, "some classes are diverse enough to release health attributes"
    assert all(by_pseudonym[str(r["pseudonym"])] in with_health for r in released)
    for cls in {tuple(r[a] for a in STATIC[:2]) for r in rows}:
        members = [r for r in rows if tuple(r[a] for a in STATIC[:2]) == cls]
        for a in HEALTH:
            values = {json.dumps(r[a]) for r in members if r[a] is not None}
            assert not values or len(values) >= 2, (cls, a)
    assert health.claims is not None
    assert health.claims["anonymity"]["l"] == 2  # type: ignore[index]


def test_withdrawal_erasure_and_restriction_leave_the_next_extract_and_enter_the_feed(vault: Vault) -> None:
    vault.consumer("loyalty-app", ["tier"], k=2)
    _grant_all(vault)
    first, _ = vault.run("loyalty-app")
    withdrawn, erased, restricted = vault.members[:3]
    assert {withdrawn, erased, restricted} <= vault.included(first.extract_id)

    vault.record(withdrawn, Purpose.loyalty_profiling, ConsentDecision.withdrawn, NOW + timedelta(minutes=1))
    service = DataRequestService(vault.rt.members, periods={"default": "P1M"})
    gate = DataRequestGate(service, vault.rt.members, vault.consent, vault.rt.ledger, Gatekeeper(AuditJournal()), feed=vault.feed)
    for member_id, kind in ((erased, RequestType.erasure), (restricted, RequestType.restriction)):
        with write_transaction(vault.rt.data_engine) as conn:
            dsr_id = service.file(conn, member_id, Filing(kind), Filer("app", FiledBy.member), dsr_id=new_id(), now=NOW).dsr_id
        for to in (Status.verified, Status.in_progress, Status.completed):
            access = Access(DPO, request_id="req", purpose="self_service", policy_hash="policy-test-1", now=NOW + timedelta(minutes=2))
            with write_transaction(vault.rt.data_engine) as conn:
                moved = gate.transition(conn, access, allowed=True, dsr_id=dsr_id, member_id=member_id, move=Move(to))
            assert not hasattr(moved, "outcome"), moved
    vault.rt.eraser.erase(erased)

    second, data = vault.run("loyalty-app", now=NOW + timedelta(minutes=3))

    assert vault.included(second.extract_id) == vault.included(first.extract_id) - {withdrawn, erased, restricted}
    with vault.rt.data_engine.connect() as conn:
        feed = vault.feed.since(conn, "loyalty-app", after=0, limit=100)
    assert {(e.pseudonym, e.reason) for e in feed} == {
        (vault.pseudonym("loyalty-app", 1, withdrawn), LeftReason.withdrawn),
        (vault.pseudonym("loyalty-app", 1, erased), LeftReason.erased),
        (vault.pseudonym("loyalty-app", 1, restricted), LeftReason.restricted),
    }
    assert not {e.pseudonym for e in feed} & {r["pseudonym"] for r in _rows(data)}


@pytest.mark.parametrize("incremental", [False, True])
def test_a_member_released_earlier_and_suppressed_later_enters_the_feed(vault: Vault, incremental: bool) -> None:
    vault.consumer("loyalty-app", ["gender", "age_band"], k=2)
    _grant_all(vault)
    first, _ = vault.run("loyalty-app")  # fixes the epoch's generalization

    # The same generalization at a larger k: the classes of two or three members are suppressed now.
    second, second_data = vault.run("loyalty-app", k=4, since=first.extract_id if incremental else None, now=NOW + timedelta(minutes=1))
    third, third_data = vault.run("loyalty-app", k=4, now=NOW + timedelta(minutes=2))  # a full extract: who is still released

    assert (second.status, third.status) == ("done", "done")
    left = vault.included(first.extract_id) - vault.included(third.extract_id)
    assert left, "the larger k suppressed some of the first extract's members"
    with vault.rt.data_engine.connect() as conn:
        feed = vault.feed.since(conn, "loyalty-app", after=0, limit=500)
    assert {(e.pseudonym, e.reason) for e in feed} == {(vault.pseudonym("loyalty-app", 1, m), LeftReason.suppressed) for m in left}
    assert not {e.pseudonym for e in feed} & {r["pseudonym"] for r in _rows(second_data) + _rows(third_data)}
    with vault.rt.data_engine.connect() as conn:
        leaves = [bytes(b) for b in conn.scalars(select(audit_journal.c.leaf).order_by(audit_journal.c.journal_id))]
    events = {e.resource_id: dict(e.details) for e in (AuditEvent.from_json_obj(json.loads(leaf)) for leaf in leaves) if e.action == "extract"}
    assert events[second.extract_id]["withdrawn"] == len(left)  # the second run fed them
    assert "withdrawn" not in events[third.extract_id]  # already listed: not again


@pytest.mark.parametrize("fmt", list(ExtractFormat))
def test_the_manifest_verifies_and_its_hash_is_the_content_s(vault: Vault, fmt: ExtractFormat) -> None:
    vault.consumer("loyalty-app", [*STATIC, "tier"], k=3)
    _grant_all(vault)

    outcome, data = vault.run("loyalty-app", fmt)

    assert outcome.manifest is not None
    public = vault.rt.signing.current(SigningPurpose.certificates).public_key()
    assert jwt.get_unverified_header(outcome.manifest)["typ"] == "extract-manifest+jwt"
    claims = jwt.decode(outcome.manifest, public, algorithms=["EdDSA"], options={"verify_aud": False})
    assert claims["content_sha256"] == hashlib.sha256(data).hexdigest()
    assert (claims["consumer"], claims["purpose"], claims["format"], claims["row_count"]) == ("loyalty-app", "loyalty_profiling", fmt.value, outcome.rows)
    assert claims["anonymity"]["k_achieved"] >= 3
    assert claims["policy_hash"] == "policy-test-1"


def test_one_audit_event_per_extract_names_the_rows_and_the_sorted_member_ids(vault: Vault) -> None:
    vault.consumer("loyalty-app", ["tier"], k=2)
    _grant_all(vault)

    outcome, _ = vault.run("loyalty-app")

    with vault.rt.data_engine.connect() as conn:
        leaves = [bytes(b) for b in conn.scalars(select(audit_journal.c.leaf).order_by(audit_journal.c.journal_id))]
        stored = conn.execute(select(extracts.c.members_sha256, extracts.c.row_count).where(extracts.c.extract_id == outcome.extract_id)).one()
    events = [AuditEvent.from_json_obj(json.loads(leaf)) for leaf in leaves if b'"extract"' in leaf]
    assert len(events) == 1
    event = events[0]
    members_sha = hashlib.sha256("".join(f"{m}\n" for m in sorted(vault.included(outcome.extract_id))).encode()).hexdigest()
    assert (event.action, event.resource_id, event.purpose, event.outcome) == ("extract", outcome.extract_id, "loyalty_profiling", "ok")
    assert dict(event.details) == {"rows": outcome.rows, "members_sha256": members_sha, "consumer": "loyalty-app"}
    assert (stored.members_sha256, stored.row_count) == (members_sha, outcome.rows)


@pytest.mark.parametrize("per_insert", [1, 8])
def test_every_included_member_is_stored_with_its_row_digest_across_insert_statements(vault: Vault, monkeypatch: pytest.MonkeyPatch, per_insert: int) -> None:
    monkeypatch.setattr(runner, "MEMBERS_PER_INSERT", per_insert)  # many statements and a short last one, over 120 members
    vault.consumer("loyalty-app", ["tier", "spend_band"], k=2)
    _grant_all(vault)

    outcome, data = vault.run("loyalty-app")

    released = {str(row["pseudonym"]) for row in _rows(data)}
    with vault.rt.data_engine.connect() as conn:
        stored = conn.execute(select(extract_members.c.member_id, extract_members.c.row_mac).where(extract_members.c.extract_id == outcome.extract_id)).all()
    assert outcome.rows == len(stored) > per_insert
    assert per_insert == 1 or len(stored) % per_insert != 0  # a last statement shorter than the others
    assert {vault.pseudonym("loyalty-app", 1, m) for m, _ in stored} == released
    assert all(mac is not None and len(mac) == 32 and int(mac, 16) >= 0 for _, mac in stored)
    assert len({mac for _, mac in stored}) == len(stored)  # one digest per row, each its own


@pytest.mark.parametrize("k", [None, 500])  # done, and refused
def test_finished_at_and_the_audit_event_tell_when_the_run_ended_the_manifest_when_consent_was_read(vault: Vault, k: int | None) -> None:
    vault.consumer("loyalty-app", ["tier"], k=2)
    _grant_all(vault)
    before = datetime.now(UTC)

    outcome, _ = vault.run("loyalty-app", k=k)  # its snapshot is NOW, three weeks before the clock

    after = datetime.now(UTC)
    with vault.rt.data_engine.connect() as conn:
        row = conn.execute(select(extracts.c.status, extracts.c.created_at, extracts.c.finished_at).where(extracts.c.extract_id == outcome.extract_id)).one()
        leaves = [bytes(b) for b in conn.scalars(select(audit_journal.c.leaf).order_by(audit_journal.c.journal_id))]
    event = next(e for e in (AuditEvent.from_json_obj(json.loads(leaf)) for leaf in leaves) if e.action == "extract")
    assert row.status == outcome.status == ("done" if k is None else "refused")
    assert row.created_at == NOW
    assert before <= row.finished_at <= after
    assert before.replace(microsecond=0) <= datetime.fromisoformat(event.time.replace("Z", "+00:00")) <= after
    if outcome.claims is not None:
        assert outcome.claims["consent_snapshot_at"] == "2026-11-01T09:00:00Z"


@pytest.mark.parametrize("spend_level", ["spend_band", "spend_wide", "*", None])
def test_rfm_masks_its_m_digit_unless_spend_band_is_released_at_its_finest_level(vault: Vault, spend_level: str | None) -> None:
    # rfm between other plain columns (preferred_categories comes after it); None: spend_band not released at all.
    spend = [] if spend_level is None else ["spend_band"]
    vault.consumer("loyalty-app", ["tier", *spend, "rfm", "recency", "preferred_categories"], k=2)
    _grant_all(vault)
    if spend_level is not None:
        with write_transaction(vault.rt.data_engine) as conn:
            vault.registry.fix_generalization(conn, "loyalty-app", 1, {"spend_band": spend_level})

    outcome, data = vault.run("loyalty-app")

    rows = _rows(data)
    assert outcome.status == "done"
    assert rows
    m_digits = {str(r["rfm"])[-1] for r in rows}
    if spend_level == "spend_band":
        assert m_digits  # the spend band already tells M
        assert m_digits <= set("12345")
    else:
        assert m_digits == {"*"}  # M would undo the generalization of spend_band
    assert all(str(r["rfm"])[:3] == f"R{_recency_digit(str(r['recency']))}F" for r in rows)  # the rest of the row is untouched
    assert all(r["preferred_categories"] is None or isinstance(r["preferred_categories"], list) for r in rows)
    assert any(r["preferred_categories"] for r in rows)  # the column after rfm keeps its own values


def _recency_digit(recency: str) -> int:
    return {"<30d": 5, "30-89d": 4, "90-179d": 3, "180-364d": 2, "365d+": 1, "never": 1}[recency]


def test_a_request_that_cannot_reach_k_within_the_cap_is_refused_and_releases_nothing(vault: Vault) -> None:
    vault.consumer("loyalty-app", [*STATIC, "spend_band", "balance_band"], k=2, cap=0)
    for m in vault.members[:5]:
        vault.record(m, Purpose.loyalty_profiling, ConsentDecision.granted)

    outcome, data = vault.run("loyalty-app", k=50)

    assert (outcome.status, outcome.reason, data) == ("refused", "k_unreachable", b"")
    assert vault.included(outcome.extract_id) == set()
    with vault.rt.data_engine.connect() as conn:
        status = conn.execute(select(extracts.c.status).where(extracts.c.extract_id == outcome.extract_id)).scalar_one()
        feed_epoch = vault.registry.epoch(conn, "loyalty-app")
    assert status == "refused"
    assert feed_epoch.generalization is None  # a refused run fixes nothing


def test_a_run_that_fails_midway_is_marked_failed_with_a_code_and_holds_no_members(vault: Vault) -> None:
    vault.consumer("loyalty-app", ["gender", "tier"], k=2)
    _grant_all(vault)
    vault.run("loyalty-app")  # fixes the epoch's generalization over gender alone
    with write_transaction(vault.rt.data_engine) as conn:
        conn.execute(update(consumers).where(consumers.c.consumer_id == "loyalty-app").values(attributes=json.dumps(["gender", "age_band", "tier"])))

    with pytest.raises(ValueError, match="fixed generalization names other attributes"):
        vault.run("loyalty-app")

    with vault.rt.data_engine.connect() as conn:
        failed = conn.execute(select(extracts.c.extract_id, extracts.c.status, extracts.c.reason).where(extracts.c.status != "done")).one()
    assert (failed.status, failed.reason) == ("failed", "valueerror")
    assert vault.included(failed.extract_id) == set()
