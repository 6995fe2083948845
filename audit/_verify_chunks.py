"""An export file verified in byte ranges by worker processes, merged in order into one tree.

``plan(size, chunk_bytes, fd, sizes)`` cuts a file into byte ranges
``[begin, end)`` (the last one open to the end of the file). A range owns the
lines that *start* in it, exactly the lines that reading the file line by line
gives (split at ``\\n``; a last line without a newline counts): a worker skips
to the first line start at or after ``begin`` and reads on through the newline
of the last line that starts before ``end``. Workers read with ``os.pread`` on
the file descriptor they inherit, so every worker reads the file the caller
opened.

``checked_chunks(context, tasks, workers)`` runs ``verify_chunk`` over the
ranges in forked worker processes and gives the results back in order.
``verify_chunk(task)`` checks every line of its range with
``audit._verify_lines.leaf_of`` — the same check, with the same outcome, as
the sequential verifier — against the index the range's first line claims
(the worker cannot know how many lines come before it). It returns the leaf
count and, for a sound range, the range's leaves as *tiles*: the maximal
aligned complete subtrees ``(level, hash)`` that cover it in the global tree,
cut at every checkpoint size inside the range so that the caller can check
each checkpoint's root on its way. A range is unsound when a line fails, when
the first line's index cannot be read, or when a line is too long to read
safely (longer than ``MAX_LINE_CHARS``); the caller then verifies from the last
line it merged, sequentially, which names the failure exactly.

The caller merges the tiles into an ``audit.merkle.CompactRange`` (RFC 6962's
right edge of ``[0, size)``), a whole aligned subtree at a time
(``append_subtree``).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from audit._verify_lines import MAX_LINE_CHARS, FailedError, claimed_index, leaf_of
from audit.merkle import leaf_hash, node_hash

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import ForkContext, ForkProcess

CHUNK_BYTES = 16 << 20
_READ_BLOCK = 1 << 16

Tile = tuple[int, bytes]
"""A complete aligned subtree: its level (log2 of its leaf count) and its root hash."""


@dataclass(frozen=True, slots=True)
class ChunkTask:
    fd: int
    begin: int
    end: int | None
    checkpoint_sizes: tuple[int, ...]
    """Every checkpoint size, ascending: the tiles are cut at those inside the range."""


@dataclass(frozen=True, slots=True)
class ChunkResult:
    offset: int
    """The first byte of the range's first line."""
    next_offset: int
    """The byte after the range's last line (its newline included)."""
    count: int
    start: int | None
    """The index the first line claims (for a sound range with lines, the index every line was checked against)."""
    sound: bool
    segments: tuple[tuple[int, tuple[Tile, ...]], ...] = ()
    """For a sound range: (tree size at the segment's end, tiles of the segment), in order."""


@contextmanager
def checked_chunks(context: ForkContext, tasks: Sequence[ChunkTask], workers: int) -> Iterator[Iterator[ChunkResult]]:
    """``verify_chunk`` of every task, in ``workers`` forked processes, as an iterator of the results in task order.

    Worker ``w`` checks tasks ``w``, ``w + workers``, … and sends each result down its own pipe, so results come
    back in order with no queue, lock or thread shared between processes. The iterator ends early if a worker dies
    (the caller then reads on sequentially). Leaving the block stops the workers that are still running.
    """
    workers = max(1, min(workers, len(tasks)))
    receivers: list[Connection[Any, Any]] = []
    processes: list[ForkProcess] = []
    try:
        for worker in range(workers):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_check_tasks, args=(tasks[worker::workers], sender), daemon=True)
            process.start()
            sender.close()
            receivers.append(receiver)
            processes.append(process)
        yield _in_order(receivers, len(tasks))
    finally:
        for process in processes:
            if process.exitcode is None:
                process.terminate()
        for process in processes:
            process.join()
        for receiver in receivers:
            receiver.close()


def _check_tasks(tasks: Sequence[ChunkTask], sender: Connection[Any, Any]) -> None:
    """A worker process: check each task and send its result."""
    with sender:
        for task in tasks:
            sender.send(verify_chunk(task))


def _in_order(receivers: Sequence[Connection[Any, Any]], count: int) -> Iterator[ChunkResult]:
    for number in range(count):
        try:
            result = receivers[number % len(receivers)].recv()
        except EOFError:  # the worker died
            return
        if not isinstance(result, ChunkResult):
            return
        yield result


def plan(size: int, chunk_bytes: int, fd: int, checkpoint_sizes: Sequence[int]) -> list[ChunkTask]:
    """The ranges of a file of ``size`` bytes, ``chunk_bytes`` each, the last one open-ended."""
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be positive")
    sizes = tuple(sorted(set(checkpoint_sizes)))
    begins = list(range(0, max(size, 1), chunk_bytes))
    ends: list[int | None] = [*begins[1:], None]
    return [ChunkTask(fd, begin, end, sizes) for begin, end in zip(begins, ends, strict=True)]


def verify_chunk(task: ChunkTask) -> ChunkResult:
    """Check the lines of one range (in a worker process); see the module docstring."""
    offset = _line_start(task.fd, task.begin)
    if offset is None:
        return ChunkResult(task.begin, task.begin, 0, None, sound=False)
    lines, next_offset, complete = _read_lines(task.fd, offset, task.end)
    if not complete:
        return ChunkResult(offset, next_offset, len(lines), None, sound=False)
    if not lines:
        return ChunkResult(offset, next_offset, 0, None, sound=True)
    start = claimed_index(lines[0])
    if start is None:
        return ChunkResult(offset, next_offset, len(lines), None, sound=False)
    hashes: list[bytes] = []
    try:
        for position, raw in enumerate(lines, start):
            hashes.append(leaf_hash(leaf_of(raw, position)))
    except FailedError:
        return ChunkResult(offset, next_offset, len(lines), start, sound=False)
    return ChunkResult(offset, next_offset, len(lines), start, sound=True, segments=_segments(hashes, start, task.checkpoint_sizes))


def tiles(hashes: Sequence[bytes], first: int, begin: int, end: int) -> list[Tile]:
    """The maximal aligned subtrees covering leaves ``[begin, end)``, left to right; ``hashes[i]`` is leaf ``first + i``."""
    out: list[Tile] = []
    while begin < end:
        level = (end - begin).bit_length() - 1
        if begin:
            level = min(level, (begin & -begin).bit_length() - 1)
        width = 1 << level
        layer = list(hashes[begin - first : begin - first + width])
        while len(layer) > 1:
            layer = list(map(node_hash, layer[0::2], layer[1::2]))
        out.append((level, layer[0]))
        begin += width
    return out


def _segments(hashes: list[bytes], start: int, sizes: tuple[int, ...]) -> tuple[tuple[int, tuple[Tile, ...]], ...]:
    stop = start + len(hashes)
    cuts = [*sizes[bisect.bisect_right(sizes, start) : bisect.bisect_left(sizes, stop)], stop]
    segments: list[tuple[int, tuple[Tile, ...]]] = []
    begin = start
    for cut in cuts:
        segments.append((cut, tuple(tiles(hashes, start, begin, cut))))
        begin = cut
    return tuple(segments)


def _line_start(fd: int, begin: int) -> int | None:
    """The first line start at or after ``begin``; ``None`` if the line running into ``begin`` is longer than a line may be."""
    if begin == 0:
        return 0
    position, scanned = begin - 1, 0
    while scanned <= MAX_LINE_CHARS + 1:
        block = os.pread(fd, _READ_BLOCK, position)
        if not block:
            return position
        newline = block.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(block)
        scanned += len(block)
    return None


def _read_lines(fd: int, offset: int, end: int | None) -> tuple[list[bytes], int, bool]:
    """The lines (without newlines) starting in ``[offset, end)`` (to the end of the file if ``end`` is None), the offset after them,
    and whether the last one was read whole: it is cut off (and the range unsound) only if it runs on more than ``MAX_LINE_CHARS``
    bytes past ``end``.
    """
    if end is not None and offset >= end:
        return [], offset, True
    data = _pread_all(fd, offset, None if end is None else end - offset)
    next_offset = offset + len(data)
    lines = data.split(b"\n")
    complete = True
    if lines[-1] and end is not None and next_offset == end:  # the last line runs on past the range: read the rest of it
        tail, complete = _rest_of_line(fd, end)
        lines[-1] += tail.removesuffix(b"\n")
        next_offset += len(tail)
    elif not lines[-1]:
        lines.pop()
    return lines, next_offset, complete


def _rest_of_line(fd: int, position: int) -> tuple[bytes, bool]:
    """The bytes from ``position`` through the next newline (or the end of the file), and whether they were read whole (see ``_read_lines``)."""
    parts: list[bytes] = []
    read = 0
    while read <= MAX_LINE_CHARS + 1:
        block = os.pread(fd, _READ_BLOCK, position + read)
        newline = block.find(b"\n")
        if newline >= 0:
            parts.append(block[: newline + 1])
            return b"".join(parts), True
        if not block:
            return b"".join(parts), True
        parts.append(block)
        read += len(block)
    return b"".join(parts), False


def _pread_all(fd: int, offset: int, length: int | None) -> bytes:
    """``length`` bytes from ``offset`` (all to the end of the file if None), fewer only at the end of the file."""
    parts: list[bytes] = []
    remaining = length
    while remaining is None or remaining > 0:
        block = os.pread(fd, CHUNK_BYTES if remaining is None else remaining, offset)
        if not block:
            break
        parts.append(block)
        offset += len(block)
        if remaining is not None:
            remaining -= len(block)
    return b"".join(parts)


__all__ = ["CHUNK_BYTES", "ChunkResult", "ChunkTask", "Tile", "checked_chunks", "plan", "tiles", "verify_chunk"]
