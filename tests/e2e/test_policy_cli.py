"""``vaultctl policy explain`` prints the decision of the active policy and the lines behind it (golden outputs)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from api.settings import Settings
from tests.e2e.test_cli import vaultctl

pytestmark = pytest.mark.usefixtures("clean_env")


def _explain(settings: Settings, *args: str) -> tuple[int, list[str]]:
    result = vaultctl(settings.data_dir, "policy", "explain", *args, VAULT_DATA_DIR=str(settings.data_dir))
    return result.returncode, result.stdout.splitlines()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_allowed_request_names_its_allow_line(make_settings: Callable[..., Settings]) -> None:
    code, lines = _explain(make_settings(), "practitioner", "clinic", "member:health", "read", "care")
    assert code == 0
    assert lines[0].startswith("allow (allowed) by policy version 1 sha256:")
    assert lines[1:] == ["  p, practitioner, clinic, member:health, read, care, allow"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_deny_line_overrides_the_allow_line_of_another_role(make_settings: Callable[..., Settings]) -> None:
    code, lines = _explain(make_settings(), "dpo,vault_admin", "none", "member:identity", "read", "legal_claims")
    assert code == 0
    assert lines[0].startswith("deny (denied_by_rule) by policy version 1 ")
    assert lines[1:] == ["  p, dpo, *, member:identity, read, legal_claims, allow", "  p, vault_admin, *, member:*, *, *, deny"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_default_deny_lists_no_line(make_settings: Callable[..., Settings]) -> None:
    code, lines = _explain(make_settings(), "front_desk", "none", "member:health", "read", "care")
    assert code == 0
    assert lines[0].startswith("deny (no_matching_rule) by policy version 1 ")
    assert lines[1:] == []


@pytest.mark.parametrize("backend", ["sqlite"])
def test_no_role_is_a_one_line_error(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    result = vaultctl(settings.data_dir, "policy", "explain", ",", "none", "member:health", "read", "care", VAULT_DATA_DIR=str(settings.data_dir))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "vaultctl: give at least one role"
