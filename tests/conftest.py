"""Shared fixtures: real SQLite and PostgreSQL databases, a real SoftHSM2 token.

``make test`` starts a throwaway PostgreSQL cluster and SoftHSM2 token
(scripts/with-test-services.sh) and exports their coordinates as
``VAULT_TEST_*``. Without them the PostgreSQL and PKCS#11 tests skip — unless
``VAULT_TEST_REQUIRE_SERVICES=1`` (set by ``make test``), where a missing
service fails the run instead.

Databases: the schema is built by Alembic once per session into a template
(a SQLite file; a PostgreSQL template database); each test gets a fresh copy,
so tests never see each other's rows and never truncate anything.

``make test`` runs the suite in parallel (pytest-xdist, one process per core).
Each process has its own SQLite templates (under its own temporary directory)
and its own PostgreSQL template databases, copied from the migrated ``vault``
and ``vault_keys`` under an advisory lock: PostgreSQL copies a template only
while no other session is connected to it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pkcs11
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api.runtime import Runtime, open_runtime
from api.settings import Settings
from keys.local import LocalKeyring
from keys.pkcs11 import Pkcs11Provider
from vault.storage.engine import make_engine
from vault.storage.migrate import Database, upgrade

REQUIRE = os.environ.get("VAULT_TEST_REQUIRE_SERVICES") == "1"
_counter = itertools.count()


def _need(name: str) -> str:
    value = os.environ.get(name)
    if value:
        return value
    if REQUIRE:
        pytest.fail(f"{name} is not set: run the suite with `make test`")
    pytest.skip(f"{name} not set (run `make test` for PostgreSQL and SoftHSM2)")


# -- PostgreSQL ------------------------------------------------------------------


# A fixed 64-bit advisory-lock key ("mv-tmpl" in ASCII): migrating the templates and copying a process's own.
TEMPLATE_LOCK_KEY = 0x6D762D746D706C


@dataclass(frozen=True)
class PgServer:
    app_url: str
    owner_url: str
    keys_app_url: str
    keys_owner_url: str
    admin_url: str
    bin_dir: Path
    data_template: str = "vault"
    keys_template: str = "vault_keys"

    def admin(self, sql: str, database: str = "postgres") -> None:
        engine = create_engine(make_url(self.admin_url).set(database=database), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(sql))
        finally:
            engine.dispose()

    def fresh_pair(self) -> tuple[str, str, str, str]:
        """Create a data and a key-store database from the migrated templates; return their URLs."""
        suffix = f"{os.getpid()}_{next(_counter)}"
        data, keys = f"t_vault_{suffix}", f"t_keys_{suffix}"
        for name, template in ((data, self.data_template), (keys, self.keys_template)):
            self.copy(template, name)
        app = make_url(self.app_url)
        owner = make_url(self.owner_url)
        return (
            app.set(database=data).render_as_string(hide_password=False),
            owner.set(database=data).render_as_string(hide_password=False),
            app.set(database=keys).render_as_string(hide_password=False),
            owner.set(database=keys).render_as_string(hide_password=False),
        )

    def copy(self, template: str, name: str) -> None:
        self.admin(f"CREATE DATABASE {name} TEMPLATE {template} OWNER vault_owner")
        self.admin(f"GRANT CONNECT ON DATABASE {name} TO vault_app")

    def drop(self, url: str) -> None:
        self.drop_database(str(make_url(url).database))

    def drop_database(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    @contextmanager
    def template_lock(self) -> Iterator[None]:
        """Held by one test process at a time, across processes (a session-level advisory lock)."""
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": TEMPLATE_LOCK_KEY})
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": TEMPLATE_LOCK_KEY})
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = PgServer(
        app_url=_need("VAULT_TEST_PG_URL"),
        owner_url=_need("VAULT_TEST_PG_MIGRATION_URL"),
        keys_app_url=_need("VAULT_TEST_PG_KEYS_URL"),
        keys_owner_url=_need("VAULT_TEST_PG_KEYS_MIGRATION_URL"),
        # The maintenance database, never a template: PostgreSQL copies a template only while no session is connected to it.
        admin_url=make_url(_need("VAULT_TEST_PG_ADMIN_URL")).set(database="postgres").render_as_string(hide_password=False),
        bin_dir=Path(_need("VAULT_TEST_PG_BIN")),
    )
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", … under pytest-xdist; unset in a plain run
    with server.template_lock():
        for url, which in ((server.owner_url, Database.data), (server.keys_owner_url, Database.keystore)):
            engine = make_engine(url)
            try:
                upgrade(engine, which)
            finally:
                engine.dispose()
        if worker is not None:
            own = replace(server, data_template=f"vault_tmpl_{worker}", keys_template=f"vault_keys_tmpl_{worker}")
            try:
                for template, name in ((server.data_template, own.data_template), (server.keys_template, own.keys_template)):
                    own.drop_database(name)  # left by an interrupted run
                    own.copy(template, name)
            except Exception:
                own.drop_database(own.data_template)
                own.drop_database(own.keys_template)
                raise
            server = own
    yield server
    if worker is not None:
        server.drop_database(server.data_template)
        server.drop_database(server.keys_template)


# -- SQLite templates --------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_templates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sqlite-templates")
    paths = (root / "vault.db", root / "keystore.db")
    for path, which in zip(paths, (Database.data, Database.keystore), strict=True):
        engine = make_engine(f"sqlite:///{path}")
        try:
            upgrade(engine, which)
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            engine.dispose()
    return paths


# -- Settings and runtimes ---------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No VAULT_* setting leaks from the environment into a test's Settings."""
    for name in list(os.environ):
        if name.startswith("VAULT_") and not name.startswith("VAULT_TEST_"):
            monkeypatch.delenv(name)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_settings(
    backend: str,
    tmp_path: Path,
    clean_env: None,
    request: pytest.FixtureRequest,
    sqlite_templates: tuple[Path, Path],
) -> Iterator[Callable[..., Settings]]:
    """Build Settings for a fresh, migrated vault on the test's backend, with a local keyring."""
    data_dir = tmp_path / "var"
    (data_dir / "keys").mkdir(parents=True, mode=0o700)
    LocalKeyring.create(data_dir / "keys" / "keyring.json")
    urls: dict[str, str] = {}
    created: list[str] = []
    if backend == "sqlite":
        shutil.copyfile(sqlite_templates[0], data_dir / "vault.db")
        shutil.copyfile(sqlite_templates[1], data_dir / "keys" / "keystore.db")
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        app, owner, keys_app, keys_owner = server.fresh_pair()
        urls = {"database_url": app, "migration_database_url": owner, "keystore_url": keys_app, "keystore_migration_url": keys_owner}
        created = [app, keys_app]

    def build(**overrides: object) -> Settings:
        return Settings(_env_file=None, data_dir=data_dir, **{**urls, **overrides})  # type: ignore[call-arg]

    yield build
    if created:
        server = request.getfixturevalue("pg_server")
        for url in created:
            server.drop(url)


@pytest.fixture
def runtime(make_settings: Callable[..., Settings]) -> Iterator[Runtime]:
    rt = open_runtime(make_settings())
    yield rt
    rt.close()


# -- SoftHSM2 ----------------------------------------------------------------------


@dataclass(frozen=True)
class HsmToken:
    module: Path
    label: str
    pin_file: Path

    def open(self) -> Pkcs11Provider:
        return Pkcs11Provider(self.module, self.label, self.pin_file)


@pytest.fixture
def hsm_token(tmp_path: Path) -> HsmToken:
    """A freshly initialized SoftHSM2 token of its own (no KEK on it yet)."""
    module = Path(_need("VAULT_TEST_PKCS11_MODULE"))
    _need("SOFTHSM2_CONF")
    label = f"mv-{uuid.uuid4().hex[:12]}"
    pin = uuid.uuid4().hex
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", uuid.uuid4().hex, "--pin", pin],
        check=True,
        capture_output=True,
    )
    pin_file = tmp_path / "hsm-pin"
    pin_file.write_text(pin)
    pin_file.chmod(0o600)
    # SoftHSM2 scans its token directory only at C_Initialize, and python-pkcs11 keeps the
    # library initialized for the process: re-initialize so the new token is found.
    pkcs11.lib(str(module)).reinitialize()
    return HsmToken(module, label, pin_file)
