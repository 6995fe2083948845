"""The offline verifier: clean exports pass; changed, removed, reordered, inserted lines and bad checkpoints are named."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from audit.errors import VerificationError, VerifierKeyError
from audit.event import AuditEvent
from audit.merkle import EMPTY_ROOT, CompactRange, leaf_hash
from audit.verify import Finding, Report, export_line, verify_export
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
