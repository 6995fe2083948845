"""FastAPI's own OpenTelemetry hooks stay off, even when the environment configures a tracer provider.

They would export request spans, validation failures and exception messages
to whatever collector the environment names. The check runs in a fresh
interpreter (a global tracer provider can be set only once per process) with
a tracer provider that records every span started; a plain FastAPI app in
the same interpreter shows that the recorder does see spans.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from api.settings import Settings

_SCRIPT = r"""
import json, sys
from opentelemetry import trace
from opentelemetry.trace import NoOpTracer, TracerProvider

started = []

class Recording(NoOpTracer):
    def start_span(self, name, *args, **kwargs):
        started.append(name)
        return super().start_span(name, *args, **kwargs)

    def start_as_current_span(self, name, *args, **kwargs):
        started.append(name)
        return super().start_as_current_span(name, *args, **kwargs)

class Provider(TracerProvider):
    def get_tracer(self, *args, **kwargs):
        return Recording()

trace.set_tracer_provider(Provider())

from fastapi import FastAPI
from fastapi.testclient import TestClient
from api.app import create_app
from api.settings import Settings

plain = FastAPI()

@plain.get("/ping")
def ping() -> dict[str, str]:
    return {"ok": "yes"}

with TestClient(plain) as client:
    client.get("/ping")
plain_spans = len(started)
started.clear()
with TestClient(create_app(Settings(_env_file=None, data_dir=sys.argv[1]), audit_pump=False), raise_server_exceptions=False) as client:
    client.get("/healthz")
    client.get("/v1/members/" + "0" * 32, headers={"Authorization": "Bearer not-a-token"})
    client.post("/v1/members/search", content=b"{", headers={"Authorization": "Bearer x"})
print(json.dumps({"plain": plain_spans, "vault": len(started)}))
"""


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_no_span_is_started_even_with_a_tracer_provider_and_auto_configuration(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    env = {"PATH": "/usr/bin:/bin", "FASTAPI_OTEL_AUTO_CONFIGURE": "true", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(settings.data_dir)], env=env, capture_output=True, text=True, timeout=120, check=True)
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["plain"] > 0  # the recorder sees FastAPI's spans when they are on
    assert counts["vault"] == 0
