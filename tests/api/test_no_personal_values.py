"""No personal value leaks (SECURITY-BAR H16, H17; ASVS 16.2.5): canaries through every kind of request.

A member is created over HTTP with canary values (a unique phone, e-mail,
name, resident ID, card number, address) and then read, patched, searched,
refused, broken-glass and sent malformed and invalid requests that carry
the canaries. The operational log runs through the real processor chain
(``api.logging.PROCESSORS``) into a buffer; stdlib logging is captured too.

Invariant: no canary — in any spelling a log, JSON or URL could give it
(as is, lower/upper case, JSON-escaped, percent-encoded, digits only) — and
no bearer token appears in a log line (paths included), an error body, an
audit journal leaf or a response header. Successful reads are the only
place a canary may come back, to a caller allowed to see it.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import date
from typing import Any
from urllib.parse import quote

import httpx2 as httpx
import pytest
import structlog

from api import logging as oplog
from tests.api.conftest import Vault
from vault.demo.seed import resident_id

CLINIC = "sh-001"
CANARY_ID = resident_id("110105", date(1987, 3, 9), 421, female=True)
CANARIES = {
    "phone": "+8615811223344",
    "email": "canary.zhou.7391@example.cn",
    "full_name": "周金丝雀",
    "national_id": CANARY_ID,
    "card_no": "CANARY7391",
    "address": "北京市朝阳区金丝雀路88号",
    "second_email": "canary.second.7391@example.cn",
}
BODY = {
    "membership": {"card_no": CANARIES["card_no"], "tier": "silver", "status": "active", "joined_at": "2023-06-01", "home_clinic_id": CLINIC},
    "identity": {"full_name": CANARIES["full_name"], "id_type": "resident_id", "national_id": CANARY_ID, "date_of_birth": "1987-03-09", "gender": "female"},
    "contact": {"phone": CANARIES["phone"], "email": CANARIES["email"], "address": CANARIES["address"], "preferred_channel": "wechat"},
}


def spellings(value: str) -> set[str]:
    out = {value, value.lower(), value.upper(), json.dumps(value)[1:-1], quote(value), quote(value, safe="")}
    digits = re.sub(r"\D", "", value)
    if len(digits) >= 8:
        out |= {digits, digits[-11:]}  # a phone's national number, an ID's digits
    return out


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    """The operational log through the real processor chain, into a buffer."""
    buffer = io.StringIO()
    structlog.configure(
        processors=oplog.PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=buffer),
        cache_logger_on_first_use=False,
    )
    yield buffer
    structlog.reset_defaults()


def exercise(vault: Vault) -> tuple[list[tuple[str, httpx.Response]], list[str]]:
    """Every kind of request around the canary member; returns (name, response) pairs and the tokens used."""
    desk = vault.token("front_desk", subject="desk-c", clinics=[CLINIC])
    elsewhere = vault.token("front_desk", subject="desk-y", clinics=["zz-999"])
    doctor = vault.token("practitioner", subject="dr-y", clinics=["zz-999"])
    other_member = vault.token("member", subject="member-0", member_id=vault.members[0].member_id)
    out: list[tuple[str, httpx.Response]] = []

    def call(name: str, method: str, path: str, token: str, purpose: str = "care", *, body: object = None, **options: Any) -> httpx.Response:
        raw = options.pop("raw", None if body is None else json.dumps(body, ensure_ascii=False))
        media = options.pop("media", "application/merge-patch+json" if method == "PATCH" else "application/json")
        headers = vault.headers(token, purpose, **options.pop("headers", {})) | ({} if raw is None else {"Content-Type": media})
        r = vault.client.request(method, path, content=raw, headers=headers, params=options.pop("params", None))
        out.append((name, r))
        return r

    created = call("create", "POST", "/v1/members", desk, body=BODY)
    assert created.status_code == 201, created.text
    url = f"/v1/members/{created.json()['member_id']}"
    assert call("read", "GET", url, desk).json()["contact"]["phone"] == CANARIES["phone"]  # the canaries really are stored
    call("patch", "PATCH", url, desk, body={"contact": {"email": CANARIES["second_email"]}})
    for field in ("phone", "national_id", "card_no", "email"):
        term = {field: CANARIES["second_email"] if field == "email" else CANARIES[field]}
        call(f"search-{field}", "POST", "/v1/members/search", desk, body=term)
        call(f"search-{field}-other-member", "POST", "/v1/members/search", other_member, "self_service", body=term)
    call("search-denied", "POST", "/v1/members/search", desk, "marketing_contact", body={"phone": CANARIES["phone"]})
    call("read-denied", "GET", url, elsewhere)
    call("patch-denied", "PATCH", url, elsewhere, body={"contact": {"phone": CANARIES["phone"]}})
    call("create-denied", "POST", "/v1/members", doctor, body=BODY)
    call("break-glass", "GET", url, doctor, headers={"X-Break-Glass-Reason": "emergency_care"})
    call("patch-invalid-phone", "PATCH", url, desk, body={"contact": {"phone": CANARIES["phone"] + "9"}})
    call("patch-invalid-national-id", "PATCH", url, desk, body={"identity": {"national_id": CANARY_ID[:-1] + ("1" if CANARY_ID[-1] == "0" else "0")}})
    call("patch-invalid-email", "PATCH", url, desk, body={"contact": {"email": CANARIES["email"] + "@"}})
    call("patch-canary-as-key", "PATCH", url, desk, body={"contact": {CANARIES["phone"]: 1}})
    call("create-canary-as-key", "POST", "/v1/members", desk, body={**BODY, "contact": {**BODY["contact"], CANARIES["phone"]: 1}})
    call("create-duplicate", "POST", "/v1/members", desk, body=BODY)
    call("malformed", "POST", "/v1/members", desk, raw='{"contact": {"phone": "' + CANARIES["phone"] + '"')
    call("duplicate-key", "POST", "/v1/members/search", desk, raw=json.dumps(BODY["contact"])[:-1] + f', "phone": "{CANARIES["phone"]}"}}')
    call("wrong-media-type", "PATCH", url, desk, body={"contact": {"phone": CANARIES["phone"]}}, media="text/plain")
    call("purpose-carrying-a-value", "GET", url, desk, CANARIES["phone"])
    call("query-string", "GET", "/v1/members/search", desk, params={"phone": CANARIES["phone"], "name": CANARIES["full_name"]})
    call("query-on-post", "POST", "/v1/members/search", desk, body={"card_no": "MV0000000000"}, params={"email": CANARIES["email"]})
    call("canary-in-path", "GET", f"/v1/members/{quote(CANARIES['phone'])}", desk)
    return out, [desk, elsewhere, doctor, other_member]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_no_canary_or_token_reaches_logs_errors_audit_or_headers(vault: Vault, log_buffer: io.StringIO, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    responses, tokens = exercise(vault)

    assert all(r.status_code < 500 for _, r in responses), [(n, r.status_code) for n, r in responses if r.status_code >= 500]
    assert {n for n, r in responses if r.status_code >= 400} >= {"read-denied", "patch-denied", "create-denied", "patch-invalid-phone", "malformed"}
    logged = log_buffer.getvalue()
    lines = [json.loads(line) for line in logged.splitlines()]
    assert len([line for line in lines if line.get("event") == "request"]) == len(responses)
    places = {
        "operational log": logged,
        "log paths": "\n".join(str(line.get("path", "")) for line in lines),
        # stdlib logging of the vault's side (the test client's own request log is the caller's, not the vault's)
        "stdlib log": "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx")),
        **{f"error body of {n}": r.text for n, r in responses if r.status_code >= 400},
        **{f"headers of {n}": json.dumps(list(r.headers.multi_items()), ensure_ascii=False) for n, r in responses},
        **{f"audit leaf {i}": leaf.decode("utf-8") for i, leaf in enumerate(vault.journal_events())},
    }
    secrets = {f"canary {k}": spellings(v) for k, v in CANARIES.items()} | {f"token {i}": {t, t.rsplit(".", 1)[1]} for i, t in enumerate(tokens)}
    leaks = sorted({(where, what) for where, text in places.items() for what, forms in secrets.items() for form in forms if form in text})
    assert leaks == []


@pytest.mark.parametrize("backend", ["sqlite"])
def test_error_bodies_name_fields_never_values(vault: Vault) -> None:
    responses, _ = exercise(vault)
    errors = {n: r.json() for n, r in responses if r.status_code == 422}
    assert errors["patch-invalid-phone"]["errors"] == {"phone": "invalid_phone"}
    assert errors["patch-invalid-national-id"]["errors"] == {"national_id": "invalid_checksum"}
    for name in ("patch-canary-as-key", "create-canary-as-key"):
        refused = errors[name]["errors"]
        assert list(refused.values()) == ["unknown_field"], name
        assert CANARIES["phone"] not in refused, name  # a made-up name is not echoed: it could be a value
    assert errors["patch-invalid-email"]["errors"] == {"email": "invalid_email"}
