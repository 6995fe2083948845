"""The app as ``vaultctl serve`` builds it, plus one bare route that exists only in the benchmark.

``GET /bench/bare/{member_id}`` reads the same member's values from a
plaintext copy (``bench_plain``, written by the benchmark's setup) with no
authentication, policy, cryptography or audit — the baseline the full
``GET /v1/members/{member_id}`` is compared with, in the same process.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response
from sqlalchemy import text

from api.app import create_app
from api.settings import Settings
from vault.storage.engine import make_engine

PLAIN_TABLE = "bench_plain"


def app() -> FastAPI:
    settings = Settings()
    application = create_app(settings)
    engine = make_engine(settings.data_url)
    query = text(f"SELECT body FROM {PLAIN_TABLE} WHERE member_id = :member_id")

    @application.get("/bench/bare/{member_id}", include_in_schema=False)
    def bare(member_id: str) -> Response:
        with engine.connect() as conn:
            body = conn.execute(query, {"member_id": member_id}).scalar_one()
        return Response(body, media_type="application/json")

    return application
