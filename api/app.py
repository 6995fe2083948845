"""The FastAPI application factory.

This first cut serves liveness and readiness only; the data routes of API.md
come with the HTTP API issue. Readiness fails closed: an unmigrated database,
an unreachable database, an unusable key provider or a published audit
checkpoint that the stored tree does not extend is 503 with a problem+json
body that names the failed check, never a secret or a value.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from api import logging as oplog
from api.runtime import make_checkpointer, open_provider
from api.settings import Settings
from audit.errors import AuditError
from keys.errors import KeysError
from keys.signing import SigningKeys
from vault.errors import VaultError
from vault.storage.engine import make_engine
from vault.storage.migrate import Database, require_current

PROBLEM = "application/problem+json"


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        oplog.configure(settings.log_level)
        app.state.data_engine = make_engine(settings.data_url)
        app.state.keys_engine = make_engine(settings.keys_url)
        app.state.provider = None
        try:
            yield
        finally:
            if app.state.provider is not None:
                app.state.provider.close()
            app.state.data_engine.dispose()
            app.state.keys_engine.dispose()

    def provider_ready() -> bool:
        """One long-lived provider per process (a PKCS#11 login is per process); reopened after a failure."""
        try:
            if app.state.provider is None:
                app.state.provider = open_provider(settings)
            app.state.provider.check()
        except KeysError:
            if app.state.provider is not None:
                app.state.provider.close()
                app.state.provider = None
            return False
        return True

    production = settings.is_production
    app = FastAPI(
        title="Member Vault",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None if production else "/docs",
        redoc_url=None,
        openapi_url=None if production else "/openapi.json",
    )

    def audit_ready(checks: dict[str, str]) -> tuple[str, str | None]:
        """The published checkpoint (``audit/last-checkpoint``) must be a prefix of the stored tree.

        Otherwise — say, after a restore — the vault must not sign on: not ready,
        with the checkpointer's reason (sizes and codes, no values).
        """
        if checks.get("database") != "ok" or checks.get("keystore") != "ok" or app.state.provider is None:
            return "not_ready", None
        checkpointer = make_checkpointer(settings, app.state.data_engine, SigningKeys(app.state.keys_engine, app.state.provider))
        try:
            status = checkpointer.status()
        except (AuditError, KeysError, SQLAlchemyError):
            return "not_ready", None
        return ("ok", None) if status.ok else ("not_ready", status.reason)

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness: databases migrated, key provider usable", response_model=None)
    def readyz() -> JSONResponse | dict[str, object]:
        checks: dict[str, str] = {}
        for name, engine, which in (("database", app.state.data_engine, Database.data), ("keystore", app.state.keys_engine, Database.keystore)):
            try:
                require_current(engine, which)
                checks[name] = "ok"
            except (VaultError, SQLAlchemyError):
                checks[name] = "not_ready"
        checks["key_provider"] = "ok" if provider_ready() else "not_ready"
        checks["audit_checkpoint"], audit_reason = audit_ready(checks)
        if all(v == "ok" for v in checks.values()):
            return {"status": "ready", "checks": checks}
        failed = sorted(k for k, v in checks.items() if v != "ok")
        detail = f"not ready: {', '.join(failed)}" + (f" ({audit_reason})" if audit_reason else "")
        body = {
            "type": "https://member-vault.example/problems/not-ready",
            "title": "Service not ready",
            "status": 503,
            "detail": detail,
            "request_id": secrets.token_hex(8),
            "checks": checks,
        }
        return JSONResponse(body, status_code=503, media_type=PROBLEM, headers={"Cache-Control": "no-store"})

    return app


def app_from_environment() -> FastAPI:
    """uvicorn factory: Settings from the environment (used by ``vaultctl serve``)."""
    return create_app(Settings())


__all__ = ["app_from_environment", "create_app"]
