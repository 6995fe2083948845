"""The claims of an access token: their rules, shared by the verifier and the issuer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

_SUBJECT = re.compile(r"[!-~]{1,256}")
_ROLE = re.compile(r"[a-z_]{1,32}")
_CLINIC = re.compile(r"[A-Za-z0-9_.:-]{1,64}|\*")
_MEMBER_ID = re.compile(r"[0-9a-f]{32}")
_CLIENT_ID = re.compile(r"[!-~]{1,64}")
_TOKEN_ID = re.compile(r"[ -~]{1,128}")
_LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified access token says; the only view of a token the rest of the vault gets."""

    issuer: str
    subject: str
    roles: tuple[str, ...]
    clinics: tuple[str, ...]
    member_id: str | None
    client_id: str | None
    acting_staff: str | None
    token_id: str
    issued_at: datetime
    expires_at: datetime


def numeric_date(value: object) -> datetime | None:
    """An RFC 7519 NumericDate (a JSON number, never a string or a boolean) in years 1970 to 9999, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not 0 <= value <= _LATEST:
        return None
    return datetime.fromtimestamp(value, UTC)


def parse_claims(payload: Mapping[str, object], *, issuer: str, issued_at: datetime, expires_at: datetime) -> Claims:
    """The claims of ``payload`` (whose ``iss``, ``aud`` and times are checked elsewhere); ``ValueError`` names a malformed claim."""
    subject = payload.get("sub")
    if not isinstance(subject, str) or not _SUBJECT.fullmatch(subject):
        raise ValueError("claim 'sub' is malformed")
    token_id = payload.get("jti")
    if not isinstance(token_id, str) or not _TOKEN_ID.fullmatch(token_id):
        raise ValueError("claim 'jti' is malformed")
    roles = _names(payload.get("roles"), _ROLE)
    if not roles:
        raise ValueError("claim 'roles' must be a non-empty list of role names")
    clinics = _names(payload.get("clinics", []), _CLINIC)
    if clinics is None:
        raise ValueError("claim 'clinics' must be a list of clinic ids")
    return Claims(
        issuer=issuer,
        subject=subject,
        roles=roles,
        clinics=clinics,
        member_id=_optional(payload, "member_id", _MEMBER_ID),
        client_id=_optional(payload, "client_id", _CLIENT_ID),
        acting_staff=_acting_staff(payload),
        token_id=token_id,
        issued_at=issued_at,
        expires_at=expires_at,
    )


def _names(value: object, pattern: re.Pattern[str]) -> tuple[str, ...] | None:
    """``value`` as a tuple if it is a list of strings that all match ``pattern``, else None."""
    if not isinstance(value, list):
        return None
    names = tuple(item for item in value if isinstance(item, str) and pattern.fullmatch(item))
    return names if len(names) == len(value) else None


def _acting_staff(payload: Mapping[str, object]) -> str | None:
    """``act.sub`` (RFC 8693 §4.1): the staff member acting through a service client."""
    if "act" not in payload:
        return None
    act = payload["act"]
    if not isinstance(act, Mapping):
        raise ValueError("claim 'act' must be an object")
    subject = act.get("sub")
    if not isinstance(subject, str) or not _SUBJECT.fullmatch(subject):
        raise ValueError("claim 'act.sub' is malformed")
    return subject


def _optional(claims: Mapping[str, object], name: str, pattern: re.Pattern[str]) -> str | None:
    if name not in claims:
        return None
    value = claims[name]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"claim {name!r} is malformed")
    return value
