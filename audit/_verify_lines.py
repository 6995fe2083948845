"""One line of an export: its leaf bytes, or the finding that names it.

``read_line(text, position)`` is the definition (``audit.verify``, step 2): a
JSON object with exactly ``index``, ``leaf`` and ``event`` (no floats, no
duplicate keys), ``index == position``, the event valid, and ``leaf`` exactly
``canonical_bytes(event)``. It parses the line and the event in full.

``plain_leaf(raw, position)`` is a fast check of the raw bytes of a line in
the shape ``export_line`` writes for a plain event (``audit.event.is_plain_leaf``)::

    {"index":<position>,"leaf":"<escaped leaf>","event":<leaf>}

It returns the leaf only when it proves that ``read_line`` would return the
same bytes, and ``None`` otherwise (it never rejects a line). The proof: the
line is ``prefix + escape(L) + '","event":' + L + '}'`` where ``L`` passes
``is_plain_leaf`` — so ``L`` is ASCII JSON text with no backslash and no
control character, and ``escape(L)`` (each ``"`` as ``\\"``) is the JSON
string whose value is ``L``. The line therefore parses to exactly
``{"index": position, "leaf": L, "event": json.loads(L)}``, with no float and no
duplicate key, and ``L`` is the canonical bytes of that valid event. The line is
ASCII, so its UTF-8 decoding and its length in characters are its bytes.

``leaf_of(raw, position)`` and ``leaf_of_text(text, position)`` try the fast
check and fall back to ``read_line``: they give exactly ``read_line``'s leaf or
finding, at the cost of the parse only for lines the fast check cannot prove.
A raw line that is not UTF-8 is malformed at its position.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import NoReturn

from audit.canonical import canonical_bytes
from audit.errors import CanonicalJsonError, EventFormatError
from audit.event import AuditEvent, is_plain_leaf

MAX_LINE_CHARS = 1 << 20
_LINE_KEYS = frozenset({"index", "leaf", "event"})
_EVENT_SEPARATOR = b'","event":'


class Finding(StrEnum):
    NO_CHECKPOINT = "no checkpoint was given"
    CHECKPOINT_MALFORMED = "a checkpoint is not a well-formed signed checkpoint"
    CHECKPOINT_SIGNATURE = "a checkpoint has no valid signature from a pinned verifier key"
    CHECKPOINT_ORIGIN = "a checkpoint names another origin"
    LINE_MALFORMED = "the line is not a JSON object with exactly index, leaf and event"
    INDEX_SKIPPED = "the line claims a later index: entries are missing or out of order"
    INDEX_REPEATED = "the line repeats an earlier index: an entry was inserted or moved"
    EVENT_MALFORMED = "the event does not follow the event schema"
    LEAF_MISMATCH = "the leaf is not the canonical JSON of the event"
    ROOT_MISMATCH = "the tree at a checkpoint's size does not have the checkpoint's root"
    EXPORT_TRUNCATED = "the export ends before the size of a checkpoint"
    UNPROVEN_ENTRY = "the export goes on past the largest checkpoint"


class FailedError(Exception):
    """The first failure of a verification: a ``Finding``, and the index or checkpoint it names."""

    def __init__(self, finding: Finding, index: int | None = None, checkpoint_number: int | None = None) -> None:
        super().__init__(finding.value)
        self.finding = finding
        self.index = index
        self.checkpoint_number = checkpoint_number


def plain_leaf(raw: bytes, position: int) -> bytes | None:
    """The leaf of a line in ``export_line``'s shape with a plain event at ``position``; ``None`` when not proven this way."""
    prefix = b'{"index":%d,"leaf":"' % position
    if len(raw) > MAX_LINE_CHARS or not raw.startswith(prefix) or not raw.endswith(b"}"):
        return None
    end = raw.find(_EVENT_SEPARATOR, len(prefix))
    if end < 0:
        return None
    leaf = raw[end + len(_EVENT_SEPARATOR) : -1]
    escaped = leaf.replace(b'"', b'\\"')
    if end - len(prefix) != len(escaped) or not raw.startswith(escaped, len(prefix)) or not is_plain_leaf(leaf):
        return None
    return leaf


def leaf_of(raw: bytes, position: int) -> bytes:
    """The leaf of a raw line (no newline) at ``position``; ``FailedError`` exactly as ``read_line`` on its text."""
    leaf = plain_leaf(raw, position)
    if leaf is not None:
        return leaf
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FailedError(Finding.LINE_MALFORMED, position) from None
    return read_line(text, position)


def leaf_of_text(text: str, position: int) -> bytes:
    """The leaf of a decoded line at ``position``; ``FailedError`` exactly as ``read_line``."""
    if text.isascii():
        leaf = plain_leaf(text.encode("ascii"), position)
        if leaf is not None:
            return leaf
    return read_line(text, position)


def read_line(line: str, position: int) -> bytes:
    """The leaf bytes of a sound line at ``position``; ``FailedError`` otherwise."""
    if len(line) > MAX_LINE_CHARS:
        raise FailedError(Finding.LINE_MALFORMED, position)
    try:
        obj = json.loads(line, object_pairs_hook=_no_duplicates, parse_float=_no_float, parse_constant=_no_float)
    except (ValueError, RecursionError):
        raise FailedError(Finding.LINE_MALFORMED, position) from None
    if not isinstance(obj, dict) or obj.keys() != _LINE_KEYS:
        raise FailedError(Finding.LINE_MALFORMED, position)
    index, leaf, event = obj["index"], obj["leaf"], obj["event"]
    if isinstance(index, bool) or not isinstance(index, int) or index < 0 or not isinstance(leaf, str):
        raise FailedError(Finding.LINE_MALFORMED, position)
    if index > position:
        raise FailedError(Finding.INDEX_SKIPPED, position)
    if index < position:
        raise FailedError(Finding.INDEX_REPEATED, index)
    try:
        AuditEvent.from_json_obj(event)
        expected = canonical_bytes(event)
    except (EventFormatError, CanonicalJsonError):
        raise FailedError(Finding.EVENT_MALFORMED, position) from None
    try:
        leaf_bytes = leaf.encode("utf-8")
    except UnicodeEncodeError:
        raise FailedError(Finding.LEAF_MISMATCH, position) from None
    if leaf_bytes != expected:
        raise FailedError(Finding.LEAF_MISMATCH, position)
    return leaf_bytes


def claimed_index(raw: bytes) -> int | None:
    """The ``index`` a raw line claims, if it is a JSON object with a non-negative integer ``index``; ``None`` otherwise."""
    if len(raw) > MAX_LINE_CHARS:
        return None
    try:
        obj = json.loads(raw, object_pairs_hook=_no_duplicates, parse_float=_no_float, parse_constant=_no_float)
    except (ValueError, RecursionError):
        return None
    index = obj.get("index") if isinstance(obj, dict) else None
    return index if isinstance(index, int) and not isinstance(index, bool) and index >= 0 else None


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _no_float(_text: str) -> NoReturn:
    raise ValueError("not an integer")


__all__ = ["MAX_LINE_CHARS", "FailedError", "Finding", "claimed_index", "leaf_of", "leaf_of_text", "plain_leaf", "read_line"]
