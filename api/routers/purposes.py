"""The purpose catalog (public) and publishing a notice version (dpo).

``GET /v1/purposes`` needs no token: it lists every purpose with its legal
basis, whether it needs consent and concerns sensitive data, the notice in
effect now (texts in Chinese and English with their SHA-256, the notice
hash) and any version published to take effect later. It holds no personal
data and is not audited.

``POST /v1/purposes/{purpose}/notices`` publishes a version (decision on
``purposes:notices``; no ``X-Purpose``: no personal data is reached). One audit
event, ``publish_notice`` on ``notice`` ``<purpose>:<version>``. A version that
is not above the latest is a 409 naming the latest; ``effective_at`` in the
past or before the latest version's is a 422. A material version makes earlier
grants stale from its ``effective_at`` plus the grace period
(``VAULT_CONSENT_GRACE_DAYS``); the answer says when.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from api import problems as p
from api.decisions import operation_access
from api.deps import CallerDep, JsonBodyDep, NowDep, RequestIdDep, ServicesDep, model_or_problems
from api.offload import offloaded
from api.responses import json_response, refuse
from api.schemas.consent import NoticePublish, NoticePublished, PurposeCatalog
from vault.access import Refusal
from vault.consent import Notice, NoticeBook, NoticeDraft
from vault.purposes import Purpose

router = APIRouter(prefix="/v1/purposes", tags=["consent"])
PurposePath = Annotated[Purpose, Path(description="a purpose id of the catalog")]


def notice_body(notice: Notice) -> dict[str, object]:
    return {
        "purpose": notice.purpose.value,
        "version": notice.version,
        "notice_hash": notice.notice_hash,
        "material": notice.material,
        "effective_at": notice.effective_at,
        "texts": {"zh": {"text": notice.text_zh, "sha256": notice.sha256_zh}, "en": {"text": notice.text_en, "sha256": notice.sha256_en}},
    }


@router.get("", summary="The purpose catalog with the notice texts in effect (public)", response_model=None, responses={200: {"model": PurposeCatalog}})
@offloaded
def list_purposes(services: ServicesDep, now: NowDep) -> Response:
    with services.reading() as conn:
        every = services.consents.service.notices.every(conn)
    items = []
    for purpose in Purpose:
        notices = every[purpose]
        current = NoticeBook.current_of(notices, now)
        items.append(
            {
                "id": purpose.value,
                "legal_basis": purpose.legal_basis.value,
                "needs_consent": purpose.needs_consent,
                "sensitive": purpose.sensitive,
                "statable": purpose.statable,
                "notice_version": current.version if current else None,
                "notice_hash": current.notice_hash if current else None,
                "material": current.material if current else None,
                "effective_at": current.effective_at if current else None,
                "texts": notice_body(current)["texts"] if current else None,
                "upcoming": [notice_body(n) for n in notices if n.effective_at > now],
            }
        )
    return json_response({"items": items})


@router.post(
    "/{purpose}/notices",
    status_code=201,
    summary="Publish a new notice version of a purpose (dpo)",
    response_model=None,
    responses={
        201: {"model": NoticePublished},
        **p.openapi_responses(p.BAD_REQUEST, p.UNAUTHORIZED, p.FORBIDDEN, p.CONFLICT, p.TOO_LARGE, p.UNSUPPORTED_MEDIA, p.INVALID, p.UNAVAILABLE),
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NoticePublish"}}}}},
)
@offloaded
def publish_notice(purpose: PurposePath, caller: CallerDep, raw: JsonBodyDep, services: ServicesDep, request_id: RequestIdDep, now: NowDep) -> Response:
    body, problems = model_or_problems(NoticePublish, raw.raw)
    draft = None if body is None else NoticeDraft(purpose, body.version, body.texts.zh, body.texts.en, material=body.material, effective_at=body.effective_at)
    with services.unit() as conn:
        access, allowed = operation_access(services, conn, caller, "purposes:notices", "write", request_id=request_id, now=now)
        notice = services.consents.publish(conn, access, allowed=allowed, draft=draft, problems=problems)
    if isinstance(notice, Refusal):
        refuse(notice, access)
    grace = services.consents.service.grace
    answer = notice_body(notice) | {"stale_from": notice.effective_at + grace if notice.material else None}
    return json_response(answer, status_code=201)


SCHEMAS = (NoticePublish, NoticePublished, PurposeCatalog)

__all__ = ["SCHEMAS", "notice_body", "router"]
