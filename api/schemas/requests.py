"""Data-subject requests (API.md, Data-subject requests): filing, the queue, one request, transitions.

Every enum — request types, statuses, reason codes, who filed — is a closed
value set in the OpenAPI schema, taken from ``vault.data_requests``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from vault.data_requests import FiledBy, ReasonCode, RequestType, Status
from vault.data_requests.service import MAX_NOTE_LENGTH

DsrId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="opaque data-subject request id")]


class RequestFile(BaseModel):
    """A new request. ``details``: for rectification ``{"changes": {category: {field: value}}}``, for objection ``{"purposes": [...]}``."""

    model_config = ConfigDict(extra="forbid")

    type: RequestType
    details: dict[str, object] | None = Field(default=None, description="rectification: {changes}; objection: {purposes}; none for the other types")
    evidence: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$", description="the front desk's reference to the identity check it made (required for it)"
    )
    jurisdiction: str = Field(default="default", pattern=r"^[a-z][a-z0-9_]{1,15}$", description="whose deadline applies (VAULT_DSR_DUE_PERIODS)")


class RequestFiled(BaseModel):
    dsr_id: DsrId
    status: Status
    due_at: datetime


class TransitionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: Status
    reason_code: ReasonCode | None = Field(default=None, description="required for rejected (one of the rejection reasons)")
    note: str | None = Field(default=None, min_length=1, max_length=MAX_NOTE_LENGTH, description="stored encrypted, never in the audit trail")


class StepOut(BaseModel):
    seq: int
    from_status: Status | None
    to_status: Status
    actor: str
    actor_role: str
    reason_code: ReasonCode
    at: datetime
    note: str | None = Field(description="only for the member and the dpo")


class RequestSummary(BaseModel):
    dsr_id: DsrId
    member_id: str
    type: RequestType
    status: Status
    jurisdiction: str
    filed_role: FiledBy
    received_at: datetime
    due_at: datetime
    closed_at: datetime | None
    overdue: bool


class RequestOut(RequestSummary):
    filed_by: str
    details: dict[str, object] | None = Field(description="only for the member and the dpo")
    evidence: str | None = Field(description="only for the member and the dpo")
    steps: list[StepOut]


class ErasureCertificate(BaseModel):
    dsr_id: DsrId
    certificate: str = Field(description="compact JWS, typ erasure-certificate+jwt, signed by the vault (key in /.well-known/jwks.json)")


class RequestPage(BaseModel):
    items: list[RequestSummary]
    next_cursor: str | None


__all__ = ["ErasureCertificate", "RequestFile", "RequestFiled", "RequestOut", "RequestPage", "RequestSummary", "StepOut", "TransitionIn"]
