"""Operational logging: structlog JSON with personal values removed by construction.

The ``allowlist`` processor keeps only keys it knows, and only when the value
has that key's shape — event and field *names* (lower-case identifiers), hex
ids, numbers, route paths. Anything else is dropped and its key listed under
``dropped``. So a personal value passed by mistake (``log.info("x",
phone=...)``, or interpolated into the event name) cannot reach the log: a
phone number, an e-mail address or a Chinese name has none of those shapes.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_HEX_ID = re.compile(r"^[0-9a-f]{32}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_PATH = re.compile(r"^/[A-Za-z0-9/_{}.-]{0,200}$")
# Phone, ID and card numbers are digit runs; names and request ids never need five digits in a row.
_DIGIT_RUN = re.compile(r"[0-9]{5}")
_HEX_RUN = re.compile(r"(?<![0-9A-Za-z])[0-9a-f]{32}(?![0-9A-Za-z])")


def _name(value: object) -> bool:
    return isinstance(value, str) and bool(_NAME.match(value)) and not _DIGIT_RUN.search(value)


def _names(value: object) -> bool:
    return isinstance(value, list | tuple) and all(_name(v) for v in value)


def _number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(value: object) -> bool:
    return isinstance(value, list | tuple) and all(_number(v) for v in value)


def _hex_id(value: object) -> bool:
    return isinstance(value, str) and bool(_HEX_ID.match(value))


def _request_id(value: object) -> bool:
    return isinstance(value, str) and bool(_REQUEST_ID.match(value)) and not _DIGIT_RUN.search(value)


def _path(value: object) -> bool:
    return isinstance(value, str) and bool(_PATH.match(value)) and not _DIGIT_RUN.search(_HEX_RUN.sub("", value))


def _timestamp(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 40


# key -> what its value may be. Anything else is dropped.
ALLOWED_KEYS: dict[str, Callable[[object], bool]] = {
    "event": _name,
    "level": _name,
    "timestamp": _timestamp,
    "request_id": _request_id,
    "member_id": _hex_id,
    "client_id": _name,  # a registered service client's id: an operator-chosen name, never personal
    "treatment_id": _hex_id,
    "entry_id": _hex_id,
    "extract_id": _hex_id,
    "outcome": _name,  # how a job ended: done, refused, failed
    "field": _name,
    "fields": _names,
    "categories": _names,
    "database": _name,
    "scope": _name,
    "step": _name,
    "error": _name,
    "reason": _name,
    "method": _name,
    "path": _path,
    "count": _number,
    "done": _number,
    "total": _number,
    "status": _number,
    "kek_version": _number,
    "retired": _numbers,
    "duration_ms": _number,
}


def allowlist(_logger: object, _name_: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    dropped = []
    for key in list(event_dict):
        check = ALLOWED_KEYS.get(key)
        if check is None or not check(event_dict[key]):
            del event_dict[key]
            dropped.append(key if _NAME.match(key) else "?")
    if dropped:
        event_dict["dropped"] = sorted(dropped)
    return event_dict


PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    allowlist,
    structlog.processors.JSONRenderer(),
]


def configure(level: str = "info") -> None:
    structlog.configure(
        processors=PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping().get(level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


__all__ = ["ALLOWED_KEYS", "PROCESSORS", "allowlist", "configure"]
