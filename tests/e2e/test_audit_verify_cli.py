"""``vaultctl audit checkpoint``, ``audit export`` and ``audit verify`` end to end: the real command in a subprocess.

The live commands run against a fresh vault on SQLite and PostgreSQL (the
``make_settings`` fixture); events are journaled in-process through the real
journal. The offline ``audit verify`` runs in an empty directory with no
``VAULT_*`` variable at all, which proves it needs neither settings nor a
database nor the keys.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import make_url

from api.runtime import open_runtime
from api.settings import Settings
from audit import merkle
from audit.checkpoint import format_checkpoint, open_note, parse_checkpoint, parse_verifier_key, sign_note
from audit.checkpoints import DEFAULT_EVERY_EVENTS, DEFAULT_EVERY_SECONDS, STATE_FILE, Checkpointer
from audit.sequencer import Sequencer
from audit.store import AuditJournal
from audit.verify import export_line
from keys.signing import SigningPurpose
from tests.audit.factories import NOW, sample_event
from tests.e2e.test_cli import one_line, vaultctl

ORIGIN = "member-vault/audit"
ROOT_MISMATCH = "the tree at a checkpoint's size does not have the checkpoint's root"

pytestmark = pytest.mark.usefixtures("clean_env")


@dataclass(frozen=True)
class Vault:
    settings: Settings
    env: dict[str, str]
    cwd: Path

    def run(self, *args: str) -> tuple[int, str, str]:
        result = vaultctl(self.cwd, *args, **self.env)
        return result.returncode, result.stdout, result.stderr

    def journal(self, first: int, end: int) -> None:
        """Journal ``sample_event(first … end - 1)``, each in its own transaction, as the API would."""
        rt = open_runtime(self.settings)
        try:
            for n in range(first, end):
                with rt.data_engine.begin() as conn:
                    AuditJournal().append(conn, sample_event(n))
        finally:
            rt.close()

    def checkpoint_in_process(self) -> str:
        """Sequence and sign a checkpoint the way ``audit checkpoint`` does, without a subprocess; the note."""
        rt = open_runtime(self.settings)
        try:
            Sequencer(rt.data_engine).run_until_idle()
            checkpointer = Checkpointer(
                rt.data_engine,
                rt.signing,
                origin=ORIGIN,
                state_file=self.state_file,
                every_events=DEFAULT_EVERY_EVENTS,
                every_seconds=DEFAULT_EVERY_SECONDS,
            )
            return checkpointer.make().note
        finally:
            rt.close()

    def audit_key(self) -> str:
        code, out, err = self.run("audit", "keys")
        assert (code, err) == (0, ""), err
        return out.removesuffix("\n")

    @property
    def state_file(self) -> Path:
        return self.settings.data_dir / STATE_FILE


@pytest.fixture
def vault(make_settings: Callable[..., Settings], tmp_path: Path) -> Vault:
    settings = make_settings()
    env = {"VAULT_DATA_DIR": str(settings.data_dir)}
    for name in ("database_url", "migration_database_url", "keystore_url", "keystore_migration_url"):
        value = getattr(settings, name)
        if value is not None:
            env[f"VAULT_{name.upper()}"] = value.get_secret_value()
    cwd = tmp_path / "work"
    cwd.mkdir()
    return Vault(settings, env, cwd)


@pytest.fixture
def superuser_sql(vault: Vault, backend: str, request: pytest.FixtureRequest) -> Callable[[str], None]:
    """SQL with every right on the vault's data database: the PostgreSQL superuser, or a plain sqlite3 connection."""
    url = make_url(vault.settings.data_url)
    if backend == "postgres":
        server = request.getfixturevalue("pg_server")
        return lambda sql: server.admin(sql, database=str(url.database))

    def run(sql: str) -> None:
        with contextlib.closing(sqlite3.connect(str(url.database), isolation_level=None)) as raw:
            raw.execute(sql)

    return run


# -- audit checkpoint -------------------------------------------------------------------


def test_audit_checkpoint_sequences_the_journal_and_prints_the_published_note(vault: Vault) -> None:
    vault.journal(0, 3)
    code, out, err = vault.run("audit", "checkpoint")
    assert (code, err) == (0, "")

    opened = open_note(out, [parse_verifier_key(vault.audit_key())])
    checkpoint = parse_checkpoint(opened.body)
    assert (checkpoint.origin, checkpoint.size) == (ORIGIN, 3)
    assert checkpoint.root_hash == merkle.root(merkle.leaf_hash(sample_event(n).leaf_bytes()) for n in range(3))
    assert vault.state_file.read_text(encoding="utf-8") == out
    assert stat.S_IMODE(vault.state_file.stat().st_mode) == 0o600


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_restored_database_is_refused_until_accept_restore_which_keeps_the_old_checkpoint(vault: Vault) -> None:
    vault.journal(0, 3)
    assert vault.run("audit", "checkpoint")[0] == 0
    rt = open_runtime(vault.settings)
    try:
        key = rt.signing.current(SigningPurpose.audit).private_key
    finally:
        rt.close()
    root = merkle.root(merkle.leaf_hash(sample_event(n).leaf_bytes()) for n in range(10))
    later = sign_note(format_checkpoint(ORIGIN, 10, root, NOW), ORIGIN, key)
    vault.state_file.write_text(later, encoding="utf-8")  # published before the database was restored to 3 entries

    code, out, err = vault.run("audit", "checkpoint")
    assert (code, out) == (1, "")
    assert one_line(err) == (
        "vaultctl: database does not extend the published checkpoint at size 10: the tree has 3 leaves; "
        "resolve it with `vaultctl audit checkpoint --accept-restore` (SECURITY.md: Resolving a checkpoint conflict)"
    )
    code, out, err = vault.run("audit", "verify")
    assert (code, out) == (1, "")
    assert one_line(err) == "vaultctl: verification failed at index 3: the export ends before the size of a checkpoint"

    code, out, err = vault.run("audit", "checkpoint", "--accept-restore")
    assert code == 0, err
    assert parse_checkpoint(open_note(out, [parse_verifier_key(vault.audit_key())]).body).size == 4  # with the reset event
    (kept,) = vault.state_file.parent.glob("last-checkpoint.conflict-*")
    assert kept.read_text(encoding="utf-8") == later
    assert one_line(err) == f"resolved: database does not extend the published checkpoint at size 10: the tree has 3 leaves; old checkpoint kept as {kept}"
    assert vault.state_file.read_text(encoding="utf-8") == out
    assert vault.run("audit", "verify") == (0, "ok: 4 entries, checkpoints verified up to size 4\n", "")

    code, out, err = vault.run("audit", "checkpoint", "--accept-restore")
    assert (code, out) == (1, "")
    assert one_line(err) == "vaultctl: no checkpoint conflict to resolve: the database extends the published checkpoint"


# -- audit verify, live ---------------------------------------------------------------


def test_live_audit_verify_passes_on_a_clean_database(vault: Vault) -> None:
    vault.journal(0, 3)
    assert vault.run("audit", "checkpoint")[0] == 0
    vault.journal(3, 5)
    assert vault.run("audit", "checkpoint")[0] == 0
    vault.journal(5, 6)  # not sequenced, not covered
    assert vault.run("audit", "verify") == (0, "ok: 5 entries, checkpoints verified up to size 5\n", "")


@pytest.mark.parametrize("edited", [2, 5])
def test_live_audit_verify_names_the_index_of_a_leaf_edited_with_the_trigger_dropped(
    vault: Vault, backend: str, superuser_sql: Callable[[str], None], edited: int
) -> None:
    vault.journal(0, 8)
    assert vault.run("audit", "checkpoint")[0] == 0
    forged = sample_event(edited, member_id="m-someone-else").leaf_bytes().hex()
    if backend == "postgres":
        superuser_sql("DROP TRIGGER audit_journal_append_only ON audit_journal")
        literal = f"decode('{forged}', 'hex')"
    else:
        superuser_sql("DROP TRIGGER audit_journal_no_update")
        literal = f"X'{forged}'"
    superuser_sql(f"UPDATE audit_journal SET leaf = {literal} WHERE journal_id = (SELECT journal_id FROM audit_leaves WHERE leaf_index = {edited})")

    code, out, err = vault.run("audit", "verify")
    assert (code, out) == (1, "")
    assert one_line(err) == f"vaultctl: verification failed at index {edited}: {ROOT_MISMATCH} (stored checkpoint 1, size 8)"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_live_audit_verify_before_any_checkpoint_fails_with_one_line(vault: Vault) -> None:
    code, out, err = vault.run("audit", "verify")
    assert (code, out) == (1, "")
    assert one_line(err) == "vaultctl: no checkpoint has been made yet: run `vaultctl audit checkpoint`"


# -- audit export --------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_audit_export_writes_the_api_lines_of_a_range(vault: Vault) -> None:
    vault.journal(0, 6)
    vault.checkpoint_in_process()
    out_file = vault.cwd / "part.ndjson"
    code, out, err = vault.run("audit", "export", "--out", str(out_file), "--from", "2", "--to", "5")
    assert code == 0, err
    assert out == f"exported 3 entries [2, 5) to {out_file}\n"
    assert out_file.read_text(encoding="utf-8") == "".join(export_line(n, sample_event(n).leaf_bytes()) + "\n" for n in range(2, 5))
    assert [json.loads(line)["index"] for line in out_file.read_text(encoding="utf-8").splitlines()] == [2, 3, 4]
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600


@pytest.mark.parametrize("backend", ["sqlite"])
def test_audit_export_beyond_the_tree_fails_with_one_line_and_writes_nothing(vault: Vault) -> None:
    vault.journal(0, 2)
    vault.checkpoint_in_process()
    code, out, err = vault.run("audit", "export", "--out", str(vault.cwd / "x.ndjson"), "--to", "99")
    assert (code, out) == (1, "")
    assert one_line(err) == "vaultctl: tree size 99 is beyond the current tree size 2"
    assert list(vault.cwd.iterdir()) == []


# -- audit verify, offline ------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """What an auditor is handed: an export, checkpoints at sizes 2, 4 and 6, the pinned verifier key."""

    export: Path
    checkpoints: tuple[Path, ...]
    key: str

    def args(self, *, export: Path | None = None, checkpoints: tuple[Path, ...] | None = None, key: str | None = None) -> list[str]:
        args = ["audit", "verify", "--export", str(export or self.export)]
        for path in checkpoints or self.checkpoints:
            args += ["--checkpoint", str(path)]
        return [*args, "--verifier-key", key or self.key]


@pytest.fixture
def bundle(vault: Vault, tmp_path: Path) -> Bundle:
    handed = tmp_path / "handed"
    handed.mkdir()
    checkpoints = []
    for end in (2, 4, 6):
        vault.journal(end - 2, end)
        path = handed / f"checkpoint-{end}.txt"
        path.write_text(vault.checkpoint_in_process(), encoding="utf-8")
        checkpoints.append(path)
    code, _, err = vault.run("audit", "export", "--out", str(handed / "audit.ndjson"))
    assert code == 0, err
    return Bundle(handed / "audit.ndjson", tuple(checkpoints), vault.audit_key())


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    path = tmp_path / "auditor"
    path.mkdir()
    return path


def offline(cwd: Path, args: list[str]) -> tuple[int, str, str]:
    """``vaultctl`` with nothing but PATH and HOME: no VAULT_* variable, no data directory, no .env."""
    result = vaultctl(cwd, *args)
    return result.returncode, result.stdout, result.stderr


def edit_line(path: Path, index: int, edit: Callable[[dict[str, object]], None]) -> Path:
    lines = path.read_text(encoding="utf-8").splitlines()
    obj = json.loads(lines[index])
    edit(obj)
    lines[index] = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    edited = path.with_name(f"edited-{index}.ndjson")
    edited.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return edited


@pytest.mark.parametrize("backend", ["sqlite"])
def test_offline_verify_passes_on_a_fresh_export_with_no_settings_in_an_empty_directory(bundle: Bundle, empty_dir: Path) -> None:
    assert offline(empty_dir, bundle.args()) == (0, "ok: 6 entries, checkpoints verified up to size 6\n", "")
    assert list(empty_dir.iterdir()) == []


@pytest.mark.parametrize("backend", ["sqlite"])
def test_offline_verify_names_the_index_of_an_event_edited_without_its_leaf(bundle: Bundle, empty_dir: Path) -> None:
    def hide(obj: dict[str, object]) -> None:
        event = obj["event"]
        assert isinstance(event, dict)
        event["member_id"] = "m-someone-else"

    code, out, err = offline(empty_dir, bundle.args(export=edit_line(bundle.export, 3, hide)))
    assert (code, out) == (1, "")
    assert one_line(err) == "vaultctl: verification failed at index 3: the leaf is not the canonical JSON of the event"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_offline_verify_names_the_index_of_an_entry_rewritten_consistently(bundle: Bundle, empty_dir: Path) -> None:
    forged = sample_event(3, member_id="m-someone-else")

    def rewrite(obj: dict[str, object]) -> None:
        obj["leaf"] = forged.leaf_bytes().decode("utf-8")
        obj["event"] = forged.to_json_obj()

    code, out, err = offline(empty_dir, bundle.args(export=edit_line(bundle.export, 3, rewrite)))
    assert (code, out) == (1, "")
    assert one_line(err) == f"vaultctl: verification failed at index 3: {ROOT_MISMATCH} (checkpoint 2, {bundle.checkpoints[1]})"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_offline_verify_catches_a_removed_last_entry(bundle: Bundle, empty_dir: Path) -> None:
    truncated = bundle.export.with_name("truncated.ndjson")
    truncated.write_text("".join(line + "\n" for line in bundle.export.read_text(encoding="utf-8").splitlines()[:5]), encoding="utf-8")
    code, out, err = offline(empty_dir, bundle.args(export=truncated))
    assert (code, out) == (1, "")
    assert one_line(err) == "vaultctl: verification failed at index 5: the export ends before the size of a checkpoint"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_offline_verify_rejects_a_checkpoint_re_signed_with_another_key(bundle: Bundle, empty_dir: Path) -> None:
    body = open_note(bundle.checkpoints[2].read_text(encoding="utf-8"), [parse_verifier_key(bundle.key)]).body
    resigned = bundle.checkpoints[2].with_name("resigned.txt")
    resigned.write_text(sign_note(body, ORIGIN, Ed25519PrivateKey.generate()), encoding="utf-8")

    code, out, err = offline(empty_dir, bundle.args(checkpoints=(*bundle.checkpoints[:2], resigned)))
    assert (code, out) == (1, "")
    assert one_line(err) == f"vaultctl: verification failed: a checkpoint has no valid signature from a pinned verifier key (checkpoint 3, {resigned})"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["audit", "verify", "--export", "e.ndjson"], "offline verification needs --export, at least one --checkpoint and at least one --verifier-key"),
        (
            ["audit", "verify", "--export", "e.ndjson", "--checkpoint", "c.txt", "--verifier-key", "x"],
            "--verifier-key 1: verifier key must be <name>+<key id>+<key>",
        ),
    ],
    ids=["missing-options", "malformed-key"],
)
def test_offline_verify_refuses_bad_arguments_with_one_line(empty_dir: Path, args: list[str], message: str) -> None:
    code, out, err = offline(empty_dir, args)
    assert (code, out) == (1, "")
    assert one_line(err) == f"vaultctl: {message}"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_offline_verify_of_a_missing_export_fails_with_one_line(bundle: Bundle, empty_dir: Path) -> None:
    missing = empty_dir / "nowhere.ndjson"
    code, out, err = offline(empty_dir, bundle.args(export=missing))
    assert (code, out) == (1, "")
    assert one_line(err) == f"vaultctl: cannot read {missing}: No such file or directory"
