"""The FastAPI application factory.

This first cut serves liveness and readiness only; the data routes of API.md
come with the HTTP API issue. Readiness fails closed: an unmigrated database,
an unreachable database or an unusable key provider is 503 with a
problem+json body that names the failed check, never a secret or a value.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from api import logging as oplog
from api.runtime import open_provider
from api.settings import Settings
from keys.errors import KeysError
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
        if all(v == "ok" for v in checks.values()):
            return {"status": "ready", "checks": checks}
        failed = sorted(k for k, v in checks.items() if v != "ok")
        body = {
            "type": "https://member-vault.example/problems/not-ready",
            "title": "Service not ready",
            "status": 503,
            "detail": f"not ready: {', '.join(failed)}",
            "request_id": secrets.token_hex(8),
            "checks": checks,
        }
        return JSONResponse(body, status_code=503, media_type=PROBLEM, headers={"Cache-Control": "no-store"})

    return app


def app_from_environment() -> FastAPI:
    """uvicorn factory: Settings from the environment (used by ``vaultctl serve``)."""
    return create_app(Settings())


__all__ = ["app_from_environment", "create_app"]
