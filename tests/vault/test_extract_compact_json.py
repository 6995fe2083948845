"""``compact_json`` writes what ``json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode`` writes.

A released row's digest is taken over this text, and an incremental extract
compares digests with those of extracts written before the encoder was made
once: the bytes must not change.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from vault.extracts.releasing import compact_json

SCALARS = st.none() | st.text() | st.integers() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.lists(inner, max_size=5).map(tuple) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)
REFERENCE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@settings(max_examples=300, deadline=None)
@given(st.lists(VALUES, max_size=6) | st.lists(VALUES, max_size=6).map(tuple) | st.dictionaries(st.text(), VALUES, max_size=6))
def test_compact_json_is_the_reference_encoding(value: object) -> None:
    assert compact_json()(value) == REFERENCE(value)


def test_compact_json_of_a_spool_line_keeps_non_ascii_text_and_key_order() -> None:
    line = ["m1", "p1", ["F", "35-39", "上海", None], None, {"tier": "gold", "interest_tags": ["跑步", "yoga"], "visits": 3}]
    assert compact_json()(line) == '["m1","p1",["F","35-39","上海",null],null,{"tier":"gold","interest_tags":["跑步","yoga"],"visits":3}]'
