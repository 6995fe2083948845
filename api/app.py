"""The FastAPI application factory.

Routers per resource in ``api/routers``; every error is RFC 9457
problem+json (``api.problems``). Readiness fails closed: an unmigrated or
unreachable database, an unusable key provider or a published audit
checkpoint that the stored tree does not extend is 503 with a body that
names the failed check, never a secret or a value. ``/docs`` and
``/openapi.json`` are off in production mode.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.telemetry import TelemetryConfig
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import logging as oplog
from api import problems as p
from api import routers
from api.http import EdgeMiddleware, request_id_of
from api.routers import health
from api.services import AuditPump, ServiceHolder
from api.settings import Settings
from audit.errors import AuditError
from keys.errors import KeysError
from vault.errors import VaultError

log = structlog.get_logger("api.errors")
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail", "request_id"],
    "properties": {
        "type": {"type": "string", "format": "uri", "enum": [p.TYPE_BASE + k.slug for k in p.KINDS]},
        "title": {"type": "string"},
        "status": {"type": "integer", "enum": sorted({k.status for k in p.KINDS})},
        "detail": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "string"}, "description": "field path → reason code (invalid fields only)"},
    },
}


NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False, "auto_configure": False}


def create_app(settings: Settings, *, audit_pump: bool = True) -> FastAPI:
    holder = ServiceHolder(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        oplog.configure(settings.log_level)
        health.open_probes(app, settings)
        pump = AuditPump(holder) if audit_pump else None
        if pump is not None:
            pump.start()
        try:
            yield
        finally:
            if pump is not None:
                pump.stop()
            holder.close()
            health.close_probes(app)

    production = settings.is_production
    app = FastAPI(
        # FastAPI's own OpenTelemetry hooks would export request spans, validation failures and exception
        # messages to whatever provider the environment configures: nothing leaves the vault that way.
        telemetry=NO_TELEMETRY,
        title="Member Vault",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None if production else "/docs",
        redoc_url=None,
        openapi_url=None if production else "/openapi.json",
    )
    app.state.services = holder
    app.state.settings = settings
    app.add_middleware(EdgeMiddleware, max_body_bytes=settings.max_body_bytes)
    _install_error_handlers(app)
    for module in routers.ALL:
        app.include_router(module.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes, description="Member Vault API (API.md)")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (m for module in routers.ALL for m in getattr(module, "SCHEMAS", ())):
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
            components["Problem"] = PROBLEM_SCHEMA
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customize the schema
    return app


def _install_error_handlers(app: FastAPI) -> None:
    async def problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, p.ProblemError)  # noqa: S101 - registered for ProblemError only
        return p.render(exc, request_id_of(request.scope))

    async def invalid_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for RequestValidationError only
        where = sorted({str(e["loc"][0]) for e in exc.errors() if e.get("loc")})
        return p.render(p.ProblemError(p.BAD_REQUEST, f"malformed request ({', '.join(where) or 'request'})"), request_id_of(request.scope))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for HTTPException only
        kind = {404: p.NOT_FOUND, 405: p.METHOD_NOT_ALLOWED}.get(exc.status_code, p.BAD_REQUEST)
        headers = dict(exc.headers or {})
        return p.render(p.ProblemError(kind, kind.title.lower(), headers=headers), request_id_of(request.scope))

    async def database_error(request: Request, exc: Exception) -> Response:
        log.warning("request.database_error", error=type(exc).__name__.lower())
        return p.render(p.ProblemError(p.UNAVAILABLE, "the vault cannot serve this request now"), request_id_of(request.scope))

    async def domain(request: Request, exc: Exception) -> Response:
        answer = p.problem_for(exc)
        log.warning("request.refused", error=type(exc).__name__.lower(), status=answer.kind.status)
        return p.render(answer, request_id_of(request.scope))

    async def last_resort(request: Request, exc: Exception) -> Response:
        log.error("request.unhandled", error=type(exc).__name__.lower())
        return p.render(p.problem_for(exc), request_id_of(request.scope))

    app.add_exception_handler(p.ProblemError, problem)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(SQLAlchemyError, database_error)
    for domain_error in (VaultError, AuditError, KeysError):
        app.add_exception_handler(domain_error, domain)
    app.add_exception_handler(Exception, last_resort)


def app_from_environment() -> FastAPI:
    """uvicorn factory: Settings from the environment (used by ``vaultctl serve``)."""
    return create_app(Settings())


__all__ = ["app_from_environment", "create_app"]
