"""The vault as an OAuth 2.0 issuer for its service clients (public routes).

``POST /v1/oauth/token`` is the client-credentials grant (RFC 6749 §4.4).
Checks, in order, each ending the request with an RFC 6749 §5.2 error
(``{"error": code}``, ``Cache-Control: no-store``; the one exception to
problem+json):

1. the body is ``application/x-www-form-urlencoded``, UTF-8, no parameter
   twice (§3.2) → else ``invalid_request``; an empty parameter counts as
   absent (§3.1), an unknown one is ignored;
2. ``grant_type`` is present → else ``invalid_request``; it is
   ``client_credentials`` → else ``unsupported_grant_type``;
3. credentials come by HTTP Basic (client id and secret form-urlencoded,
   §2.3.1) or by the form fields ``client_id`` and ``client_secret``, never
   both → ``invalid_request``; none, or another scheme → ``invalid_client``;
4. no throttle bucket (``client:<id>``, ``addr:<peer>``) is full → else 429
   ``invalid_client`` with ``Retry-After``; the secret is not checked;
5. the secret authenticates an active client → else 401 ``invalid_client``
   with ``WWW-Authenticate: Basic`` — the same answer for a wrong secret, an
   unknown client and a revoked one — and one failure is counted (committed);
6. ``scope``, if given, names some of the client's roles → else
   ``invalid_scope``; by default the token carries all of them.

Steps 1–5 end before anyone is authenticated: they are logged with a reason
code, not audited. After authentication exactly one audit event is journaled
(``issue_token`` on resource ``client``): ``deny`` for a refused scope,
``allow`` for an issued token. The token is an EdDSA ``at+jwt`` of the vault's
issuer (``VAULT_ISSUER``) with its current ``jwt`` key: ``sub`` and
``client_id`` the client, its roles and clinics, valid 15 minutes. It is
handed out only once its event is committed.

``GET /.well-known/jwks.json`` lists the public keys of the vault's ``jwt``,
``receipts`` and ``certificates`` signing purposes — current keys and those still in their
rotation overlap — as RFC 8037 OKP keys with ``kid``, ``alg`` and ``use``.
"""

from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import parse_qsl, unquote_plus

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from api import problems as p
from api.deps import NowDep, RequestIdDep, ServicesDep
from api.offload import in_pool, offloaded
from api.responses import json_response
from api.services import Services
from api.tokens import issue_token
from audit.event import Actor, Decision
from keys.signing import SigningPurpose
from vault.access import Access, Outcome, Target
from vault.clients import ROOT_KEY, Client, ClientRegistry, address_bucket, client_bucket

router = APIRouter(tags=["oauth"])
log = structlog.get_logger("api.oauth")

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
GRANT_TYPE = "client_credentials"
TOKEN_TTL = timedelta(minutes=15)
MAX_FORM_FIELDS = 16
JWKS_MAX_AGE_SECONDS = 300
JWKS_PURPOSES = (SigningPurpose.jwt, SigningPurpose.receipts, SigningPurpose.certificates)
BASIC_CHALLENGE = 'Basic realm="member-vault", charset="UTF-8"'
ErrorCode = Literal["invalid_request", "invalid_client", "unsupported_grant_type", "invalid_scope"]


class TokenResponse(BaseModel):
    """A successful token response (RFC 6749 §5.1)."""

    access_token: str = Field(description="an EdDSA at+jwt of the vault's issuer")
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="seconds until the token expires")
    scope: str = Field(description="the roles the token carries, space-separated")


class OAuthError(BaseModel):
    """An error of the token endpoint (RFC 6749 §5.2)."""

    error: ErrorCode


class Jwk(BaseModel):
    """An Ed25519 public key (RFC 8037)."""

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str = Field(description="the public key, base64url")
    kid: str = Field(description="the RFC 7638 thumbprint; the kid of tokens and receipts signed with this key")
    alg: Literal["EdDSA"]
    use: Literal["sig"]


class JwkSet(BaseModel):
    """The vault's public signing keys (RFC 7517)."""

    keys: list[Jwk]


_TOKEN_FORM = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": [GRANT_TYPE]},
        "scope": {"type": "string", "description": "some of the client's roles, space-separated (default: all of them)"},
        "client_id": {"type": "string", "description": "with client_secret: form credentials, instead of HTTP Basic (never both)"},
        "client_secret": {"type": "string"},
    },
}
_ERROR = {"model": OAuthError}
_TOKEN_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"model": TokenResponse, "description": "the access token"},
    400: {**_ERROR, "description": "invalid_request, unsupported_grant_type or invalid_scope"},
    401: {**_ERROR, "description": "invalid_client", "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
    429: {**_ERROR, "description": "too many failed attempts", "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
    **p.openapi_responses(p.TOO_LARGE, p.UNAVAILABLE),
}


class _RefusedError(Exception):
    def __init__(self, error: ErrorCode, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.error: ErrorCode = error
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class _TokenRequest:
    client_id: str
    secret: str
    scope: str | None
    address: str | None


@router.post(
    "/v1/oauth/token",
    summary="OAuth 2.0 client credentials: an access token for a registered service client",
    response_model=None,
    responses=_TOKEN_RESPONSES,
    openapi_extra={"requestBody": {"required": True, "content": {FORM_MEDIA_TYPE: {"schema": _TOKEN_FORM}}}},
)
async def token(request: Request, services: ServicesDep, request_id: RequestIdDep, now: NowDep) -> Response:
    body = await request.body()
    try:
        peer = request.client.host if request.client is not None else None
        parsed = _token_request(request.headers.get("content-type"), request.headers.get("authorization"), body, peer)
        issued = await in_pool(functools.partial(_issue, services, parsed, request_id, now))
    except _RefusedError as refused:
        log.info("oauth.token_refused", reason=refused.error, status=refused.status)
        return json_response({"error": refused.error}, status_code=refused.status, headers={"Pragma": "no-cache", **refused.headers})
    log.info("oauth.token_issued")
    return json_response(issued, headers={"Pragma": "no-cache"})


@router.get(
    "/.well-known/jwks.json",
    summary="The vault's public signing keys",
    response_model=None,
    responses={200: {"model": JwkSet}, **p.openapi_responses(p.UNAVAILABLE)},
)
@offloaded
def jwks(services: ServicesDep) -> Response:
    signing = services.runtime.signing
    keys: list[dict[str, str]] = []
    for purpose in JWKS_PURPOSES:
        signing.current(purpose)  # the first key of a purpose is made on first use
        keys.extend(
            {"kty": "OKP", "crv": "Ed25519", "x": _b64url(key.public_bytes), "kid": key.key_id, "alg": "EdDSA", "use": "sig"}
            for key in signing.verification_keys(purpose)
        )
    return json_response({"keys": keys}, headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_SECONDS}"})


def _token_request(content_type: str | None, authorization: str | None, body: bytes, peer: str | None) -> _TokenRequest:
    form = _form(content_type, body)
    if "grant_type" not in form:
        raise _RefusedError("invalid_request")
    if form["grant_type"] != GRANT_TYPE:
        raise _RefusedError("unsupported_grant_type")
    in_form = "client_id" in form or "client_secret" in form
    if authorization is not None and in_form:
        raise _RefusedError("invalid_request")
    if authorization is not None:
        client_id, secret = _basic(authorization)
    elif "client_id" in form and "client_secret" in form:
        client_id, secret = form["client_id"], form["client_secret"]
    else:
        raise _RefusedError("invalid_client", 401, {"WWW-Authenticate": BASIC_CHALLENGE})
    return _TokenRequest(client_id, secret, form.get("scope"), peer)


def _form(content_type: str | None, body: bytes) -> dict[str, str]:
    if (content_type or "").split(";")[0].strip().lower() != FORM_MEDIA_TYPE:
        raise _RefusedError("invalid_request")
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise _RefusedError("invalid_request") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise _RefusedError("invalid_request")
        form[name] = value
    return {name: value for name, value in form.items() if value}


def _basic(authorization: str) -> tuple[str, str]:
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise _RefusedError("invalid_client", 401, {"WWW-Authenticate": BASIC_CHALLENGE})
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        client_id, colon, secret = decoded.partition(":")
        if not colon:
            raise ValueError("no colon")
        return unquote_plus(client_id, errors="strict"), unquote_plus(secret, errors="strict")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _RefusedError("invalid_request") from None


def _issue(services: Services, request: _TokenRequest, request_id: str, now: datetime) -> dict[str, object]:
    """Throttle, authenticate, decide the scope and sign; a failure's count and the audit event commit with the answer."""
    registry = ClientRegistry(services.runtime.keys.root_key(ROOT_KEY))
    buckets = [b for b in (client_bucket(request.client_id), address_bucket(request.address)) if b is not None]
    with services.unit() as conn:
        answer = _decide(services, registry, conn, request, buckets, request_id, now)
    if isinstance(answer, _RefusedError):
        raise answer
    return answer


def _decide(
    services: Services, registry: ClientRegistry, conn: Connection, request: _TokenRequest, buckets: list[str], request_id: str, now: datetime
) -> dict[str, object] | _RefusedError:
    wait = registry.retry_after(conn, buckets, now)
    if wait is not None:
        return _RefusedError("invalid_client", 429, {"Retry-After": str(wait)})
    client = registry.authenticate(conn, request.client_id, request.secret)
    if client is None:
        registry.record_failure(conn, buckets, now)
        return _RefusedError("invalid_client", 401, {"WWW-Authenticate": BASIC_CHALLENGE})
    roles = _granted(client, request.scope)
    access = Access(
        actor=Actor(subject=client.client_id, roles=tuple(sorted(roles or client.roles)), client_id=client.client_id, acting_staff=None),
        request_id=request_id,
        purpose=None,
        policy_hash=services.policies.active(conn).policy.hash,
        now=now,
        reason="client_credentials" if roles else "invalid_scope",
    )
    target = Target(action="issue_token", resource_type="client", resource_id=client.client_id)
    if not roles:
        services.gatekeeper.record(conn, access, target, Decision.DENY, Outcome.denied)
        return _RefusedError("invalid_scope")
    signed, _ = issue_token(
        services.runtime.signing.current(SigningPurpose.jwt),
        issuer=services.settings.issuer,
        audience=services.settings.audience,
        subject=client.client_id,
        roles=roles,
        ttl=TOKEN_TTL,
        now=now,
        clinics=client.clinics,
        client_id=client.client_id,
    )
    services.gatekeeper.record(conn, access, target, Decision.ALLOW, Outcome.ok)
    return {"access_token": signed, "token_type": "Bearer", "expires_in": int(TOKEN_TTL.total_seconds()), "scope": " ".join(roles)}


def _granted(client: Client, scope: str | None) -> list[str]:
    """The roles the token carries: all the client's, or the ones ``scope`` names if they are all its own (else none)."""
    own = sorted(r.value for r in client.roles)
    if scope is None:
        return own
    wanted = scope.split(" ")
    return sorted(set(wanted)) if wanted and all(w in own for w in wanted) else []


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


SCHEMAS = (TokenResponse, OAuthError, JwkSet)

__all__ = ["SCHEMAS", "router"]
