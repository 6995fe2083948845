"""Canonical JSON: the standard library's bytes equal RFC 8785's on the audit subset, and nothing else passes."""

from __future__ import annotations

import json

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.canonical import MAX_DEPTH, MAX_SAFE_INTEGER, canonical_bytes
from audit.errors import CanonicalJsonError, EventFormatError
from audit.event import AuditEvent, is_plain_leaf
from tests.audit.factories import events, sample_event

props = settings(deadline=None, max_examples=500)

scalars = st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | st.text()
ascii_keys = st.text(alphabet=st.characters(max_codepoint=0x7F))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(ascii_keys, inner, max_size=6), max_leaves=40)


@props
@given(values)
def test_canonical_bytes_equal_rfc8785_for_the_subset(obj: object) -> None:
    assert canonical_bytes(obj) == rfc8785.dumps(obj)  # type: ignore[arg-type]


@props
@given(events)
def test_event_leaf_bytes_equal_rfc8785(event: AuditEvent) -> None:
    assert event.leaf_bytes() == rfc8785.dumps(event.to_json_obj())


@props
@given(values)
def test_canonical_bytes_are_stable_through_a_json_round_trip(obj: object) -> None:
    once = canonical_bytes(obj)
    assert canonical_bytes(json.loads(once)) == once


def test_keys_sort_by_code_point_and_strings_keep_raw_utf8() -> None:
    obj = {"b": "é", "a": [1, True, None], "B": "\u2028", "c": "\x01\x7f\n"}
    assert canonical_bytes(obj) == '{"B":"\u2028","a":[1,true,null],"b":"é","c":"\\u0001\x7f\\n"}'.encode()


@pytest.mark.parametrize("value", [1.0, 0.5, float("nan"), float("inf"), [1, 2.5], {"a": -0.0}])
def test_floats_are_refused(value: object) -> None:
    with pytest.raises(CanonicalJsonError, match="floats are not allowed"):
        canonical_bytes(value)


@pytest.mark.parametrize("value", [MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1, 2**64])
def test_integers_beyond_the_safe_range_are_refused(value: int) -> None:
    with pytest.raises(CanonicalJsonError, match="integer outside"):
        canonical_bytes(value)


def test_the_safe_range_limits_are_accepted() -> None:
    assert canonical_bytes([MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER]) == b"[9007199254740991,-9007199254740991]"


def test_non_ascii_keys_are_refused() -> None:
    with pytest.raises(CanonicalJsonError, match="keys must be ASCII"):
        canonical_bytes({"名": 1})


def test_non_string_keys_are_refused() -> None:
    with pytest.raises(CanonicalJsonError, match="keys must be strings"):
        canonical_bytes({1: 1})


@pytest.mark.parametrize("value", [(1, 2), {1, 2}, b"bytes", object()])
def test_other_types_are_refused(value: object) -> None:
    with pytest.raises(CanonicalJsonError, match="is not allowed"):
        canonical_bytes(value)


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(CanonicalJsonError, match="lone surrogate"):
        canonical_bytes({"a": "\ud800"})


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    deep: object = "x"
    for _ in range(MAX_DEPTH):
        deep = [deep]
    assert canonical_bytes(deep) == b"[" * MAX_DEPTH + b'"x"' + b"]" * MAX_DEPTH
    with pytest.raises(CanonicalJsonError, match="nested deeper"):
        canonical_bytes([deep])


# -- the fast check of a plain event's leaf (audit.event.is_plain_leaf) ---------------------------------


def _exact_leaf_check(data: bytes) -> bool:
    """The long way: ``data`` parses (no floats, no duplicate keys) to a valid event whose canonical bytes, and RFC 8785's, are ``data``."""

    def no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
        if len({key for key, _ in pairs}) != len(pairs):
            raise ValueError("duplicate key")
        return dict(pairs)

    def no_float(_text: str) -> object:
        raise ValueError("float")

    try:
        obj = json.loads(data, object_pairs_hook=no_duplicates, parse_float=no_float, parse_constant=no_float)
        AuditEvent.from_json_obj(obj)
        return canonical_bytes(obj) == data and rfc8785.dumps(obj) == data
    except (ValueError, EventFormatError, CanonicalJsonError):
        return False


@props
@given(events)
def test_the_fast_leaf_check_proves_every_event_leaf_without_escapes(event: AuditEvent) -> None:
    """``is_plain_leaf`` accepts exactly the leaves with no escaped character (no ``"`` or ``\\`` in a string), and those are RFC 8785 bytes."""
    leaf = event.leaf_bytes()
    assert is_plain_leaf(leaf) is (b"\\" not in leaf)
    assert _exact_leaf_check(leaf)


_JSON_BYTES = b'"\\,:{}[]01-.eE nulltrufasZT/\x00\x7f\xc3'
mutations = st.tuples(st.sampled_from(["delete", "insert", "replace"]), st.integers(0, 10_000), st.integers(1, 3), st.sampled_from(list(_JSON_BYTES)))


def _mutate(data: bytes, mutation: tuple[str, int, int, int]) -> bytes:
    kind, at, width, byte = mutation
    at %= len(data) + 1
    if kind == "delete":
        return data[:at] + data[at + width :]
    if kind == "insert":
        return data[:at] + bytes([byte]) * width + data[at:]
    return data[:at] + bytes([byte]) * width + data[at + width :]


@settings(deadline=None, max_examples=2000)
@given(events, st.lists(mutations, min_size=1, max_size=3))
def test_the_fast_leaf_check_accepts_nothing_the_exact_check_refuses(event: AuditEvent, edits: list[tuple[str, int, int, int]]) -> None:
    data = event.leaf_bytes()
    for edit in edits:
        data = _mutate(data, edit)
    if is_plain_leaf(data):
        assert _exact_leaf_check(data)


PLAIN = sample_event(3).leaf_bytes()


@pytest.mark.parametrize(
    "data",
    [
        PLAIN.replace(b'"v":1}', b'"v":1.0}'),
        PLAIN.replace(b'"v":1}', b'"v":2}'),
        PLAIN.replace(b'"v":1}', b'"v":true}'),
        PLAIN.replace(b'"action":"read"', b'"action": "read"'),
        PLAIN.replace(b'"action":"read"', b'"action":"\\u0072ead"'),
        PLAIN.replace(b'"purpose":"care"', b'"purpose":"ca\\/re"'),
        PLAIN.replace(b'"purpose":"care"', b'"purpose":"care","purpose":"care"'),
        PLAIN.replace(b'"decision":"allow"', b'"decision":"maybe"'),
        PLAIN.replace(b'"outcome":"ok"', b'"outcome":"ok ok"'),
        PLAIN.replace(b'"outcome":"ok"', b'"outcome":"' + b"o" * 65 + b'"'),
        PLAIN.replace(b'"request_id":"req-0003"', b'"request_id":"' + b"r" * 257 + b'"'),
        PLAIN.replace(b'"request_id":"req-0003"', b'"request_id":""'),
        PLAIN.replace(b'"request_id":"req-0003"', b'"request_id":"r\xc3\xa9q"'),
        PLAIN.replace(b'"request_id":"req-0003"', b'"request_id":"req\x7f"'),
        PLAIN.replace(b'"fields":["allergies","skin_type"]', b'"fields":[' + b",".join([b'"f"'] * 257) + b"]"),
        PLAIN.replace(b'"fields":["allergies","skin_type"]', b'"fields":["allergies",]'),
        PLAIN.replace(b"2026-11-22T16:00:00Z", b"2026-02-30T16:00:00Z"),
        PLAIN.replace(b"2026-11-22T16:00:00Z", b"2026-11-22T24:00:00Z"),
        PLAIN.replace(b"2026-11-22T16:00:00Z", b"2026-11-22t16:00:00Z"),
        PLAIN.replace(b'"action":"read","actor"', b'"actor"').replace(b'"decision"', b'"action":"read","decision"'),
        PLAIN.replace(b'"decision":"allow",', b'"decision":"allow","details":{"rows":1},'),
        PLAIN + b"\n",
        b" " + PLAIN,
    ],
    ids=lambda data: str(len(data)),
)
def test_the_fast_leaf_check_refuses_non_canonical_or_invalid_bytes(data: bytes) -> None:
    assert data != PLAIN
    assert not is_plain_leaf(data)


def test_the_fast_leaf_check_accepts_the_pinned_leaf() -> None:
    assert is_plain_leaf(PLAIN)
    assert _exact_leaf_check(PLAIN)
