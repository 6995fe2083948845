"""Development tokens for every role, written where ``make run`` tells a newcomer to look.

Signed by the development issuer (``member-vault-dev``), which the vault
trusts only outside production mode. Staff get one clinic, the dpo all
clinics, the member token reaches one demo member, the loyalty token is the
demo consumer `loyalty-app`. Files are mode 600.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from api.runtime import Runtime
from api.tokens import DEV_ISSUER, issue_token
from keys.signing import SigningPurpose
from vault.demo.consumers import DEMO_CONSUMERS
from vault.roles import CLINIC_ROLES, Role

LOYALTY_CONSUMER = DEMO_CONSUMERS[0].consumer_id


def write_demo_tokens(rt: Runtime, directory: Path, *, clinic: str, member_id: str | None, ttl: timedelta, now: datetime) -> list[Path]:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = rt.signing.current(SigningPurpose.dev_jwt)
    written = []
    for role in Role:
        if role is Role.member and member_id is None:
            continue
        clinics = [clinic] if role in CLINIC_ROLES else ["*"] if role is Role.dpo else []
        # The loyalty token is the demo's loyalty-app consumer (its extracts are the tokens' subject's).
        subject = LOYALTY_CONSUMER if role is Role.loyalty_service else f"demo-{role.value.replace('_', '-')}"
        token, _ = issue_token(
            key,
            issuer=DEV_ISSUER,
            audience=rt.settings.audience,
            subject=subject,
            client_id=subject if role is Role.loyalty_service else None,
            roles=[role.value],
            ttl=ttl,
            now=now,
            clinics=clinics,
            member_id=member_id if role is Role.member else None,
        )
        path = directory / f"{role.value}.jwt"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        path.chmod(0o600)
        written.append(path)
    return written


__all__ = ["write_demo_tokens"]
