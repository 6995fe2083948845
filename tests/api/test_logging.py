"""Operational logs through the real structlog chain: ids, counts and names pass; personal values never do.

structlog is configured with ``api.logging.PROCESSORS`` (allowlist, then the
JSON renderer) printing to a buffer, and the rendered lines are parsed back, so
the allowlist is tested exactly as it runs; ``configure`` itself is tested
writing to standard error.
"""

from __future__ import annotations

import ast
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from api import logging as oplog

MEMBER_ID = "6f1c0a9b2d3e4f5061728394a5b6c7d8"
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")

PERSONAL_VALUES = {
    "phone_e164": "+8613800138000",
    "phone_national": "13800138000",
    "phone_spaced": "138 0013 8000",
    "email": "li.na@example.cn",
    "chinese_name": "李娜",
    "chinese_name_3": "欧阳娜娜",
    "national_id": "11010519491231002X",
    "national_id_digits": "110105199003071234",
}
SAFE_KEYS = [*sorted(set(oplog.ALLOWED_KEYS) - {"event"}), "phone", "name", "email", "note", "value", "detail", "exc", "member"]


@pytest.fixture
def log_lines() -> Iterator[Any]:
    """structlog with the real processor chain printing to a buffer; return a reader of the JSON lines written."""
    buffer = io.StringIO()
    structlog.configure(
        processors=oplog.PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=buffer),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()

    def read() -> tuple[str, list[dict[str, Any]]]:
        raw = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        assert raw.endswith("\n")
        parsed = [json.loads(line) for line in raw.removesuffix("\n").split("\n")]
        assert all(isinstance(obj, dict) for obj in parsed)
        return raw, parsed

    yield read
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def strings_in(obj: object) -> list[str]:
    """Every string in a decoded JSON value, keys included."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in (k, *strings_in(v))]
    if isinstance(obj, list):
        return [s for v in obj for s in strings_in(v)]
    return []


def assert_absent(value: str, raw: str, parsed: list[dict[str, Any]]) -> None:
    assert value not in raw
    assert value.encode("unicode_escape").decode() not in raw
    assert json.dumps(value).strip('"') not in raw
    digits = re.sub(r"\D", "", value)
    for text in strings_in(parsed):
        assert value not in text
        if len(digits) >= 11:
            assert digits not in re.sub(r"\D", "", text)


def test_allowed_keys_with_allowed_shapes_pass(log_lines: Any) -> None:
    structlog.get_logger().info("member.read", member_id=MEMBER_ID, count=3, fields=["phone", "email"], path="/v1/members/{member_id}")
    _, (line,) = log_lines()
    timestamp = line.pop("timestamp")
    assert ISO_UTC.match(timestamp)
    assert line == {
        "event": "member.read",
        "level": "info",
        "member_id": MEMBER_ID,
        "count": 3,
        "fields": ["phone", "email"],
        "path": "/v1/members/{member_id}",
    }


def test_every_allowed_key_keeps_a_value_of_its_shape(log_lines: Any) -> None:
    shaped: dict[str, object] = {
        "request_id": "req-1.A_b",
        "member_id": MEMBER_ID,
        "treatment_id": MEMBER_ID,
        "entry_id": MEMBER_ID,
        "extract_id": MEMBER_ID,
        "outcome": "refused",
        "field": "phone",
        "fields": ["phone", "email"],
        "categories": ["contact", "health"],
        "database": "keystore",
        "scope": "retention-2045",
        "step": "shred_keys",
        "error": "schema_not_ready",
        "reason": "not_migrated",
        "method": "get",
        "path": "/v1/members",
        "client_id": "svc.loyalty",
        "count": 0,
        "done": 10,
        "total": 20,
        "status": 503,
        "kek_version": 2,
        "retired": [1],
        "duration_ms": 12,
    }
    assert set(shaped) == set(oplog.ALLOWED_KEYS) - {"event", "level", "timestamp"}
    structlog.get_logger().warning("keys.rotated", **shaped)
    _, (line,) = log_lines()
    assert "dropped" not in line
    assert {k: line[k] for k in shaped} == shaped
    assert line["level"] == "warning"


def test_wrong_shapes_under_allowed_keys_are_dropped_and_listed(log_lines: Any) -> None:
    structlog.get_logger().info(
        "member.read",
        member_id="not-a-hex-id",
        count="3",
        done=True,
        fields=["phone", "Email Address"],
        retired=[1, "2"],
        reason="Not Migrated",
        path="v1/members",
    )
    _, (line,) = log_lines()
    assert line["dropped"] == ["count", "done", "fields", "member_id", "path", "reason", "retired"]
    assert set(line) == {"event", "level", "timestamp", "dropped"}


def test_unknown_keys_are_dropped_and_listed_by_name(log_lines: Any) -> None:
    structlog.get_logger().info("member.created", member_id=MEMBER_ID, phone="+8613800138000", full_name="李娜", note="x")
    _, (line,) = log_lines()
    assert line["member_id"] == MEMBER_ID
    assert line["dropped"] == ["full_name", "note", "phone"]
    assert set(line) == {"event", "level", "timestamp", "member_id", "dropped"}


@pytest.mark.parametrize("key", SAFE_KEYS)
@pytest.mark.parametrize("kind", sorted(PERSONAL_VALUES))
def test_personal_value_under_any_key_never_reaches_the_log(log_lines: Any, key: str, kind: str) -> None:
    value = PERSONAL_VALUES[kind]
    structlog.get_logger().info("member.read", **{key: value})
    raw, (line,) = log_lines()
    assert_absent(value, raw, [line])
    assert line["event"] == "member.read"
    if key not in ("level", "timestamp"):
        assert line["dropped"] == [key]


@pytest.mark.parametrize("key", ["fields", "categories", "retired"])
@pytest.mark.parametrize("kind", sorted(PERSONAL_VALUES))
def test_personal_value_inside_a_list_never_reaches_the_log(log_lines: Any, key: str, kind: str) -> None:
    value = PERSONAL_VALUES[kind]
    structlog.get_logger().info("member.read", **{key: ["phone", value]})
    raw, (line,) = log_lines()
    assert_absent(value, raw, [line])
    assert line["dropped"] == [key]


@pytest.mark.parametrize("kind", sorted(PERSONAL_VALUES))
def test_personal_value_interpolated_into_the_event_name_never_reaches_the_log(log_lines: Any, kind: str) -> None:
    value = PERSONAL_VALUES[kind]
    structlog.get_logger().info(f"lookup {value}", count=1)
    structlog.get_logger().info(f"lookup.{value}")
    raw, lines = log_lines()
    assert len(lines) == 2
    assert_absent(value, raw, lines)
    assert [line.get("event") for line in lines] == [None, None]
    assert [line["dropped"] for line in lines] == [["event"], ["event"]]
    assert lines[0]["count"] == 1


@pytest.mark.parametrize("kind", sorted(PERSONAL_VALUES))
def test_personal_value_used_as_a_key_never_reaches_the_log(log_lines: Any, kind: str) -> None:
    value = PERSONAL_VALUES[kind]
    structlog.get_logger().info("member.read", **{value: 1})
    raw, (line,) = log_lines()
    assert_absent(value, raw, [line])
    assert line["dropped"] == ["?"]


@pytest.mark.parametrize("kind", sorted(PERSONAL_VALUES))
def test_personal_value_bound_in_contextvars_never_reaches_the_log(log_lines: Any, kind: str) -> None:
    value = PERSONAL_VALUES[kind]
    structlog.contextvars.bind_contextvars(request_id="req-7", reason=value, caller=value)
    structlog.get_logger().info("member.read")
    raw, (line,) = log_lines()
    assert_absent(value, raw, [line])
    assert line["request_id"] == "req-7"
    assert line["dropped"] == ["caller", "reason"]


def test_exception_text_with_a_personal_value_never_reaches_the_log(log_lines: Any) -> None:
    def fail() -> None:
        raise ValueError(f"duplicate phone {PERSONAL_VALUES['phone_e164']} for 李娜")

    try:
        fail()
    except ValueError:
        structlog.get_logger().exception("member.create_failed", error="duplicate_phone")
    raw, (line,) = log_lines()
    assert_absent(PERSONAL_VALUES["phone_e164"], raw, [line])
    assert_absent("李娜", raw, [line])
    assert line["error"] == "duplicate_phone"
    assert line["level"] == "error"
    assert line["dropped"] == ["exc_info"]


def test_output_is_one_json_object_per_line(log_lines: Any) -> None:
    log = structlog.get_logger()
    log.info("one", count=1)
    log.warning("two\nlines", reason="a\nb")
    log.error("three", fields=["x", "y"])
    raw, lines = log_lines()
    assert raw.count("\n") == 3
    assert [line.get("event") for line in lines] == ["one", None, "three"]
    assert [line["level"] for line in lines] == ["info", "warning", "error"]
    assert lines[1]["dropped"] == ["event", "reason"]


def test_configure_filters_below_the_level(capsys: pytest.CaptureFixture[str]) -> None:
    oplog.configure("warning")
    try:
        structlog.get_logger().info("hidden")
        structlog.get_logger().warning("shown")
    finally:
        structlog.reset_defaults()
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["shown"]


def test_every_key_the_code_logs_is_one_the_allowlist_keeps() -> None:
    """A key the allowlist does not know is dropped from the line: the code must not log one (it would vanish silently)."""
    root = Path(__file__).resolve().parents[2]
    logged: dict[str, set[str]] = {}
    for package in ("api", "vault", "keys", "audit"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                call = node if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) else None
                if call is not None and call.func.value.id == "log" and call.func.attr in ("debug", "info", "warning", "error", "exception"):
                    for keyword in call.keywords:
                        logged.setdefault(str(keyword.arg), set()).add(path.relative_to(root).as_posix())
    assert "extract_id" in logged, "the scan found the code's log calls"
    assert {key: sorted(paths) for key, paths in logged.items() if key not in oplog.ALLOWED_KEYS} == {}
