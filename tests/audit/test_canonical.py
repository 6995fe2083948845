"""Canonical JSON: the standard library's bytes equal RFC 8785's on the audit subset, and nothing else passes."""

from __future__ import annotations

import json

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.canonical import MAX_DEPTH, MAX_SAFE_INTEGER, canonical_bytes
from audit.errors import CanonicalJsonError
from audit.event import AuditEvent
from tests.audit.factories import events

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
