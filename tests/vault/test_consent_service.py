"""The consent service's rules and the notice book's, on real SQLite and PostgreSQL with real member keys."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select

from api.runtime import Runtime
from keys.errors import DecryptionError, KeyNotFoundError
from keys.field_cipher import FieldContext, read_header
from keys.member_keys import DATA_SCOPE
from tests.vault.factories import other_member_values, resident_id
from vault.consent.model import (
    ConsentChannel,
    ConsentDecision,
    ConsentEvent,
    ConsentRequest,
    ConsentState,
    GivenBy,
    Notice,
    PurposeState,
    Recorder,
    RecorderRole,
)
from vault.consent.notices import MAX_TEXT_LENGTH, NoticeBook, notice_hash, text_sha256
from vault.consent.service import ConsentService
from vault.errors import ConflictError, MemberErasedError, NotFoundError, RecordIntegrityError, ValidationError
from vault.ids import new_id
from vault.purposes import Purpose
from vault.storage.engine import write_transaction
from vault.storage.schema import consent_events, consent_notices, members

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
V1_EFFECTIVE = datetime(2026, 1, 1, tzinfo=UTC)
MEMBER = Recorder("member:self", RecorderRole.member)
DESK = Recorder("staff:fd-1", RecorderRole.front_desk)
MARKETING = Purpose.marketing_contact
CHILD_BORN = date(2016, 3, 1)  # 10 on NOW
EVIDENCE = "scan:form-2026/0601-17"


@pytest.fixture
def service(runtime: Runtime) -> ConsentService:
    return ConsentService(runtime.members, NoticeBook(), grace=timedelta(days=30))


def _member(runtime: Runtime, n: int = 1, *, born: date | None = None, **overrides: object) -> str:
    if born is not None:
        overrides = {"national_id": resident_id(born, n), "date_of_birth": born.isoformat(), **overrides}
    with runtime.data_engine.begin() as conn:
        return runtime.members.create(conn, other_member_values(n, **overrides))


def _grant(version: int | None = 1, purpose: Purpose = MARKETING, channel: ConsentChannel = ConsentChannel.app, **kw: object) -> ConsentRequest:
    return ConsentRequest(purpose, ConsentDecision.granted, channel, notice_version=version, **kw)  # type: ignore[arg-type]


def _withdraw(purpose: Purpose = MARKETING, channel: ConsentChannel = ConsentChannel.app, **kw: object) -> ConsentRequest:
    return ConsentRequest(purpose, ConsentDecision.withdrawn, channel, **kw)  # type: ignore[arg-type]


def _record(
    runtime: Runtime,
    service: ConsentService,
    member_id: str,
    request: ConsentRequest,
    recorder: Recorder = MEMBER,
    *,
    now: datetime = NOW,
    consent_id: str | None = None,
) -> ConsentEvent:
    with write_transaction(runtime.data_engine) as conn:
        return service.record(conn, member_id, request, recorder, consent_id=consent_id or new_id(), request_id="req-1", now=now)


def _publish(runtime: Runtime, service: ConsentService, version: int, *, effective_at: datetime, now: datetime, material: bool = True, **texts: str) -> Notice:
    with write_transaction(runtime.data_engine) as conn:
        return service.notices.publish(
            conn, MARKETING, version, text_zh=texts.get("text_zh", f"第 {version} 版"), text_en=texts.get("text_en", f"version {version}"),
            material=material, effective_at=effective_at, published_by="staff:dpo-1", now=now,
        )  # fmt: skip


def _event_count(runtime: Runtime) -> int:
    with runtime.data_engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(consent_events)).scalar_one())


def _notice_count(runtime: Runtime) -> int:
    with runtime.data_engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(consent_notices)).scalar_one())


def _raw_event(runtime: Runtime, consent_id: str) -> dict[str, object]:
    with runtime.data_engine.connect() as conn:
        return dict(conn.execute(select(consent_events).where(consent_events.c.consent_id == consent_id)).mappings().one())


def _v1(runtime: Runtime, purpose: Purpose = MARKETING) -> Notice:
    with runtime.data_engine.connect() as conn:
        return NoticeBook().of(conn, purpose)[0]


def _refused(
    runtime: Runtime, service: ConsentService, member_id: str, request: ConsentRequest, recorder: Recorder = MEMBER, *, now: datetime = NOW
) -> Exception:
    """Record ``request``, expecting a refusal; nothing may be written."""
    before = _event_count(runtime)
    with pytest.raises((ValidationError, ConflictError, NotFoundError, MemberErasedError)) as caught:
        _record(runtime, service, member_id, request, recorder, now=now)
    assert _event_count(runtime) == before
    return caught.value


# -- grants and notice versions -------------------------------------------------------------


def test_a_grant_on_the_current_version_records_the_version_and_its_hash(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime)
    v1 = _v1(runtime)
    consent_id = new_id()
    event = _record(runtime, service, member_id, _grant(1, notice_hash=v1.notice_hash), consent_id=consent_id)
    assert event == ConsentEvent(
        seq=event.seq, consent_id=consent_id, member_id=member_id, purpose=MARKETING, decision=ConsentDecision.granted, notice_version=1,
        notice_hash=v1.notice_hash, channel=ConsentChannel.app, given_by=GivenBy.member, recorded_by="member:self",
        recorded_role=RecorderRole.member, recorded_at=NOW, request_id="req-1", evidence=None,
    )  # fmt: skip
    with runtime.data_engine.connect() as conn:
        assert service.history(conn, member_id) == [event]
        assert service.state(conn, member_id, MARKETING, NOW) == PurposeState(MARKETING, ConsentState.granted, 1, NOW)


def test_a_grant_on_a_replaced_version_is_a_conflict_naming_the_current_one(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime)
    v2 = _publish(runtime, service, 2, effective_at=NOW - timedelta(days=1), now=NOW - timedelta(days=2))
    error = _refused(runtime, service, member_id, _grant(1))
    assert isinstance(error, ConflictError)
    assert str(error) == f"version 1 of the marketing_contact notice is not current; the current version is 2 (hash {v2.notice_hash})"


def test_a_grant_on_a_published_version_not_yet_in_effect_is_a_conflict_naming_the_current_one(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime)
    v2 = _publish(runtime, service, 2, effective_at=NOW + timedelta(seconds=1), now=NOW)
    error = _refused(runtime, service, member_id, _grant(2))
    assert isinstance(error, ConflictError)
    assert str(error) == f"version 2 of the marketing_contact notice is not current; the current version is 1 (hash {_v1(runtime).notice_hash})"
    assert _record(runtime, service, member_id, _grant(2, notice_hash=v2.notice_hash), now=NOW + timedelta(seconds=1)).notice_version == 2


def test_a_grant_on_an_unknown_version_is_refused_as_unknown(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime)
    for version in (0, -1, 2, 99):
        error = _refused(runtime, service, member_id, _grant(version))
        assert isinstance(error, ValidationError)
        assert error.problems == {"notice_version": "unknown"}, version


def test_a_grant_without_a_version_is_refused(runtime: Runtime, service: ConsentService) -> None:
    error = _refused(runtime, service, _member(runtime), _grant(None))
    assert isinstance(error, ValidationError)
    assert error.problems == {"notice_version": "required"}


def test_a_grant_whose_notice_hash_does_not_match_the_version_is_refused(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime)
    v1 = _v1(runtime)
    another_purposes = _v1(runtime, Purpose.photo_use).notice_hash
    for wrong in ("0" * 64, "not-a-hash", v1.notice_hash.upper(), another_purposes):
        error = _refused(runtime, service, member_id, _grant(1, notice_hash=wrong))
        assert isinstance(error, ValidationError)
        assert error.problems == {"notice_hash": "mismatch"}, wrong


def test_field_problems_are_reported_before_a_version_conflict(runtime: Runtime, service: ConsentService) -> None:
    """A field problem (422: hash, guardian) comes before a conflict with stored state (409), as the API orders its answers."""
    _publish(runtime, service, 2, effective_at=NOW, now=NOW)
    adult, child = _member(runtime, 1), _member(runtime, 2, born=CHILD_BORN)
    for member_id, request, problems in (
        (adult, _grant(1, notice_hash="0" * 64), {"notice_hash": "mismatch"}),
        (child, _grant(1), {"given_by": "guardian_required"}),
        (adult, _grant(1, given_by=GivenBy.guardian), {"given_by": "guardian_not_applicable"}),
    ):
        error = _refused(runtime, service, member_id, request)
        assert isinstance(error, ValidationError)
        assert error.problems == problems
    assert isinstance(_refused(runtime, service, adult, _grant(1)), ConflictError)


# -- withdrawals ----------------------------------------------------------------------------------


def test_a_withdrawal_without_any_earlier_grant_records(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime)
    event = _record(runtime, service, member_id, _withdraw())
    assert (event.decision, event.notice_version, event.notice_hash, event.recorded_at) == (ConsentDecision.withdrawn, None, None, NOW)
    with runtime.data_engine.connect() as conn:
        assert service.state(conn, member_id, MARKETING, NOW) == PurposeState(MARKETING, ConsentState.withdrawn, None, NOW)


def test_a_withdrawal_records_whatever_version_it_names_and_stores_none(runtime: Runtime, service: ConsentService) -> None:
    """A withdrawal never depends on the notice: an old, future or unknown version named with it is ignored."""
    member_id = _member(runtime)
    _record(runtime, service, member_id, _grant(1), now=NOW - timedelta(days=3))
    _publish(runtime, service, 2, effective_at=NOW + timedelta(days=1), now=NOW - timedelta(days=2))
    for minutes, named in enumerate((1, 2, 99)):
        event = _record(runtime, service, member_id, _withdraw(notice_version=named, notice_hash="0" * 64), now=NOW + timedelta(minutes=minutes))
        assert (event.notice_version, event.notice_hash) == (None, None)
        row = _raw_event(runtime, event.consent_id)
        assert (row["decision"], row["notice_version"], row["notice_hash"]) == ("withdrawn", None, None)


def test_a_withdrawal_counts_at_once_and_a_later_grant_counts_again(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime)
    _record(runtime, service, member_id, _grant(1), now=NOW - timedelta(hours=2))
    _record(runtime, service, member_id, _withdraw(), now=NOW - timedelta(hours=1))
    with runtime.data_engine.connect() as conn:
        assert service.has_live_consent(conn, member_id, MARKETING, NOW - timedelta(hours=1)) is False
    _record(runtime, service, member_id, _grant(1), now=NOW)
    with runtime.data_engine.connect() as conn:
        assert service.state(conn, member_id, MARKETING, NOW) == PurposeState(MARKETING, ConsentState.granted, 1, NOW)
        assert [e.decision for e in service.history(conn, member_id)] == [ConsentDecision.granted, ConsentDecision.withdrawn, ConsentDecision.granted]


# -- channels, recorders, purposes ---------------------------------------------------------------


def test_the_front_desk_and_paper_channels_require_evidence(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime)
    for channel in (ConsentChannel.front_desk, ConsentChannel.paper):
        for request in (_grant(1, MARKETING, channel), _withdraw(MARKETING, channel)):
            error = _refused(runtime, service, member_id, request, DESK)
            assert isinstance(error, ValidationError)
            assert error.problems == {"evidence": "required"}, request


def test_an_evidence_reference_of_the_wrong_shape_is_refused(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime)
    for evidence in ("", " scan-1", "scan 1", "../etc/passwd", "扫描件-1", "a" * 129, "scan-1\n"):
        error = _refused(runtime, service, member_id, _grant(1, MARKETING, ConsentChannel.paper, evidence=evidence), DESK)
        assert isinstance(error, ValidationError)
        assert error.problems == {"evidence": "invalid"}, evidence
    assert _record(runtime, service, member_id, _grant(1, MARKETING, ConsentChannel.paper, evidence="a" * 128), DESK).evidence == "a" * 128


def test_a_member_may_not_record_on_a_front_desk_channel(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime)
    for channel in (ConsentChannel.front_desk, ConsentChannel.paper):
        error = _refused(runtime, service, member_id, _grant(1, MARKETING, channel, evidence=EVIDENCE), MEMBER)
        assert isinstance(error, ValidationError)
        assert error.problems == {"channel": "not_for_recorder"}


def test_the_front_desk_may_not_record_on_the_app_channel(runtime: Runtime, service: ConsentService) -> None:
    error = _refused(runtime, service, _member(runtime), _grant(1), DESK)
    assert isinstance(error, ValidationError)
    assert error.problems == {"channel": "not_for_recorder"}


def test_a_purpose_whose_legal_basis_is_not_consent_takes_no_consent_event(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime)
    for purpose in (Purpose.care, Purpose.self_service, Purpose.legal_claims):
        for request in (_grant(1, purpose), _withdraw(purpose)):
            error = _refused(runtime, service, member_id, request)
            assert isinstance(error, ValidationError)
            assert error.problems == {"purpose": "not_consent_based"}, request


def test_the_front_desk_records_paper_consent_with_its_evidence(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime)
    event = _record(runtime, service, member_id, _grant(1, MARKETING, ConsentChannel.paper, evidence=EVIDENCE), DESK)
    assert (event.channel, event.recorded_by, event.recorded_role, event.given_by, event.evidence) == (
        ConsentChannel.paper, "staff:fd-1", RecorderRole.front_desk, GivenBy.member, EVIDENCE,
    )  # fmt: skip


# -- guardians (PIPL Art. 31) ---------------------------------------------------------------------


def test_a_member_under_14_may_not_grant_as_themselves(runtime: Runtime, service: ConsentService) -> None:
    error = _refused(runtime, service, _member(runtime, born=CHILD_BORN), _grant(1))
    assert isinstance(error, ValidationError)
    assert error.problems == {"given_by": "guardian_required"}


def test_a_guardian_grants_for_a_member_under_14_who_may_withdraw_as_themselves(runtime: Runtime, service: ConsentService) -> None:
    """The guardian's grant records ``given_by = guardian``; a withdrawal always succeeds, so it takes no guardian."""
    member_id = _member(runtime, born=CHILD_BORN)
    event = _record(runtime, service, member_id, _grant(1, given_by=GivenBy.guardian), now=NOW - timedelta(days=1))
    assert (event.given_by, event.notice_version) == (GivenBy.guardian, 1)
    assert _raw_event(runtime, event.consent_id)["given_by"] == "guardian"
    with runtime.data_engine.connect() as conn:
        assert service.has_live_consent(conn, member_id, MARKETING, NOW) is True
    withdrawal = _record(runtime, service, member_id, _withdraw())
    assert (withdrawal.decision, withdrawal.given_by) == (ConsentDecision.withdrawn, GivenBy.member)


def test_a_guardian_may_not_act_for_an_adult(runtime: Runtime, service: ConsentService) -> None:
    error = _refused(runtime, service, _member(runtime, born=date(1990, 5, 5)), _grant(1, given_by=GivenBy.guardian))
    assert isinstance(error, ValidationError)
    assert error.problems == {"given_by": "guardian_not_applicable"}


def test_a_guardian_may_not_act_for_a_member_whose_birth_date_is_unknown(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime, id_type=None, national_id=None, date_of_birth=None)
    error = _refused(runtime, service, member_id, _withdraw(given_by=GivenBy.guardian))
    assert isinstance(error, ValidationError)
    assert error.problems == {"given_by": "guardian_not_applicable"}
    assert _record(runtime, service, member_id, _grant(1)).given_by is GivenBy.member


def test_a_member_turns_14_on_their_birthday(runtime: Runtime, service: ConsentService) -> None:
    """The day before the 14th birthday only a guardian grants; on the day the member does."""
    member_id = _member(runtime, born=date(2012, 6, 1))
    day_before = datetime(2026, 5, 31, 23, 59, 59, tzinfo=UTC)
    error = _refused(runtime, service, member_id, _grant(1), now=day_before)
    assert isinstance(error, ValidationError)
    assert error.problems == {"given_by": "guardian_required"}
    assert _record(runtime, service, member_id, _grant(1, given_by=GivenBy.guardian), now=day_before).given_by is GivenBy.guardian
    birthday = datetime(2026, 6, 1, tzinfo=UTC)
    assert _record(runtime, service, member_id, _grant(1), now=birthday).given_by is GivenBy.member
    error = _refused(runtime, service, member_id, _grant(1, given_by=GivenBy.guardian), now=birthday)
    assert isinstance(error, ValidationError)
    assert error.problems == {"given_by": "guardian_not_applicable"}


# -- unknown and erased members ---------------------------------------------------------------------


def test_an_unknown_member_is_not_found(runtime: Runtime, service: ConsentService) -> None:
    nobody = new_id()
    with pytest.raises(NotFoundError, match=f"^no member {nobody}$"):
        _record(runtime, service, nobody, _grant(1))
    with runtime.data_engine.connect() as conn:
        for read in (service.history, service.require_live, lambda c, m: service.current(c, m, NOW), lambda c, m: service.event(c, m, new_id())):
            with pytest.raises(NotFoundError, match=f"^no member {nobody}$"):
                read(conn, nobody)
    assert _event_count(runtime) == 0


def test_an_event_of_another_member_is_not_found(runtime: Runtime, service: ConsentService) -> None:
    owner, other = _member(runtime, 1), _member(runtime, 2)
    event = _record(runtime, service, owner, _grant(1))
    with runtime.data_engine.connect() as conn, pytest.raises(NotFoundError, match=f"^no consent event {event.consent_id}$"):
        service.event(conn, other, event.consent_id)


def test_an_unknown_member_is_not_found_before_any_field_is_judged(runtime: Runtime, service: ConsentService) -> None:
    with pytest.raises(NotFoundError):
        _record(runtime, service, new_id(), ConsentRequest(Purpose.care, ConsentDecision.granted, ConsentChannel.paper), MEMBER)


def test_an_erased_member_takes_no_event_and_their_evidence_no_longer_decrypts(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime)
    event = _record(runtime, service, member_id, _grant(1, MARKETING, ConsentChannel.front_desk, evidence=EVIDENCE), DESK)
    sealed = bytes(_raw_event(runtime, event.consent_id)["evidence"])  # type: ignore[arg-type]
    _, key_version = read_header(sealed)
    runtime.eraser.erase(member_id)
    error = _refused(runtime, service, member_id, _withdraw())
    assert isinstance(error, MemberErasedError)
    with runtime.data_engine.connect() as conn:
        for read in (service.history, lambda c, m: service.current(c, m, NOW), lambda c, m: service.event(c, m, event.consent_id)):
            with pytest.raises(MemberErasedError, match=f"^member {member_id} was erased$"):
                read(conn, member_id)
    with runtime.data_engine.connect() as conn:  # a grant recorded before the erasure counts for nothing after it
        assert service.state(conn, member_id, MARKETING, NOW) == PurposeState(MARKETING, ConsentState.none)
        assert not service.has_live_consent(conn, member_id, MARKETING, NOW)
    assert bytes(_raw_event(runtime, event.consent_id)["evidence"]) == sealed  # the history keeps its row ...  # type: ignore[arg-type]
    with pytest.raises(KeyNotFoundError):  # ... but no key is left to open it
        runtime.keys.load(member_id, scopes=(DATA_SCOPE,)).get(DATA_SCOPE, key_version)


# -- evidence at rest ---------------------------------------------------------------------------------


def test_evidence_is_stored_encrypted_under_the_members_data_key_and_decrypts_in_history(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime)
    event = _record(runtime, service, member_id, _grant(1, MARKETING, ConsentChannel.paper, evidence=EVIDENCE), DESK)
    sealed = bytes(_raw_event(runtime, event.consent_id)["evidence"])  # type: ignore[arg-type]
    assert EVIDENCE.encode() not in sealed
    assert b"form-2026" not in sealed
    with runtime.data_engine.connect() as conn:
        key_version = conn.execute(select(members.c.key_version).where(members.c.member_id == member_id)).scalar_one()
        assert read_header(sealed) == (1, key_version)
        cipher = runtime.keys.load(member_id, scopes=(DATA_SCOPE,)).get(DATA_SCOPE, key_version)
        assert cipher.decrypt(sealed, FieldContext("consent_events", event.consent_id, "evidence")) == EVIDENCE.encode()
        assert [e.evidence for e in service.history(conn, member_id)] == [EVIDENCE]
        assert service.event(conn, member_id, event.consent_id).evidence == EVIDENCE


def _copy_of(runtime: Runtime, consent_id: str, **changes: object) -> str:
    """Insert a new event row that copies ``consent_id``'s row (its evidence ciphertext included), with ``changes``."""
    row = _raw_event(runtime, consent_id)
    row.pop("seq")
    row.update(consent_id=new_id(), **changes)
    with write_transaction(runtime.data_engine) as conn:
        conn.execute(insert(consent_events).values(**row))
    return str(row["consent_id"])


def test_an_evidence_ciphertext_copied_to_another_event_row_fails_its_integrity_check(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime)
    event = _record(runtime, service, member_id, _grant(1, MARKETING, ConsentChannel.paper, evidence=EVIDENCE), DESK)
    moved = _copy_of(runtime, event.consent_id)
    with runtime.data_engine.connect() as conn:
        with pytest.raises(RecordIntegrityError) as caught:
            service.event(conn, member_id, moved)
        assert (caught.value.table, caught.value.record_id, caught.value.field) == ("consent_events", moved, "evidence")
        with pytest.raises(RecordIntegrityError):
            service.history(conn, member_id)
        assert service.event(conn, member_id, event.consent_id).evidence == EVIDENCE


def test_an_evidence_ciphertext_copied_to_another_members_event_fails_its_integrity_check(runtime: Runtime, service: ConsentService) -> None:
    owner, other = _member(runtime, 1), _member(runtime, 2)
    event = _record(runtime, service, owner, _grant(1, MARKETING, ConsentChannel.paper, evidence=EVIDENCE), DESK)
    moved = _copy_of(runtime, event.consent_id, member_id=other)
    with runtime.data_engine.connect() as conn, pytest.raises(RecordIntegrityError) as caught:
        service.event(conn, other, moved)
    assert (caught.value.table, caught.value.record_id, caught.value.field) == ("consent_events", moved, "evidence")


def test_an_evidence_ciphertext_does_not_decrypt_in_another_events_context(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime)
    first = _record(runtime, service, member_id, _grant(1, MARKETING, ConsentChannel.paper, evidence=EVIDENCE), DESK)
    second = _record(runtime, service, member_id, _withdraw(MARKETING, ConsentChannel.paper, evidence="scan-2"), DESK)
    sealed = bytes(_raw_event(runtime, first.consent_id)["evidence"])  # type: ignore[arg-type]
    cipher = runtime.keys.load(member_id, scopes=(DATA_SCOPE,)).get(DATA_SCOPE, read_header(sealed)[1])
    assert cipher.decrypt(sealed, FieldContext("consent_events", first.consent_id, "evidence")) == EVIDENCE.encode()
    for elsewhere in (
        FieldContext("consent_events", second.consent_id, "evidence"),
        FieldContext("consent_events", first.consent_id, "notice_hash"),
        FieldContext("treatments", first.consent_id, "evidence"),
    ):
        with pytest.raises(DecryptionError):
            cipher.decrypt(sealed, elsewhere)


# -- publishing notices -----------------------------------------------------------------------------


def test_a_published_notice_is_stored_with_its_recomputed_hashes(runtime: Runtime, service: ConsentService) -> None:
    effective = datetime(2026, 7, 1, 0, 0, 0, 750_000, tzinfo=UTC)  # stored to the whole second
    zh, en = "新版告知：\n\t我们会发送短信。", "New notice:\n\twe send text messages."
    notice = _publish(runtime, service, 2, effective_at=effective, now=NOW, material=False, text_zh=zh, text_en=en)
    whole = effective.replace(microsecond=0)
    expected_hash = notice_hash(MARKETING, 2, whole, material=False, sha256_zh=text_sha256(zh), sha256_en=text_sha256(en))
    assert notice == Notice(MARKETING, 2, zh, en, text_sha256(zh), text_sha256(en), expected_hash, False, whole, NOW, "staff:dpo-1")
    with runtime.data_engine.connect() as conn:
        assert service.notices.of(conn, MARKETING)[-1] == notice
        row = conn.execute(select(consent_notices).where(consent_notices.c.purpose == "marketing_contact", consent_notices.c.version == 2)).mappings().one()
    assert (row["sha256_zh"], row["sha256_en"], row["notice_hash"], row["effective_at"]) == (text_sha256(zh), text_sha256(en), expected_hash, whole)


def test_the_notice_hash_is_the_sha256_of_the_documented_json() -> None:
    """The hash binds purpose, version, effective time, materiality and both texts, as the notices module documents."""
    body = (
        '{"effective_at":"2026-01-01T00:00:00Z","material":true,"purpose":"care",'
        f'"texts":{{"en":"{text_sha256("en")}","zh":"{text_sha256("中文")}"}},"version":1}}'
    )
    expected = hashlib.sha256(body.encode()).hexdigest()
    assert notice_hash(Purpose.care, 1, V1_EFFECTIVE, material=True, sha256_zh=text_sha256("中文"), sha256_en=text_sha256("en")) == expected
    assert notice_hash(Purpose.care, 1, V1_EFFECTIVE, material=False, sha256_zh=text_sha256("中文"), sha256_en=text_sha256("en")) != expected


def test_the_migrations_version_1_notices_carry_their_recomputed_hashes(runtime: Runtime) -> None:
    with runtime.data_engine.connect() as conn:
        every = NoticeBook().every(conn)
    assert {p: [n.version for n in notices] for p, notices in every.items()} == {p: [1] for p in Purpose}
    for purpose, (notice,) in every.items():
        assert (notice.effective_at, notice.material, notice.published_by) == (V1_EFFECTIVE, True, "migration:0005_consent")
        assert (notice.sha256_zh, notice.sha256_en) == (text_sha256(notice.text_zh), text_sha256(notice.text_en))
        recomputed = notice_hash(purpose, 1, notice.effective_at, material=True, sha256_zh=text_sha256(notice.text_zh), sha256_en=text_sha256(notice.text_en))
        assert notice.notice_hash == recomputed, purpose


def test_publishing_a_version_not_above_the_latest_is_a_conflict(runtime: Runtime, service: ConsentService) -> None:
    for latest, versions in ((1, (1, 0, -3)), (3, (3, 2))):
        if latest == 3:
            _publish(runtime, service, 3, effective_at=NOW, now=NOW)  # versions may skip
        before = _notice_count(runtime)
        for version in versions:
            with pytest.raises(ConflictError, match=f"^version {latest} of the marketing_contact notice exists; publish version {latest + 1} or higher$"):
                _publish(runtime, service, version, effective_at=NOW, now=NOW)
        assert _notice_count(runtime) == before


def test_publishing_a_notice_effective_in_the_past_is_refused(runtime: Runtime, service: ConsentService) -> None:
    before = _notice_count(runtime)
    for effective_at in (NOW - timedelta(seconds=1), V1_EFFECTIVE - timedelta(days=1)):
        with pytest.raises(ValidationError) as caught:
            _publish(runtime, service, 2, effective_at=effective_at, now=NOW)
        assert caught.value.problems == {"effective_at": "in_the_past"}
    assert _notice_count(runtime) == before
    assert _publish(runtime, service, 2, effective_at=NOW, now=NOW).effective_at == NOW  # from now on is allowed


def test_regression_a_notice_effective_beyond_2999_is_refused_so_stale_times_never_overflow(runtime: Runtime, service: ConsentService) -> None:
    before = _notice_count(runtime)
    with pytest.raises(ValidationError) as caught:
        _publish(runtime, service, 2, effective_at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), now=NOW)
    assert caught.value.problems == {"effective_at": "too_far"}
    assert _notice_count(runtime) == before


def test_publishing_a_notice_effective_before_the_previous_version_is_refused(runtime: Runtime, service: ConsentService) -> None:
    _publish(runtime, service, 2, effective_at=NOW + timedelta(days=10), now=NOW)
    with pytest.raises(ValidationError) as caught:
        _publish(runtime, service, 3, effective_at=NOW + timedelta(days=10) - timedelta(seconds=1), now=NOW)
    assert caught.value.problems == {"effective_at": "before_previous_version"}
    assert _publish(runtime, service, 3, effective_at=NOW + timedelta(days=10), now=NOW).version == 3  # the same moment is allowed


BAD_TEXTS: list[tuple[dict[str, str], dict[str, str]]] = [
    ({"text_zh": ""}, {"texts.zh": "empty"}),
    ({"text_en": " \n\t "}, {"texts.en": "empty"}),
    ({"text_zh": "告知\x00内容"}, {"texts.zh": "control_character"}),
    ({"text_en": "notice\x1b[31m"}, {"texts.en": "control_character"}),
    ({"text_en": "notice\r\nline"}, {"texts.en": "control_character"}),
    ({"text_en": "half \ud800 surrogate"}, {"texts.en": "control_character"}),
    ({"text_zh": "长" * (MAX_TEXT_LENGTH + 1)}, {"texts.zh": "too_long"}),
    ({"text_zh": "", "text_en": "\x07"}, {"texts.zh": "empty", "texts.en": "control_character"}),
]


def test_publishing_a_notice_with_an_empty_overlong_or_control_character_text_is_refused(runtime: Runtime, service: ConsentService) -> None:
    before = _notice_count(runtime)
    for texts, problems in BAD_TEXTS:
        with pytest.raises(ValidationError) as caught:
            _publish(runtime, service, 2, effective_at=NOW, now=NOW, **texts)
        assert caught.value.problems == problems, texts
    with pytest.raises(ValidationError) as caught:  # a text problem comes before the version conflict
        _publish(runtime, service, 1, effective_at=NOW, now=NOW, text_zh="")
    assert caught.value.problems == {"texts.zh": "empty"}
    assert _notice_count(runtime) == before
    assert _publish(runtime, service, 2, effective_at=NOW, now=NOW, text_zh="长" * MAX_TEXT_LENGTH).text_zh == "长" * MAX_TEXT_LENGTH


def test_a_grant_names_a_non_material_version_once_it_is_current_and_earlier_grants_keep_counting(runtime: Runtime, service: ConsentService) -> None:
    early, late = _member(runtime, 1), _member(runtime, 2)
    _record(runtime, service, early, _grant(1), now=NOW - timedelta(days=1))
    _publish(runtime, service, 2, effective_at=NOW, now=NOW - timedelta(days=1), material=False)
    _record(runtime, service, late, _grant(2))
    far = NOW + timedelta(days=365)
    with runtime.data_engine.connect() as conn:
        assert service.state(conn, early, MARKETING, far) == PurposeState(MARKETING, ConsentState.granted, 1, NOW - timedelta(days=1))
        assert service.state(conn, late, MARKETING, far) == PurposeState(MARKETING, ConsentState.granted, 2, NOW)


def test_a_material_version_makes_an_earlier_grant_stale_after_the_grace_period(runtime: Runtime, service: ConsentService) -> None:
    member_id = _member(runtime)
    _record(runtime, service, member_id, _grant(1), now=NOW - timedelta(days=1))
    _publish(runtime, service, 2, effective_at=NOW, now=NOW - timedelta(days=1))
    stale_at = NOW + timedelta(days=30)
    with runtime.data_engine.connect() as conn:
        assert service.state(conn, member_id, MARKETING, stale_at - timedelta(seconds=1)).state is ConsentState.granted
        assert service.state(conn, member_id, MARKETING, stale_at) == PurposeState(MARKETING, ConsentState.stale, 1, stale_at)
        assert service.has_live_consent(conn, member_id, MARKETING, stale_at) is False
    _record(runtime, service, member_id, _grant(2), now=stale_at + timedelta(hours=1))
    with runtime.data_engine.connect() as conn:
        assert service.state(conn, member_id, MARKETING, stale_at + timedelta(hours=1)) == PurposeState(
            MARKETING, ConsentState.granted, 2, stale_at + timedelta(hours=1)
        )
