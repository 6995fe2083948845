"""Data-subject requests on real SQLite and PostgreSQL: the workflow, due dates and the queue, filing rules, the gate's effects and audit, encryption at rest.

Refusals are checked the strict way: the transaction around the refused call
is committed, so "nothing changed" shows the service itself wrote nothing,
not merely that a rollback hid it. Through the gate each call must leave
exactly one audit event, whose leaf carries codes and ids, never a note,
details or evidence.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from api.runtime import Runtime
from audit.event import Actor
from audit.store import AuditJournal, audit_journal
from tests.vault.factories import other_member_values
from vault import data_map as dm
from vault.access import Access, Gatekeeper, Outcome, Refusal
from vault.consent.model import ConsentChannel, ConsentDecision, ConsentRequest, ConsentState, Recorder, RecorderRole
from vault.consent.notices import NoticeBook
from vault.consent.service import ConsentService
from vault.data_requests import (
    DataRequest,
    DataRequestGate,
    DataRequestService,
    FiledBy,
    Filer,
    Filing,
    Move,
    ReasonCode,
    RequestType,
    Status,
    Step,
)
from vault.data_requests.workflow import DEFAULT_REASON, TRANSITIONS, check_transition
from vault.errors import ConflictError, MemberErasedError, NotFoundError, ValidationError
from vault.ids import new_id
from vault.purposes import Purpose
from vault.storage.engine import write_transaction
from vault.storage.schema import data_request_steps, data_requests, field_history

NOW = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=2)
PERIODS = {"default": "P1M", "cn": "P15D"}
MEMBER = Filer("member-subject", FiledBy.member)
DESK = Filer("staff:fd-1", FiledBy.front_desk)
EVIDENCE = "scan:form-2026/0131-17"
DPO = "staff:dpo-1"
RECTIFY = {"changes": {"contact": {"email": "rectified.address@example.cn"}}}
OBJECT = {"purposes": ["marketing_contact", "photo_use"]}
PATH = (Status.verified, Status.in_progress, Status.completed)
REFUSED = (ConflictError, ValidationError, NotFoundError, MemberErasedError)


@pytest.fixture
def service(runtime: Runtime) -> DataRequestService:
    return DataRequestService(runtime.members, periods=PERIODS)


@pytest.fixture
def consent(runtime: Runtime) -> ConsentService:
    return ConsentService(runtime.members, NoticeBook())


@pytest.fixture
def gate(runtime: Runtime, service: DataRequestService, consent: ConsentService) -> DataRequestGate:
    return DataRequestGate(service, runtime.members, consent, runtime.ledger, Gatekeeper(AuditJournal()))


_numbers = itertools.count(1)


def _member(runtime: Runtime) -> str:
    with write_transaction(runtime.data_engine) as conn:
        return runtime.members.create(conn, other_member_values(next(_numbers)))


def _details(kind: RequestType) -> dict[str, object] | None:
    return {RequestType.rectification: RECTIFY, RequestType.objection: OBJECT}.get(kind)


def _filing(kind: RequestType, **kw: object) -> Filing:
    return Filing(kind, **{"details": _details(kind), **kw})  # type: ignore[arg-type]


def _file(runtime: Runtime, service: DataRequestService, member_id: str, filing: Filing, filer: Filer = MEMBER, *, now: datetime = NOW) -> DataRequest:
    with write_transaction(runtime.data_engine) as conn:
        return service.file(conn, member_id, filing, filer, dsr_id=new_id(), now=now)


def _move(
    runtime: Runtime, service: DataRequestService, dsr_id: str, to: Status, *, reason: ReasonCode | None = None, note: str | None = None, now: datetime = LATER
) -> DataRequest:
    with write_transaction(runtime.data_engine) as conn:
        return service.transition(conn, dsr_id, to, actor=DPO, actor_role="dpo", reason=reason, note=note, now=now)


def _walk(runtime: Runtime, service: DataRequestService, dsr_id: str, *steps: Status) -> DataRequest:
    moved = None
    for i, to in enumerate(steps):
        reason = ReasonCode.not_applicable if to is Status.rejected else None
        moved = _move(runtime, service, dsr_id, to, reason=reason, now=LATER + timedelta(minutes=i))
    assert moved is not None
    return moved


def _snapshot(runtime: Runtime, dsr_id: str) -> tuple[object, ...]:
    """What a transition would change: the status, updated_at, closed_at and the steps."""
    with runtime.data_engine.connect() as conn:
        row = conn.execute(select(data_requests.c.status, data_requests.c.updated_at, data_requests.c.closed_at).where(data_requests.c.dsr_id == dsr_id)).one()
        steps = conn.execute(select(func.count()).select_from(data_request_steps).where(data_request_steps.c.dsr_id == dsr_id)).scalar_one()
    return (*row, steps)


def _refused_move(
    runtime: Runtime,
    service: DataRequestService,
    dsr_id: str,
    to: Status,
    *,
    reason: ReasonCode | None = None,
    note: str | None = "a note",
    now: datetime = LATER,
) -> Exception:
    """Attempt a transition that must be refused; the transaction around it commits, and nothing may have changed."""
    before = _snapshot(runtime, dsr_id)
    with write_transaction(runtime.data_engine) as conn, pytest.raises(REFUSED) as caught:
        service.transition(conn, dsr_id, to, actor=DPO, actor_role="dpo", reason=reason, note=note, now=now + timedelta(hours=1))
    assert _snapshot(runtime, dsr_id) == before, (to, reason)
    return caught.value


def _refused_filing(runtime: Runtime, service: DataRequestService, member_id: str, filing: Filing, filer: Filer = MEMBER) -> Exception:
    before = _count(runtime, data_requests), _count(runtime, data_request_steps)
    with write_transaction(runtime.data_engine) as conn, pytest.raises(REFUSED) as caught:
        service.file(conn, member_id, filing, filer, dsr_id=new_id(), now=NOW)
    assert (_count(runtime, data_requests), _count(runtime, data_request_steps)) == before
    return caught.value


def _problems(error: object) -> dict[str, str]:
    assert isinstance(error, ValidationError), repr(error)
    return error.problems


def _done(result: object) -> DataRequest:
    assert isinstance(result, DataRequest), repr(result)
    return result


def _refused(result: object, outcome: Outcome, error: type[Exception] | None = None) -> Refusal:
    assert isinstance(result, Refusal), repr(result)
    assert result.outcome is outcome
    if error is not None:
        assert isinstance(result.error, error), repr(result.error)
    return result


def _absent(leaf: bytes, *texts: bytes) -> None:
    for t in texts:
        assert t not in leaf, t


def _count(runtime: Runtime, table: object) -> int:
    with runtime.data_engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def _raw(runtime: Runtime, dsr_id: str) -> tuple[dict[str, object], list[dict[str, object]]]:
    with runtime.data_engine.connect() as conn:
        request = dict(conn.execute(select(data_requests).where(data_requests.c.dsr_id == dsr_id)).mappings().one())
        steps = [
            dict(m) for m in conn.execute(select(data_request_steps).where(data_request_steps.c.dsr_id == dsr_id).order_by(data_request_steps.c.seq)).mappings()
        ]
    return request, steps


def _queue(runtime: Runtime, service: DataRequestService, *, now: datetime, overdue: bool | None = None, status: Status | None = None) -> list[str]:
    with runtime.data_engine.connect() as conn:
        return [r.dsr_id for r in service.queue(conn, status=status, overdue=overdue, now=now, after=None, limit=100)]


# -- the workflow on the database ----------------------------------------------------------------


def test_a_filed_request_is_received_with_its_first_step_and_a_due_date(runtime: Runtime, service: DataRequestService) -> None:
    member_id = _member(runtime)
    with write_transaction(runtime.data_engine) as conn:
        filed = service.file(conn, member_id, _filing(RequestType.objection, evidence=EVIDENCE), DESK, dsr_id="a" * 32, now=NOW)
    assert filed == DataRequest(
        dsr_id="a" * 32, member_id=member_id, type=RequestType.objection, status=Status.received, jurisdiction="default", filed_by="staff:fd-1",
        filed_role=FiledBy.front_desk, received_at=NOW, due_at=datetime(2026, 2, 28, 10, 0, tzinfo=UTC), closed_at=None, details=OBJECT,
        evidence=EVIDENCE, steps=(Step(1, None, Status.received, "staff:fd-1", "front_desk", ReasonCode.filed, NOW, None),),
    )  # fmt: skip
    with runtime.data_engine.connect() as conn:
        assert service.get(conn, filed.dsr_id) == filed
        assert service.owner(conn, filed.dsr_id) == member_id
        assert service.owner(conn, "b" * 32) is None
        with pytest.raises(NotFoundError):
            service.get(conn, "b" * 32)
    with write_transaction(runtime.data_engine) as conn, pytest.raises(NotFoundError):
        service.transition(conn, "b" * 32, Status.verified, actor=DPO, actor_role="dpo", reason=None, note=None, now=LATER)


def test_every_legal_path_works_for_every_type_and_records_each_step(runtime: Runtime, service: DataRequestService) -> None:
    member_id = _member(runtime)
    for kind in RequestType:
        ends = [(*PATH, Status.lifted)] if kind is RequestType.restriction else [PATH]
        ends += [(*PATH[:n], Status.rejected) for n in range(3)]
        for path in ends:
            filed = _file(runtime, service, member_id, _filing(kind))
            times = [LATER + timedelta(minutes=i) for i in range(len(path))]
            done = _walk(runtime, service, filed.dsr_id, *path)
            statuses = (Status.received, *path)
            expected_steps = tuple(
                Step(i + 2, a, b, DPO, "dpo", ReasonCode.not_applicable if b is Status.rejected else DEFAULT_REASON[b], times[i], None)
                for i, (a, b) in enumerate(itertools.pairwise(statuses))
            )
            assert done.status is path[-1], (kind, path)
            assert done.steps == (filed.steps[0], *expected_steps), (kind, path)
            assert done.closed_at == times[-1]
    assert _count(runtime, data_requests) == 6 * 4


def test_every_illegal_transition_is_a_conflict_and_changes_nothing(runtime: Runtime, service: DataRequestService) -> None:
    """For every type and every state it can reach, every target not in TRANSITIONS (lifted for a non-restriction too) is refused."""
    member_id = _member(runtime)
    attempted: set[tuple[RequestType, Status, Status]] = set()
    for kind in RequestType:
        walks = [(*PATH, Status.lifted) if kind is RequestType.restriction else PATH, (Status.rejected,)]
        for n, path in enumerate(walks):
            filed = _file(runtime, service, member_id, _filing(kind), now=NOW + timedelta(seconds=n))
            state = Status.received
            for nxt in (*path, None):
                for to in Status:
                    if to in TRANSITIONS.get(state, frozenset()) and (to is not Status.lifted or kind is RequestType.restriction):
                        continue
                    for reason in (None, ReasonCode.not_applicable, DEFAULT_REASON.get(to)):
                        error = _refused_move(runtime, service, filed.dsr_id, to, reason=reason)
                        assert isinstance(error, ConflictError), (kind, state, to)
                        assert str(error) == f"this {kind.value} request cannot go from {state.value} to {to.value}"
                    attempted.add((kind, state, to))
                if nxt is not None:
                    _walk(runtime, service, filed.dsr_id, nxt)
                    state = nxt
    # every (type, from, to) outside the workflow, for every status a request of that type can be in
    reachable = {k: {Status.received, Status.verified, Status.in_progress, Status.completed, Status.rejected} for k in RequestType}
    reachable[RequestType.restriction].add(Status.lifted)
    expected = {
        (k, a, b)
        for k in RequestType
        for a in reachable[k]
        for b in Status
        if b not in TRANSITIONS.get(a, frozenset()) or (b is Status.lifted and k is not RequestType.restriction)
    }
    assert attempted == expected
    assert len(attempted) == 5 * (5 * 6 - 6) + (6 * 6 - 7)


def test_a_rejection_needs_a_rejection_reason_and_a_normal_step_its_own(runtime: Runtime, service: DataRequestService) -> None:
    member_id = _member(runtime)
    filed = _file(runtime, service, member_id, _filing(RequestType.access))
    for state in (Status.received, Status.verified, Status.in_progress):
        if state is not Status.received:
            _walk(runtime, service, filed.dsr_id, state)
        error = _refused_move(runtime, service, filed.dsr_id, Status.rejected, reason=None)
        assert _problems(error) == {"reason_code": "required"}
        for reason in (ReasonCode.filed, ReasonCode.fulfilled, ReasonCode.identity_verified, ReasonCode.restriction_lifted):
            error = _refused_move(runtime, service, filed.dsr_id, Status.rejected, reason=reason)
            assert _problems(error) == {"reason_code": "not_a_rejection_reason"}, reason
        nxt = next(iter(TRANSITIONS[state] - {Status.rejected}))
        for reason in (ReasonCode.filed, ReasonCode.excessive, *(r for r in DEFAULT_REASON.values() if r is not DEFAULT_REASON[nxt])):
            error = _refused_move(runtime, service, filed.dsr_id, nxt, reason=reason)
            assert _problems(error) == {"reason_code": "not_for_this_step"}, (nxt, reason)
    rejected = _move(runtime, service, filed.dsr_id, Status.rejected, reason=ReasonCode.legal_obligation_to_retain, note="kept for the tax authority")
    assert (rejected.status, rejected.steps[-1].reason_code, rejected.steps[-1].note) == (
        Status.rejected, ReasonCode.legal_obligation_to_retain, "kept for the tax authority"
    )  # fmt: skip


def test_a_blank_overlong_or_control_character_note_is_invalid(runtime: Runtime, service: DataRequestService) -> None:
    member_id = _member(runtime)
    filed = _file(runtime, service, member_id, _filing(RequestType.erasure))
    for note in ("", "   ", "\n", "x" * 2001, "line\x00", "bell\x07", "esc\x1b[31m", "c1\x85", "del\x7f", "surrogate\ud800"):
        error = _refused_move(runtime, service, filed.dsr_id, Status.verified, reason=None, note=note)
        assert _problems(error) == {"note": "invalid"}, repr(note)
    longest = "核" * 2000
    moved = _move(runtime, service, filed.dsr_id, Status.verified, reason=None, note=longest)
    assert moved.steps[-1].note == longest
    moved = _move(runtime, service, filed.dsr_id, Status.in_progress, reason=None, note="two lines\nand a\ttab")
    assert moved.steps[-1].note == "two lines\nand a\ttab"


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(RequestType), data=st.data())
def test_random_attempted_sequences_on_the_database_follow_the_pure_rules(
    runtime: Runtime, service: DataRequestService, kind: RequestType, data: st.DataObject
) -> None:
    """Each attempt does on the database exactly what check_transition says about the model state: moves with that reason, or refuses and changes nothing."""
    member_id = _member(runtime)
    filed = _file(runtime, service, member_id, _filing(kind))
    state, steps = Status.received, 1
    for i in range(data.draw(st.integers(1, 7), label="attempts")):
        legal = sorted(b for b in TRANSITIONS.get(state, frozenset()) if b is not Status.lifted or kind is RequestType.restriction)
        to = data.draw(st.sampled_from(legal) if legal and data.draw(st.booleans()) else st.sampled_from(Status), label="to")
        reason = data.draw(st.none() | st.sampled_from(ReasonCode), label="reason")
        try:
            expected: object = check_transition(kind, state, to, reason)
        except (ConflictError, ValidationError) as exc:
            expected = exc
        now = LATER + timedelta(minutes=i)
        if isinstance(expected, Exception):
            error = _refused_move(runtime, service, filed.dsr_id, to, reason=reason, now=now)
            assert (type(error), getattr(error, "problems", None)) == (type(expected), getattr(expected, "problems", None))
            continue
        moved = _move(runtime, service, filed.dsr_id, to, reason=reason, now=now)
        steps += 1
        assert (moved.status, len(moved.steps), moved.steps[-1]) == (to, steps, Step(steps, state, to, DPO, "dpo", expected, now, None))
        state = to


# -- due dates and the overdue queue ----------------------------------------------------------------


def test_due_dates_follow_the_configured_period_of_the_jurisdiction_and_an_unknown_one_is_invalid(runtime: Runtime, service: DataRequestService) -> None:
    cases = [
        (NOW, "default", datetime(2026, 2, 28, 10, 0, tzinfo=UTC)),
        (datetime(2028, 1, 31, 23, 59, 59, tzinfo=UTC), "default", datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC)),
        (datetime(2026, 12, 15, 8, 0, tzinfo=UTC), "default", datetime(2027, 1, 15, 8, 0, tzinfo=UTC)),
        (NOW, "cn", datetime(2026, 2, 15, 10, 0, tzinfo=UTC)),
        (datetime(2026, 12, 20, 8, 0, tzinfo=UTC), "cn", datetime(2027, 1, 4, 8, 0, tzinfo=UTC)),
    ]
    member_id = _member(runtime)
    for received, jurisdiction, due in cases:
        filed = _file(runtime, service, member_id, Filing(RequestType.access, jurisdiction=jurisdiction), now=received)
        assert (filed.received_at, filed.jurisdiction, filed.due_at) == (received, jurisdiction, due)
        _walk(runtime, service, filed.dsr_id, Status.rejected)
    for jurisdiction in ("mars", "CN", "c", "cn ", "", "default2", "x" * 17):  # neither configured nor the default
        error = _refused_filing(runtime, service, member_id, Filing(RequestType.access, jurisdiction=jurisdiction))
        assert _problems(error) == {"jurisdiction": "unknown"}, jurisdiction


def test_overdue_requests_show_in_the_queue_only_once_now_passes_their_due_time_and_leave_it_when_closed(runtime: Runtime, service: DataRequestService) -> None:
    first, second = _member(runtime), _member(runtime)
    late = _file(runtime, service, first, Filing(RequestType.access))  # due 2026-02-28T10:00:00Z
    sooner = _file(runtime, service, second, Filing(RequestType.access, jurisdiction="cn"))  # due 2026-02-15T10:00:00Z
    done = _file(runtime, service, second, _filing(RequestType.restriction))
    _walk(runtime, service, done.dsr_id, *PATH)  # completed: never overdue
    everyone = sorted([late.dsr_id, sooner.dsr_id, done.dsr_id])
    due = late.due_at
    assert due == datetime(2026, 2, 28, 10, 0, tzinfo=UTC)
    assert _queue(runtime, service, now=sooner.due_at, overdue=True) == []
    assert _queue(runtime, service, now=sooner.due_at + timedelta(seconds=1), overdue=True) == [sooner.dsr_id]
    assert _queue(runtime, service, now=due - timedelta(seconds=1), overdue=True) == [sooner.dsr_id]
    assert _queue(runtime, service, now=due, overdue=True) == [sooner.dsr_id]  # the due second itself is not late yet
    assert _queue(runtime, service, now=due + timedelta(seconds=1), overdue=True) == sorted([late.dsr_id, sooner.dsr_id])
    assert _queue(runtime, service, now=due + timedelta(seconds=1), overdue=False) == [done.dsr_id]
    assert _queue(runtime, service, now=due, overdue=False) == sorted([late.dsr_id, done.dsr_id])
    assert _queue(runtime, service, now=due, overdue=None) == everyone
    with runtime.data_engine.connect() as conn:
        shown = service.get(conn, late.dsr_id, decrypt=False)
    assert (shown.overdue(due), shown.overdue(due + timedelta(seconds=1))) == (False, True)
    _walk(runtime, service, late.dsr_id, Status.verified, Status.in_progress)
    assert _queue(runtime, service, now=due + timedelta(seconds=1), overdue=True) == sorted([late.dsr_id, sooner.dsr_id])  # in progress: still late
    _walk(runtime, service, late.dsr_id, Status.rejected)
    _walk(runtime, service, sooner.dsr_id, Status.verified, Status.in_progress, Status.completed)
    assert _queue(runtime, service, now=due + timedelta(days=365), overdue=True) == []
    assert _queue(runtime, service, now=due + timedelta(days=365), overdue=False) == everyone
    assert _queue(runtime, service, now=due, status=Status.completed) == sorted([sooner.dsr_id, done.dsr_id])
    with runtime.data_engine.connect() as conn:
        page = service.queue(conn, status=None, overdue=None, now=due, after=everyone[0], limit=1)
    assert [r.dsr_id for r in page] == [everyone[1]]
    assert (page[0].details, page[0].evidence, page[0].steps) == (None, None, ())


# -- filing rules ------------------------------------------------------------------------------------


def test_a_second_open_request_of_the_same_type_is_a_conflict_naming_the_open_one(runtime: Runtime, service: DataRequestService) -> None:
    member_id = _member(runtime)
    for kind in RequestType:
        open_one = _file(runtime, service, member_id, _filing(kind))
        for state in (Status.received, Status.verified, Status.in_progress):
            if state is not Status.received:
                _walk(runtime, service, open_one.dsr_id, state)
            error = _refused_filing(runtime, service, member_id, _filing(kind))
            assert isinstance(error, ConflictError)
            assert str(error) == f"an open {kind.value} request exists: {open_one.dsr_id}"
            error = _refused_filing(runtime, service, member_id, _filing(kind, evidence=EVIDENCE), DESK)
            assert str(error) == f"an open {kind.value} request exists: {open_one.dsr_id}"
    # every type is open at once for this member: a different type was fine each time
    with runtime.data_engine.connect() as conn:
        shown = service.queue(conn, status=Status.in_progress, overdue=None, now=NOW, after=None, limit=100)
    assert sorted(r.type for r in shown) == sorted(RequestType)
    # another member's open request is no obstacle
    assert _file(runtime, service, _member(runtime), _filing(RequestType.access)).status is Status.received


def test_a_new_request_may_be_filed_once_the_open_one_is_completed_or_rejected(runtime: Runtime, service: DataRequestService) -> None:
    member_id = _member(runtime)
    for kind, close in itertools.product(RequestType, ((Status.rejected,), PATH)):
        first = _file(runtime, service, member_id, _filing(kind))
        _walk(runtime, service, first.dsr_id, *close)
        second = _file(runtime, service, member_id, _filing(kind))
        assert (second.status, second.dsr_id != first.dsr_id) == (Status.received, True)
        _walk(runtime, service, second.dsr_id, Status.rejected)


def test_filing_by_the_front_desk_needs_valid_evidence(runtime: Runtime, service: DataRequestService) -> None:
    member_id = _member(runtime)
    error = _refused_filing(runtime, service, member_id, Filing(RequestType.access), DESK)
    assert _problems(error) == {"evidence": "required"}
    for evidence in ("", " scan", "scan 1", "-scan", "x" * 129, "scan\n1", "扫描件"):
        error = _refused_filing(runtime, service, member_id, Filing(RequestType.access, evidence=evidence), DESK)
        assert _problems(error) == {"evidence": "invalid"}, evidence
        error = _refused_filing(runtime, service, member_id, Filing(RequestType.access, evidence=evidence), MEMBER)
        assert _problems(error) == {"evidence": "invalid"}, evidence
    error = _refused_filing(runtime, service, member_id, Filing(RequestType.access, details={}, jurisdiction="mars"), DESK)
    assert isinstance(error, ValidationError)
    assert error.problems == {"evidence": "required", "jurisdiction": "unknown", "details": "not_for_this_type"}
    filed = _file(runtime, service, member_id, Filing(RequestType.access, evidence="x" * 128), DESK)
    assert (filed.filed_role, filed.evidence) == (FiledBy.front_desk, "x" * 128)


DETAILS_REFUSED: list[tuple[RequestType, object, dict[str, str]]] = [
    *(
        (RequestType.rectification, details, {"details": "changes_required"})
        for details in (
            None,
            {},
            {"changes": None},
            {"changes": {}},
            {"changes": "email"},
            {"changes": ["contact"]},
            {"changes": {"contact": {}}},
            {"changes": {"contact": {"email": "a@example.cn"}}, "note": "x"},
            {"change": {"contact": {"email": "a@example.cn"}}},
        )
    ),
    (RequestType.rectification, {"changes": {"contact": {"nickname": "x"}}}, {"details.changes.nickname": "unknown_field"}),
    (RequestType.rectification, {"changes": {"identity": {"phone": "+8613800138000"}}}, {"details.changes.identity.phone": "wrong_category"}),
    (RequestType.rectification, {"changes": {"contact": {"full_name": "王五"}}}, {"details.changes.contact.full_name": "wrong_category"}),
    (RequestType.rectification, {"changes": {"secrets": {"phone": "+8613800138000"}}}, {"details.changes.secrets": "unknown_field"}),
    (RequestType.rectification, {"changes": {"contact": "+8613800138000"}}, {"details.changes.contact": "not_an_object"}),
    (RequestType.rectification, {"changes": {"contact": {"13800138000": "x"}}}, {"details.changes.<invalid name>": "unknown_field"}),
    (RequestType.rectification, {"changes": {"member_id": "x"}}, {"details.changes.member_id": "unknown_field"}),
    *(
        (RequestType.objection, details, {"details": "purposes_required"})
        for details in (None, {}, {"purposes": None}, {"purposes": []}, {"purposes": "marketing_contact"}, {"purposes": ["marketing_contact"], "x": 1})
    ),
    *(
        (RequestType.objection, {"purposes": purposes}, {"details.purposes": "not_consent_purposes"})
        for purposes in (["care"], ["legal_claims"], ["self_service"], ["marketing"], [1], [None], ["marketing_contact", "marketing_contact"])
    ),
    *(
        (kind, details, {"details": "not_for_this_type"})
        for kind in (RequestType.access, RequestType.portability, RequestType.erasure, RequestType.restriction)
        for details in ({}, {"purposes": ["marketing_contact"]}, RECTIFY)
    ),
]


def test_details_are_checked_per_type(runtime: Runtime, service: DataRequestService) -> None:
    member_id = _member(runtime)
    for kind, details, problems in DETAILS_REFUSED:
        error = _refused_filing(runtime, service, member_id, Filing(kind, details=details))  # type: ignore[arg-type]
        assert _problems(error) == problems, (kind, details)
    accepted = [
        (RequestType.rectification, {"changes": {"contact": {"email": "new@example.cn", "phone": "+8613800138000"}, "demographic": {"city": "北京"}}}),
        (RequestType.objection, {"purposes": [p.value for p in (Purpose.health_data, Purpose.cross_border_transfer)]}),
        *((kind, None) for kind in (RequestType.access, RequestType.portability, RequestType.erasure, RequestType.restriction)),
    ]
    for kind, details in accepted:
        assert _file(runtime, service, member_id, Filing(kind, details=details)).details == details, kind


def test_an_unknown_member_is_not_found_and_an_erased_one_erased_before_any_other_check(runtime: Runtime, service: DataRequestService) -> None:
    bad = Filing(RequestType.access, details={"x": 1}, jurisdiction="mars")
    assert isinstance(_refused_filing(runtime, service, "d" * 32, bad, DESK), NotFoundError)
    assert isinstance(_refused_filing(runtime, service, "d" * 32, _filing(RequestType.access)), NotFoundError)
    member_id = _member(runtime)
    runtime.eraser.erase(member_id)
    assert isinstance(_refused_filing(runtime, service, member_id, bad, DESK), MemberErasedError)
    assert isinstance(_refused_filing(runtime, service, member_id, _filing(RequestType.erasure)), MemberErasedError)


# -- encryption at rest and erasure -------------------------------------------------------------------

PRIVATE_EMAIL = "private.person@example.cn"
PRIVATE_NOTE = "rang the member back on 13912345678 to confirm"


def test_details_evidence_and_notes_are_encrypted_at_rest_and_outlive_the_members_erasure(runtime: Runtime, service: DataRequestService) -> None:
    member_id = _member(runtime)
    details = {"changes": {"contact": {"email": PRIVATE_EMAIL}}}
    filed = _file(runtime, service, member_id, Filing(RequestType.rectification, details=details, evidence=EVIDENCE), DESK)
    _move(runtime, service, filed.dsr_id, Status.verified, reason=None, note=PRIVATE_NOTE)
    row, steps = _raw(runtime, filed.dsr_id)
    sealed = [bytes(row["details"]), bytes(row["evidence"]), bytes(steps[1]["note"])]  # type: ignore[arg-type]
    plain = [json.dumps(details, sort_keys=True).encode(), PRIVATE_EMAIL.encode(), EVIDENCE.encode(), PRIVATE_NOTE.encode(), b"13912345678", b"private"]
    assert all(p not in s for p, s in itertools.product(plain, sealed))
    assert steps[0]["note"] is None
    with runtime.data_engine.connect() as conn:
        shown = service.get(conn, filed.dsr_id, decrypt=True)
        hidden = service.get(conn, filed.dsr_id, decrypt=False)
    assert (shown.details, shown.evidence, [s.note for s in shown.steps]) == (details, EVIDENCE, [None, PRIVATE_NOTE])
    assert (hidden.details, hidden.evidence, [s.note for s in hidden.steps]) == (None, None, [None, None])
    assert hidden == DataRequest(**{**{f: getattr(shown, f) for f in DataRequest.__slots__}, "details": None, "evidence": None, "steps": hidden.steps})  # type: ignore[arg-type]

    bare = _file(runtime, service, member_id, Filing(RequestType.access))  # nothing encrypted in it
    runtime.eraser.erase(member_id)
    with runtime.data_engine.connect() as conn:
        assert service.get(conn, bare.dsr_id) == bare
        with pytest.raises(MemberErasedError):
            service.get(conn, filed.dsr_id, decrypt=True)
        after = service.get(conn, filed.dsr_id, decrypt=False)
    assert after == hidden  # the request and its steps outlive the erasure
    assert _raw(runtime, filed.dsr_id)[1] == steps
    for dsr_id in (filed.dsr_id, bare.dsr_id):  # refused before the status moves: no step-less status change even if the caller commits
        error = _refused_move(runtime, service, dsr_id, Status.rejected, reason=ReasonCode.not_applicable, note=None)
        assert isinstance(error, MemberErasedError)


# -- through the gate: effects and one audit event per call ------------------------------------------


def _access(now: datetime = LATER, *, subject: str = DPO, role: str = "dpo", purpose: str | None = "self_service") -> Access:
    return Access(Actor(subject, (role,), None, None), request_id=f"req-{new_id()[:8]}", purpose=purpose, policy_hash="policy-test-1", now=now)


class Journal:
    """The audit journal's rows, counted and decoded."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.seen = self.size()

    def size(self) -> int:
        return _count(self._runtime, audit_journal)

    def one_new(self) -> tuple[dict[str, object], bytes]:
        """The single event journaled since the last call (fails on zero or several)."""
        with self._runtime.data_engine.connect() as conn:
            leaves = [bytes(b) for b in conn.scalars(select(audit_journal.c.leaf).order_by(audit_journal.c.journal_id).offset(self.seen))]
        assert len(leaves) == 1, f"{len(leaves)} events"
        self.seen += 1
        return json.loads(leaves[0]), leaves[0]


@pytest.fixture
def journal(runtime: Runtime) -> Journal:
    return Journal(runtime)


def _gate_file(
    runtime: Runtime, gate: DataRequestGate, member_id: str, filing: Filing, filer: Filer = MEMBER, *, allowed: bool = True
) -> DataRequest | Refusal:
    access = _access(NOW, subject=filer.subject, role="member" if filer.role is FiledBy.member else "front_desk")
    with write_transaction(runtime.data_engine) as conn:
        return gate.file(conn, access, allowed=allowed, member_id=member_id, filing=filing, filer=filer)


def _gate_move(
    runtime: Runtime,
    gate: DataRequestGate,
    request: DataRequest,
    to: Status,
    *,
    reason: ReasonCode | None = None,
    note: str | None = None,
    allowed: bool = True,
) -> DataRequest | Refusal:
    with write_transaction(runtime.data_engine) as conn:
        return gate.transition(conn, _access(), allowed=allowed, dsr_id=request.dsr_id, member_id=request.member_id, move=Move(to, reason, note))


def _event_is(event: dict[str, object], action: str, request: DataRequest, fields: list[str], outcome: str, *, decision: str = "allow") -> None:
    assert {k: event[k] for k in ("action", "resource_type", "resource_id", "member_id", "fields", "decision", "outcome")} == {
        "action": action, "resource_type": "data_request", "resource_id": request.dsr_id, "member_id": request.member_id, "fields": fields,
        "decision": decision, "outcome": outcome,
    }  # fmt: skip


def test_completing_a_rectification_applies_the_changes_through_the_validated_path(
    runtime: Runtime, service: DataRequestService, gate: DataRequestGate, journal: Journal
) -> None:
    member_id = _member(runtime)
    with runtime.data_engine.connect() as conn:
        before = runtime.members.read(conn, member_id, {dm.Category.contact}).values[dm.Category.contact]
    changes = {"contact": {"email": "Rectified.Person@Example.CN", "address": "北京市东城区 2 号"}}
    filed = _gate_file(runtime, gate, member_id, Filing(RequestType.rectification, details={"changes": changes}))
    assert isinstance(filed, DataRequest)
    event, leaf = journal.one_new()
    _event_is(event, "file_request", filed, ["rectification"], "ok")
    _absent(leaf, b"Rectified", "北京".encode(), b"rectified")
    for to in PATH:
        moved = _gate_move(runtime, gate, filed, to, note="checked against the ID card" if to is Status.completed else None)
        assert _done(moved).status is to
        event, leaf = journal.one_new()
        _event_is(event, "transition_request", filed, [to.value], "ok")
        _absent(leaf, b"ID card", b"rectified")
    with runtime.data_engine.connect() as conn:
        after = runtime.members.read(conn, member_id, {dm.Category.contact}).values[dm.Category.contact]
        history = runtime.members.history(conn, member_id)
        raw_history = [bytes(p) for p in conn.scalars(select(field_history.c.previous).where(field_history.c.member_id == member_id))]
    assert after == {**before, "email": "rectified.person@example.cn", "address": "北京市东城区 2 号"}
    assert sorted((h["field"], h["previous"]) for h in history) == sorted([("email", before["email"]), ("address", before["address"])])
    assert len(raw_history) == 2
    for sealed in raw_history:
        _absent(sealed, str(before["email"]).encode(), str(before["address"]).encode())


def test_an_invalid_rectification_is_refused_on_completion_and_changes_neither_the_member_nor_the_request(
    runtime: Runtime, service: DataRequestService, gate: DataRequestGate, journal: Journal
) -> None:
    member_id = _member(runtime)
    with runtime.data_engine.connect() as conn:
        before = runtime.members.read(conn, member_id, set(dm.categories_of(dm.Table.members))).values
    filed = _gate_file(
        runtime, gate, member_id, Filing(RequestType.rectification, details={"changes": {"contact": {"phone": "12345", "email": "ok@example.cn"}}})
    )
    assert isinstance(filed, DataRequest)
    journal.one_new()
    for to in PATH[:2]:
        assert isinstance(_gate_move(runtime, gate, filed, to), DataRequest)
        journal.one_new()
    snapshot = _snapshot(runtime, filed.dsr_id)
    refused = _gate_move(runtime, gate, filed, Status.completed, note="tried it")
    _refused(refused, Outcome.invalid)
    assert set(_problems(refused.error)) == {"phone"}
    event, leaf = journal.one_new()
    _event_is(event, "transition_request", filed, ["completed"], "invalid")
    _absent(leaf, b"12345", b"tried it")
    assert _snapshot(runtime, filed.dsr_id) == snapshot
    with runtime.data_engine.connect() as conn:
        assert service.get(conn, filed.dsr_id).status is Status.in_progress
        assert runtime.members.read(conn, member_id, set(dm.categories_of(dm.Table.members))).values == before
        assert runtime.members.history(conn, member_id) == []
    rejected = _gate_move(runtime, gate, filed, Status.rejected, reason=ReasonCode.manifestly_unfounded)
    assert _done(rejected).status is Status.rejected
    journal.one_new()


def test_completing_an_objection_withdraws_each_named_purpose(
    runtime: Runtime, service: DataRequestService, gate: DataRequestGate, consent: ConsentService, journal: Journal
) -> None:
    member_id = _member(runtime)
    with write_transaction(runtime.data_engine) as conn:
        grant = ConsentRequest(Purpose.marketing_contact, ConsentDecision.granted, ConsentChannel.app, notice_version=1)
        consent.record(conn, member_id, grant, Recorder("member:self", RecorderRole.member), consent_id=new_id(), request_id="r-grant", now=NOW)
        assert consent.state(conn, member_id, Purpose.marketing_contact, NOW).state is ConsentState.granted
    filed = _gate_file(runtime, gate, member_id, Filing(RequestType.objection, details=OBJECT))
    assert isinstance(filed, DataRequest)
    journal.one_new()
    for to in PATH:
        assert isinstance(_gate_move(runtime, gate, filed, to), DataRequest)
        event, _ = journal.one_new()
        _event_is(event, "transition_request", filed, [to.value], "ok")
    with runtime.data_engine.connect() as conn:
        states = {p: consent.state(conn, member_id, p, LATER) for p in (Purpose.marketing_contact, Purpose.photo_use, Purpose.health_data)}
        history = consent.history(conn, member_id)
    assert {p: s.state for p, s in states.items()} == {
        Purpose.marketing_contact: ConsentState.withdrawn, Purpose.photo_use: ConsentState.withdrawn, Purpose.health_data: ConsentState.none,
    }  # fmt: skip
    withdrawals = [e for e in history if e.decision is ConsentDecision.withdrawn]
    assert [(e.purpose, e.channel, e.evidence, e.recorded_by, e.recorded_role, e.recorded_at) for e in withdrawals] == [
        (Purpose(p), ConsentChannel.request, f"dsr:{filed.dsr_id}", DPO, RecorderRole.dpo, LATER) for p in OBJECT["purposes"]
    ]
    assert len(history) == 3


def test_completing_a_restriction_restricts_the_member_until_it_is_lifted(
    runtime: Runtime, service: DataRequestService, gate: DataRequestGate, journal: Journal
) -> None:
    member_id, other = _member(runtime), _member(runtime)
    filed = _gate_file(runtime, gate, member_id, Filing(RequestType.restriction))
    assert isinstance(filed, DataRequest)
    journal.one_new()
    seen = []
    for to in (*PATH, Status.lifted):
        assert isinstance(_gate_move(runtime, gate, filed, to), DataRequest)
        event, _ = journal.one_new()
        _event_is(event, "transition_request", filed, [to.value], "ok")
        with runtime.data_engine.connect() as conn:
            seen.append((to, service.is_restricted(conn, member_id), service.is_restricted(conn, other)))
    assert seen == [(Status.verified, False, False), (Status.in_progress, False, False), (Status.completed, True, False), (Status.lifted, False, False)]
    refused = _gate_move(runtime, gate, filed, Status.lifted)
    _refused(refused, Outcome.conflict)
    _event_is(journal.one_new()[0], "transition_request", filed, ["lifted"], "conflict")


def test_completing_an_access_or_portability_request_closes_it_and_writes_only_its_step(
    runtime: Runtime, service: DataRequestService, gate: DataRequestGate, journal: Journal
) -> None:
    member_id = _member(runtime)
    with runtime.data_engine.connect() as conn:
        before = runtime.members.read(conn, member_id, dm.categories_of(dm.Table.members)).values
    for kind in (RequestType.access, RequestType.portability):
        filed = _gate_file(runtime, gate, member_id, Filing(kind))
        assert isinstance(filed, DataRequest)
        journal.one_new()
        for to in PATH[:2]:
            assert isinstance(_gate_move(runtime, gate, filed, to), DataRequest)
            journal.one_new()
        done = _gate_move(runtime, gate, filed, Status.completed, note="done?")
        assert isinstance(done, DataRequest)
        assert (done.status, done.steps[-1].note) == (Status.completed, "done?")
        _event_is(journal.one_new()[0], "transition_request", filed, ["completed"], "ok")
    with runtime.data_engine.connect() as conn:
        assert runtime.members.read(conn, member_id, dm.categories_of(dm.Table.members)).values == before


def test_every_gate_call_journals_exactly_one_event_without_free_text(
    runtime: Runtime, service: DataRequestService, gate: DataRequestGate, journal: Journal
) -> None:
    """Filing, a refused filing, a denied one, an illegal and a denied transition, a read and the queue: one event each, codes only."""
    member_id = _member(runtime)
    filed = _gate_file(runtime, gate, member_id, Filing(RequestType.objection, details=OBJECT, evidence=EVIDENCE), DESK)
    assert isinstance(filed, DataRequest)
    event, leaf = journal.one_new()
    _event_is(event, "file_request", filed, ["objection"], "ok")
    assert event["actor"] == {"subject": "staff:fd-1", "roles": ["front_desk"], "client_id": None, "acting_staff": None}
    _absent(leaf, EVIDENCE.encode(), b"photo_use")

    refused = _gate_file(runtime, gate, member_id, Filing(RequestType.objection, details=OBJECT))
    _refused(refused, Outcome.conflict)
    event, _ = journal.one_new()
    assert (event["action"], event["fields"], event["outcome"], event["member_id"]) == ("file_request", ["objection"], "conflict", member_id)

    denied = _gate_file(runtime, gate, member_id, Filing(RequestType.access), allowed=False)
    assert denied == Refusal(Outcome.denied)
    event, _ = journal.one_new()
    assert (event["action"], event["decision"], event["outcome"]) == ("file_request", "deny", "denied")

    invalid = _gate_file(runtime, gate, member_id, Filing(RequestType.erasure, details={"reason": "secret words"}))
    _refused(invalid, Outcome.invalid)
    _, leaf = journal.one_new()
    assert b"secret words" not in leaf

    unknown = _gate_file(runtime, gate, "e" * 32, Filing(RequestType.erasure, details={"reason": "secret words"}))
    _refused(unknown, Outcome.not_found, NotFoundError)
    journal.one_new()
    assert (_count(runtime, data_requests), _count(runtime, data_request_steps)) == (1, 1)  # the refused filings wrote nothing

    illegal = _gate_move(runtime, gate, filed, Status.completed, note="a private note")
    _refused(illegal, Outcome.conflict)
    event, leaf = journal.one_new()
    _event_is(event, "transition_request", filed, ["completed"], "conflict")
    assert b"private note" not in leaf

    denied_move = _gate_move(runtime, gate, filed, Status.verified, allowed=False)
    assert denied_move == Refusal(Outcome.denied)
    _event_is(journal.one_new()[0], "transition_request", filed, ["verified"], "denied", decision="deny")

    moved = _gate_move(runtime, gate, filed, Status.rejected, reason=ReasonCode.excessive, note="the third objection this week")
    assert _done(moved).status is Status.rejected
    event, leaf = journal.one_new()
    _event_is(event, "transition_request", filed, ["rejected"], "ok")
    _absent(leaf, b"third objection")

    with runtime.data_engine.connect() as conn:
        read = gate.read(conn, _access(), allowed=True, dsr_id=filed.dsr_id, member_id=member_id, decrypt=True)
    assert _done(read).steps[-1].note == "the third objection this week"
    event, leaf = journal.one_new()
    _event_is(event, "read", filed, [], "ok")
    assert b"third objection" not in leaf

    with runtime.data_engine.connect() as conn:
        queue = gate.queue(conn, _access(purpose=None), allowed=True, status=None, overdue=True, after=None, limit=10)
    assert queue == []
    event, _ = journal.one_new()
    assert (event["action"], event["resource_type"], event["resource_id"], event["member_id"], event["outcome"]) == ("list", "data_request", None, None, "ok")
    assert journal.size() == journal.seen
