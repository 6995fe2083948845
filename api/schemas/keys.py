"""The key and operations routes' shapes (API.md, Keys, clients and operations).

Key metadata names versions, ids, dates and counts, never key material: no
wrapped blob, seed, private or public key bytes appear in any of these
models. A rotation is a job: ``POST /v1/keys/rotate`` answers its id, and the
job's state is read back from the audit journal.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from keys.signing import SigningPurpose

JOB_ID = r"^[0-9a-f]{32}$"


class RotateKind(StrEnum):
    kek = "kek"
    jwt = "jwt"
    audit = "audit"
    pseudonym = "pseudonym"


class JobStatus(StrEnum):
    running = "running"
    done = "done"
    failed = "failed"


class RotateRequest(BaseModel):
    """Which key to rotate. ``pseudonym`` needs ``consumer_id``: that consumer starts a new pseudonym epoch."""

    model_config = ConfigDict(extra="forbid", strict=True)
    kind: RotateKind
    consumer_id: Annotated[
        str | None, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="the consumer whose pseudonym key rotates (kind pseudonym only)")
    ] = None


class RotateAccepted(BaseModel):
    job_id: Annotated[str, Field(pattern=JOB_ID)]


class Job(BaseModel):
    job_id: Annotated[str, Field(pattern=JOB_ID)]
    kind: Annotated[RotateKind | None, Field(description="null when the request named no known kind")]
    status: Annotated[JobStatus, Field(description="rotations run to completion inside their request: done, or failed (refused input)")]
    requested_by: Annotated[str, Field(description="the subject that asked for the rotation")]
    requested_at: Annotated[str, Field(description="RFC 3339 UTC")]
    index: Annotated[int, Field(description="leaf index of the job's audit event")]


class KekVersion(BaseModel):
    version: int
    created_at: str
    retired: bool
    current: bool
    wraps: Annotated[int, Field(description="keys wrapped under this version so far (its AES-GCM nonce budget spent)")]
    keys_wrapped: Annotated[int, Field(description="stored keys (member, root and signing) this version wraps now")]


class KekMetadata(BaseModel):
    provider: Annotated[str, Field(description="local or pkcs11")]
    current_version: int
    versions: list[KekVersion]


class SigningKeyMetadata(BaseModel):
    purpose: SigningPurpose
    kid: Annotated[str, Field(description="RFC 7638 JWK thumbprint of the public key")]
    version: int
    created_at: datetime
    retire_after: Annotated[datetime | None, Field(description="null for the current key; older keys are listed until then")]
    current: bool


class KeysMetadata(BaseModel):
    kek: KekMetadata
    signing_keys: Annotated[list[SigningKeyMetadata], Field(description="per purpose, current first, the keys still listed for verification")]
    member_keys: Annotated[int, Field(description="wrapped member keys in the key store")]


class PolicyReloaded(BaseModel):
    version: Annotated[int, Field(description="the active policy version (kept in the database for every process)")]
    policy_hash: str
    changed: Annotated[bool, Field(description="false when the files hold the active policy already")]


__all__ = [
    "JOB_ID",
    "Job",
    "JobStatus",
    "KekMetadata",
    "KekVersion",
    "KeysMetadata",
    "PolicyReloaded",
    "RotateAccepted",
    "RotateKind",
    "RotateRequest",
    "SigningKeyMetadata",
]
