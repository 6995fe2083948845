"""``Idempotency-Key`` on creating POSTs: a retry returns the first result and writes nothing new.

The first response of (caller, key) is stored in the same transaction as the
write it reports — its status and a body of ids only (never a personal
value). The request is remembered as an HMAC of method, path and body under
a vault root key, so a stored digest says nothing about the body; the same
key with a different request is a 409.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select

from api.problems import CONFLICT, ProblemError
from vault.access import Access, Gatekeeper, Outcome, Refusal, Target
from vault.storage.schema import idempotency_keys

ROOT_KEY = "idempotency"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status_code: int
    body: dict[str, object]


class Idempotency:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def digest(self, method: str, path: str, body: bytes) -> bytes:
        return hmac.new(self._key, b"\x00".join((method.encode(), path.encode(), body)), hashlib.sha256).digest()

    @staticmethod
    def caller_key(caller: str) -> str:
        return hashlib.sha256(caller.encode()).hexdigest()

    def replay(self, conn: Connection, caller: str, key: str, digest: bytes) -> StoredResponse | None:
        t = idempotency_keys
        row = conn.execute(select(t.c.request_digest, t.c.status_code, t.c.response).where(t.c.caller == self.caller_key(caller), t.c.key == key)).first()
        if row is None:
            return None
        if not hmac.compare_digest(bytes(row.request_digest), digest):
            raise ProblemError(CONFLICT, "this Idempotency-Key was used for a different request")
        return StoredResponse(int(row.status_code), json.loads(row.response))

    def remember(self, conn: Connection, caller: str, key: str, digest: bytes, *, response: StoredResponse, now: datetime) -> None:
        conn.execute(
            insert(idempotency_keys).values(
                caller=self.caller_key(caller),
                key=key,
                request_digest=digest,
                status_code=response.status_code,
                response=json.dumps(response.body, sort_keys=True),
                created_at=now,
            )
        )


def replay_if_retry(
    conn: Connection,
    idempotency: Idempotency,
    gatekeeper: Gatekeeper,
    *,
    caller_key: str,
    key: str | None,
    digest: bytes,
    access: Access,
    allowed: bool,
    resource: str,
    id_field: str,
    member_id: str | None = None,
    about_member: bool = True,
) -> StoredResponse | Refusal | None:
    """A creating POST's retry, decided like the first request and journaled once.

    None: not a retry — go on and write. A ``StoredResponse``: the first answer,
    for a caller who may still make the request (event outcome ``replayed``).
    A ``Refusal``: a caller who lost the right gets 403, not the stored answer.
    ``member_id`` None means the created resource is the member itself;
    ``about_member`` False: the resource belongs to no member (an extract).
    """
    if key is None or (stored := idempotency.replay(conn, caller_key, key, digest)) is None:
        return None
    created = str(stored.body[id_field])
    target = Target("create", resource, created, (member_id or created) if about_member else None, ())
    return stored if gatekeeper.replay(conn, access, target, allowed=allowed) else Refusal(Outcome.denied)


__all__ = ["Idempotency", "StoredResponse", "replay_if_retry"]
