"""The one settings object: defaults, ``VAULT_*`` variables, a ``.env`` file, and what it refuses.

Every test starts from ``clean_env`` (no ``VAULT_*`` variable from outside)
and runs in an empty temporary directory, so no ``.env`` file is picked up
unless the test writes one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from api.settings import Env, KeyProviderName, Settings

PKCS11_VARIABLES = ("VAULT_PKCS11_MODULE", "VAULT_PKCS11_TOKEN_LABEL", "VAULT_PKCS11_PIN_FILE")


@pytest.fixture
def cwd(tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path.resolve()


def test_defaults(cwd: Path) -> None:
    settings = Settings()
    assert settings.data_dir == Path("var")
    assert settings.data_url == f"sqlite:///{cwd / 'var' / 'vault.db'}"
    assert settings.data_migration_url == settings.data_url
    assert settings.keys_url == f"sqlite:///{cwd / 'var' / 'keys' / 'keystore.db'}"
    assert settings.keys_migration_url == settings.keys_url
    assert settings.keyring_path == Path("var/keys/keyring.json")
    assert settings.issuer == "member-vault"
    assert settings.audience == "member-vault"
    assert settings.env is Env.development
    assert settings.is_production is False
    assert settings.key_provider is KeyProviderName.local
    assert settings.pkcs11_module is None
    assert settings.pkcs11_token_label is None
    assert settings.pkcs11_pin_file is None
    assert settings.trusted_issuers_file is None
    assert settings.database_url is None
    assert settings.keystore_url is None


def test_data_dir_moves_the_default_database_and_key_store(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_DATA_DIR", str(cwd / "elsewhere"))
    settings = Settings()
    assert settings.data_dir == cwd / "elsewhere"
    assert settings.data_url == f"sqlite:///{cwd / 'elsewhere' / 'vault.db'}"
    assert settings.keys_url == f"sqlite:///{cwd / 'elsewhere' / 'keys' / 'keystore.db'}"
    assert settings.keyring_path == cwd / "elsewhere" / "keys" / "keyring.json"


def test_vault_variables_are_read(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    variables = {
        "VAULT_DATA_DIR": "/srv/vault",
        "VAULT_DATABASE_URL": "postgresql+psycopg://vault_app@db.internal/vault",
        "VAULT_MIGRATION_DATABASE_URL": "postgresql+psycopg://vault_owner@db.internal/vault",
        "VAULT_KEYSTORE_URL": "postgresql+psycopg://vault_app@keys.internal/vault_keys",
        "VAULT_KEYSTORE_MIGRATION_URL": "postgresql+psycopg://vault_owner@keys.internal/vault_keys",
        "VAULT_ENV": "production",
        "VAULT_KEY_PROVIDER": "pkcs11",
        "VAULT_PKCS11_MODULE": "/usr/lib/softhsm/libsofthsm2.so",
        "VAULT_PKCS11_TOKEN_LABEL": "member-vault",
        "VAULT_PKCS11_PIN_FILE": "/run/secrets/hsm-pin",
        "VAULT_ISSUER": "https://vault.example.cn",
        "VAULT_AUDIENCE": "vault-api",
        "VAULT_TRUSTED_ISSUERS_FILE": "/etc/vault/issuers.json",
        "VAULT_KEY_CACHE_SIZE": "123",
        "VAULT_LOG_LEVEL": "debug",
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.data_dir == Path("/srv/vault")
    assert settings.data_url == "postgresql+psycopg://vault_app@db.internal/vault"
    assert settings.data_migration_url == "postgresql+psycopg://vault_owner@db.internal/vault"
    assert settings.keys_url == "postgresql+psycopg://vault_app@keys.internal/vault_keys"
    assert settings.keys_migration_url == "postgresql+psycopg://vault_owner@keys.internal/vault_keys"
    assert settings.env is Env.production
    assert settings.is_production is True
    assert settings.key_provider is KeyProviderName.pkcs11
    assert settings.pkcs11_module == Path("/usr/lib/softhsm/libsofthsm2.so")
    assert settings.pkcs11_token_label == "member-vault"  # noqa: S105 - a token label, not a secret
    assert settings.pkcs11_pin_file == Path("/run/secrets/hsm-pin")
    assert settings.issuer == "https://vault.example.cn"
    assert settings.audience == "vault-api"
    assert settings.trusted_issuers_file == Path("/etc/vault/issuers.json")
    assert settings.key_cache_size == 123
    assert settings.log_level == "debug"


def test_migration_urls_default_to_the_application_urls(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_DATABASE_URL", "postgresql+psycopg://vault_app@db/vault")
    monkeypatch.setenv("VAULT_KEYSTORE_URL", "postgresql+psycopg://vault_app@db/vault_keys")
    settings = Settings()
    assert settings.data_migration_url == "postgresql+psycopg://vault_app@db/vault"
    assert settings.keys_migration_url == "postgresql+psycopg://vault_app@db/vault_keys"


def test_dotenv_file_is_read_and_the_environment_wins(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (cwd / ".env").write_text("VAULT_ISSUER=from-dotenv\nVAULT_AUDIENCE=from-dotenv\n")
    monkeypatch.setenv("VAULT_AUDIENCE", "from-environment")
    settings = Settings()
    assert settings.issuer == "from-dotenv"
    assert settings.audience == "from-environment"


def test_variables_without_the_prefix_are_ignored(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISSUER", "not-ours")
    monkeypatch.setenv("DATA_DIR", "/not/ours")
    settings = Settings()
    assert settings.issuer == "member-vault"
    assert settings.data_dir == Path("var")


@pytest.mark.parametrize(
    "present",
    [(), ("VAULT_PKCS11_MODULE",), ("VAULT_PKCS11_MODULE", "VAULT_PKCS11_TOKEN_LABEL"), ("VAULT_PKCS11_TOKEN_LABEL", "VAULT_PKCS11_PIN_FILE")],
    ids=["none", "module-only", "no-pin-file", "no-module"],
)
def test_pkcs11_without_its_settings_is_refused_naming_them(cwd: Path, monkeypatch: pytest.MonkeyPatch, present: tuple[str, ...]) -> None:
    monkeypatch.setenv("VAULT_KEY_PROVIDER", "pkcs11")
    for name in present:
        monkeypatch.setenv(name, "/x" if name != "VAULT_PKCS11_TOKEN_LABEL" else "label")
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = str(caught.value)
    for name in PKCS11_VARIABLES:
        if name not in present:
            assert name in message
    assert caught.value.error_count() == 1


def test_pkcs11_with_all_its_settings_is_accepted(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_KEY_PROVIDER", "pkcs11")
    for name in PKCS11_VARIABLES:
        monkeypatch.setenv(name, "label" if name.endswith("LABEL") else "/x")
    assert Settings().key_provider is KeyProviderName.pkcs11


def test_pkcs11_settings_are_not_required_for_the_local_provider(cwd: Path) -> None:
    assert Settings().key_provider is KeyProviderName.local


@pytest.mark.parametrize("value", ["staging", "prod", "Production", "test", ""])
def test_unknown_env_is_refused(cwd: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("VAULT_ENV", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert [err["loc"] for err in caught.value.errors()] == [("env",)]


def test_unknown_key_provider_is_refused(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_KEY_PROVIDER", "aws-kms")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert [err["loc"] for err in caught.value.errors()] == [("key_provider",)]


@pytest.mark.parametrize("value", ["-1", "1000001", "many"])
def test_key_cache_size_out_of_bounds_is_refused(cwd: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("VAULT_KEY_CACHE_SIZE", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert [err["loc"] for err in caught.value.errors()] == [("key_cache_size",)]


def test_settings_are_frozen(cwd: Path) -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.env = Env.production  # type: ignore[misc]
    assert settings.env is Env.development


def test_repr_does_not_show_the_database_password(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets are masked in repr (STYLE, Configuration): a URL's password must not show in a log or traceback."""
    secret = "s3cr3t-Passw0rd"  # noqa: S105 - a test value
    monkeypatch.setenv("VAULT_DATABASE_URL", f"postgresql+psycopg://vault_app:{secret}@db/vault")
    monkeypatch.setenv("VAULT_MIGRATION_DATABASE_URL", f"postgresql+psycopg://vault_owner:{secret}@db/vault")
    settings = Settings()
    assert secret not in repr(settings)
    assert secret not in str(settings)
