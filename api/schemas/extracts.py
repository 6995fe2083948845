"""Extracts (API.md, Extracts): start a job, its status and signed manifest, the deletion feed.

The rows themselves (``GET /v1/extracts/{id}/data``) are the file in the
format asked for, not JSON. Pseudonyms are 32 hex characters, unlinkable
across consumers and epochs; nothing here names a member.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from vault.extracts.feed import LeftReason
from vault.extracts.writers import ExtractFormat

EXTRACT_ID = r"^[0-9a-f]{32}$"
ExtractId = Annotated[str, Field(pattern=EXTRACT_ID, description="opaque extract id")]


class ExtractStatus(StrEnum):
    running = "running"
    done = "done"
    refused = "refused"
    failed = "failed"


class ExtractStart(BaseModel):
    """Start an extract for the calling consumer (the token's subject), for its registered purpose (``X-Purpose``)."""

    model_config = ConfigDict(extra="forbid")

    format: ExtractFormat = Field(description="one of the consumer's registered formats")
    since: ExtractId | None = Field(
        default=None,
        description=(
            "incremental: a done extract of this consumer in the current pseudonym epoch; only rows new or changed since the extracts up to it are released"
        ),
    )
    k: int | None = Field(default=None, ge=2, le=1000, description="a k above the consumer's registered one (the higher applies)")


class ExtractStarted(BaseModel):
    extract_id: ExtractId
    status: ExtractStatus


class ExtractOut(BaseModel):
    extract_id: ExtractId
    status: ExtractStatus
    format: ExtractFormat
    k: int = Field(description="the k the extract was held to")
    since: ExtractId | None = Field(description="the base of an incremental extract")
    epoch: int = Field(description="the consumer's pseudonym epoch")
    row_count: int | None = Field(description="rows released (once done)")
    content_sha256: str | None = Field(description="hex SHA-256 of the data file (once done); also in the manifest")
    content_bytes: int | None = Field(description="the data file's size (once done)")
    reason: str | None = Field(description="why it was refused (k_unreachable) or failed (a code; interrupted: its process stopped)")
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime | None = Field(description="the data is purged at this time")
    purged: bool = Field(description="the data was purged (the manifest stays)")
    manifest: str | None = Field(description="once done: the signed manifest, a JWS (typ extract-manifest+jwt) verifiable with /.well-known/jwks.json")
    feed_seq: int | None = Field(
        description="once done: the deletion feed's last seq when it was released; "
        "apply the feed's entries after this seq to its rows (a member who left while it ran is fed there)"
    )


class DeletionOut(BaseModel):
    seq: int = Field(description="the feed position; pass the last one seen as ?since=")
    epoch: int
    pseudonym: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    reason: LeftReason = Field(
        description="why: withdrawn (consent for the purpose withdrawn), erased, restricted, "
        "stale (granted under a notice a material version replaced, past its grace period), "
        "or suppressed (an extract of the epoch released the member, a later one suppressed their class). "
        "A pseudonym appears again if a later extract of the epoch released it after its last entry"
    )
    at: datetime


class DeletionPage(BaseModel):
    items: list[DeletionOut]
    next_cursor: str | None = Field(description="the ?since= value of the next page; null at the end of the feed")
