"""The composition root: builds the vault's long-lived objects from Settings.

Used by vaultctl and, later, by the app factory's lifespan. Nothing here is a
module global; callers hold the ``Runtime`` and close it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from api.settings import KeyProviderName, Settings
from audit.checkpoints import STATE_FILE, Checkpointer
from keys.errors import KeyringError
from keys.local import LocalKeyring
from keys.member_keys import MemberKeys
from keys.pkcs11 import Pkcs11Provider
from keys.provider import KekProvider
from keys.signing import SigningKeys
from vault.erasure import Eraser
from vault.ledger import Ledger
from vault.members import MemberRepository
from vault.storage.engine import make_engine
from vault.storage.migrate import Database, require_current, upgrade
from vault.treatments import TreatmentRepository


@dataclass
class Runtime:
    settings: Settings
    data_engine: Engine
    keys_engine: Engine
    provider: KekProvider
    keys: MemberKeys
    signing: SigningKeys
    members: MemberRepository
    treatments: TreatmentRepository
    ledger: Ledger
    eraser: Eraser

    def close(self) -> None:
        self.provider.close()
        self.data_engine.dispose()
        self.keys_engine.dispose()


def make_checkpointer(settings: Settings, data_engine: Engine, signing: SigningKeys) -> Checkpointer:
    """The audit checkpointer of this vault: its origin, its state file, the default intervals."""
    return Checkpointer(
        data_engine,
        signing,
        origin=settings.audit_origin,
        state_file=settings.data_dir / STATE_FILE,
        every_events=settings.audit_checkpoint_every_events,
        every_seconds=settings.audit_checkpoint_every_seconds,
    )


def open_provider(settings: Settings) -> KekProvider:
    if settings.key_provider is KeyProviderName.pkcs11:
        if not (settings.pkcs11_module and settings.pkcs11_token_label and settings.pkcs11_pin_file):
            raise KeyringError("PKCS#11 settings incomplete")
        return Pkcs11Provider(settings.pkcs11_module, settings.pkcs11_token_label, settings.pkcs11_pin_file)
    return LocalKeyring(settings.keyring_path)


def open_runtime(settings: Settings) -> Runtime:
    """Open a migrated vault; refuses an unmigrated database or an unusable key provider."""
    provider = open_provider(settings)
    provider.check()
    data_engine = make_engine(settings.data_url)
    keys_engine = make_engine(settings.keys_url)
    try:
        require_current(data_engine, Database.data)
        require_current(keys_engine, Database.keystore)
    except Exception:
        provider.close()
        data_engine.dispose()
        keys_engine.dispose()
        raise
    keys = MemberKeys(keys_engine, provider, cache_size=settings.key_cache_size)
    return Runtime(
        settings=settings,
        data_engine=data_engine,
        keys_engine=keys_engine,
        provider=provider,
        keys=keys,
        signing=SigningKeys(keys_engine, provider),
        members=MemberRepository(keys),
        treatments=TreatmentRepository(keys),
        ledger=Ledger(keys),
        eraser=Eraser(data_engine, keys),
    )


def init_vault(settings: Settings) -> list[str]:
    """Create the data directory, the keyring (local provider) and migrate both databases. Idempotent."""
    done: list[str] = []
    for sub in (settings.data_dir, settings.data_dir / "keys", settings.data_dir / "audit", settings.data_dir / "tokens", settings.data_dir / "exports"):
        if not sub.exists():
            sub.mkdir(parents=True, mode=0o700)
            done.append(f"created {sub}")
    if settings.key_provider is KeyProviderName.local:
        if not settings.keyring_path.exists():
            LocalKeyring.create(settings.keyring_path)
            done.append(f"created keyring {settings.keyring_path} (mode 600)")
        LocalKeyring(settings.keyring_path).close()  # refuses a keyring readable by group or others
    else:
        provider = open_provider(settings)
        try:
            if not provider.versions():
                provider.rotate()
                done.append("created KEK version 1 on the PKCS#11 token")
        finally:
            provider.close()
    for url, which in ((settings.data_migration_url, Database.data), (settings.keys_migration_url, Database.keystore)):
        engine = make_engine(url)
        try:
            upgrade(engine, which)
        finally:
            engine.dispose()
        done.append(f"migrated the {which.value} database")
    return done


__all__ = ["Runtime", "init_vault", "make_checkpointer", "open_provider", "open_runtime"]
