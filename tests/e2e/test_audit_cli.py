"""``vaultctl audit keys`` end to end: the real command in a subprocess, on an initialized data directory."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from api.runtime import open_runtime
from api.settings import Settings
from audit.checkpoint import open_note, parse_verifier_key, sign_note, verifier_key_string
from keys.signing import SigningPurpose
from tests.e2e.test_cli import one_line, snapshot, vaultctl

ORIGIN = "member-vault/audit"
BODY = "member-vault/audit\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\ntime 2026-11-23T09:00:00Z\n"

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


@pytest.fixture
def initialized(tmp_path: Path, data_dir: Path) -> Path:
    result = vaultctl(tmp_path, "init", VAULT_DATA_DIR=str(data_dir))
    assert result.returncode == 0, result.stderr
    return data_dir


def audit_keys(tmp_path: Path, data_dir: Path, **env: str) -> list[str]:
    result = vaultctl(tmp_path, "audit", "keys", VAULT_DATA_DIR=str(data_dir), **env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.endswith("\n")
    return result.stdout.removesuffix("\n").split("\n")


def current_and_rotate(settings: Settings, overlap: timedelta | None = None) -> str:
    """In-process, on the same data directory: sign BODY with the current audit key (after rotating, if asked)."""
    rt = open_runtime(settings)
    try:
        if overlap is not None:
            rt.signing.rotate(SigningPurpose.audit, overlap)
        return sign_note(BODY, settings.audit_origin, rt.signing.current(SigningPurpose.audit).private_key)
    finally:
        rt.close()


def test_audit_keys_prints_one_verifier_key_that_verifies_a_note_signed_with_the_current_key(tmp_path: Path, initialized: Path) -> None:
    (line,) = audit_keys(tmp_path, initialized)

    pinned = parse_verifier_key(line)
    assert pinned.name == ORIGIN
    assert line == verifier_key_string(ORIGIN, pinned.public_key)
    note = current_and_rotate(Settings(_env_file=None, data_dir=initialized))
    assert open_note(note, [pinned]).signers == (ORIGIN,)
    assert audit_keys(tmp_path, initialized) == [line]


def test_after_a_rotation_audit_keys_prints_the_new_key_first_then_the_old(tmp_path: Path, initialized: Path) -> None:
    (old,) = audit_keys(tmp_path, initialized)
    note = current_and_rotate(Settings(_env_file=None, data_dir=initialized), overlap=timedelta(days=7))

    lines = audit_keys(tmp_path, initialized)
    assert len(lines) == 2
    assert lines[1] == old
    assert lines[0] != old
    assert open_note(note, [parse_verifier_key(lines[0])]).signers == (ORIGIN,)
    assert open_note(note, [parse_verifier_key(k) for k in lines]).signers == (ORIGIN,)


def test_after_a_rotation_without_overlap_only_the_new_key_is_printed(tmp_path: Path, initialized: Path) -> None:
    (old,) = audit_keys(tmp_path, initialized)
    current_and_rotate(Settings(_env_file=None, data_dir=initialized), overlap=timedelta(0))
    (line,) = audit_keys(tmp_path, initialized)
    assert line != old


def test_the_key_name_is_the_configured_audit_origin(tmp_path: Path, initialized: Path) -> None:
    origin = "clinic-chain.example/vault-audit"
    (line,) = audit_keys(tmp_path, initialized, VAULT_AUDIT_ORIGIN=origin)
    assert line.startswith(f"{origin}+")
    note = current_and_rotate(Settings(_env_file=None, data_dir=initialized, audit_origin=origin))
    assert open_note(note, [parse_verifier_key(line)]).signers == (origin,)


@pytest.mark.parametrize("origin", ["member vault", "member+vault", ""], ids=["space", "plus", "empty"])
def test_an_origin_that_is_not_a_key_name_is_refused_with_one_line(tmp_path: Path, initialized: Path, origin: str) -> None:
    before = snapshot(initialized)
    result = vaultctl(tmp_path, "audit", "keys", VAULT_DATA_DIR=str(initialized), VAULT_AUDIT_ORIGIN=origin)
    assert result.returncode == 1
    assert one_line(result.stderr) == "vaultctl: invalid settings: VAULT_AUDIT_ORIGIN"
    assert result.stdout == ""
    assert snapshot(initialized) == before


def test_audit_keys_on_an_uninitialized_data_dir_fails_with_one_line_and_creates_nothing(tmp_path: Path, data_dir: Path) -> None:
    result = vaultctl(tmp_path, "audit", "keys", VAULT_DATA_DIR=str(data_dir))
    assert result.returncode == 1
    assert one_line(result.stderr).startswith("vaultctl: ")
    assert result.stdout == ""
    assert not data_dir.exists()
