"""The data-subject request workflow's pure rules: transitions, reason codes, periods and due dates (no database).

The legal transitions are written out again here, by hand, as a tiny model;
hypothesis drives random sequences of attempted steps through both the model
and ``workflow.check_transition`` and compares every answer.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.data_requests.model import OPEN, REJECTION_REASONS, DataRequest, FiledBy, ReasonCode, RequestType, Status
from vault.data_requests.workflow import DEFAULT_REASON, TRANSITIONS, add_period, check_transition, due_at, parse_period
from vault.errors import ConflictError, ValidationError

# The model: what the issue and the design say, independent of workflow.TRANSITIONS.
LEGAL = {
    (Status.received, Status.verified),
    (Status.received, Status.rejected),
    (Status.verified, Status.in_progress),
    (Status.verified, Status.rejected),
    (Status.in_progress, Status.completed),
    (Status.in_progress, Status.rejected),
}
RESTRICTION_ONLY = {(Status.completed, Status.lifted)}
STEP_REASON = {
    Status.verified: ReasonCode.identity_verified,
    Status.in_progress: ReasonCode.work_started,
    Status.completed: ReasonCode.fulfilled,
    Status.lifted: ReasonCode.restriction_lifted,
}
REJECTIONS = {
    ReasonCode.identity_not_verified,
    ReasonCode.manifestly_unfounded,
    ReasonCode.excessive,
    ReasonCode.legal_obligation_to_retain,
    ReasonCode.not_applicable,
}


def _legal(kind: RequestType, current: Status, to: Status) -> bool:
    return (current, to) in LEGAL or (kind is RequestType.restriction and (current, to) in RESTRICTION_ONLY)


def _model(kind: RequestType, current: Status, to: Status, reason: ReasonCode | None) -> tuple[str, object]:
    """What one attempted step should give: ("ok", recorded reason), ("conflict", None) or ("invalid", problems)."""
    if not _legal(kind, current, to):
        return "conflict", None
    if to is Status.rejected:
        if reason is None:
            return "invalid", {"reason_code": "required"}
        if reason not in REJECTIONS:
            return "invalid", {"reason_code": "not_a_rejection_reason"}
        return "ok", reason
    if reason is not None and reason is not STEP_REASON[to]:
        return "invalid", {"reason_code": "not_for_this_step"}
    return "ok", STEP_REASON[to]


def _actual(kind: RequestType, current: Status, to: Status, reason: ReasonCode | None) -> tuple[str, object]:
    try:
        return "ok", check_transition(kind, current, to, reason)
    except ConflictError:
        return "conflict", None
    except ValidationError as exc:
        return "invalid", exc.problems


# -- the tables agree with the model ---------------------------------------------------------------


def test_the_workflow_tables_are_the_documented_ones() -> None:
    pairs = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert pairs == LEGAL | RESTRICTION_ONLY
    assert dict(DEFAULT_REASON) == STEP_REASON
    assert set(REJECTION_REASONS) == REJECTIONS
    assert set(OPEN) == {Status.received, Status.verified, Status.in_progress}


def test_every_transition_not_in_the_workflow_is_a_conflict_for_every_type() -> None:
    """Every (type, from, to) pair outside the workflow — lifted for a non-restriction included — is a ConflictError, whatever the reason."""
    refused = 0
    for kind, current, to in itertools.product(RequestType, Status, Status):
        if _legal(kind, current, to):
            continue
        for reason in (None, STEP_REASON.get(to), ReasonCode.not_applicable, ReasonCode.filed):
            with pytest.raises(ConflictError) as caught:
                check_transition(kind, current, to, reason)
            assert str(caught.value) == f"this {kind.value} request cannot go from {current.value} to {to.value}"
        refused += 1
    # 6 types × 36 pairs, minus 6 legal pairs each, minus completed → lifted for the restriction
    assert refused == 6 * 36 - 6 * 6 - 1


def test_lifted_is_a_conflict_for_every_completed_request_but_a_restriction() -> None:
    for kind in RequestType:
        if kind is RequestType.restriction:
            assert check_transition(kind, Status.completed, Status.lifted, None) is ReasonCode.restriction_lifted
        else:
            with pytest.raises(ConflictError):
                check_transition(kind, Status.completed, Status.lifted, None)


def test_every_legal_step_records_its_default_reason() -> None:
    for kind in RequestType:
        for current, to in LEGAL | (RESTRICTION_ONLY if kind is RequestType.restriction else set()):
            if to is Status.rejected:
                continue
            assert check_transition(kind, current, to, None) is STEP_REASON[to]
            assert check_transition(kind, current, to, STEP_REASON[to]) is STEP_REASON[to]


def test_a_rejection_records_the_rejection_reason_given() -> None:
    for kind, current, reason in itertools.product(RequestType, sorted(OPEN), sorted(REJECTIONS)):
        assert check_transition(kind, current, Status.rejected, reason) is reason


def test_a_rejection_without_a_reason_is_invalid() -> None:
    for kind, current in itertools.product(RequestType, sorted(OPEN)):
        with pytest.raises(ValidationError) as caught:
            check_transition(kind, current, Status.rejected, None)
        assert caught.value.problems == {"reason_code": "required"}


def test_a_rejection_with_a_reason_that_is_not_a_rejection_reason_is_invalid() -> None:
    for kind, current, reason in itertools.product(RequestType, sorted(OPEN), sorted(set(ReasonCode) - REJECTIONS)):
        with pytest.raises(ValidationError) as caught:
            check_transition(kind, current, Status.rejected, reason)
        assert caught.value.problems == {"reason_code": "not_a_rejection_reason"}


def test_a_reason_other_than_the_steps_default_on_a_normal_step_is_invalid() -> None:
    steps = [(k, a, b) for k in RequestType for a, b in sorted(LEGAL | RESTRICTION_ONLY) if b is not Status.rejected and _legal(k, a, b)]
    for (kind, current, to), reason in itertools.product(steps, ReasonCode):
        if reason is STEP_REASON[to]:
            continue
        with pytest.raises(ValidationError) as caught:
            check_transition(kind, current, to, reason)
        assert caught.value.problems == {"reason_code": "not_for_this_step"}


# -- hypothesis: random attempted sequences against the model ----------------------------------------

REASONS = st.none() | st.sampled_from(ReasonCode)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(RequestType), data=st.data())
def test_random_attempted_sequences_follow_the_model(kind: RequestType, data: st.DataObject) -> None:
    """A refused attempt leaves the state where it was; an accepted one moves it and records the model's reason.

    Half the attempts aim at a step the model allows (so long walks happen), the rest at any status.
    """
    state, walked = Status.received, [Status.received]
    for _ in range(data.draw(st.integers(0, 12), label="attempts")):
        allowed = sorted(b for b in Status if _legal(kind, state, b))
        aim = data.draw(st.booleans(), label="aim at a legal step") and allowed
        to = data.draw(st.sampled_from(allowed) if aim else st.sampled_from(Status), label="to")
        reason = data.draw(REASONS, label="reason")
        expected = _model(kind, state, to, reason)
        assert _actual(kind, state, to, reason) == expected, (kind, walked, to, reason)
        if expected[0] == "ok":
            state = to
            walked.append(to)
    assert all((a, b) in LEGAL | RESTRICTION_ONLY for a, b in itertools.pairwise(walked))


# -- periods and due dates ------------------------------------------------------------------------


def test_parse_period_reads_whole_months_or_days() -> None:
    assert parse_period("P1M") == (1, 0)
    assert parse_period("P99M") == (99, 0)
    assert parse_period("P15D") == (0, 15)
    assert parse_period("P999D") == (0, 999)


def test_parse_period_refuses_anything_else() -> None:
    for text in ("", "P", "P0M", "P0D", "P01M", "P100M", "P1000D", "P1Y", "P1W", "P1M15D", "PT24H", "p1m", "P1m", " P1M", "P1M ", "P-1M", "1M"):
        with pytest.raises(ValueError, match="a period is P<n>M or P<n>D"):
            parse_period(text)


def test_one_month_from_the_31st_of_january_is_the_end_of_february() -> None:
    at = datetime(2026, 1, 31, 14, 30, 5, tzinfo=UTC)
    assert add_period(at, (1, 0)) == datetime(2026, 2, 28, 14, 30, 5, tzinfo=UTC)
    assert add_period(at.replace(year=2028), (1, 0)) == datetime(2028, 2, 29, 14, 30, 5, tzinfo=UTC)  # a leap year
    assert add_period(at.replace(year=2100), (1, 0)) == datetime(2100, 2, 28, 14, 30, 5, tzinfo=UTC)  # not a leap year
    assert add_period(at.replace(year=2000), (1, 0)) == datetime(2000, 2, 29, 14, 30, 5, tzinfo=UTC)


def test_month_periods_cross_the_year_and_clamp_the_day() -> None:
    cases = [
        (datetime(2026, 12, 15, 9, 0, tzinfo=UTC), 1, datetime(2027, 1, 15, 9, 0, tzinfo=UTC)),
        (datetime(2026, 12, 31, 9, 0, tzinfo=UTC), 2, datetime(2027, 2, 28, 9, 0, tzinfo=UTC)),
        (datetime(2026, 3, 31, 9, 0, tzinfo=UTC), 1, datetime(2026, 4, 30, 9, 0, tzinfo=UTC)),
        (datetime(2026, 11, 30, 9, 0, tzinfo=UTC), 3, datetime(2027, 2, 28, 9, 0, tzinfo=UTC)),
        (datetime(2026, 1, 1, 0, 0, tzinfo=UTC), 12, datetime(2027, 1, 1, 0, 0, tzinfo=UTC)),
        (datetime(2026, 1, 31, 0, 0, tzinfo=UTC), 13, datetime(2027, 2, 28, 0, 0, tzinfo=UTC)),
        (datetime(2026, 5, 15, 0, 0, tzinfo=UTC), 99, datetime(2034, 8, 15, 0, 0, tzinfo=UTC)),
    ]
    for start, months, expected in cases:
        assert add_period(start, (months, 0)) == expected, (start, months)


def test_day_periods_count_whole_days() -> None:
    assert add_period(datetime(2026, 2, 20, 8, 0, tzinfo=UTC), (0, 15)) == datetime(2026, 3, 7, 8, 0, tzinfo=UTC)
    assert add_period(datetime(2028, 2, 20, 8, 0, tzinfo=UTC), (0, 15)) == datetime(2028, 3, 6, 8, 0, tzinfo=UTC)
    assert add_period(datetime(2026, 12, 25, 23, 59, 59, tzinfo=UTC), (0, 15)) == datetime(2027, 1, 9, 23, 59, 59, tzinfo=UTC)


def test_due_at_uses_the_jurisdictions_period_and_the_default_for_the_rest() -> None:
    periods = {"default": "P1M", "cn": "P15D", "long": "P3M"}
    received = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
    assert due_at(received, "default", periods) == datetime(2026, 2, 28, 10, 0, tzinfo=UTC)
    assert due_at(received, "cn", periods) == datetime(2026, 2, 15, 10, 0, tzinfo=UTC)
    assert due_at(received, "long", periods) == datetime(2026, 4, 30, 10, 0, tzinfo=UTC)
    assert due_at(received, "elsewhere", periods) == datetime(2026, 2, 28, 10, 0, tzinfo=UTC)
    assert due_at(received, "default", {}) == datetime(2026, 2, 28, 10, 0, tzinfo=UTC)  # one month when nothing is configured


def test_due_at_counts_months_in_the_zone_of_the_time_given() -> None:
    """A month is counted on the calendar of the time's own zone: 23:00 on 31 January in Shanghai is due 23:00 on 28 February there."""
    shanghai = timezone(timedelta(hours=8))
    received = datetime(2026, 1, 31, 23, 0, tzinfo=shanghai)  # 15:00 UTC on the 31st
    assert due_at(received, "default", {"default": "P1M"}) == datetime(2026, 2, 28, 23, 0, tzinfo=shanghai)


def test_a_request_is_overdue_only_once_the_clock_passes_its_due_time_and_only_while_open() -> None:
    due = datetime(2026, 2, 28, 10, 0, tzinfo=UTC)
    for status in Status:
        request = DataRequest(
            dsr_id="d" * 32, member_id="m" * 32, type=RequestType.access, status=status, jurisdiction="default", filed_by="member:self",
            filed_role=FiledBy.member, received_at=due - timedelta(days=28), due_at=due, closed_at=None,
        )  # fmt: skip
        assert request.overdue(due - timedelta(seconds=1)) is False
        assert request.overdue(due) is False
        assert request.overdue(due + timedelta(microseconds=1)) is (status in OPEN)
        assert request.overdue(due + timedelta(seconds=1)) is (status in OPEN)
