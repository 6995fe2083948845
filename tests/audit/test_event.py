"""The audit event: JSON round trip, strict parsing, and the no-free-text rules."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings

from audit.errors import EventFormatError
from audit.event import Actor, AuditEvent, Decision, event_time
from tests.audit.factories import events, sample_event

props = settings(deadline=None)


@props
@given(events)
def test_json_round_trip_gives_the_same_event(event: AuditEvent) -> None:
    obj = event.to_json_obj()
    assert AuditEvent.from_json_obj(json.loads(json.dumps(obj))) == event


def test_json_form_is_pinned() -> None:
    assert sample_event(3).leaf_bytes() == (
        b'{"action":"read","actor":{"acting_staff":"staff:17","client_id":"front-desk","roles":["practitioner"],"subject":"staff:17"},'
        b'"decision":"allow","fields":["allergies","skin_type"],"member_id":"m-3","outcome":"ok",'
        b'"policy_hash":"sha256:' + b"ab" * 32 + b'","purpose":"care","reason_code":"policy_allow",'
        b'"request_id":"req-0003","resource_id":"m-3","resource_type":"member","time":"2026-11-22T16:00:00Z","v":1}'
    )


def test_event_time_is_utc_whole_seconds_z() -> None:
    moment = datetime(2026, 11, 23, 0, 30, 5, 999_999, tzinfo=timezone(timedelta(hours=8)))
    assert event_time(moment) == "2026-11-22T16:30:05Z"


def test_event_time_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="naive"):
        event_time(datetime(2026, 11, 22, 16, 0, 0))


def test_str_enums_and_lists_are_normalized() -> None:
    event = sample_event(fields=["health"], decision="deny")
    assert event.fields == ("health",)
    assert event.decision is Decision.DENY
    assert type(event.to_json_obj()["decision"]) is str


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"time": "2026-11-22T16:00:00.5Z"}, "time: must be RFC 3339 UTC"),
        ({"time": "2026-11-22T16:00:00+00:00"}, "time: must be RFC 3339 UTC"),
        ({"time": "2026-02-30T16:00:00Z"}, "time: must be RFC 3339 UTC"),
        ({"purpose": "marketing contact"}, "purpose: must be a code"),
        ({"reason_code": "patient said: itchy"}, "reason_code: must be a code"),
        ({"action": ""}, "action: must be a code"),
        ({"action": "a" * 65}, "action: must be a code"),
        ({"fields": ("health", "名字")}, r"fields\[1\]: must be a code"),
        ({"fields": ("x",) * 257}, "fields: more than 256 items"),
        ({"member_id": "m 1"}, "member_id: must be an identifier"),
        ({"member_id": "m\n1"}, "member_id: must be an identifier"),
        ({"member_id": "张三"}, "member_id: must be an identifier"),
        ({"member_id": "m" * 257}, "member_id: must be an identifier"),
        ({"request_id": 7}, "request_id: must be a string"),
        ({"resource_id": 1.5}, "resource_id: must be a string"),
        ({"decision": "maybe"}, "decision: must be allow or deny"),
        ({"actor": "staff:17"}, "actor: must be an Actor"),
    ],
)
def test_invalid_values_are_refused_at_construction(change: dict[str, object], message: str) -> None:
    with pytest.raises(EventFormatError, match=message):
        sample_event(**change)


def test_actor_values_are_checked() -> None:
    with pytest.raises(EventFormatError, match=r"actor.roles\[0\]: must be a code"):
        Actor(subject="s", roles=("front desk",), client_id=None, acting_staff=None)
    with pytest.raises(EventFormatError, match=r"actor\.client_id: must be an identifier"):
        Actor(subject="s", roles=(), client_id="", acting_staff=None)


def test_error_messages_never_quote_the_value() -> None:
    with pytest.raises(EventFormatError) as caught:
        sample_event(member_id="13800138000 张三")
    assert "13800138000" not in str(caught.value)
    assert "张三" not in str(caught.value)


def _json(**changes: object) -> dict[str, object]:
    obj: dict[str, object] = copy.deepcopy(sample_event().to_json_obj())  # type: ignore[arg-type]
    obj.update(changes)
    return obj


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "event: must be a JSON object"),
        (_json(extra="x"), "event: unknown key extra"),
        (_json(**{"名": 1}), r"event: unknown key \(not shown\)"),
        ({k: v for k, v in _json().items() if k != "outcome"}, "event: missing key outcome"),
        (_json(v=2), "v: must be 1"),
        (_json(v=True), "v: must be 1"),
        (_json(v=1.0), "v: must be 1"),
        (_json(fields=("health",)), "fields: must be a list"),
        (_json(actor={"subject": "s", "roles": [], "client_id": None}), "actor: missing key acting_staff"),
        (_json(actor={"subject": "s", "roles": [], "client_id": None, "acting_staff": None, "ip": "1.2.3.4"}), "actor: unknown key ip"),
        (_json(time=None), "time: must be RFC 3339 UTC"),
        (_json(roles=None), "event: unknown key roles"),
        (_json(actor={"subject": "s", "roles": "admin", "client_id": None, "acting_staff": None}), "actor.roles: must be a list"),
        (_json(request_id=["r"]), "request_id: must be a string"),
        (_json(decision="ALLOW"), "decision: must be allow or deny"),
    ],
)
def test_from_json_obj_is_strict(obj: object, message: str) -> None:
    with pytest.raises(EventFormatError, match=message):
        AuditEvent.from_json_obj(obj)


def test_event_is_frozen() -> None:
    event = sample_event()
    with pytest.raises(AttributeError):
        event.member_id = "m-2"  # type: ignore[misc]


def test_event_time_accepts_any_aware_zone() -> None:
    assert event_time(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00Z"


# -- details: counts and digests, never free text ------------------------------------------------


def test_details_round_trip_and_events_without_them_keep_their_leaf_bytes() -> None:
    plain = sample_event(4)
    detailed = AuditEvent(**{**{f: getattr(plain, f) for f in plain.__dataclass_fields__}, "details": {"rows": 12, "members_sha256": "ab" * 32}})
    assert b'"details"' not in plain.leaf_bytes()
    assert json.loads(detailed.leaf_bytes())["details"] == {"members_sha256": "ab" * 32, "rows": 12}
    assert AuditEvent.from_json_obj(json.loads(detailed.leaf_bytes())) == detailed
    assert detailed.leaf_bytes().startswith(b'{"action":"read","actor":')


@pytest.mark.parametrize(
    "details",
    [
        {"rows": 1.5},
        {"rows": True},
        {"rows": -1},
        {"rows": 2**53},
        {"note": "free text with spaces"},
        {"Rows": 1},
        {"": 1},
        {f"k{i}": i for i in range(17)},
        {"nested": {"a": 1}},
    ],
)
def test_details_refuse_floats_booleans_out_of_range_numbers_text_and_bad_keys(details: dict[str, object]) -> None:
    plain = sample_event(4)
    with pytest.raises(EventFormatError):
        AuditEvent(**{**{f: getattr(plain, f) for f in plain.__dataclass_fields__}, "details": details})
    obj = plain.to_json_obj() | {"details": details}
    with pytest.raises(EventFormatError):
        AuditEvent.from_json_obj(obj)


def test_an_empty_details_object_is_refused_when_parsed() -> None:
    with pytest.raises(EventFormatError, match="details"):
        AuditEvent.from_json_obj(sample_event(4).to_json_obj() | {"details": {}})
