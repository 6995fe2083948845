"""HTTP fixtures: a real vault (SQLite or PostgreSQL via ``backend``) behind FastAPI's test client.

``vault`` builds the app on a migrated vault with four seeded members and
hands out development-issuer tokens (real Ed25519 signatures) for any role.
Members 0 and 1 have granted ``health_data`` consent (recorded through the
consent service, so health writes for care are allowed); members 2 and 3
have no consent at all.
Nothing of ours is mocked: the requests go through authentication, the
policies, the gates, the field cipher and the audit journal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from api.authn import DEV_ISSUER
from api.runtime import Runtime, open_runtime
from api.settings import Settings
from api.tokens import issue_token
from audit.store import audit_journal
from keys.signing import SigningPurpose
from vault import data_map as dm
from vault.consent import ConsentChannel, ConsentDecision, ConsentRequest, ConsentService, NoticeBook, Recorder, RecorderRole
from vault.demo import seed_members
from vault.ids import new_id
from vault.purposes import Purpose
from vault.storage.engine import write_transaction


@dataclass
class Seeded:
    member_id: str
    home_clinic_id: str
    card_no: str


@dataclass
class Vault:
    """A running app and what the tests need to talk to it."""

    client: TestClient
    runtime: Runtime
    settings: Settings
    members: list[Seeded] = field(default_factory=list)

    def token(
        self,
        *roles: str,
        subject: str = "tester",
        clinics: Sequence[str] = (),
        member_id: str | None = None,
        client_id: str | None = None,
        acting_staff: str | None = None,
        ttl: timedelta = timedelta(minutes=10),
    ) -> str:
        key = self.runtime.signing.current(SigningPurpose.dev_jwt)
        token, _ = issue_token(
            key,
            issuer=DEV_ISSUER,
            audience=self.settings.audience,
            subject=subject,
            roles=list(roles),
            ttl=ttl,
            now=datetime.now(UTC),
            clinics=clinics,
            member_id=member_id,
            client_id=client_id,
            acting_staff=acting_staff,
        )
        return token

    def headers(self, token: str, purpose: str | None = None, **extra: str) -> dict[str, str]:
        out = {"Authorization": f"Bearer {token}", **extra}
        if purpose is not None:
            out["X-Purpose"] = purpose
        return out

    def grant(self, member_id: str, purpose: Purpose, *, version: int = 1, now: datetime | None = None) -> None:
        """Record the member's grant of ``purpose`` in the app (through the consent service, not over HTTP: no audit event)."""
        service = ConsentService(self.runtime.members, NoticeBook())
        request = ConsentRequest(purpose, ConsentDecision.granted, ConsentChannel.app, notice_version=version)
        with write_transaction(self.runtime.data_engine) as conn:
            service.record(
                conn, member_id, request, Recorder("fixture", RecorderRole.member), consent_id=new_id(), request_id="fixture", now=now or datetime.now(UTC)
            )

    def journal_size(self) -> int:
        with self.runtime.data_engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(audit_journal)).scalar_one())

    def journal_events(self) -> list[bytes]:
        """The leaf bytes of every journaled event, oldest first."""
        with self.runtime.data_engine.connect() as conn:
            return [bytes(b) for b in conn.scalars(select(audit_journal.c.leaf).order_by(audit_journal.c.journal_id))]


@pytest.fixture
def vault(make_settings: Callable[..., Settings]) -> Iterator[Vault]:
    settings = make_settings()
    runtime = open_runtime(settings)
    try:
        report = seed_members(runtime.data_engine, runtime.keys, runtime.members, count=4, seed=7, now=datetime.now(UTC))
        seeded = []
        with runtime.data_engine.connect() as conn:
            for member_id in report.member_ids:
                membership = runtime.members.read(conn, member_id, {dm.Category.membership}).values[dm.Category.membership]
                seeded.append(Seeded(member_id, str(membership["home_clinic_id"]), str(membership["card_no"])))
        with TestClient(create_app(settings, audit_pump=False), raise_server_exceptions=False) as client:
            made = Vault(client=client, runtime=runtime, settings=settings, members=seeded)
            for m in seeded[:2]:
                made.grant(m.member_id, Purpose.health_data)
            yield made
    finally:
        runtime.close()
