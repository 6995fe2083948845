"""The offline verifier: an NDJSON export checked against signed checkpoints.

Depends only on the standard library, ``cryptography`` and the pure modules
of this package (event, canonical, merkle, checkpoint), so a member or an
auditor can run it without the vault. It reads the export as a stream and
keeps O(log n) state (the ``CompactRange``), whatever the number of events.

Export line format (API.md), one JSON object per line, in index order::

    {"index": <n>, "leaf": "<the leaf bytes, UTF-8, as a JSON string>", "event": {...}}

What is checked, stopping at the first failure:

1. each verifier key string parses, and each checkpoint is a signed note with
   a valid signature from one of them and a well-formed body; all checkpoints
   name one origin (``origin`` if given);
2. per line: a JSON object with exactly ``index``, ``leaf``, ``event`` (no
   floats, no duplicate keys); the index is the line's position (indices run
   0, 1, 2, …); the event follows the event schema; ``leaf`` is exactly
   ``canonical_bytes(event)``;
3. the leaf hashes are appended to the tree; at each checkpoint's size the
   tree's root equals the checkpoint's root (so successive checkpoints are
   consistent with each other: they are prefixes of one tree);
4. the export ends exactly at the largest checkpoint's size, so every entry
   is covered by a signed root (nothing removed at the end, nothing unproven
   appended).

``Report.first_bad_index`` is the smallest index the export fails to
establish. For a line out of sequence at position p that is p when the line
claims a later index (entry p is missing or moved) and the claimed index c
when it claims an earlier one (two lines claim c; either may be the forgery).
A root mismatch at checkpoint size s names s − 1: the changed entry lies in
``[proven_size, s)``, exactly at s − 1 when the checkpoints are dense enough.
Reasons come from a fixed list (``Finding``) and never quote the export.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NoReturn

from audit.canonical import canonical_bytes
from audit.checkpoint import Checkpoint, VerifierKey, open_note, parse_checkpoint, parse_verifier_key
from audit.errors import CanonicalJsonError, CheckpointFormatError, EventFormatError, NoteFormatError, VerificationError
from audit.event import AuditEvent
from audit.merkle import CompactRange, leaf_hash

MAX_LINE_CHARS = 1 << 20
_LINE_KEYS = frozenset({"index", "leaf", "event"})


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


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of ``verify_export``: clean (``finding is None``) or the first failure."""

    entries: int
    """Lines read and found sound before any failure."""
    proven_size: int
    """Entries ``[0, proven_size)`` match a signed root."""
    checkpoints: tuple[Checkpoint, ...]
    """The checkpoints whose signature and root were both verified, by size."""
    finding: Finding | None = None
    first_bad_index: int | None = None
    checkpoint_number: int | None = None
    """For a checkpoint finding, the position of that checkpoint in the arguments."""

    @property
    def ok(self) -> bool:
        return self.finding is None

    def raise_for_failure(self) -> None:
        """Raise ``VerificationError`` (naming the first bad index, if any) unless the export verified."""
        if self.finding is not None:
            raise VerificationError(self.first_bad_index)


class _FailedError(Exception):
    def __init__(self, finding: Finding, index: int | None = None, checkpoint_number: int | None = None) -> None:
        super().__init__(finding.value)
        self.finding = finding
        self.index = index
        self.checkpoint_number = checkpoint_number


def export_line(index: int, leaf: bytes) -> str:
    """The export line for the entry at ``index`` with these leaf bytes (no trailing newline)."""
    text = leaf.decode("utf-8")
    return json.dumps({"index": index, "leaf": text, "event": json.loads(text)}, ensure_ascii=False, separators=(",", ":"))


def verify_export(lines: Iterable[str], checkpoints: Sequence[str], verifier_keys: Sequence[str], *, origin: str | None = None) -> Report:
    """Check an export end to end; see the module docstring. Malformed verifier keys raise ``VerifierKeyError``."""
    keys = [parse_verifier_key(text) for text in verifier_keys]
    state = _State()
    try:
        pending = _open_checkpoints(checkpoints, keys, origin)
        last_size = pending[-1][0].size
        state.settle(pending)
        for position, line in enumerate(lines):
            leaf = _read_line(line, position)
            if position >= last_size:
                raise _FailedError(Finding.UNPROVEN_ENTRY, position)
            state.compact.append(leaf_hash(leaf))
            state.entries += 1
            state.settle(pending)
        if state.compact.size < last_size:
            raise _FailedError(Finding.EXPORT_TRUNCATED, state.compact.size)
    except _FailedError as failed:
        return state.report(failed)
    return state.report(None)


class _State:
    def __init__(self) -> None:
        self.compact = CompactRange()
        self.entries = 0
        self.proven_size = 0
        self.verified: list[Checkpoint] = []

    def settle(self, pending: deque[tuple[Checkpoint, int]]) -> None:
        """Check (and drop) every pending checkpoint whose size the tree has reached."""
        size = self.compact.size
        while pending and pending[0][0].size == size:
            checkpoint, number = pending[0]
            if checkpoint.root_hash != self.compact.root():
                raise _FailedError(Finding.ROOT_MISMATCH, size - 1 if size else None, number)
            self.proven_size = size
            self.verified.append(checkpoint)
            pending.popleft()

    def report(self, failed: _FailedError | None) -> Report:
        return Report(
            entries=self.entries,
            proven_size=self.proven_size,
            checkpoints=tuple(self.verified),
            finding=None if failed is None else failed.finding,
            first_bad_index=None if failed is None else failed.index,
            checkpoint_number=None if failed is None else failed.checkpoint_number,
        )


def _open_checkpoints(texts: Sequence[str], keys: Sequence[VerifierKey], origin: str | None) -> deque[tuple[Checkpoint, int]]:
    """The checkpoints, signature-checked and parsed, with their argument positions, smallest size first."""
    if not texts:
        raise _FailedError(Finding.NO_CHECKPOINT)
    opened: list[tuple[Checkpoint, int]] = []
    for number, text in enumerate(texts):
        try:
            checkpoint = parse_checkpoint(open_note(text, keys).body)
        except VerificationError:
            raise _FailedError(Finding.CHECKPOINT_SIGNATURE, checkpoint_number=number) from None
        except (NoteFormatError, CheckpointFormatError):
            raise _FailedError(Finding.CHECKPOINT_MALFORMED, checkpoint_number=number) from None
        expected = origin if origin is not None else opened[0][0].origin if opened else checkpoint.origin
        if checkpoint.origin != expected:
            raise _FailedError(Finding.CHECKPOINT_ORIGIN, checkpoint_number=number)
        opened.append((checkpoint, number))
    return deque(sorted(opened, key=lambda pair: (pair[0].size, pair[1])))


def _read_line(line: str, position: int) -> bytes:
    """The leaf bytes of a sound line at ``position``; ``_FailedError`` otherwise."""
    if len(line) > MAX_LINE_CHARS:
        raise _FailedError(Finding.LINE_MALFORMED, position)
    try:
        obj = json.loads(line, object_pairs_hook=_no_duplicates, parse_float=_no_float, parse_constant=_no_float)
    except (ValueError, RecursionError):
        raise _FailedError(Finding.LINE_MALFORMED, position) from None
    if not isinstance(obj, dict) or obj.keys() != _LINE_KEYS:
        raise _FailedError(Finding.LINE_MALFORMED, position)
    index, leaf, event = obj["index"], obj["leaf"], obj["event"]
    if isinstance(index, bool) or not isinstance(index, int) or index < 0 or not isinstance(leaf, str):
        raise _FailedError(Finding.LINE_MALFORMED, position)
    if index > position:
        raise _FailedError(Finding.INDEX_SKIPPED, position)
    if index < position:
        raise _FailedError(Finding.INDEX_REPEATED, index)
    try:
        AuditEvent.from_json_obj(event)
        expected = canonical_bytes(event)
    except (EventFormatError, CanonicalJsonError):
        raise _FailedError(Finding.EVENT_MALFORMED, position) from None
    try:
        leaf_bytes = leaf.encode("utf-8")
    except UnicodeEncodeError:
        raise _FailedError(Finding.LEAF_MISMATCH, position) from None
    if leaf_bytes != expected:
        raise _FailedError(Finding.LEAF_MISMATCH, position)
    return leaf_bytes


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _no_float(_text: str) -> NoReturn:
    raise ValueError("not an integer")


__all__ = ["MAX_LINE_CHARS", "Finding", "Report", "export_line", "verify_export"]
