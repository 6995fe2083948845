"""The one settings object, read from ``VAULT_*`` environment variables (and ``.env``).

Built once at the edge (app factory, vaultctl entry) and passed down as plain
values. In ``production`` mode unsafe choices are refused, not warned about.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Env(StrEnum):
    development = "development"
    production = "production"


class KeyProviderName(StrEnum):
    local = "local"
    pkcs11 = "pkcs11"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VAULT_", env_file=".env", extra="ignore", frozen=True)

    data_dir: Path = Path("./var")
    database_url: SecretStr | None = None
    migration_database_url: SecretStr | None = None
    keystore_url: SecretStr | None = None
    keystore_migration_url: SecretStr | None = None
    env: Env = Env.development
    key_provider: KeyProviderName = KeyProviderName.local
    pkcs11_module: Path | None = None
    pkcs11_token_label: str | None = None
    pkcs11_pin_file: Path | None = None
    issuer: str = "member-vault"
    audience: str = "member-vault"
    trusted_issuers_file: Path | None = None
    key_cache_size: int = Field(default=10_000, ge=0, le=1_000_000)
    # The checkpoint origin and verifier key name: a C2SP key name (no space, no "+", no control character).
    audit_origin: str = Field(default="member-vault/audit", min_length=1, max_length=255, pattern=r"^[^\s+\x00-\x1f\x7f]+$")
    # A checkpoint is signed when this many events or seconds have passed since the last one (whichever comes first).
    audit_checkpoint_every_events: int = Field(default=1000, ge=1, le=10_000_000)
    audit_checkpoint_every_seconds: int = Field(default=60, ge=1, le=86_400)
    log_level: str = "info"
    # Where ``POST /v1/policies/reload`` reads model.conf and default.csv (default: the policies package).
    policy_dir: Path | None = None
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # After a material notice change takes effect, earlier grants keep counting this many days, then turn stale.
    consent_grace_days: int = Field(default=30, ge=0, le=3650)
    # How long a data-subject request may take, per jurisdiction (ISO 8601 P<n>M or P<n>D); "default" applies to the rest.
    dsr_due_periods: dict[str, str] = Field(default_factory=lambda: {"default": "P1M"})
    # How long the archive of a completed access or portability request may be downloaded.
    dsr_export_days: int = Field(default=30, ge=1, le=365)
    # How long an extract's rows stay (sealed) in the vault for their consumer to download; then they are purged.
    extract_retention_hours: int = Field(default=72, ge=1, le=24 * 30)
    # How long backups of the key store are kept: a shredded key may survive in one that long (stated in erasure certificates).
    keystore_backup_days: int = Field(default=30, ge=0, le=3650)
    # The controller named in consent receipts and FHIR Consent resources.
    controller_name: str = Field(default="Member Vault demo clinics", min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")

    @model_validator(mode="after")
    def _pkcs11_complete(self) -> Settings:
        if self.key_provider is KeyProviderName.pkcs11 and not (self.pkcs11_module and self.pkcs11_token_label and self.pkcs11_pin_file):
            raise ValueError("VAULT_KEY_PROVIDER=pkcs11 needs VAULT_PKCS11_MODULE, VAULT_PKCS11_TOKEN_LABEL and VAULT_PKCS11_PIN_FILE")
        return self

    @model_validator(mode="after")
    def _due_periods_valid(self) -> Settings:
        for jurisdiction, period in self.dsr_due_periods.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]{1,15}", jurisdiction) or not re.fullmatch(r"P(?:[1-9][0-9]?M|[1-9][0-9]{0,2}D)", period):
                raise ValueError("VAULT_DSR_DUE_PERIODS maps jurisdiction names ([a-z][a-z0-9_]{1,15}) to periods P<n>M or P<n>D")
        return self

    @property
    def keyring_path(self) -> Path:
        return self.data_dir / "keys" / "keyring.json"

    @property
    def data_url(self) -> str:
        return _reveal(self.database_url) or f"sqlite:///{(self.data_dir / 'vault.db').resolve()}"

    @property
    def data_migration_url(self) -> str:
        return _reveal(self.migration_database_url) or self.data_url

    @property
    def keys_url(self) -> str:
        return _reveal(self.keystore_url) or f"sqlite:///{(self.data_dir / 'keys' / 'keystore.db').resolve()}"

    @property
    def keys_migration_url(self) -> str:
        return _reveal(self.keystore_migration_url) or self.keys_url

    @property
    def is_production(self) -> bool:
        return self.env is Env.production


def _reveal(url: SecretStr | None) -> str | None:
    """Database URLs may carry a password: they are SecretStr, revealed only to build an engine."""
    return url.get_secret_value() if url is not None else None


__all__ = ["Env", "KeyProviderName", "Settings"]
