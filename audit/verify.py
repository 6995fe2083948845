"""The offline verifier: an NDJSON export checked against signed checkpoints.

Depends only on the standard library, ``cryptography`` and the pure modules
of this package (event, canonical, merkle, checkpoint), so a member or an
auditor can run it without the vault. It reads the export as a stream and
keeps O(log n) state (the right edge of the tree), whatever the number of
events; reading a file in worker processes adds one byte range per worker.

Two entry points, one set of checks and one report for the same lines:

- ``verify_export(lines, …)`` reads an iterable of decoded lines, in order;
- ``verify_export_file(path, …)`` reads a file as ``vaultctl audit verify
  --export`` does (split at ``\\n``; a line that is not UTF-8 is malformed).
  A regular file larger than one chunk is checked in byte ranges by worker
  processes (``audit._verify_chunks``), merged in order; anything else — a
  small file, a pipe, one usable CPU, no ``fork`` — is read sequentially.

Each line is first tried by a fast check of its raw bytes that only ever
*proves* a line (``audit._verify_lines.plain_leaf``); a line it cannot prove
is parsed and checked in full. Either way the outcome is the full check's.

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
import os
import stat
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from audit._verify_chunks import CHUNK_BYTES, checked_chunks, plan
from audit._verify_lines import MAX_LINE_CHARS, FailedError, Finding, leaf_of, leaf_of_text
from audit.checkpoint import Checkpoint, VerifierKey, open_note, parse_checkpoint, parse_verifier_key
from audit.errors import CheckpointFormatError, NoteFormatError, VerificationError
from audit.merkle import CompactRange, leaf_hash

if TYPE_CHECKING:
    from multiprocessing.context import ForkContext

_Line = TypeVar("_Line", str, bytes)


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


def export_line(index: int, leaf: bytes) -> str:
    """The export line for the entry at ``index`` with these leaf bytes (no trailing newline)."""
    text = leaf.decode("utf-8")
    return json.dumps({"index": index, "leaf": text, "event": json.loads(text)}, ensure_ascii=False, separators=(",", ":"))


def verify_export(lines: Iterable[str], checkpoints: Sequence[str], verifier_keys: Sequence[str], *, origin: str | None = None) -> Report:
    """Check an export end to end; see the module docstring. Malformed verifier keys raise ``VerifierKeyError``."""
    keys = [parse_verifier_key(text) for text in verifier_keys]
    state = _State()
    try:
        state.open(checkpoints, keys, origin)
        state.read(lines, leaf_of_text)
        state.finish()
    except FailedError as failed:
        return state.report(failed)
    return state.report(None)


def verify_export_file(
    path: str | Path,
    checkpoints: Sequence[str],
    verifier_keys: Sequence[str],
    *,
    origin: str | None = None,
    workers: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Report:
    """``verify_export`` of the lines of the file at ``path``, in ``workers`` processes (default: the usable CPUs).

    The report is the one ``verify_export`` gives for the file's lines. Malformed verifier keys raise
    ``VerifierKeyError``; a file that cannot be read raises ``OSError``.
    """
    keys = [parse_verifier_key(text) for text in verifier_keys]
    state = _State()
    with Path(path).open("rb") as file:
        try:
            state.open(checkpoints, keys, origin)
            info = os.fstat(file.fileno())
            jobs = _usable_cpus() if workers is None else workers
            context = _fork_context() if jobs > 1 and stat.S_ISREG(info.st_mode) and info.st_size > chunk_bytes else None
            if context is not None:
                file.seek(state.read_chunks(context, file.fileno(), info.st_size, jobs, chunk_bytes))
            state.read((raw.removesuffix(b"\n") for raw in file), leaf_of)
            state.finish()
        except FailedError as failed:
            return state.report(failed)
    return state.report(None)


class _State:
    def __init__(self) -> None:
        self.tree = CompactRange()
        self.entries = 0
        self.proven_size = 0
        self.verified: list[Checkpoint] = []
        self.pending: deque[tuple[Checkpoint, int]] = deque()
        self.last_size = 0

    def open(self, texts: Sequence[str], keys: Sequence[VerifierKey], origin: str | None) -> None:
        """Take the checkpoints (signature-checked and parsed, smallest size first) and settle those of size 0."""
        self.pending = _open_checkpoints(texts, keys, origin)
        self.last_size = self.pending[-1][0].size
        self.settle()

    def read(self, lines: Iterable[_Line], leaf_of_line: Callable[[_Line, int], bytes]) -> None:
        """Append the leaves of ``lines``, the next entries in order, settling checkpoints on the way."""
        for position, line in enumerate(lines, start=self.tree.size):
            leaf = leaf_of_line(line, position)
            if position >= self.last_size:
                raise FailedError(Finding.UNPROVEN_ENTRY, position)
            self.tree.append_subtree(0, leaf_hash(leaf))
            self.entries += 1
            self.settle()

    def read_chunks(self, context: ForkContext, fd: int, size: int, workers: int, chunk_bytes: int) -> int:
        """Merge the file's byte ranges, verified by worker processes, in order; return the offset to read on from.

        That is the end of the file when every range was sound, else the start of the first line not merged:
        reading on from there sequentially finds the first failure exactly.
        """
        tasks = plan(size, chunk_bytes, fd, [checkpoint.size for checkpoint, _ in self.pending])
        merged = 0
        with checked_chunks(context, tasks, workers) as results:
            for result in results:
                if not result.count and result.sound:
                    continue
                if not result.sound or result.offset != merged or result.start != self.tree.size or result.start + result.count > self.last_size:
                    return merged
                for segment_end, segment in result.segments:
                    for level, subtree in segment:
                        self.tree.append_subtree(level, subtree)
                    self.entries = segment_end
                    self.settle()
                merged = result.next_offset
        return merged

    def settle(self) -> None:
        """Check (and drop) every pending checkpoint whose size the tree has reached."""
        size = self.tree.size
        while self.pending and self.pending[0][0].size == size:
            checkpoint, number = self.pending[0]
            if checkpoint.root_hash != self.tree.root():
                raise FailedError(Finding.ROOT_MISMATCH, size - 1 if size else None, number)
            self.proven_size = size
            self.verified.append(checkpoint)
            self.pending.popleft()

    def finish(self) -> None:
        if self.tree.size < self.last_size:
            raise FailedError(Finding.EXPORT_TRUNCATED, self.tree.size)

    def report(self, failed: FailedError | None) -> Report:
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
        raise FailedError(Finding.NO_CHECKPOINT)
    opened: list[tuple[Checkpoint, int]] = []
    for number, text in enumerate(texts):
        try:
            checkpoint = parse_checkpoint(open_note(text, keys).body)
        except VerificationError:
            raise FailedError(Finding.CHECKPOINT_SIGNATURE, checkpoint_number=number) from None
        except (NoteFormatError, CheckpointFormatError):
            raise FailedError(Finding.CHECKPOINT_MALFORMED, checkpoint_number=number) from None
        expected = origin if origin is not None else opened[0][0].origin if opened else checkpoint.origin
        if checkpoint.origin != expected:
            raise FailedError(Finding.CHECKPOINT_ORIGIN, checkpoint_number=number)
        opened.append((checkpoint, number))
    return deque(sorted(opened, key=lambda pair: (pair[0].size, pair[1])))


def _fork_context() -> ForkContext | None:
    """The ``fork`` context, or ``None`` where processes cannot fork.

    Workers are forked, so they inherit the open export and the loaded modules (a spawned worker would re-import the
    caller's ``__main__``). ``multiprocessing`` is imported only here, when a file is big enough to split: importing
    it registers a ``__mp_main__`` module, which a verifier reading a small export has no use for.
    """
    import multiprocessing  # noqa: PLC0415  # see the docstring

    if "fork" not in multiprocessing.get_all_start_methods():
        return None
    return multiprocessing.get_context("fork")


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


__all__ = ["MAX_LINE_CHARS", "Finding", "Report", "export_line", "verify_export", "verify_export_file"]
