"""``vaultctl extract run`` end to end: real subprocesses on a seeded data directory.

The file lands (mode 0600) with its signed manifest beside it, and its hash
is the manifest's; ``--since`` an extract releases only what changed (here:
nothing); a refusal (k out of reach), a bad ``--since``, an unknown consumer
or an existing ``--out`` exits 1 with one line on standard error and leaves
no file behind.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import stat
from pathlib import Path

import jwt
import pytest

from tests.e2e.test_cli import one_line, vaultctl

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``init`` and a demo seed (which registers the demo consumers and their members' consents); each test copies it."""
    root = tmp_path_factory.mktemp("extract-cli")
    env = {"VAULT_DATA_DIR": str(root / "var")}
    for args in (("init",), ("demo", "seed", "--members", "120", "--seed", "3")):
        result = vaultctl(root, *args, **env)
        assert result.returncode == 0, result.stderr
    return root / "var"


@pytest.fixture
def data_dir(seeded: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "var"
    shutil.copytree(seeded, copy)
    return copy


def extract(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = vaultctl(data_dir.parent, "extract", "run", *args, VAULT_DATA_DIR=str(data_dir))
    return result.returncode, result.stdout, result.stderr


def test_an_extract_lands_with_its_signed_manifest_and_an_increment_releases_only_changes(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "loyalty.csv"

    code, stdout, stderr = extract(data_dir, "--consumer", "loyalty-app", "--format", "csv", "--out", str(out))

    assert code == 0, stderr
    extract_id = stdout.strip()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    manifest = (tmp_path / "loyalty.csv.manifest.jws").read_text(encoding="ascii").strip()
    claims = jwt.decode(manifest, options={"verify_signature": False})  # the signature is checked in tests/vault/test_extracts.py
    assert claims["extract_id"] == extract_id
    assert claims["content_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert len(rows) == claims["row_count"] > 0
    assert not list(tmp_path.glob(".*.part"))

    again = tmp_path / "increment.csv"
    code, _, stderr = extract(data_dir, "--consumer", "loyalty-app", "--format", "csv", "--out", str(again), "--since", extract_id)

    assert code == 0, stderr
    assert list(csv.DictReader(io.StringIO(again.read_text(encoding="utf-8-sig")))) == []  # nothing changed since


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--consumer", "loyalty-app", "--k", "1000"), "refused"),
        (("--consumer", "loyalty-app", "--since", "0" * 32), "--since must name a done extract of this consumer"),
        (("--consumer", "nobody"), "nobody"),
    ],
)
def test_a_refused_or_invalid_extract_exits_1_with_one_line_and_writes_nothing(data_dir: Path, tmp_path: Path, args: tuple[str, ...], reason: str) -> None:
    out = tmp_path / "out.ndjson"

    code, stdout, stderr = extract(data_dir, *args, "--format", "ndjson", "--out", str(out))

    assert code == 1
    assert stdout == ""
    assert reason in one_line(stderr)
    assert list(tmp_path.iterdir()) == [data_dir]


def test_an_existing_out_file_is_never_overwritten(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "kept.ndjson"
    out.write_text("mine\n", encoding="utf-8")

    code, _, stderr = extract(data_dir, "--consumer", "loyalty-app", "--format", "ndjson", "--out", str(out))

    assert code == 1
    assert "exists" in one_line(stderr)
    assert out.read_text(encoding="utf-8") == "mine\n"
