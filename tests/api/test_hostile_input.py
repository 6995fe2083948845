"""Hostile and malformed input on POST and PATCH /v1/members (SECURITY-BAR H13–H16): a clear 4xx, nothing stored.

Invariants: every answer is problem+json with the response's request id and
never a 500; a body that is not strict JSON is 400, too large 413, of the
wrong media type 415; a value that breaks a field rule — or a field the
resource does not have (no mass assignment) — is 422 naming the field and
never the value, and neither the member count nor a patched member changes;
checks run in the order 401 → 400 → 403 → 422, so a caller who may not
write learns nothing about field rules. A refusal before the decision (401,
400, 413, 415) journals nothing; a 403 journals one deny event, a 422 one
allow event whose outcome is ``invalid``. A personal value in a query
string is 404/405 and reaches no log.
"""

from __future__ import annotations

import copy
import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import httpx2 as httpx
import pytest
import structlog
from sqlalchemy import func, select

from api import logging as oplog
from tests.api.conftest import Vault
from vault import data_map as dm
from vault.demo.seed import resident_id
from vault.storage.schema import members

SQLITE = pytest.mark.parametrize("backend", ["sqlite"])
CLINIC = "sh-001"
NATIONAL_ID = resident_id("310101", date(1990, 5, 17), 7, female=False)
BAD_CHECKSUM = NATIONAL_ID[:-1] + ("1" if NATIONAL_ID[-1] == "0" else "0")
VALID: dict[str, dict[str, Any]] = {
    "membership": {"card_no": "HI0000000001", "tier": "gold", "status": "active", "joined_at": "2024-01-02", "home_clinic_id": CLINIC},
    "identity": {"full_name": "张伟", "id_type": "resident_id", "national_id": NATIONAL_ID, "date_of_birth": "1990-05-17", "gender": "male"},
    "contact": {"phone": "+8613912345678", "email": "zhang.wei@example.cn", "address": "上海市黄浦区", "wechat_id": "wx_zw", "preferred_channel": "sms"},
    "demographic": {"city": "上海", "occupation": "教师", "education": "bachelor", "income_band": "10k_20k", "marital_status": "single"},
}

# case → (change to a valid body, status, the problem's ``errors``)
INVALID: dict[str, tuple[dict[str, Any], int, dict[str, str]]] = {
    "national-id-bad-checksum": ({"identity": {"national_id": BAD_CHECKSUM}}, 422, {"national_id": "invalid_checksum"}),
    "phone-not-a-number": ({"contact": {"phone": "12345"}}, 422, {"phone": "invalid_phone"}),
    "phone-with-letters": ({"contact": {"phone": "+86139CALLME1"}}, 422, {"phone": "invalid_phone"}),
    "date-2026-02-30": ({"membership": {"joined_at": "2026-02-30"}}, 422, {"joined_at": "invalid_date"}),
    "enum-outside-its-set": ({"membership": {"tier": "bronze"}}, 422, {"tier": "not_in_value_set"}),
    "unknown-field": ({"identity": {"nickname": "小伟"}}, 422, {"nickname": "unknown_field"}),
    "unknown-category": ({"hobbies": {"golf": True}}, 422, {"hobbies": "unknown_field"}),
    "mass-assignment-member-id": ({"member_id": "1" * 32}, 422, {"member_id": "unknown_field"}),
    "mass-assignment-redacted": ({"redacted": []}, 422, {"redacted": "unknown_field"}),
    "mass-assignment-created-at": ({"created_at": "2024-01-01T00:00:00Z"}, 422, {"created_at": "unknown_field"}),
    "nul-in-a-name": ({"identity": {"full_name": "张\u0000伟"}}, 422, {"full_name": "control_character"}),
    "a-category-the-caller-may-not-write": ({"health": {"skin_type": "dry"}}, 403, {}),
}


def with_change(change: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(VALID)
    for key, value in change.items():
        body[key] = {**body[key], **value} if isinstance(value, dict) and key in body else value
    return body


def member_count(vault: Vault) -> int:
    with vault.runtime.data_engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(members)).scalar_one())


def everything(vault: Vault, member_id: str) -> dict[dm.Category, dict[str, object]]:
    with vault.runtime.data_engine.connect() as conn:
        return dict(vault.runtime.members.read(conn, member_id, set(dm.categories_of(dm.Table.members))).values)


def desk(vault: Vault, clinic: str = CLINIC) -> str:
    return vault.token("front_desk", subject="desk-c", clinics=[clinic])


def post(vault: Vault, content: bytes | str, headers: dict[str, str], content_type: str = "application/json") -> httpx.Response:
    return vault.client.post("/v1/members", content=content, headers={**headers, "Content-Type": content_type})


def assert_problem(r: httpx.Response, status: int, errors: dict[str, str] | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status
    assert body["request_id"] == r.headers["x-request-id"]
    if errors is not None:
        assert body.get("errors", {}) == errors


def assert_one_event(vault: Vault, journaled: int, status: int) -> None:
    """The decision left exactly one event: a deny for 403, an allow whose outcome is ``invalid`` for 422."""
    assert vault.journal_size() == journaled + 1
    event = json.loads(vault.journal_events()[-1])
    assert (event["decision"], event["outcome"]) == (("deny", "denied") if status == 403 else ("allow", "invalid"))


@SQLITE
def test_the_valid_body_creates_a_member(vault: Vault) -> None:
    before = member_count(vault)
    r = post(vault, json.dumps(VALID), vault.headers(desk(vault), "care"))
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v1/members/{r.json()['member_id']}"
    assert member_count(vault) == before + 1


@SQLITE
@pytest.mark.parametrize("case", sorted(INVALID))
def test_an_invalid_field_on_create_is_refused_and_nothing_is_stored(vault: Vault, case: str) -> None:
    change, status, errors = INVALID[case]
    before, journaled = member_count(vault), vault.journal_size()
    r = post(vault, json.dumps(with_change(change), ensure_ascii=False), vault.headers(desk(vault), "care"))
    assert_problem(r, status, errors)
    assert member_count(vault) == before
    assert_one_event(vault, journaled, status)


@SQLITE
@pytest.mark.parametrize("case", sorted(INVALID))
def test_an_invalid_field_on_patch_is_refused_and_the_previous_values_stay(vault: Vault, case: str) -> None:
    change, status, errors = INVALID[case]
    member = vault.members[0]
    previous = everything(vault, member.member_id)
    body = with_change(change)
    if isinstance(body.get("membership"), dict):
        body["membership"]["home_clinic_id"] = member.home_clinic_id  # moving the home clinic elsewhere is its own denial
    headers = {**vault.headers(desk(vault, member.home_clinic_id), "care"), "Content-Type": "application/merge-patch+json"}
    journaled = vault.journal_size()
    r = vault.client.patch(f"/v1/members/{member.member_id}", content=json.dumps(body, ensure_ascii=False), headers=headers)
    assert_problem(r, status, errors)
    assert everything(vault, member.member_id) == previous
    assert_one_event(vault, journaled, status)


NESTED = "[" * 10_000 + "]" * 10_000
# case → (raw body, content type, status)
MALFORMED: dict[str, tuple[bytes, str, int]] = {
    "over-64-kib": (json.dumps({"pad": "x" * (64 * 1024)}).encode(), "application/json", 413),
    "nested-10000-deep": (NESTED.encode(), "application/json", 400),
    "invalid-utf8": (b'{"identity": {"full_name": "\xff\xfe"}}', "application/json", 400),
    "lone-surrogate": (b'{"identity": {"full_name": "\\ud800"}}', "application/json", 400),
    "duplicate-keys": (b'{"contact": {"phone": "+8613912345678", "phone": "+8613900000000"}}', "application/json", 400),
    "integer-over-2-53": (b'{"membership": {"tier": 9007199254740993}}', "application/json", 400),
    "not-json": (b"membership=gold", "application/json", 400),
    "text-plain": (json.dumps(VALID).encode(), "text/plain", 415),
    "form-encoded": (b"membership=gold", "application/x-www-form-urlencoded", 415),
    "merge-patch-on-post": (json.dumps(VALID).encode(), "application/merge-patch+json", 415),
}


@SQLITE
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_body_is_refused_before_any_decision(vault: Vault, case: str) -> None:
    raw, content_type, status = MALFORMED[case]
    before, journaled = member_count(vault), vault.journal_size()
    assert_problem(post(vault, raw, vault.headers(desk(vault), "care"), content_type), status)
    assert (member_count(vault), vault.journal_size()) == (before, journaled)


@SQLITE
def test_a_streamed_body_past_the_cap_is_413(vault: Vault) -> None:
    chunks = (b"x" * 1024 for _ in range(70))  # no Content-Length: the cap counts while the body streams in
    before = member_count(vault)
    assert_problem(post(vault, chunks, vault.headers(desk(vault), "care")), 413)  # type: ignore[arg-type]  # httpx takes an iterator of bytes
    assert member_count(vault) == before


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    """The operational log through the real processor chain (api.logging.PROCESSORS), into a buffer."""
    buffer = io.StringIO()
    structlog.configure(
        processors=oplog.PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=buffer),
        cache_logger_on_first_use=False,
    )
    yield buffer
    structlog.reset_defaults()


@SQLITE
def test_a_phone_in_a_query_string_is_404_or_405_and_never_logged(vault: Vault, log_buffer: io.StringIO) -> None:
    canary = "+8613987654321"
    r = vault.client.get("/v1/members/search", params={"phone": canary}, headers=vault.headers(desk(vault), "care"))
    logged = log_buffer.getvalue()
    assert [(line["method"], line["path"]) for line in map(json.loads, logged.splitlines()) if line["event"] == "request"] == [("get", "/v1/members/search")]
    for text in (logged, r.text, *(e.decode() for e in vault.journal_events())):
        assert canary not in text
        assert canary[3:] not in text
    assert r.status_code in (404, 405), r.text
    assert_problem(r, r.status_code)


@SQLITE
def test_patch_wants_merge_patch_json(vault: Vault) -> None:
    member = vault.members[0]
    headers = {**vault.headers(desk(vault, member.home_clinic_id), "care"), "Content-Type": "application/json"}
    r = vault.client.patch(f"/v1/members/{member.member_id}", content=json.dumps({"contact": {"wechat_id": "wx_new"}}), headers=headers)
    assert_problem(r, 415)


@SQLITE
@pytest.mark.parametrize("purpose", [None, "", "curiosity", "health_data", "CARE", "care, self_service"])
def test_a_missing_unknown_or_unstatable_purpose_is_400(vault: Vault, purpose: str | None) -> None:
    headers = {"Authorization": f"Bearer {desk(vault)}"} | ({} if purpose is None else {"X-Purpose": purpose})
    before, journaled = member_count(vault), vault.journal_size()
    assert_problem(post(vault, json.dumps(VALID), headers), 400)
    assert (member_count(vault), vault.journal_size()) == (before, journaled)


# The order of checks: 401 → 400 → 403 → 422. Each case: (token builder, purpose, body, content type, status).
Token = Callable[[Vault], str | None]
ORDER: dict[str, tuple[Token, str | None, bytes, str, int]] = {
    "no-token-and-bad-json": (lambda v: None, "care", b"{", "application/json", 401),
    "no-token-no-purpose-wrong-type": (lambda v: None, None, b"{", "text/plain", 401),
    "bad-token-and-bad-body": (lambda v: "not.a.token", "care", b'{"a":1,"a":2}', "application/json", 401),
    "valid-token-bad-json": (desk, "care", b'{"membership": ', "application/json", 400),
    "forbidden-caller-bad-json": (lambda v: v.token("practitioner", clinics=[CLINIC]), "care", b"[[[", "application/json", 400),
    "forbidden-caller-no-purpose": (lambda v: v.token("practitioner", clinics=[CLINIC]), None, json.dumps(VALID).encode(), "application/json", 400),
    "forbidden-caller-invalid-field": (
        lambda v: v.token("practitioner", clinics=[CLINIC]),
        "care",
        json.dumps(with_change({"contact": {"phone": "12345"}})).encode(),
        "application/json",
        403,
    ),
    "other-clinic-invalid-field": (
        lambda v: desk(v, "zz-999"),
        "care",
        json.dumps(with_change(INVALID["date-2026-02-30"][0])).encode(),
        "application/json",
        403,
    ),
}


@SQLITE
@pytest.mark.parametrize("case", sorted(ORDER))
def test_checks_run_in_order(vault: Vault, case: str) -> None:
    token, purpose, raw, content_type, status = ORDER[case]
    issued = token(vault)
    headers = ({} if issued is None else {"Authorization": f"Bearer {issued}"}) | ({} if purpose is None else {"X-Purpose": purpose})
    before, journaled = member_count(vault), vault.journal_size()
    assert_problem(post(vault, raw, headers, content_type), status)
    assert member_count(vault) == before
    assert vault.journal_size() == journaled + (1 if status == 403 else 0)


@SQLITE
def test_a_forbidden_patch_with_an_invalid_field_is_403_not_422(vault: Vault) -> None:
    member = vault.members[0]
    token = vault.token("member", subject="member-0", member_id=member.member_id)
    headers = {**vault.headers(token, "self_service"), "Content-Type": "application/merge-patch+json"}
    previous = everything(vault, member.member_id)
    r = vault.client.patch(f"/v1/members/{member.member_id}", content=json.dumps({"membership": {"tier": "bronze"}}), headers=headers)
    assert_problem(r, 403, {})
    assert everything(vault, member.member_id) == previous
