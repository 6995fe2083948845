"""Authentication: a bearer token in, a ``Caller`` out — or 401 with a generic reason.

Trusted keys, selected by ``kid`` (unique across issuers):

* the vault's own issuer (``VAULT_ISSUER``): the ``jwt`` signing keys in the
  key store, current and still-overlapping ones;
* the development issuer ``member-vault-dev`` (``dev-jwt`` keys) — only when
  ``VAULT_ENV`` is not ``production``;
* the issuers of ``VAULT_TRUSTED_ISSUERS_FILE``, read once at start.

Keys come only from configuration and the key store, never from a token or
the network. The vault's key sets are re-read at most every
``REFRESH_SECONDS`` and at once (rate-limited) when a token names an unknown
``kid``, so a rotation in another process is seen promptly.

After the signature and claims check (``api.tokens``), a revoked ``jti`` and
a token of a revoked service client are refused. Every refusal is counted and
logged with its reason code — never the token or a claim — and is not an
audit event (nothing was decided yet).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import NoReturn

import structlog
from sqlalchemy import Connection, Engine, bindparam, exists, select

from api.caller import Caller
from api.problems import UNAUTHORIZED, ProblemError
from api.settings import Settings
from api.tokens import DEV_ISSUER, InvalidTokenError, TokenVerifier, TrustedKey, load_trusted_issuers, vault_keys
from keys.signing import SigningKeys, SigningPurpose
from vault.storage.readers import DriverRow, SqliteReader
from vault.storage.schema import clients, revoked_tokens

# (is the jti revoked?, is the client revoked? — NULL when there is no such client)
_REVOCATION = DriverRow(
    select(
        exists().where(revoked_tokens.c.token_id == bindparam("token_id")).label("token_revoked"),
        select(clients.c.revoked_at.is_not(None)).where(clients.c.client_id == bindparam("client_id")).scalar_subquery().label("client_revoked"),
    )
)
# The same question on an embedded database, straight on the driver (positional: token id, client id).
_REVOCATION_SQL = "SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE token_id = ?), (SELECT revoked_at IS NOT NULL FROM clients WHERE client_id = ?)"
REFRESH_SECONDS = 60.0
MIN_REFRESH_SECONDS = 2.0

log = structlog.get_logger("api.auth")


class KeySource:
    """kid → TrustedKey for every issuer the vault trusts, refreshed from the key store."""

    def __init__(self, settings: Settings, signing: SigningKeys, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._signing = signing
        self._clock = clock
        self._static = {k.key_id: k for k in load_trusted_issuers(settings.trusted_issuers_file)} if settings.trusted_issuers_file else {}
        self._keys: dict[str, TrustedKey] = {}
        self._loaded_at = -1e18
        self._lock = threading.Lock()

    def __call__(self) -> Mapping[str, TrustedKey]:
        if self._clock() - self._loaded_at > REFRESH_SECONDS:
            self.refresh()
        return self._keys

    def refresh_for_unknown(self, kid: str | None) -> bool:
        """Re-read the key store if a token named a kid we do not know (at most every few seconds)."""
        if kid is None or kid in self._keys or self._clock() - self._loaded_at < MIN_REFRESH_SECONDS:
            return False
        self.refresh()
        return kid in self._keys

    def refresh(self) -> None:
        with self._lock:
            keys = dict(self._static)
            own = vault_keys(self._settings.issuer, self._signing.verification_keys(SigningPurpose.jwt))
            if not self._settings.is_production:
                own += vault_keys(DEV_ISSUER, self._signing.verification_keys(SigningPurpose.dev_jwt))
            for key in own:
                if key.key_id in keys:
                    raise ValueError("a kid of the vault's keys is also configured for another issuer")
                keys[key.key_id] = key
            self._keys = keys
            self._loaded_at = self._clock()


class Authenticator:
    def __init__(
        self,
        settings: Settings,
        signing: SigningKeys,
        data_engine: Engine,
        *,
        all_local: bool = False,
        held: Callable[[], AbstractContextManager[Connection]] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._engine = data_engine
        self._sqlite = SqliteReader.of(data_engine)
        self._all_local = all_local
        self._held = held
        self.keys = KeySource(settings, signing)
        self._verifier = TokenVerifier(self.keys, audience=settings.audience, now=now)
        self.refusals: Counter[str] = Counter()

    def authenticate(self, authorization: str | None) -> Caller:
        token = _bearer(authorization)
        if token is None:
            self._refuse("missing_token")
        try:
            claims = self._verifier.verify(token)
        except InvalidTokenError as exc:
            if exc.reason == "unknown_key" and self.keys.refresh_for_unknown(_kid(token)):
                return self.authenticate(authorization)
            self._refuse(exc.reason)
        if self._revoked(claims.token_id, claims.client_id if claims.issuer == self._settings.issuer else None):
            self._refuse("revoked")
        own = claims.issuer in (self._settings.issuer, DEV_ISSUER)
        return Caller(claims=claims, subject=claims.subject if own else f"{claims.issuer}|{claims.subject}")

    @property
    def answers_inline(self) -> bool:
        """True when ``authenticate`` touches no network, so it may run on the event loop.

        Besides the revocation read (the data database), a key refresh reads
        the key store and may unwrap a signing key through the KEK provider:
        all of them must be local (``all_local``: embedded databases and the
        local keyring), not only the data database.
        """
        return self._all_local and self._sqlite is not None

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()

    def _revoked(self, token_id: str, client_id: str | None) -> bool:
        """One statement: is the jti revoked, and is the vault client (if any) unknown or revoked?"""
        if self._sqlite is not None:
            token_revoked, client_revoked = self._sqlite.row(_REVOCATION_SQL, (token_id, client_id))
        else:
            with self._engine.connect() if self._held is None else self._held() as conn:  # the read pool's held connection
                found = _REVOCATION.first(conn, {"token_id": token_id, "client_id": client_id})
            if found is None:
                raise LookupError("the revocation question returned no row")
            token_revoked, client_revoked = found
        unknown_or_revoked_client = client_id is not None and (client_revoked is None or bool(client_revoked))
        return bool(token_revoked) or unknown_or_revoked_client

    def _refuse(self, reason: str) -> NoReturn:
        self.refusals[reason] += 1
        log.info("auth.refused", reason=reason)
        raise ProblemError(UNAUTHORIZED, "missing or invalid access token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _kid(token: str) -> str | None:
    """The header's kid, for a refresh decision only (the token is verified afterwards)."""
    import jwt  # noqa: PLC0415 - only here, and only to read the header

    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        return None
    return kid if isinstance(kid, str) else None


__all__ = ["DEV_ISSUER", "Authenticator", "KeySource"]
