"""The audit event: one access decision, as a value and as JSON.

An event records who asked for what, why, and what was decided — field and
category names, never field values. Its leaf bytes in the audit tree are
``canonical_bytes(event.to_json_obj())`` (RFC 8785); the event holds no index.

Invariants, checked when an event is built (``AuditEvent(...)`` or
``AuditEvent.from_json_obj``), so no event that breaks them exists:

- every string is either a *code* — ``[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}``:
  actions, resource types, purposes, roles, field and category names, reason
  codes, outcomes — or an *identifier* — 1 to 256 printable ASCII characters
  without spaces: ids, the policy hash. So no free text, no control
  characters and no personal prose can enter an event; a break-glass or
  rejection note is stored encrypted beside the event, never in it;
- ``time`` is RFC 3339 UTC with whole seconds and ``Z`` (``2026-11-22T16:00:00Z``);
- ``decision`` is ``allow`` or ``deny``; lists hold at most 256 items;
- ``details`` (optional, at most 16 entries) maps a key name
  (``[a-z][a-z0-9_]{0,31}``) to a non-negative integer below 2**53 or an
  identifier: counts and digests an event needs to name (an extract's row
  count and the SHA-256 of its members), never free text;
- there are no numbers besides the schema version ``v`` and ``details``'
  integers (no floats anywhere).

The JSON form (every key always present, ``null`` for an absent optional;
``details`` only when it has entries, so events without it keep the leaf
bytes they always had)::

    {"v": 1, "time": "...", "request_id": "...",
     "actor": {"subject": "...", "roles": ["..."], "client_id": "..."|null, "acting_staff": "..."|null},
     "action": "...", "resource_type": "...", "resource_id": "..."|null, "member_id": "..."|null,
     "fields": ["..."], "purpose": "..."|null, "decision": "allow"|"deny",
     "reason_code": "...", "policy_hash": "...", "outcome": "...",
     "details": {"key": 1 | "..."}}

``from_json_obj`` is strict: a missing or unknown key, a wrong type or another
version is refused with ``EventFormatError`` naming the key and the rule, never
the value.

``is_plain_leaf(data)`` is the fast, one-regex form of "``data`` is
``canonical_bytes(e.to_json_obj())`` for a valid event ``e``", for the common
*plain* event: no ``details``, and no ``"`` or ``\\`` in any identifier (the
only characters of an event that canonical JSON escapes). It is sound, never
complete: ``True`` proves the bytes are a valid event's leaf; ``False`` proves
nothing, and the caller checks such bytes the long way (``from_json_obj`` and
``canonical_bytes``). ``tests/audit/test_canonical.py`` checks it against both
and against ``rfc8785``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, Self

from audit._time import format_utc, is_utc_seconds
from audit.canonical import JsonValue, canonical_bytes_of_checked
from audit.errors import EventFormatError

EVENT_VERSION = 1
MAX_LIST_ITEMS = 256

_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}")
_IDENT = re.compile(r"[!-~]{1,256}")
_KEY_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
_DETAIL_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
MAX_DETAILS = 16
MAX_DETAIL_INT = 2**53


def event_time(now: datetime) -> str:
    """The ``time`` of an event happening at ``now`` (aware; fractions of a second dropped)."""
    return format_utc(now)


class Decision(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked: the token's subject and roles, the calling client, the staff member acting through it."""

    subject: str
    roles: tuple[str, ...]
    client_id: str | None
    acting_staff: str | None

    def __post_init__(self) -> None:
        _set(self, "subject", _ident(self.subject, "actor.subject"))
        _set(self, "roles", _codes(self.roles, "actor.roles"))
        _set(self, "client_id", _optional_ident(self.client_id, "actor.client_id"))
        _set(self, "acting_staff", _optional_ident(self.acting_staff, "actor.acting_staff"))

    def to_json_obj(self) -> dict[str, JsonValue]:
        return {
            "subject": self.subject,
            "roles": list(self.roles),
            "client_id": self.client_id,
            "acting_staff": self.acting_staff,
        }

    @classmethod
    def from_json_obj(cls, obj: object) -> Self:
        items = _exact_keys(obj, "actor", cls)
        return cls(
            subject=items["subject"],
            roles=_json_list(items["roles"], "actor.roles"),
            client_id=items["client_id"],
            acting_staff=items["acting_staff"],
        )


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One access decision after authentication."""

    time: str
    request_id: str
    actor: Actor
    action: str
    resource_type: str
    resource_id: str | None
    member_id: str | None
    fields: tuple[str, ...]
    purpose: str | None
    decision: Decision
    reason_code: str
    policy_hash: str
    outcome: str
    details: tuple[tuple[str, int | str], ...] = ()  # sorted (key, value) pairs; a Mapping is accepted and sorted

    def __post_init__(self) -> None:
        if not isinstance(self.time, str) or not is_utc_seconds(self.time):
            raise EventFormatError("time: must be RFC 3339 UTC with whole seconds and Z")
        _set(self, "time", str.__str__(self.time))
        _set(self, "request_id", _ident(self.request_id, "request_id"))
        if not isinstance(self.actor, Actor):
            raise EventFormatError("actor: must be an Actor")
        _set(self, "action", _code(self.action, "action"))
        _set(self, "resource_type", _code(self.resource_type, "resource_type"))
        _set(self, "resource_id", _optional_ident(self.resource_id, "resource_id"))
        _set(self, "member_id", _optional_ident(self.member_id, "member_id"))
        _set(self, "fields", _codes(self.fields, "fields"))
        _set(self, "purpose", None if self.purpose is None else _code(self.purpose, "purpose"))
        _set(self, "decision", _decision(self.decision))
        _set(self, "reason_code", _code(self.reason_code, "reason_code"))
        _set(self, "policy_hash", _ident(self.policy_hash, "policy_hash"))
        _set(self, "outcome", _code(self.outcome, "outcome"))
        _set(self, "details", _details(self.details))

    def to_json_obj(self) -> dict[str, JsonValue]:
        obj: dict[str, JsonValue] = {
            "v": EVENT_VERSION,
            "time": self.time,
            "request_id": self.request_id,
            "actor": self.actor.to_json_obj(),
            "action": self.action,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "member_id": self.member_id,
            "fields": list(self.fields),
            "purpose": self.purpose,
            "decision": self.decision.value,
            "reason_code": self.reason_code,
            "policy_hash": self.policy_hash,
            "outcome": self.outcome,
        }
        if self.details:
            details: dict[str, JsonValue] = dict(self.details)
            obj["details"] = details
        return obj

    def leaf_bytes(self) -> bytes:
        """The event's leaf in the audit tree: its RFC 8785 canonical JSON.

        ``__post_init__`` confined every string to printable ASCII and every
        integer to ``[0, 2**53)``, so the value is in the canonical subset without
        another walk over it.
        """
        return canonical_bytes_of_checked(self.to_json_obj())

    @classmethod
    def from_json_obj(cls, obj: object) -> Self:
        items = _exact_keys(obj, "event", cls, extra=("v",), optional=("details",))
        version = items["v"]
        if isinstance(version, bool) or not isinstance(version, int) or version != EVENT_VERSION:
            raise EventFormatError(f"v: must be {EVENT_VERSION}")
        return cls(
            time=items["time"],
            request_id=items["request_id"],
            actor=Actor.from_json_obj(items["actor"]),
            action=items["action"],
            resource_type=items["resource_type"],
            resource_id=items["resource_id"],
            member_id=items["member_id"],
            fields=_json_list(items["fields"], "fields"),
            purpose=items["purpose"],
            decision=items["decision"],
            reason_code=items["reason_code"],
            policy_hash=items["policy_hash"],
            outcome=items["outcome"],
            details=_json_details(items["details"]) if "details" in items else (),
        )


# Possessive repeats (``{m,n}+``): what ends each repeat (a quote, a comma or a bracket) can never be part of it, so
# giving characters back could never find another match; not trying saves time.
_PLAIN_CODE = rb'"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}+"'  # _CODE, quoted: no character of a code is escaped
_PLAIN_IDENT = rb'"[!#-\[\]-~]{1,256}+"'  # _IDENT without " and \, the two characters canonical JSON would escape
_PLAIN_CODES = rb"\[(?:" + _PLAIN_CODE + rb"(?:," + _PLAIN_CODE + rb"){0,%d}+)?+\]" % (MAX_LIST_ITEMS - 1)


def _optional(pattern: bytes) -> bytes:
    return rb"(?:null|" + pattern + rb")"


def _plain_object(values: Mapping[str, bytes]) -> bytes:
    """The canonical text of a JSON object with exactly these keys, in RFC 8785 order (code-point order of ASCII keys)."""
    return rb"\{" + b",".join(b'"' + key.encode("ascii") + b'":' + values[key] for key in sorted(values)) + rb"\}"


_PLAIN_ACTOR = {
    "subject": _PLAIN_IDENT,
    "roles": _PLAIN_CODES,
    "client_id": _optional(_PLAIN_IDENT),
    "acting_staff": _optional(_PLAIN_IDENT),
}
_PLAIN_EVENT = {
    "v": b"%d" % EVENT_VERSION,
    "time": rb'"(?P<time>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)"',
    "request_id": _PLAIN_IDENT,
    "actor": _plain_object(_PLAIN_ACTOR),
    "action": _PLAIN_CODE,
    "resource_type": _PLAIN_CODE,
    "resource_id": _optional(_PLAIN_IDENT),
    "member_id": _optional(_PLAIN_IDENT),
    "fields": _PLAIN_CODES,
    "purpose": _optional(_PLAIN_CODE),
    "decision": rb'"(?:' + b"|".join(d.value.encode("ascii") for d in Decision) + rb')"',
    "reason_code": _PLAIN_CODE,
    "policy_hash": _PLAIN_IDENT,
    "outcome": _PLAIN_CODE,
}
_PLAIN_LEAF = re.compile(_plain_object(_PLAIN_EVENT))


def is_plain_leaf(data: bytes) -> bool:
    """True only if ``data`` is the leaf bytes of a valid event without ``details`` and without ``"`` or ``\\`` in any string.

    Sound but not complete (see the module docstring): ``False`` means "not proven here", never "invalid".
    """
    match = _PLAIN_LEAF.fullmatch(data)
    return match is not None and _is_event_time(match["time"])


@lru_cache(maxsize=4096)
def _is_event_time(text: bytes) -> bool:
    """``is_utc_seconds`` of an ASCII time (the calendar check), memoized: a log holds few distinct seconds in a row."""
    return is_utc_seconds(text.decode("ascii"))


def _set(instance: object, name: str, value: object) -> None:
    object.__setattr__(instance, name, value)


def _exact_keys(obj: object, where: str, kind: type[Actor | AuditEvent], extra: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> Mapping[str, Any]:
    """``obj`` as a mapping with exactly the keys of ``kind`` (``optional`` ones may be absent); its values are unchecked until ``__post_init__``."""
    if not isinstance(obj, Mapping):
        raise EventFormatError(f"{where}: must be a JSON object")
    expected = {f.name for f in fields(kind)} | set(extra)
    for key in obj:
        if key not in expected:
            shown = key if isinstance(key, str) and _KEY_NAME.fullmatch(key) else "(not shown)"
            raise EventFormatError(f"{where}: unknown key {shown}")
    for key in sorted(expected - set(optional)):
        if key not in obj:
            raise EventFormatError(f"{where}: missing key {key}")
    return obj


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise EventFormatError(f"{where}: must be a string")
    return str.__str__(value)


def _code(value: object, where: str) -> str:
    text = _string(value, where)
    if _CODE.fullmatch(text) is None:
        raise EventFormatError(f"{where}: must be a code (ASCII letters, digits and _ . : / -, at most 64)")
    return text


def _ident(value: object, where: str) -> str:
    text = _string(value, where)
    if _IDENT.fullmatch(text) is None:
        raise EventFormatError(f"{where}: must be an identifier (1 to 256 printable ASCII characters, no spaces)")
    return text


def _optional_ident(value: object, where: str) -> str | None:
    return None if value is None else _ident(value, where)


def _json_list(value: object, where: str) -> tuple[Any, ...]:
    """A JSON array as a tuple; its items are checked by ``__post_init__``."""
    if not isinstance(value, list):
        raise EventFormatError(f"{where}: must be a list")
    return tuple(value)


def _codes(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise EventFormatError(f"{where}: must be a list")
    if len(value) > MAX_LIST_ITEMS:
        raise EventFormatError(f"{where}: more than {MAX_LIST_ITEMS} items")
    for i, item in enumerate(value):
        if not isinstance(item, str) or _CODE.fullmatch(item) is None:
            _code(item, f"{where}[{i}]")  # raises, naming the item (the message is built only on failure)
    return tuple(str.__str__(item) for item in value)


def _json_details(value: object) -> tuple[tuple[str, Any], ...]:
    """A JSON object's pairs; checked by ``__post_init__``."""
    if not isinstance(value, Mapping) or not value:
        raise EventFormatError("details: must be a non-empty JSON object when present")
    return tuple(value.items())


def _details(value: object) -> tuple[tuple[str, int | str], ...]:
    pairs = value.items() if isinstance(value, Mapping) else value
    if not isinstance(pairs, Iterable):
        raise EventFormatError("details: must be a mapping")
    out: dict[str, int | str] = {}
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise EventFormatError("details: must be a mapping")
        key, item = pair
        if not isinstance(key, str) or _DETAIL_KEY.fullmatch(key) is None:
            raise EventFormatError("details: keys must match [a-z][a-z0-9_]{0,31}")
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise EventFormatError(f"details.{key}: must be an integer or an identifier")
        if isinstance(item, int) and not 0 <= item < MAX_DETAIL_INT:
            raise EventFormatError(f"details.{key}: must be a non-negative integer below 2**53")
        out[key] = item if isinstance(item, int) else _ident(item, f"details.{key}")
    if len(out) > MAX_DETAILS:
        raise EventFormatError(f"details: more than {MAX_DETAILS} entries")
    return tuple(sorted(out.items()))


def _decision(value: object) -> Decision:
    if isinstance(value, str):
        for decision in Decision:
            if value == decision.value:
                return decision
    raise EventFormatError("decision: must be allow or deny")


__all__ = ["EVENT_VERSION", "MAX_LIST_ITEMS", "Actor", "AuditEvent", "Decision", "event_time", "is_plain_leaf"]
