"""``vaultctl`` end to end: the real command in a subprocess, on a temporary data directory.

Each run gets an environment built from scratch (PATH, HOME and the ``VAULT_*``
variables the test sets) and runs in the test's own directory, so neither the
developer's environment nor a ``.env`` file reaches it. What the command wrote
is checked through the vault's own runtime (decrypting every member) or, for
"nothing was written", through a plain dump of the SQLite files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from api.runtime import open_runtime
from api.settings import Settings
from keys.local import LocalKeyring
from vault import data_map as dm
from vault.storage.schema import ledger_entries, members, treatments

if TYPE_CHECKING:
    from tests.conftest import HsmToken

VAULTCTL = Path(sys.executable).with_name("vaultctl")
ALL_MEMBER_CATEGORIES = frozenset(dm.categories_of(dm.Table.members))
COUNTS_LINE = re.compile(r"^seeded (\d+) members, (\d+) treatments, (\d+) ledger entries$")

pytestmark = pytest.mark.usefixtures("clean_env")


# -- helpers -------------------------------------------------------------------


def vaultctl(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``vaultctl`` with only PATH, HOME and the given variables."""
    full_env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(cwd), **env}
    return subprocess.run(
        [str(VAULTCTL), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=False,
    )


def one_line(stderr: str) -> str:
    """The single line of a failure's standard error (no traceback, no box)."""
    assert stderr.endswith("\n"), stderr
    assert stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    return stderr.removesuffix("\n")


def last_line(stdout: str) -> str:
    return stdout.rstrip("\n").rsplit("\n", 1)[-1]


def sqlite_dump(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return list(conn.iterdump())


def sqlite_count(path: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (n,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(n)


def snapshot(data_dir: Path) -> dict[str, object]:
    """Everything ``init`` or a refused command could change: the tree, the keyring, both databases' rows."""
    tree = sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if not p.name.endswith(("-wal", "-shm")))
    return {
        "tree": tree,
        "keyring": (data_dir / "keys" / "keyring.json").read_bytes(),
        "vault.db": sqlite_dump(data_dir / "vault.db"),
        "keystore.db": sqlite_dump(data_dir / "keys" / "keystore.db"),
    }


def local_settings(data_dir: Path) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir)


def read_every_member(settings: Settings) -> list[tuple[str, str, str]]:
    """Decrypt every member (all categories) and their treatments; return sorted (full_name, phone, card_no)."""
    rt = open_runtime(settings)
    try:
        with rt.data_engine.connect() as conn:
            ids = conn.scalars(select(members.c.member_id)).all()
            out = []
            for member_id in ids:
                view = rt.members.read(conn, member_id, ALL_MEMBER_CATEGORIES)
                assert set(view.values) == ALL_MEMBER_CATEGORIES
                assert rt.treatments.list_for_member(conn, member_id) != []
                out.append(
                    (
                        str(view.values[dm.Category.identity]["full_name"]),
                        str(view.values[dm.Category.contact]["phone"]),
                        str(view.values[dm.Category.membership]["card_no"]),
                    )
                )
    finally:
        rt.close()
    return sorted(out)


def table_counts(settings: Settings) -> tuple[int, int, int]:
    rt = open_runtime(settings)
    try:
        with rt.data_engine.connect() as conn:
            return tuple(int(conn.scalar(select(func.count()).select_from(t)) or 0) for t in (members, treatments, ledger_entries))
    finally:
        rt.close()


def kek_references(settings: Settings) -> dict[int, int]:
    rt = open_runtime(settings)
    try:
        return rt.keys.kek_references()
    finally:
        rt.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


@pytest.fixture
def env(data_dir: Path) -> dict[str, str]:
    return {"VAULT_DATA_DIR": str(data_dir)}


@pytest.fixture
def initialized(tmp_path: Path, data_dir: Path, env: dict[str, str]) -> Path:
    result = vaultctl(tmp_path, "init", **env)
    assert result.returncode == 0, result.stderr
    return data_dir


# -- help ----------------------------------------------------------------------


def test_help_lists_init_demo_and_keys(tmp_path: Path) -> None:
    result = vaultctl(tmp_path, "--help")
    assert result.returncode == 0
    assert result.stderr == ""
    commands = set(re.findall(r"^│ (\w[\w-]*) ", result.stdout, flags=re.MULTILINE))
    assert {"init", "demo", "keys"} <= commands


# -- init ----------------------------------------------------------------------


def test_init_creates_the_data_directory_layout(tmp_path: Path, data_dir: Path, env: dict[str, str]) -> None:
    result = vaultctl(tmp_path, "init", **env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert last_line(result.stdout) == f"vault ready in {data_dir}"
    for sub in ("audit", "tokens", "exports", "keys"):
        assert (data_dir / sub).is_dir()
    assert (data_dir / "vault.db").is_file()
    assert (data_dir / "keys" / "keystore.db").is_file()
    keyring = data_dir / "keys" / "keyring.json"
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
    doc = json.loads(keyring.read_text())
    assert doc["current"] == 1
    assert [(k["version"], k["retired"]) for k in doc["keks"]] == [(1, False)]
    assert table_counts(local_settings(data_dir)) == (0, 0, 0)


def test_init_twice_changes_nothing(tmp_path: Path, initialized: Path, env: dict[str, str]) -> None:
    before = snapshot(initialized)
    result = vaultctl(tmp_path, "init", **env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "created" not in result.stdout
    after = snapshot(initialized)
    assert after["keyring"] == before["keyring"]
    assert after == before
    assert stat.S_IMODE((initialized / "keys" / "keyring.json").stat().st_mode) == 0o600


@pytest.mark.parametrize("command", [["init"], ["demo", "seed", "--members", "5"]], ids=["init", "demo-seed"])
def test_world_readable_keyring_is_refused_with_chmod_hint(tmp_path: Path, initialized: Path, env: dict[str, str], command: list[str]) -> None:
    keyring = initialized / "keys" / "keyring.json"
    keyring.chmod(0o644)
    result = vaultctl(tmp_path, *command, **env)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "keyring" in line
    assert "chmod 600" in line
    assert str(keyring) in line
    assert "seeded" not in result.stdout
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o644
    assert sqlite_count(initialized / "vault.db", "members") == 0


def test_init_with_invalid_settings_fails_with_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    """A bad VAULT_* value gives a one-line reason, as every other failure does, not a traceback."""
    result = vaultctl(tmp_path, "init", **env, VAULT_ENV="staging")
    assert result.returncode != 0
    line = one_line(result.stderr)
    assert line.startswith("vaultctl: ")
    assert not (tmp_path / "var").exists()


def test_init_on_a_data_dir_that_is_a_file_fails_with_one_line(tmp_path: Path, data_dir: Path, env: dict[str, str]) -> None:
    data_dir.write_text("not a directory")
    result = vaultctl(tmp_path, "init", **env)
    assert result.returncode != 0
    line = one_line(result.stderr)
    assert line.startswith("vaultctl: ")
    assert data_dir.read_text() == "not a directory"


# -- demo seed -----------------------------------------------------------------


def _keyring_only(data_dir: Path, tmp_path: Path) -> None:
    LocalKeyring.create(data_dir / "keys" / "keyring.json")


def _empty_vault_db(data_dir: Path, tmp_path: Path) -> None:
    result = vaultctl(tmp_path, "init", VAULT_DATA_DIR=str(data_dir))
    assert result.returncode == 0, result.stderr
    (data_dir / "vault.db").unlink()
    (data_dir / "vault.db").touch()


@pytest.mark.parametrize("prepare", [_keyring_only, _empty_vault_db], ids=["keyring-only", "empty-vault-db"])
def test_demo_seed_on_unmigrated_database_fails_with_one_line(
    tmp_path: Path, data_dir: Path, env: dict[str, str], prepare: Callable[[Path, Path], None]
) -> None:
    prepare(data_dir, tmp_path)
    result = vaultctl(tmp_path, "demo", "seed", "--members", "5", **env)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "not migrated" in line
    assert line == "vaultctl: the data database is not migrated (run vaultctl init)"
    assert "seeded" not in result.stdout


def test_demo_seed_zero_members_is_rejected_by_option_validation(tmp_path: Path, initialized: Path, env: dict[str, str]) -> None:
    result = vaultctl(tmp_path, "demo", "seed", "--members", "0", **env)
    assert result.returncode == 2
    assert "--members" in result.stderr
    assert result.stdout == ""
    assert sqlite_count(initialized / "vault.db", "members") == 0


def test_demo_seed_is_refused_in_production_and_writes_nothing(tmp_path: Path, initialized: Path, env: dict[str, str]) -> None:
    before = snapshot(initialized)
    result = vaultctl(tmp_path, "demo", "seed", "--members", "5", **env, VAULT_ENV="production")
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "production" in line
    assert result.stdout == ""
    assert sqlite_count(initialized / "vault.db", "members") == 0
    after = snapshot(initialized)
    for name in ("vault.db", "keystore.db"):
        assert [row[:40] for row in after[name] if row not in before[name]] == [], f"{name} was written"
    assert after == before


def test_demo_seed_prints_counts_and_if_empty_then_skips(tmp_path: Path, initialized: Path, env: dict[str, str]) -> None:
    result = vaultctl(tmp_path, "demo", "seed", "--members", "30", "--seed", "7", **env)
    assert result.returncode == 0, result.stderr
    match = COUNTS_LINE.match(last_line(result.stdout))
    assert match is not None, result.stdout
    printed = tuple(int(g) for g in match.groups())
    assert printed[0] == 30
    assert table_counts(local_settings(initialized)) == printed

    again = vaultctl(tmp_path, "demo", "seed", "--members", "30", "--seed", "7", "--if-empty", **env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "vault already has members; not seeding\n"
    assert table_counts(local_settings(initialized)) == printed


def test_demo_seed_stdout_is_only_the_result_line(tmp_path: Path, initialized: Path, env: dict[str, str]) -> None:
    """The progress bar goes to standard error (module docstring); standard output carries only the result."""
    result = vaultctl(tmp_path, "demo", "seed", "--members", "3", "--seed", "2", **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1, result.stdout
    assert COUNTS_LINE.match(result.stdout.removesuffix("\n")) is not None, result.stdout
    assert "seeding members" in result.stderr


def test_same_seed_gives_same_member_contents_in_two_data_dirs(tmp_path: Path) -> None:
    contents = []
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        data_dir = tmp_path / name
        assert vaultctl(tmp_path, "init", VAULT_DATA_DIR=str(data_dir)).returncode == 0
        result = vaultctl(tmp_path, "demo", "seed", "--members", "30", "--seed", seed, VAULT_DATA_DIR=str(data_dir))
        assert result.returncode == 0, result.stderr
        contents.append(read_every_member(local_settings(data_dir)))
    same_a, same_b, other = contents
    assert len(same_a) == 30
    assert Counter(same_a) == Counter(same_b)
    assert Counter(other) != Counter(same_a)
    assert {card for _, _, card in same_a} == {f"MV{i:010d}" for i in range(30)}


# -- keys rotate -----------------------------------------------------------------


def test_keys_rotate_kek_rewraps_everything_and_members_still_read(tmp_path: Path, initialized: Path, env: dict[str, str]) -> None:
    seeded = vaultctl(tmp_path, "demo", "seed", "--members", "30", "--seed", "3", **env)
    assert seeded.returncode == 0, seeded.stderr
    settings = local_settings(initialized)
    before = read_every_member(settings)
    refs = kek_references(settings)
    assert list(refs) == [1]

    result = vaultctl(tmp_path, "keys", "rotate", "--kind", "kek", **env)
    assert result.returncode == 0, result.stderr
    assert last_line(result.stdout) == f"rotated to KEK version 2; re-wrapped {refs[1]} keys; retired versions: 1"
    assert kek_references(settings) == {2: refs[1]}
    assert read_every_member(settings) == before
    keyring = initialized / "keys" / "keyring.json"
    doc = json.loads(keyring.read_text())
    assert doc["current"] == 2
    assert [(k["version"], k["retired"], k["key"] is None) for k in doc["keks"]] == [(1, True, True), (2, False, False)]
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600

    second = vaultctl(tmp_path, "keys", "rotate", "--kind", "kek", **env)
    assert second.returncode == 0, second.stderr
    assert last_line(second.stdout) == f"rotated to KEK version 3; re-wrapped {refs[1]} keys; retired versions: 2"
    assert json.loads(keyring.read_text())["current"] == 3
    assert read_every_member(settings) == before


def test_keys_rotate_refuses_an_unknown_kind(tmp_path: Path, initialized: Path, env: dict[str, str]) -> None:
    before = snapshot(initialized)
    result = vaultctl(tmp_path, "keys", "rotate", "--kind", "everything", **env)
    assert result.returncode == 2
    assert "--kind" in result.stderr
    assert snapshot(initialized) == before


# -- PKCS#11 -------------------------------------------------------------------


@pytest.fixture
def hsm_env(hsm_token: HsmToken, data_dir: Path) -> Iterator[dict[str, str]]:
    yield {
        "VAULT_DATA_DIR": str(data_dir),
        "VAULT_KEY_PROVIDER": "pkcs11",
        "VAULT_PKCS11_MODULE": str(hsm_token.module),
        "VAULT_PKCS11_TOKEN_LABEL": hsm_token.label,
        "VAULT_PKCS11_PIN_FILE": str(hsm_token.pin_file),
        "SOFTHSM2_CONF": os.environ["SOFTHSM2_CONF"],
    }
    subprocess.run(["softhsm2-util", "--delete-token", "--token", hsm_token.label], capture_output=True, check=True, timeout=60)


def _token_versions(hsm_token: HsmToken) -> list[int]:
    provider = hsm_token.open()
    try:
        return [info.version for info in provider.versions()]
    finally:
        provider.close()


def _hsm_settings(data_dir: Path, hsm_token: HsmToken) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=data_dir,
        key_provider="pkcs11",
        pkcs11_module=hsm_token.module,
        pkcs11_token_label=hsm_token.label,
        pkcs11_pin_file=hsm_token.pin_file,
    )


@pytest.mark.pkcs11
def test_pkcs11_init_seed_and_rotate(tmp_path: Path, data_dir: Path, hsm_token: HsmToken, hsm_env: dict[str, str]) -> None:
    assert _token_versions(hsm_token) == []
    init = vaultctl(tmp_path, "init", **hsm_env)
    assert init.returncode == 0, init.stderr
    assert "created KEK version 1 on the PKCS#11 token" in init.stdout.splitlines()
    assert not (data_dir / "keys" / "keyring.json").exists()
    assert (data_dir / "keys" / "keystore.db").is_file()
    assert _token_versions(hsm_token) == [1]

    again = vaultctl(tmp_path, "init", **hsm_env)
    assert again.returncode == 0, again.stderr
    assert "created KEK version 1 on the PKCS#11 token" not in again.stdout
    assert _token_versions(hsm_token) == [1]

    seeded = vaultctl(tmp_path, "demo", "seed", "--members", "20", **hsm_env)
    assert seeded.returncode == 0, seeded.stderr
    match = COUNTS_LINE.match(last_line(seeded.stdout))
    assert match is not None, seeded.stdout
    assert match.group(1) == "20"
    settings = _hsm_settings(data_dir, hsm_token)
    before = read_every_member(settings)
    assert len(before) == 20
    refs = kek_references(settings)
    assert list(refs) == [1]

    rotated = vaultctl(tmp_path, "keys", "rotate", "--kind", "kek", **hsm_env)
    assert rotated.returncode == 0, rotated.stderr
    assert last_line(rotated.stdout) == f"rotated to KEK version 2; re-wrapped {refs[1]} keys; retired versions: 1"
    assert _token_versions(hsm_token) == [2]
    assert kek_references(settings) == {2: refs[1]}
    assert read_every_member(settings) == before


@pytest.mark.pkcs11
def test_pkcs11_wrong_pin_fails_with_one_line_and_never_shows_the_pin(tmp_path: Path, data_dir: Path, hsm_token: HsmToken, hsm_env: dict[str, str]) -> None:
    assert vaultctl(tmp_path, "init", **hsm_env).returncode == 0
    wrong_pin = "wrong-" + hsm_token.pin_file.read_text()[:10]
    wrong_pin_file = tmp_path / "wrong-pin"
    wrong_pin_file.write_text(wrong_pin)
    wrong_pin_file.chmod(0o600)
    result = vaultctl(tmp_path, "demo", "seed", "--members", "20", **{**hsm_env, "VAULT_PKCS11_PIN_FILE": str(wrong_pin_file)})
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith("vaultctl: PKCS#11")
    for pin in (wrong_pin, hsm_token.pin_file.read_text()):
        assert pin not in result.stdout
        assert pin not in result.stderr
    assert sqlite_count(data_dir / "vault.db", "members") == 0
