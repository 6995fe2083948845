"""The checkpointer on real SQLite and PostgreSQL: signed checkpoints of the stored tree, when they are due, and never a fork."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError

import audit.store
from api.runtime import Runtime
from audit import merkle
from audit.checkpoint import format_checkpoint, open_note, parse_checkpoint, parse_verifier_key, sign_note
from audit.checkpoints import RESET_ACTION, STATE_FILE, Checkpointer, Readiness, audit_checkpoints
from audit.errors import CheckpointConflictError
from audit.event import Actor, AuditEvent
from audit.live_verify import verify_stored
from audit.merkle import leaf_hash
from audit.queries import export
from audit.sequencer import Sequencer
from audit.store import AuditJournal, audit_journal, audit_leaves
from audit.verify import Finding, verify_export
from keys.signing import SigningPurpose
from tests.audit.factories import sample_event, signing_key
from vault.storage.engine import make_engine

T0 = datetime(2025, 6, 1, 9, 0, 0, tzinfo=UTC)  # before the key store's real clock: keys exist and are current
ORIGIN = "member-vault/audit"
OPERATOR = Actor(subject="os-user:ops", roles=("vault_admin",), client_id="vaultctl", acting_staff=None)

MakeCheckpointer = Callable[..., Checkpointer]


@pytest.fixture
def state_file(runtime: Runtime) -> Path:
    return runtime.settings.data_dir / STATE_FILE


@pytest.fixture
def checkpointer_for(runtime: Runtime, state_file: Path) -> MakeCheckpointer:
    """A Checkpointer on the runtime's signing keys and state file; on the test database unless given another engine."""

    def build(engine: Engine | None = None, *, every_events: int = 1000, every_seconds: int = 60, now: Callable[[], datetime] = lambda: T0) -> Checkpointer:
        return Checkpointer(
            engine or runtime.data_engine,
            runtime.signing,
            origin=ORIGIN,
            state_file=state_file,
            every_events=every_events,
            every_seconds=every_seconds,
            now=now,
        )

    return build


@pytest.fixture
def checkpointer(checkpointer_for: MakeCheckpointer) -> Checkpointer:
    return checkpointer_for()


@pytest.fixture
def restored_engine(backend: str, tmp_path: Path, sqlite_templates: tuple[Path, Path], request: pytest.FixtureRequest) -> Iterator[Engine]:
    """Another freshly migrated data database: the vault's database as a restore from an older backup would leave it."""
    if backend == "sqlite":
        path = tmp_path / "restored.db"
        shutil.copyfile(sqlite_templates[0], path)
        engine = make_engine(f"sqlite:///{path}")
        yield engine
        engine.dispose()
        return
    server = request.getfixturevalue("pg_server")
    data_url, _, keys_url, _ = server.fresh_pair()
    engine = make_engine(data_url)
    yield engine
    engine.dispose()
    server.drop(data_url)
    server.drop(keys_url)


def append(engine: Engine, events: list[AuditEvent]) -> None:
    """Journal the events and sequence them."""
    journal = AuditJournal()
    with engine.begin() as conn:
        for event in events:
            journal.append(conn, event, now=T0)
    Sequencer(engine).run_until_idle(now=T0)


def pinned(checkpointer: Checkpointer, engine: Engine) -> list[str]:
    with engine.connect() as conn:
        latest = checkpointer.latest(conn, now=T0)
    assert latest is not None
    return list(latest.verifier_keys)


def stored_rows(engine: Engine) -> list[tuple[int, bytes, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(audit_checkpoints.c.tree_size, audit_checkpoints.c.root_hash, audit_checkpoints.c.note).order_by(audit_checkpoints.c.checkpoint_id)
        )
        return [(int(size), bytes(root), str(note)) for size, root, note in rows]


# -- making checkpoints ------------------------------------------------------------------


def test_a_checkpoint_signs_the_current_tree_and_verifies_with_the_listed_verifier_key(
    runtime: Runtime, engine: Engine, checkpointer: Checkpointer, state_file: Path
) -> None:
    append(engine, [sample_event(n) for n in range(5)])

    signed = checkpointer.make(now=T0 + timedelta(microseconds=250))

    keys = pinned(checkpointer, engine)
    assert keys == list(checkpointer.verifier_keys(T0))
    assert len(keys) == 1
    opened = open_note(signed.note, [parse_verifier_key(k) for k in keys])
    assert opened.signers == (ORIGIN,)
    body = parse_checkpoint(opened.body)
    with engine.connect() as conn:
        root = audit.store.root(conn, 5)
    assert (body.origin, body.size, body.root_hash, body.time) == (ORIGIN, 5, root, T0)
    assert (signed.tree_size, signed.root_hash, signed.created_at) == (5, root, T0 + timedelta(microseconds=250))
    assert signed.signer_key_id == runtime.signing.current(SigningPurpose.audit).key_id
    assert stored_rows(engine) == [(5, root, signed.note)]
    assert state_file.read_text(encoding="utf-8") == signed.note


def test_the_stored_tree_root_at_each_checkpoint_size_matches_the_tree(engine: Engine, checkpointer: Checkpointer) -> None:
    events = [sample_event(n) for n in range(12)]
    notes = []
    for start, end in ((0, 3), (3, 7), (7, 12)):
        append(engine, events[start:end])
        notes.append(checkpointer.make(now=T0).note)

    rows = stored_rows(engine)
    assert [size for size, _, _ in rows] == [3, 7, 12]
    with engine.connect() as conn:
        for size, root, _ in rows:
            assert root == audit.store.root(conn, size) == merkle.root(leaf_hash(e.leaf_bytes()) for e in events[:size])
        report = verify_export(export(conn, 0, 12), notes, pinned(checkpointer, engine))
    assert (report.ok, report.entries, report.proven_size) == (True, 12, 12)
    assert [c.size for c in report.checkpoints] == [3, 7, 12]


def test_a_checkpoint_made_on_the_callers_connection_commits_with_it(engine: Engine, checkpointer: Checkpointer) -> None:
    append(engine, [sample_event(n) for n in range(2)])
    with engine.connect() as conn:
        with conn.begin():
            signed = checkpointer.make(conn, now=T0)
        assert checkpointer.latest(conn, now=T0) == (2, signed.root_hash, signed.note, tuple(pinned(checkpointer, engine)))


def test_latest_is_none_before_the_first_checkpoint_and_then_the_newest(engine: Engine, checkpointer: Checkpointer) -> None:
    with engine.connect() as conn:
        assert checkpointer.latest(conn) is None
    append(engine, [sample_event(0)])
    checkpointer.make(now=T0)
    append(engine, [sample_event(1)])
    newest = checkpointer.make(now=T0 + timedelta(seconds=1))
    with engine.connect() as conn:
        latest = checkpointer.latest(conn)
    assert latest is not None
    assert (latest.tree_size, latest.root_hash, latest.note) == (2, newest.root_hash, newest.note)


# -- when a checkpoint is due ------------------------------------------------------------


def test_due_counts_new_leaves_and_the_seconds_since_the_last_checkpoint(engine: Engine, checkpointer_for: MakeCheckpointer) -> None:
    clock = [T0]
    checkpointer = checkpointer_for(every_events=5, every_seconds=60, now=lambda: clock[0])
    assert checkpointer.due() is False  # an empty tree
    assert checkpointer.maybe_make() is None
    append(engine, [sample_event(0)])
    assert checkpointer.due() is True  # no checkpoint yet and one leaf
    first = checkpointer.maybe_make()
    assert first is not None
    assert first.tree_size == 1

    append(engine, [sample_event(n) for n in range(1, 5)])  # 4 new leaves
    clock[0] = T0 + timedelta(seconds=59)
    assert checkpointer.due() is False
    assert checkpointer.maybe_make() is None
    clock[0] = T0 + timedelta(seconds=60)
    assert checkpointer.due() is True
    assert checkpointer.due(T0 + timedelta(seconds=1)) is False  # an explicit time wins over the clock

    append(engine, [sample_event(5)])  # 5 new leaves
    assert checkpointer.due(T0 + timedelta(seconds=1)) is True
    second = checkpointer.maybe_make(T0 + timedelta(seconds=1))
    assert second is not None
    assert second.tree_size == 6

    clock[0] = T0 + timedelta(days=1)
    assert checkpointer.due() is False  # time alone, without a new leaf
    append(engine, [sample_event(6)])
    assert checkpointer.due() is True


def test_intervals_below_one_are_refused(checkpointer_for: MakeCheckpointer) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        checkpointer_for(every_events=0)
    with pytest.raises(ValueError, match="at least 1"):
        checkpointer_for(every_seconds=0)


# -- never a checkpoint the database does not extend --------------------------------------


def published_at_ten(engine: Engine, checkpointer: Checkpointer) -> str:
    append(engine, [sample_event(n) for n in range(10)])
    return checkpointer.make(now=T0).note


def test_a_restored_database_with_fewer_entries_is_refused_and_not_ready(
    engine: Engine, restored_engine: Engine, checkpointer: Checkpointer, checkpointer_for: MakeCheckpointer, state_file: Path
) -> None:
    published = published_at_ten(engine, checkpointer)
    append(restored_engine, [sample_event(n) for n in range(5)])
    restored = checkpointer_for(restored_engine)

    reason = "database does not extend the published checkpoint at size 10: the tree has 5 leaves"
    with pytest.raises(CheckpointConflictError, match=f"^{reason}$") as caught:
        restored.make(now=T0)
    assert (caught.value.code, caught.value.published_size, caught.value.tree_size) == ("published_size_ahead", 10, 5)
    with pytest.raises(CheckpointConflictError, match=f"^{reason}$"):
        restored.maybe_make(T0 + timedelta(days=1))  # due (five leaves, no checkpoint), and still refused
    assert restored.status() == Readiness(ok=False, reason=reason)
    assert stored_rows(restored_engine) == []
    assert state_file.read_text(encoding="utf-8") == published
    assert checkpointer.status() == Readiness(ok=True)


def test_a_restored_database_with_a_different_tenth_leaf_is_refused(
    engine: Engine, restored_engine: Engine, checkpointer: Checkpointer, checkpointer_for: MakeCheckpointer, state_file: Path
) -> None:
    published = published_at_ten(engine, checkpointer)
    append(restored_engine, [*(sample_event(n) for n in range(9)), sample_event(9, member_id="m-other"), sample_event(10)])
    restored = checkpointer_for(restored_engine)

    reason = "database does not extend the published checkpoint at size 10: the stored root at size 10 differs"
    with pytest.raises(CheckpointConflictError, match=f"^{reason}$") as caught:
        restored.make(now=T0)
    assert caught.value.code == "published_root_differs"
    assert restored.status() == Readiness(ok=False, reason=reason)
    assert stored_rows(restored_engine) == []
    assert state_file.read_text(encoding="utf-8") == published


def test_a_database_that_extends_the_published_checkpoint_is_signed(engine: Engine, checkpointer: Checkpointer) -> None:
    published_at_ten(engine, checkpointer)
    append(engine, [sample_event(10)])
    assert checkpointer.make(now=T0).tree_size == 11
    assert checkpointer.make(now=T0).tree_size == 11  # on demand, again at the same size


def test_accept_restore_journals_the_decision_keeps_the_old_file_and_signs_afresh(
    engine: Engine, restored_engine: Engine, checkpointer: Checkpointer, checkpointer_for: MakeCheckpointer, state_file: Path
) -> None:
    published = published_at_ten(engine, checkpointer)
    append(restored_engine, [sample_event(n) for n in range(5)])
    restored = checkpointer_for(restored_engine)

    reset = restored.accept_restore(OPERATOR, request_id="vaultctl-reset-1", now=T0 + timedelta(hours=1))

    assert reset.code == "published_size_ahead"
    assert reset.kept_as == state_file.with_name("last-checkpoint.conflict-20250601T100000Z")
    assert reset.kept_as.read_text(encoding="utf-8") == published
    assert reset.checkpoint.tree_size == 6  # the five restored entries and the reset event
    assert state_file.read_text(encoding="utf-8") == reset.checkpoint.note
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    with restored_engine.connect() as conn:
        leaf = audit.store.leaf(conn, 5)
    event = json.loads(leaf)
    assert event["action"] == RESET_ACTION
    assert event["actor"] == {"subject": "os-user:ops", "roles": ["vault_admin"], "client_id": "vaultctl", "acting_staff": None}
    assert (event["request_id"], event["reason_code"], event["resource_type"], event["resource_id"]) == (
        "vaultctl-reset-1",
        "published_size_ahead",
        "audit_checkpoint",
        "10",
    )
    assert (event["decision"], event["outcome"], event["member_id"], event["time"]) == ("allow", "reset", None, "2025-06-01T10:00:00Z")
    assert restored.status() == Readiness(ok=True)
    append(restored_engine, [sample_event(5)])
    assert restored.make(now=T0).tree_size == 7
    with restored_engine.connect() as conn:
        report, _ = verify_stored(conn, restored, T0)
    assert (report.ok, report.proven_size) == (True, 7)


def test_a_second_reset_at_the_same_second_keeps_both_old_files(
    engine: Engine, restored_engine: Engine, checkpointer: Checkpointer, checkpointer_for: MakeCheckpointer, state_file: Path
) -> None:
    published_at_ten(engine, checkpointer)
    append(restored_engine, [sample_event(n) for n in range(5)])
    first = checkpointer_for(restored_engine).accept_restore(OPERATOR, request_id="r-1", now=T0)
    second = checkpointer.accept_restore(OPERATOR, request_id="r-2", now=T0)  # back on the first database: size 6 ≠ its tree
    assert first.kept_as is not None
    assert second.kept_as == first.kept_as.with_name(f"{first.kept_as.name}-1")
    assert second.code == "published_root_differs"
    assert sorted(p.name for p in state_file.parent.iterdir()) == ["last-checkpoint", first.kept_as.name, second.kept_as.name]


def test_accept_restore_refuses_when_there_is_no_conflict(engine: Engine, checkpointer: Checkpointer, state_file: Path) -> None:
    published = published_at_ten(engine, checkpointer)
    with pytest.raises(ValueError, match="no checkpoint conflict to resolve"):
        checkpointer.accept_restore(OPERATOR, request_id="r-1", now=T0)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_journal)).scalar_one() == 10
    assert state_file.read_text(encoding="utf-8") == published
    assert sorted(p.name for p in state_file.parent.iterdir()) == ["last-checkpoint"]


def test_a_missing_state_file_is_a_first_start_only_while_no_checkpoint_is_stored(engine: Engine, checkpointer: Checkpointer, state_file: Path) -> None:
    append(engine, [sample_event(n) for n in range(3)])
    assert not state_file.exists()
    assert checkpointer.status() == Readiness(ok=True)
    checkpointer.make(now=T0)
    state_file.unlink()

    reason = f"the published checkpoint {state_file} is missing, but the database holds checkpoints up to size 3"
    assert checkpointer.status() == Readiness(ok=False, reason=reason)
    with pytest.raises(CheckpointConflictError, match="is missing") as caught:
        checkpointer.make(now=T0)
    assert caught.value.code == "published_checkpoint_missing"
    reset = checkpointer.accept_restore(OPERATOR, request_id="r-1", now=T0)
    assert (reset.kept_as, reset.code, reset.checkpoint.tree_size) == (None, "published_checkpoint_missing", 4)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("signed by another key", "no valid signature from an audit verifier key"),
        ("another origin", "it names another origin"),
        ("not a note", "not a signed checkpoint note"),
        ("not UTF-8", "not UTF-8 text"),
        ("too long", "larger than 65536 bytes"),
    ],
)
def test_a_state_file_that_is_not_a_checkpoint_signed_by_an_audit_key_is_not_ready(
    runtime: Runtime, checkpointer: Checkpointer, state_file: Path, content: str, why: str
) -> None:
    published_at_ten(runtime.data_engine, checkpointer)
    with runtime.data_engine.connect() as conn:
        root = audit.store.root(conn, 10)
    replacement = {
        "signed by another key": sign_note(format_checkpoint(ORIGIN, 10, root, T0), ORIGIN, signing_key("intruder")).encode(),
        "another origin": sign_note(
            format_checkpoint("elsewhere/audit", 10, root, T0), ORIGIN, runtime.signing.current(SigningPurpose.audit).private_key
        ).encode(),
        "not a note": b"member-vault/audit\n10\n",
        "not UTF-8": b"\xff\xfe",
        "too long": b"x" * 65537,
    }[content]
    state_file.write_bytes(replacement)
    readiness = checkpointer.status()
    assert readiness == Readiness(ok=False, reason=f"the published checkpoint {state_file} cannot be used: {why}")
    with pytest.raises(CheckpointConflictError) as caught:
        checkpointer.make(now=T0)
    assert caught.value.code == "published_checkpoint_unreadable"
    assert state_file.read_bytes() == replacement


def test_a_checkpoint_by_an_audit_key_that_has_since_rotated_out_still_counts_as_published(
    runtime: Runtime, engine: Engine, checkpointer: Checkpointer
) -> None:
    published_at_ten(engine, checkpointer)
    runtime.signing.rotate(SigningPurpose.audit, timedelta(0))
    assert checkpointer.status() == Readiness(ok=True)
    append(engine, [sample_event(10)])
    assert checkpointer.make(now=T0 + timedelta(days=1)).signer_key_id == runtime.signing.current(SigningPurpose.audit).key_id


# -- the state file ---------------------------------------------------------------------


def test_the_state_file_is_0600_and_replaced_by_a_rename(engine: Engine, checkpointer: Checkpointer, state_file: Path) -> None:
    append(engine, [sample_event(0)])
    checkpointer.make(now=T0)
    first = state_file.stat()
    append(engine, [sample_event(1)])
    second_note = checkpointer.make(now=T0).note
    second = state_file.stat()
    assert stat.S_IMODE(second.st_mode) == 0o600
    assert stat.S_IMODE(state_file.parent.stat().st_mode) == 0o700
    assert second.st_ino != first.st_ino  # a new file renamed over the old one, never rewritten in place
    assert state_file.read_text(encoding="utf-8") == second_note
    assert sorted(p.name for p in state_file.parent.iterdir()) == ["last-checkpoint"]


def test_a_failed_state_file_write_keeps_the_previous_checkpoint_and_signs_nothing(
    engine: Engine, checkpointer: Checkpointer, state_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    append(engine, [sample_event(0)])
    published = checkpointer.make(now=T0).note
    append(engine, [sample_event(1)])

    def disk_full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        checkpointer.make(now=T0)
    monkeypatch.undo()

    assert state_file.read_text(encoding="utf-8") == published
    assert sorted(p.name for p in state_file.parent.iterdir()) == ["last-checkpoint"]
    assert [size for size, _, _ in stored_rows(engine)] == [1]  # the row rolled back with the failed publication


# -- the table is append-only ------------------------------------------------------------


@pytest.mark.parametrize("statement", ["UPDATE audit_checkpoints SET tree_size = 0", "DELETE FROM audit_checkpoints"])
def test_the_application_cannot_change_a_stored_checkpoint(engine: Engine, backend: str, checkpointer: Checkpointer, statement: str) -> None:
    append(engine, [sample_event(0)])
    checkpointer.make(now=T0)
    expected = IntegrityError if backend == "sqlite" else ProgrammingError
    with pytest.raises(expected, match="append-only" if backend == "sqlite" else "permission denied"), engine.begin() as conn:
        conn.execute(text(statement))
    assert [size for size, _, _ in stored_rows(engine)] == [1]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_refuses_replacing_a_stored_checkpoint(engine: Engine, checkpointer: Checkpointer) -> None:
    append(engine, [sample_event(0)])
    checkpointer.make(now=T0)
    with pytest.raises(IntegrityError, match="append-only"), engine.begin() as conn:
        conn.execute(text("INSERT OR REPLACE INTO audit_checkpoints SELECT * FROM audit_checkpoints"))


@pytest.mark.parametrize("backend", ["postgres"])
def test_postgres_application_role_holds_only_select_and_insert_on_checkpoints(engine: Engine, owner_sql: Callable[[str], None]) -> None:
    rights = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    with engine.connect() as conn:
        held = [r for r in rights if conn.execute(text("SELECT has_table_privilege('audit_checkpoints', :r)"), {"r": r}).scalar_one()]
    assert held == ["SELECT", "INSERT"]
    with pytest.raises(DBAPIError, match="audit tables are append-only"):
        owner_sql("TRUNCATE audit_checkpoints")


# -- the live verifier -------------------------------------------------------------------


def test_the_live_verifier_passes_on_a_clean_database(engine: Engine, checkpointer: Checkpointer, state_file: Path) -> None:
    with engine.connect() as conn:
        report, labels = verify_stored(conn, checkpointer, T0)
    assert report.finding is Finding.NO_CHECKPOINT
    for start, end in ((0, 4), (4, 9)):
        append(engine, [sample_event(n) for n in range(start, end)])
        checkpointer.make(now=T0)
    append(engine, [sample_event(9)])  # sequenced after the last checkpoint: not covered
    with engine.connect() as conn:
        report, labels = verify_stored(conn, checkpointer, T0)
    assert (report.ok, report.entries, report.proven_size) == (True, 9, 9)
    assert labels == ("stored checkpoint 1, size 4", "stored checkpoint 2, size 9", f"the published checkpoint {state_file}")


def test_the_live_verifier_reports_a_published_checkpoint_the_database_does_not_reach(
    engine: Engine, restored_engine: Engine, checkpointer: Checkpointer, checkpointer_for: MakeCheckpointer
) -> None:
    published_at_ten(engine, checkpointer)
    append(restored_engine, [sample_event(n) for n in range(5)])
    with restored_engine.connect() as conn:
        report, _ = verify_stored(conn, checkpointer_for(restored_engine), T0)
    assert (report.finding, report.first_bad_index) == (Finding.EXPORT_TRUNCATED, 5)


@pytest.mark.parametrize("edited", [0, 5, 7])
def test_the_live_verifier_names_the_index_of_a_leaf_edited_with_the_trigger_dropped(
    engine: Engine, checkpointer: Checkpointer, forge_leaf: Callable[[int, bytes], None], edited: int
) -> None:
    for start, end in ((0, 4), (4, 8)):  # sparse checkpoints: the root alone would point at 3 or 7
        append(engine, [sample_event(n) for n in range(start, end)])
        checkpointer.make(now=T0)
    forge_leaf(edited, sample_event(edited, member_id="m-someone-else").leaf_bytes())
    with engine.connect() as conn:
        report, labels = verify_stored(conn, checkpointer, T0)
    assert (report.finding, report.first_bad_index, report.proven_size) == (Finding.ROOT_MISMATCH, edited, 0 if edited < 4 else 4)
    assert report.checkpoint_number is not None
    assert labels[report.checkpoint_number] == ("stored checkpoint 1, size 4" if edited < 4 else "stored checkpoint 2, size 8")


def test_the_live_verifier_catches_an_edited_stored_node(engine: Engine, backend: str, checkpointer: Checkpointer, owner_sql: Callable[[str], None]) -> None:
    append(engine, [sample_event(n) for n in range(7)])  # root(7) is built from the nodes (2, 0), (1, 2) and (0, 6)
    checkpointer.make(now=T0)
    trigger = "audit_nodes_append_only ON audit_nodes" if backend == "postgres" else "audit_nodes_no_update"
    owner_sql(f"DROP TRIGGER {trigger}")
    zeros = "decode(repeat('00', 32), 'hex')" if backend == "postgres" else "zeroblob(32)"
    owner_sql(f"UPDATE audit_nodes SET hash = {zeros} WHERE level = 0 AND node_index = 6")
    with engine.connect() as conn:
        report, labels = verify_stored(conn, checkpointer, T0)
        leaves = conn.execute(select(func.count()).select_from(audit_leaves)).scalar_one()
    assert leaves == 7
    assert (report.finding, report.first_bad_index, report.entries) == (Finding.ROOT_MISMATCH, 6, 7)
    assert report.checkpoint_number is not None
    assert labels[report.checkpoint_number] == "stored checkpoint 1, size 7"
