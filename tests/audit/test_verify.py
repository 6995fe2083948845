"""The offline verifier: clean exports pass; changed, removed, reordered, inserted lines and bad checkpoints are named."""

from __future__ import annotations

import base64
import itertools
import json
import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from audit._verify_chunks import ChunkTask, checked_chunks, plan, tiles
from audit._verify_lines import plain_leaf, read_line
from audit.errors import VerificationError, VerifierKeyError
from audit.event import AuditEvent
from audit.merkle import EMPTY_ROOT, CompactRange, leaf_hash, root
from audit.verify import MAX_LINE_CHARS, Finding, Report, export_line, verify_export, verify_export_file
from tests.audit.factories import events, sample_event, signed_checkpoint, signing_key, verifier

KEY = signing_key("vault")
PINNED = [verifier(KEY)]
props = settings(deadline=None, max_examples=60)
event_lists = st.lists(events, min_size=1, max_size=12)


class Log:
    """A clean export of ``events`` and the roots at every size."""

    def __init__(self, items: list[AuditEvent]) -> None:
        self.leaves = [event.leaf_bytes() for event in items]
        self.lines = [export_line(i, leaf) for i, leaf in enumerate(self.leaves)]
        compact = CompactRange()
        self.roots = [compact.root()]
        for leaf in self.leaves:
            compact.append(leaf_hash(leaf))
            self.roots.append(compact.root())

    @property
    def size(self) -> int:
        return len(self.leaves)

    def checkpoint(self, size: int | None = None) -> str:
        size = self.size if size is None else size
        return signed_checkpoint(size, self.roots[size], KEY)

    def every_checkpoint(self) -> list[str]:
        return [self.checkpoint(size) for size in range(self.size + 1)]


def verify(lines: list[str], checkpoints: list[str], keys: list[str] = PINNED) -> Report:
    return verify_export(lines, checkpoints, keys)


def assert_fails(report: Report, finding: Finding, index: int | None) -> None:
    assert (report.finding, report.first_bad_index) == (finding, index)
    assert not report.ok


# -- clean exports ------------------------------------------------------------------------


@props
@given(event_lists, st.data())
def test_a_clean_export_verifies(items: list[AuditEvent], data: st.DataObject) -> None:
    log = Log(items)
    sizes = data.draw(st.sets(st.integers(0, log.size - 1)), label="extra checkpoint sizes")
    checkpoints = [log.checkpoint(size) for size in sorted(sizes, reverse=True)] + [log.checkpoint()]
    report = verify(log.lines, checkpoints)
    assert report.ok, report
    assert (report.entries, report.proven_size) == (log.size, log.size)
    assert [c.size for c in report.checkpoints] == [*sorted(sizes), log.size]
    report.raise_for_failure()


def test_an_empty_export_verifies_against_the_empty_checkpoint() -> None:
    report = verify([], [signed_checkpoint(0, EMPTY_ROOT, KEY)])
    assert report.ok
    assert (report.entries, report.proven_size) == (0, 0)


def test_export_lines_carry_the_leaf_verbatim() -> None:
    event = sample_event(1)
    line = json.loads(export_line(7, event.leaf_bytes()))
    assert line == {"index": 7, "leaf": event.leaf_bytes().decode(), "event": event.to_json_obj()}


def test_the_verifier_reads_the_export_as_a_stream_and_stops_at_the_first_failure() -> None:
    log = Log([sample_event(i) for i in range(50)])
    lines = list(log.lines)
    lines[20] = lines[20].replace('"read"', '"write"', 1)
    pulled: list[int] = []

    def stream() -> Iterator[str]:
        for i, line in enumerate(lines):
            pulled.append(i)
            yield line

    assert_fails(verify_export(stream(), [log.checkpoint()], PINNED), Finding.LEAF_MISMATCH, 20)
    assert pulled[-1] == 20


# -- tampered lines ---------------------------------------------------------------------


@props
@given(event_lists, st.data())
def test_a_changed_event_is_detected_at_its_index(items: list[AuditEvent], data: st.DataObject) -> None:
    log = Log(items)
    i = data.draw(st.integers(0, log.size - 1), label="index")
    other = data.draw(events, label="replacement")
    assume(other.leaf_bytes() != log.leaves[i])
    lines = list(log.lines)
    lines[i] = json.dumps({"index": i, "leaf": log.leaves[i].decode(), "event": other.to_json_obj()})
    assert_fails(verify(lines, [log.checkpoint()]), Finding.LEAF_MISMATCH, i)


@props
@given(event_lists, st.data())
def test_a_consistently_rewritten_entry_is_caught_by_the_next_checkpoint(items: list[AuditEvent], data: st.DataObject) -> None:
    log = Log(items)
    i = data.draw(st.integers(0, log.size - 1), label="index")
    other = data.draw(events, label="replacement")
    assume(other.leaf_bytes() != log.leaves[i])
    lines = list(log.lines)
    lines[i] = export_line(i, other.leaf_bytes())
    assert_fails(verify(lines, log.every_checkpoint()), Finding.ROOT_MISMATCH, i)
    sparse = verify(lines, [log.checkpoint()])
    assert_fails(sparse, Finding.ROOT_MISMATCH, log.size - 1)
    assert sparse.proven_size <= i


@props
@given(event_lists, st.data())
def test_a_removed_line_is_detected_at_its_index(items: list[AuditEvent], data: st.DataObject) -> None:
    log = Log(items)
    i = data.draw(st.integers(0, log.size - 1), label="index")
    lines = log.lines[:i] + log.lines[i + 1 :]
    expected = Finding.EXPORT_TRUNCATED if i == log.size - 1 else Finding.INDEX_SKIPPED
    assert_fails(verify(lines, [log.checkpoint()]), expected, i)


@props
@given(st.lists(events, min_size=2, max_size=12), st.data())
def test_reordered_lines_are_detected_at_the_first_moved_index(items: list[AuditEvent], data: st.DataObject) -> None:
    log = Log(items)
    i = data.draw(st.integers(0, log.size - 2), label="first")
    j = data.draw(st.integers(i + 1, log.size - 1), label="second")
    lines = list(log.lines)
    lines[i], lines[j] = lines[j], lines[i]
    assert_fails(verify(lines, [log.checkpoint()]), Finding.INDEX_SKIPPED, i)


@props
@given(event_lists, st.data())
def test_an_inserted_line_is_detected_at_its_index(items: list[AuditEvent], data: st.DataObject) -> None:
    log = Log(items)
    i = data.draw(st.integers(0, log.size), label="position")
    forged = export_line(i, data.draw(events, label="forged").leaf_bytes())
    lines = [*log.lines[:i], forged, *log.lines[i:]]
    assert verify(lines, [log.checkpoint()]).first_bad_index == i
    assert verify(lines, log.every_checkpoint()).first_bad_index == i


@props
@given(event_lists, st.data())
def test_an_inserted_line_claiming_any_index_is_detected_no_later_than_its_position(items: list[AuditEvent], data: st.DataObject) -> None:
    """A line claiming an earlier index c makes c the first index that cannot be trusted: either line claiming it may be the forgery."""
    log = Log(items)
    i = data.draw(st.integers(0, log.size), label="position")
    claimed = data.draw(st.integers(0, log.size + 3), label="claimed index")
    forged = export_line(claimed, data.draw(events, label="forged").leaf_bytes())
    report = verify([*log.lines[:i], forged, *log.lines[i:]], [log.checkpoint()])
    assert report.first_bad_index == min(claimed, i)


def test_a_line_past_the_last_checkpoint_is_unproven() -> None:
    log = Log([sample_event(i) for i in range(5)])
    assert_fails(verify(log.lines, [log.checkpoint(4)]), Finding.UNPROVEN_ENTRY, 4)


GOOD = export_line(0, sample_event().leaf_bytes())


@pytest.mark.parametrize(
    ("line", "finding"),
    [
        ("", Finding.LINE_MALFORMED),
        ("not json", Finding.LINE_MALFORMED),
        ("[]", Finding.LINE_MALFORMED),
        (GOOD.replace('{"index":0', '{"index":0.0'), Finding.LINE_MALFORMED),
        (GOOD.replace('{"index":0', '{"index":true'), Finding.LINE_MALFORMED),
        (GOOD.replace('{"index":0', '{"index":-1'), Finding.LINE_MALFORMED),
        (GOOD.replace('{"index":0', '{"index":NaN'), Finding.LINE_MALFORMED),
        (GOOD.replace('{"index":0', '{"index":"0"'), Finding.LINE_MALFORMED),
        (GOOD.replace('{"index":0', '{"index":0,"index":0'), Finding.LINE_MALFORMED),
        (GOOD[:-1] + ',"extra":1}', Finding.LINE_MALFORMED),
        (GOOD.replace('"v":1}}', '"v":1.0}}'), Finding.LINE_MALFORMED),
        ("[" * 100_000, Finding.LINE_MALFORMED),
        (GOOD.replace('"leaf":"', '"leaf":1,"x":"', 1), Finding.LINE_MALFORMED),
        ('{"index":0,"leaf":"x","event":' + " " * (1 << 20) + "{}}", Finding.LINE_MALFORMED),
        (GOOD.replace('"v":1}}', '"v":2}}'), Finding.EVENT_MALFORMED),
        (GOOD.replace('"outcome":"ok",', '"outcome":"ok","note":"itchy",'), Finding.EVENT_MALFORMED),
        (GOOD.replace('"leaf":"{', '"leaf":" {'), Finding.LEAF_MISMATCH),
        (GOOD.replace('"leaf":"{', '"leaf":"\\ud800{'), Finding.LEAF_MISMATCH),
    ],
)
def test_malformed_lines_are_named_at_their_index(line: str, finding: Finding) -> None:
    log = Log([sample_event(), sample_event(1)])
    assert log.lines[0] == GOOD
    assert_fails(verify([line, log.lines[1]], [log.checkpoint()]), finding, 0)


# -- checkpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), [("\n3\n", "\n2\n"), ("time 2026", "time 2025")])
def test_a_forged_checkpoint_is_rejected(old: str, new: str) -> None:
    log = Log([sample_event(i) for i in range(3)])
    forged = log.checkpoint().replace(old, new, 1)
    report = verify(log.lines, [log.checkpoint(1), forged])
    assert (report.finding, report.checkpoint_number, report.first_bad_index) == (Finding.CHECKPOINT_SIGNATURE, 1, None)


def test_a_checkpoint_with_a_forged_root_is_rejected() -> None:
    log = Log([sample_event(i) for i in range(3)])
    good, other = (base64.b64encode(log.roots[n]).decode() for n in (3, 2))
    forged = log.checkpoint().replace(good, other, 1)
    assert other in forged
    assert verify(log.lines, [forged]).finding is Finding.CHECKPOINT_SIGNATURE


def test_a_checkpoint_re_signed_with_another_key_is_rejected() -> None:
    log = Log([sample_event(i) for i in range(3)])
    resigned = signed_checkpoint(3, log.roots[3], signing_key("intruder"))
    report = verify(log.lines, [resigned])
    assert (report.finding, report.checkpoint_number) == (Finding.CHECKPOINT_SIGNATURE, 0)
    with pytest.raises(VerificationError, match=r"^Verification failed\.$"):
        report.raise_for_failure()


def test_a_validly_signed_checkpoint_of_another_history_is_caught_at_its_size() -> None:
    log = Log([sample_event(i) for i in range(6)])
    other = Log([sample_event(i + 100) for i in range(6)])
    report = verify(log.lines, [log.checkpoint(2), other.checkpoint(4), log.checkpoint()])
    assert (report.finding, report.first_bad_index, report.checkpoint_number, report.proven_size) == (Finding.ROOT_MISMATCH, 3, 1, 2)
    with pytest.raises(VerificationError, match=r"^Verification failed at index 3\.$"):
        report.raise_for_failure()


def test_a_malformed_checkpoint_is_named() -> None:
    log = Log([sample_event()])
    report = verify(log.lines, [log.checkpoint(), "not a note"])
    assert (report.finding, report.checkpoint_number) == (Finding.CHECKPOINT_MALFORMED, 1)


def test_checkpoints_of_another_origin_are_refused() -> None:
    log = Log([sample_event()])
    elsewhere = signed_checkpoint(1, log.roots[1], KEY, origin="elsewhere.example/log")
    report = verify(log.lines, [log.checkpoint(), elsewhere])
    assert (report.finding, report.checkpoint_number) == (Finding.CHECKPOINT_ORIGIN, 1)
    pinned_origin = verify_export(log.lines, [log.checkpoint()], PINNED, origin="elsewhere.example/log")
    assert (pinned_origin.finding, pinned_origin.checkpoint_number) == (Finding.CHECKPOINT_ORIGIN, 0)


def test_no_checkpoint_proves_nothing() -> None:
    log = Log([sample_event()])
    assert verify(log.lines, []).finding is Finding.NO_CHECKPOINT


def test_a_malformed_verifier_key_is_a_configuration_error() -> None:
    log = Log([sample_event()])
    with pytest.raises(VerifierKeyError, match="verifier key must be"):
        verify(log.lines, [log.checkpoint()], ["not-a-key"])


# -- the verifier's dependencies ----------------------------------------------------------


def _top_level_modules(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_the_verifier_needs_only_the_standard_library_and_cryptography() -> None:
    baseline = _top_level_modules("import cryptography.exceptions, cryptography.hazmat.primitives.asymmetric.ed25519")
    loaded = _top_level_modules("import audit.verify")
    added = loaded - baseline - set(sys.stdlib_module_names)
    assert added == {"audit"}
    assert "keys" not in loaded


# -- the file verifier: byte ranges in worker processes, merged in order -----------------------

FORKS: list[int] = []
os.register_at_fork(after_in_parent=lambda: FORKS.append(1))
K = 5
"""Lines per chunk in the chunk tests: ``chunk_bytes`` is the byte offset of line K."""


def fixed_event(i: int) -> AuditEvent:
    return sample_event(i, request_id=f"req-{i:06d}", member_id=f"m-{i:06d}", resource_id=f"m-{i:06d}")


def write_export(directory: Path, lines: Sequence[str | bytes], *, last_newline: bool = True, name: str = "export.ndjson") -> Path:
    raws = [line.encode("utf-8") if isinstance(line, str) else line for line in lines]
    path = directory / name
    path.write_bytes(b"\n".join(raws) + (b"\n" if raws and last_newline else b""))
    return path


def read_as_text(path: Path) -> list[str]:
    """The file's lines as ``vaultctl audit verify --export`` read them before the file verifier: a line that is not UTF-8 became ``""``."""
    lines = []
    with path.open("rb") as file:
        for raw in file:
            try:
                lines.append(raw.removesuffix(b"\n").decode("utf-8"))
            except UnicodeDecodeError:
                lines.append("")
    return lines


def offset_of(lines: Sequence[str | bytes], k: int) -> int:
    """The byte offset of line ``k`` in ``write_export``'s file."""
    return sum(len(line.encode("utf-8") if isinstance(line, str) else line) + 1 for line in lines[:k])


def verify_both(path: Path, checkpoints: list[str], chunk_bytes: int) -> Report:
    """The file verifier's report in two worker processes, checked equal to ``verify_export``'s report over the same lines."""
    forks = len(FORKS)
    report = verify_export_file(path, checkpoints, PINNED, workers=2, chunk_bytes=chunk_bytes)
    assert (len(FORKS) > forks) is (path.stat().st_size > chunk_bytes)
    assert report == verify(read_as_text(path), checkpoints)
    return report


@pytest.fixture
def log() -> Log:
    """An export of 4 chunks and three lines (K lines a chunk)."""
    return Log([fixed_event(i) for i in range(4 * K + 3)])


def test_this_platform_forks_the_workers_the_chunk_tests_count() -> None:
    """``verify_both`` expects forks for a file larger than a chunk: the file verifier forks its workers (and reads sequentially without ``fork``)."""
    assert "fork" in multiprocessing.get_all_start_methods()


def test_an_export_from_a_pipe_is_read_sequentially(tmp_path: Path, log: Log) -> None:
    fifo = tmp_path / "export.fifo"
    os.mkfifo(fifo)
    content = write_export(tmp_path, log.lines).read_bytes()
    writer = threading.Thread(target=fifo.write_bytes, args=(content,))
    writer.start()
    forks = len(FORKS)
    try:
        report = verify_export_file(fifo, [log.checkpoint()], PINNED, workers=2, chunk_bytes=100)
    finally:
        writer.join()
    assert (report.ok, report.entries, len(FORKS)) == (True, log.size, forks)


def test_a_small_export_file_is_read_sequentially_and_a_large_one_by_workers(tmp_path: Path, log: Log) -> None:
    path = write_export(tmp_path, log.lines)
    forks = len(FORKS)
    assert verify_export_file(path, [log.checkpoint()], PINNED).ok
    assert len(FORKS) == forks
    assert verify_export_file(path, [log.checkpoint()], PINNED, workers=2, chunk_bytes=offset_of(log.lines, K)).ok
    assert len(FORKS) > forks
    assert verify_export_file(path, [log.checkpoint()], PINNED, workers=1, chunk_bytes=offset_of(log.lines, K)).ok


@pytest.mark.parametrize("size", [0, 1, K - 1, K, K + 1, 2 * K - 1, 2 * K, 2 * K + 1, 4 * K + 1])
def test_exports_of_any_size_around_the_chunk_size_verify_in_workers(tmp_path: Path, log: Log, size: int) -> None:
    path = write_export(tmp_path, log.lines[:size])
    report = verify_both(path, [log.checkpoint(size)], chunk_bytes=offset_of(log.lines, K))
    assert (report.ok, report.entries, report.proven_size) == (True, size, size)


@pytest.mark.parametrize("shift", [-2, -1, 0, 1, 2])
def test_chunk_boundaries_just_before_at_and_after_a_line_start_lose_and_repeat_no_line(tmp_path: Path, log: Log, shift: int) -> None:
    path = write_export(tmp_path, log.lines)
    report = verify_both(path, log.every_checkpoint(), chunk_bytes=offset_of(log.lines, K) + shift)
    assert (report.ok, report.entries, len(report.checkpoints)) == (True, log.size, log.size + 1)


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 1000])
def test_chunks_smaller_than_a_line_verify(tmp_path: Path, chunk_bytes: int) -> None:
    small = Log([fixed_event(i) for i in range(3)])
    for size in (1, 3):
        report = verify_both(write_export(tmp_path, small.lines[:size]), [small.checkpoint(size)], chunk_bytes)
        assert (report.ok, report.entries) == (True, size)


def test_a_last_line_without_a_newline_verifies(tmp_path: Path, log: Log) -> None:
    path = write_export(tmp_path, log.lines, last_newline=False)
    assert verify_both(path, [log.checkpoint()], chunk_bytes=offset_of(log.lines, K)).ok


WHERE = {
    "first chunk": 1,
    "last line of the first chunk": K - 1,
    "first line of the second chunk": K,
    "middle chunk": 2 * K + 2,
    "last line of a middle chunk": 3 * K - 1,
    "first line of the last chunk": 4 * K,
    "last chunk": 4 * K + 1,
}


def _changed_event(log: Log, i: int) -> Sequence[str | bytes]:
    lines: list[str | bytes] = list(log.lines)
    lines[i] = json.dumps({"index": i, "leaf": log.leaves[i].decode(), "event": fixed_event(900 + i).to_json_obj()}, separators=(",", ":"))
    return lines


def _rewritten(log: Log, i: int) -> Sequence[str | bytes]:
    lines: list[str | bytes] = list(log.lines)
    lines[i] = export_line(i, fixed_event(900 + i).leaf_bytes())
    return lines


TAMPERING: dict[str, tuple[Callable[[Log, int], Sequence[str | bytes]], Callable[[int, int], tuple[Finding, int]]]] = {
    "changed event": (_changed_event, lambda i, _n: (Finding.LEAF_MISMATCH, i)),
    "rewritten entry": (_rewritten, lambda i, n: (Finding.ROOT_MISMATCH, n - 1)),
    "dropped": (lambda log, i: log.lines[:i] + log.lines[i + 1 :], lambda i, _n: (Finding.INDEX_SKIPPED, i)),
    "duplicated": (lambda log, i: [*log.lines[: i + 1], *log.lines[i:]], lambda i, _n: (Finding.INDEX_REPEATED, i)),
    "swapped with the next": (lambda log, i: [*log.lines[:i], log.lines[i + 1], log.lines[i], *log.lines[i + 2 :]], lambda i, _n: (Finding.INDEX_SKIPPED, i)),
    "not UTF-8": (lambda log, i: [*log.lines[:i], log.lines[i].encode() + b"\xff", *log.lines[i + 1 :]], lambda i, _n: (Finding.LINE_MALFORMED, i)),
    "blank": (lambda log, i: [*log.lines[:i], "", *log.lines[i + 1 :]], lambda i, _n: (Finding.LINE_MALFORMED, i)),
    "too long": (lambda log, i: [*log.lines[:i], " " * (MAX_LINE_CHARS + 9), *log.lines[i + 1 :]], lambda i, _n: (Finding.LINE_MALFORMED, i)),
}


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("tampering", TAMPERING)
def test_tampering_anywhere_in_the_chunks_is_named_as_the_sequential_verifier_names_it(tmp_path: Path, log: Log, tampering: str, where: str) -> None:
    tamper, expected = TAMPERING[tampering]
    i = WHERE[where]
    path = write_export(tmp_path, tamper(log, i))
    report = verify_both(path, [log.checkpoint()], chunk_bytes=offset_of(log.lines, K))
    assert (report.finding, report.first_bad_index) == expected(i, log.size)


@pytest.mark.parametrize("where", WHERE)
def test_a_rewritten_entry_is_caught_at_the_checkpoint_inside_its_chunk(tmp_path: Path, log: Log, where: str) -> None:
    i = WHERE[where]
    report = verify_both(write_export(tmp_path, _rewritten(log, i)), log.every_checkpoint(), chunk_bytes=offset_of(log.lines, K))
    assert (report.finding, report.first_bad_index, report.proven_size, report.entries) == (Finding.ROOT_MISMATCH, i, i, i + 1)


def test_a_missing_last_line_and_an_unproven_extra_line_are_named(tmp_path: Path, log: Log) -> None:
    chunk = offset_of(log.lines, K)
    truncated = verify_both(write_export(tmp_path, log.lines[:-1]), [log.checkpoint()], chunk)
    assert (truncated.finding, truncated.first_bad_index) == (Finding.EXPORT_TRUNCATED, log.size - 1)
    unproven = verify_both(write_export(tmp_path, log.lines), [log.checkpoint(log.size - 1)], chunk)
    assert (unproven.finding, unproven.first_bad_index) == (Finding.UNPROVEN_ENTRY, log.size - 1)
    early = verify_both(write_export(tmp_path, log.lines), [log.checkpoint(2)], chunk)
    assert (early.finding, early.first_bad_index) == (Finding.UNPROVEN_ENTRY, 2)


def test_sound_lines_the_fast_check_cannot_prove_verify_in_workers(tmp_path: Path) -> None:
    """Identifiers with ``"`` and ``\\``, ``details``, spaced JSON and a CR before the newline all take the full check."""
    items = [fixed_event(i) for i in range(4 * K)]
    items[1] = sample_event(1, request_id='req-"quoted"-\\-1')
    items[K] = sample_event(K, details={"rows": 3, "members_sha256": "ab" * 32})
    log = Log(items)
    lines: list[str | bytes] = list(log.lines)
    lines[2 * K] = json.dumps(json.loads(log.lines[2 * K]))
    lines[3 * K] = log.lines[3 * K] + "\r"
    report = verify_both(write_export(tmp_path, lines), log.every_checkpoint(), chunk_bytes=offset_of(log.lines, K))
    assert (report.ok, report.entries) == (True, log.size)


tamperings = st.sampled_from(["none", *TAMPERING.keys() - {"too long"}])


@settings(deadline=None, max_examples=40)
@given(st.lists(events, min_size=1, max_size=30), st.data())
def test_the_file_verifier_reports_what_the_sequential_verifier_reports(
    tmp_path_factory: pytest.TempPathFactory, items: list[AuditEvent], data: st.DataObject
) -> None:
    log = Log(items)
    tampering = data.draw(tamperings if log.size > 1 else tamperings.filter(lambda name: name != "swapped with the next"), label="tampering")
    i = data.draw(st.integers(0, log.size - (2 if tampering == "swapped with the next" else 1)), label="index")
    lines = log.lines if tampering == "none" else TAMPERING[tampering][0](log, i)
    sizes = data.draw(st.sets(st.integers(0, log.size)), label="checkpoint sizes")
    checkpoints = [log.checkpoint(size) for size in sorted(sizes)] or [log.checkpoint()]
    path = write_export(tmp_path_factory.mktemp("export"), lines)
    verify_both(path, checkpoints, chunk_bytes=data.draw(st.integers(1, offset_of(log.lines, log.size)), label="chunk bytes"))


@settings(deadline=None, max_examples=500)
@given(events, st.integers(0, 10**7), st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 3), st.binary(max_size=3)), min_size=1, max_size=3))
def test_the_fast_line_check_proves_only_what_the_full_check_accepts(event: AuditEvent, position: int, edits: list[tuple[int, int, bytes]]) -> None:
    raw = export_line(position, event.leaf_bytes()).encode("utf-8")
    if b"\\" not in event.leaf_bytes():  # no escaped character in the event: the fast check proves the line
        assert plain_leaf(raw, position) == event.leaf_bytes()
    for where, cut, insert in edits:
        at = where % (len(raw) + 1)
        raw = raw[:at] + insert + raw[at + cut :]
    leaf = plain_leaf(raw, position)
    if leaf is not None:
        assert read_line(raw.decode("utf-8"), position) == leaf


def test_a_worker_that_dies_ends_the_results_early_instead_of_hanging(tmp_path: Path, log: Log) -> None:
    """The file verifier then reads on sequentially from the last line it merged; here reading a bad file descriptor kills worker 1."""
    path = write_export(tmp_path, log.lines)
    with path.open("rb") as file:
        good, second = plan(path.stat().st_size, offset_of(log.lines, K), file.fileno(), [log.size])[:2]
        dead = ChunkTask(-1, second.begin, second.end, second.checkpoint_sizes)
        with checked_chunks(multiprocessing.get_context("fork"), [good, dead, good], workers=2) as results:
            got = list(results)
    assert [(r.offset, r.count, r.start, r.sound) for r in got] == [(0, K, 0, True)]


@settings(deadline=None, max_examples=200)
@given(st.integers(0, 300), st.data())
def test_tiles_merged_in_order_give_the_rfc6962_root(size: int, data: st.DataObject) -> None:
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    cuts = sorted(data.draw(st.sets(st.integers(0, size)), label="cuts") | {0, size})
    frontier = CompactRange()
    for begin, end in itertools.pairwise(cuts):
        for level, subtree in tiles(hashes, 0, begin, end):
            frontier.append_subtree(level, subtree)
        assert (frontier.size, frontier.root()) == (end, root(hashes[:end]))
    assert (frontier.size, frontier.root()) == (size, root(hashes))


def test_a_subtree_out_of_alignment_is_refused() -> None:
    frontier = CompactRange()
    frontier.append(leaf_hash(b"a"))
    with pytest.raises(ValueError, match="multiple of its width"):
        frontier.append_subtree(1, leaf_hash(b"b"))
