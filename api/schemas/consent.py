"""The purpose catalog, notices and consent records (API.md, Consent).

Every enum — purposes, legal bases, decisions, channels, who gave a
consent, states — is a closed value set in the OpenAPI schema, taken from
``vault.purposes`` and ``vault.consent``. Request models refuse unknown keys.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from vault.consent import ConsentChannel, ConsentDecision, ConsentState, GivenBy, RecorderRole
from vault.consent.notices import LATEST_EFFECTIVE_AT, MAX_TEXT_LENGTH
from vault.purposes import LegalBasis, Purpose, consent_purposes

# The purposes a member grants or withdraws (legal basis: consent); ``health_data`` is one of them.
ConsentPurpose = StrEnum("ConsentPurpose", {p.value: p.value for p in consent_purposes()})  # type: ignore[misc]  # functional API

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256, lower-case hex")]
NoticeVersion = Annotated[int, Field(ge=1, le=1_000_000, description="a notice version of the purpose")]
ConsentId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="opaque consent event id")]
NoticeText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_LENGTH)]
# The latest ``effective_at`` a notice may take: far enough for any notice, near enough that the moment it makes
# earlier grants stale (``effective_at`` plus a grace period of up to 3650 days) stays a representable datetime.
# Notices are append-only, so a version beyond it would break every later state derivation of its purpose.


class NoticeTextsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    zh: NoticeText = Field(description="the notice in Chinese")
    en: NoticeText = Field(description="the notice in English")


class NoticePublish(BaseModel):
    """A new notice version (dpo). ``material``: earlier grants turn stale after ``effective_at`` plus the grace period."""

    model_config = ConfigDict(extra="forbid")

    version: NoticeVersion
    texts: NoticeTextsIn
    material: bool
    effective_at: Annotated[AwareDatetime, Field(le=LATEST_EFFECTIVE_AT)] | None = Field(
        default=None, description="when it takes effect (RFC 3339; default now; never in the past; at the latest 2999-12-31T23:59:59Z)"
    )


class NoticeTextOut(BaseModel):
    text: str
    sha256: Sha256Hex


class NoticeTextsOut(BaseModel):
    zh: NoticeTextOut
    en: NoticeTextOut


class NoticeOut(BaseModel):
    purpose: Purpose
    version: NoticeVersion
    notice_hash: Sha256Hex
    material: bool
    effective_at: datetime
    texts: NoticeTextsOut


class NoticePublished(NoticeOut):
    stale_from: datetime | None = Field(description="for a material change: when grants under earlier versions stop counting")


class PurposeItem(BaseModel):
    id: Purpose
    legal_basis: LegalBasis
    needs_consent: bool
    sensitive: bool
    statable: bool = Field(description="a caller may name it in X-Purpose (health_data is a consent, not a purpose)")
    notice_version: NoticeVersion | None = Field(description="the version in effect now")
    notice_hash: Sha256Hex | None
    material: bool | None
    effective_at: datetime | None
    texts: NoticeTextsOut | None
    upcoming: list[NoticeOut] = Field(description="versions published to take effect later")


class PurposeCatalog(BaseModel):
    items: list[PurposeItem]


class ConsentRecordIn(BaseModel):
    """A grant or withdrawal. Grants name the current notice version; the front desk gives evidence."""

    model_config = ConfigDict(extra="forbid")

    purpose: ConsentPurpose
    decision: ConsentDecision
    notice_version: NoticeVersion | None = Field(default=None, description="grants only: the notice version shown")
    notice_hash: Sha256Hex | None = Field(default=None, description="optional: the hash of the notice shown, checked against the version")
    channel: ConsentChannel
    evidence: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$", description="reference to a scan or form; required for front_desk and paper"
    )
    given_by: GivenBy = Field(default=GivenBy.member, description="guardian: for a member under 14 (PIPL Art. 31)")


class ConsentEventOut(BaseModel):
    consent_id: ConsentId
    purpose: ConsentPurpose
    decision: ConsentDecision
    notice_version: NoticeVersion | None
    notice_hash: Sha256Hex | None
    channel: ConsentChannel
    given_by: GivenBy
    evidence: str | None
    recorded_by: str
    recorded_role: RecorderRole
    recorded_at: datetime
    receipt: str = Field(description="compact JWS, typ consent-receipt+jwt, signed by the vault (key in /.well-known/jwks.json)")


class PurposeStateOut(BaseModel):
    state: ConsentState
    notice_version: NoticeVersion | None
    since: datetime | None


class ConsentOverviewOut(BaseModel):
    member_id: str
    current: dict[ConsentPurpose, PurposeStateOut]
    history: list[ConsentEventOut]


__all__ = [
    "LATEST_EFFECTIVE_AT",
    "ConsentEventOut",
    "ConsentOverviewOut",
    "ConsentPurpose",
    "ConsentRecordIn",
    "NoticeOut",
    "NoticePublish",
    "NoticePublished",
    "PurposeCatalog",
    "PurposeItem",
    "PurposeStateOut",
]
