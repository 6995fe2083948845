"""Liveness and readiness (public routes).

Readiness fails closed: every check must pass — both databases at the
code's revision, the key provider usable, the audit store writable by this
process (PostgreSQL: INSERT on the journal and its sequence; SQLite: the
write lock can be taken), the published audit checkpoint a prefix of the
stored tree — or the answer is 503 naming the failed checks.
The probes use their own engines and key provider, apart from the request
path's, so readiness reports the truth even when the data routes cannot open.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from api.http import request_id_of
from api.offload import offloaded
from api.problems import PROBLEM_MEDIA_TYPE, TYPE_BASE
from api.runtime import make_checkpointer, open_provider
from api.settings import Settings
from audit.errors import AuditError
from keys.errors import KeysError
from keys.signing import SigningKeys
from vault.errors import VaultError
from vault.storage.engine import SQLITE_IMMEDIATE, make_engine
from vault.storage.migrate import Database, require_current

router = APIRouter(tags=["operations"])
_PG_JOURNAL_WRITABLE = text(
    "SELECT has_table_privilege(current_user, 'audit_journal', 'INSERT')"
    " AND has_sequence_privilege(current_user, pg_get_serial_sequence('audit_journal', 'journal_id'), 'USAGE')"
)


def open_probes(app: FastAPI, settings: Settings) -> None:
    app.state.probe_data_engine = make_engine(settings.data_url, pool_size=1)
    app.state.probe_keys_engine = make_engine(settings.keys_url, pool_size=1)
    app.state.probe_provider = None


def close_probes(app: FastAPI) -> None:
    if app.state.probe_provider is not None:
        app.state.probe_provider.close()
    app.state.probe_data_engine.dispose()
    app.state.probe_keys_engine.dispose()


def _provider_ready(app: FastAPI, settings: Settings) -> bool:
    """One long-lived provider per process (a PKCS#11 login is per process); reopened after a failure."""
    try:
        if app.state.probe_provider is None:
            app.state.probe_provider = open_provider(settings)
        app.state.probe_provider.check()
    except KeysError:
        if app.state.probe_provider is not None:
            app.state.probe_provider.close()
            app.state.probe_provider = None
        return False
    return True


def _audit_store_writable(engine: Engine) -> bool:
    """Could a request journal its event now? Checked without writing one."""
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                return bool(conn.execute(_PG_JOURNAL_WRITABLE).scalar())
            conn.execution_options(**{SQLITE_IMMEDIATE: True})
            with conn.begin():  # BEGIN IMMEDIATE: the write lock, then a commit of nothing
                return True
    except SQLAlchemyError:
        return False


def _audit_ready(app: FastAPI, settings: Settings, checks: dict[str, str]) -> tuple[str, str | None]:
    """The published checkpoint (``audit/last-checkpoint``) must be a prefix of the stored tree."""
    if checks.get("database") != "ok" or checks.get("keystore") != "ok" or app.state.probe_provider is None:
        return "not_ready", None
    checkpointer = make_checkpointer(settings, app.state.probe_data_engine, SigningKeys(app.state.probe_keys_engine, app.state.probe_provider))
    try:
        status = checkpointer.status()
    except (AuditError, KeysError, SQLAlchemyError):
        return "not_ready", None
    return ("ok", None) if status.ok else ("not_ready", status.reason)


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: databases migrated, key provider usable, audit store writable, audit checkpoint consistent", response_model=None)
@offloaded
def readyz(request: Request) -> JSONResponse | dict[str, Any]:
    app: FastAPI = request.app
    settings: Settings = app.state.settings
    checks: dict[str, str] = {}
    for name, engine, which in (("database", app.state.probe_data_engine, Database.data), ("keystore", app.state.probe_keys_engine, Database.keystore)):
        try:
            require_current(engine, which)
            checks[name] = "ok"
        except (VaultError, SQLAlchemyError):
            checks[name] = "not_ready"
    checks["key_provider"] = "ok" if _provider_ready(app, settings) else "not_ready"
    writable = checks["database"] == "ok" and _audit_store_writable(app.state.probe_data_engine)
    checks["audit_store"] = "ok" if writable else "not_ready"
    checks["audit_checkpoint"], audit_reason = _audit_ready(app, settings, checks)
    if all(v == "ok" for v in checks.values()):
        return {"status": "ready", "checks": checks}
    failed = sorted(k for k, v in checks.items() if v != "ok")
    detail = f"not ready: {', '.join(failed)}" + (f" ({audit_reason})" if audit_reason else "")
    body = {
        "type": TYPE_BASE + "not-ready",
        "title": "Service not ready",
        "status": 503,
        "detail": detail,
        "request_id": request_id_of(request.scope),
        "checks": checks,
    }
    return JSONResponse(body, status_code=503, media_type=PROBLEM_MEDIA_TYPE, headers={"Cache-Control": "no-store"})


SCHEMAS: tuple[type, ...] = ()

__all__ = ["SCHEMAS", "close_probes", "open_probes", "router"]
