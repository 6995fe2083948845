"""Versioned notice texts of the purpose catalog (Chinese and English), append-only.

Invariants:

* A purpose's versions only grow, and their ``effective_at`` never goes
  back; a published row is never changed (database triggers).
* The notice current at a moment is the highest version whose
  ``effective_at`` has come. Version 1 of every purpose is published by the
  migration that created the table, effective 2026-01-01T00:00:00Z.
* Each text has its SHA-256 (hex of its UTF-8 bytes). The notice hash binds
  purpose, version, effective time, materiality and both texts: the SHA-256
  (hex) of the compact, key-sorted ASCII JSON::

      {"effective_at": "2026-01-01T00:00:00Z", "material": true, "purpose": "care",
       "texts": {"en": "<sha256 of en>", "zh": "<sha256 of zh>"}, "version": 1}

* Notice texts are public (``GET /v1/purposes``): they hold no personal data.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, Insert, RowMapping, insert, select
from sqlalchemy.exc import IntegrityError

from vault.consent.model import Notice
from vault.errors import ConflictError, ValidationError
from vault.purposes import Purpose
from vault.storage.schema import consent_notices
from vault.times import rfc3339_seconds

MAX_TEXT_LENGTH = 20_000
LATEST_EFFECTIVE_AT = datetime(2999, 12, 31, 23, 59, 59, tzinfo=UTC)
_ALLOWED_CONTROLS = frozenset("\n\t")


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def notice_hash(purpose: Purpose, version: int, effective_at: datetime, *, material: bool, sha256_zh: str, sha256_en: str) -> str:
    body = {
        "effective_at": rfc3339_seconds(effective_at),
        "material": material,
        "purpose": purpose.value,
        "texts": {"en": sha256_en, "zh": sha256_zh},
        "version": version,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")).hexdigest()


def _text_problem(text: str) -> str | None:
    if not text.strip():
        return "empty"
    if len(text) > MAX_TEXT_LENGTH:
        return "too_long"
    if any(unicodedata.category(ch) in {"Cc", "Cs"} and ch not in _ALLOWED_CONTROLS for ch in text):
        return "control_character"
    return None


def _notice(m: RowMapping) -> Notice:
    return Notice(
        purpose=Purpose(m["purpose"]),
        version=int(m["version"]),
        text_zh=str(m["text_zh"]),
        text_en=str(m["text_en"]),
        sha256_zh=str(m["sha256_zh"]),
        sha256_en=str(m["sha256_en"]),
        notice_hash=str(m["notice_hash"]),
        material=bool(m["material"]),
        effective_at=m["effective_at"],
        published_at=m["published_at"],
        published_by=str(m["published_by"]),
    )


class NoticeBook:
    """Reads and publishes notice versions, in the caller's transaction."""

    def of(self, conn: Connection, purpose: Purpose) -> list[Notice]:
        """Every version of ``purpose``, oldest first."""
        t = consent_notices
        rows = conn.execute(select(t).where(t.c.purpose == purpose.value).order_by(t.c.version)).mappings()
        return [_notice(m) for m in rows]

    def every(self, conn: Connection) -> dict[Purpose, list[Notice]]:
        """Every version of every purpose, oldest first."""
        t = consent_notices
        found: dict[Purpose, list[Notice]] = {p: [] for p in Purpose}
        for m in conn.execute(select(t).order_by(t.c.purpose, t.c.version)).mappings():
            notice = _notice(m)
            found[notice.purpose].append(notice)
        return found

    @staticmethod
    def current_of(notices: Sequence[Notice], now: datetime) -> Notice | None:
        """The highest version in effect at ``now`` (``notices`` oldest first)."""
        return next((n for n in reversed(notices) if n.effective_at <= now), None)

    def publish(
        self,
        conn: Connection,
        purpose: Purpose,
        version: int,
        *,
        text_zh: str,
        text_en: str,
        material: bool,
        effective_at: datetime,
        published_by: str,
        now: datetime,
    ) -> Notice:
        """Publish ``version`` of ``purpose``, effective at ``effective_at`` (whole seconds, not before ``now``)."""
        effective = effective_at.astimezone(UTC).replace(microsecond=0)
        problems = {f"texts.{lang}": p for lang, text in (("zh", text_zh), ("en", text_en)) if (p := _text_problem(text)) is not None}
        if effective < now.astimezone(UTC).replace(microsecond=0):
            problems["effective_at"] = "in_the_past"
        elif effective > LATEST_EFFECTIVE_AT:
            problems["effective_at"] = "too_far"  # keeps effective_at + any grace period a valid datetime
        existing = self.of(conn, purpose)
        latest = existing[-1] if existing else None
        if latest is not None and effective < latest.effective_at:
            problems.setdefault("effective_at", "before_previous_version")
        if problems:
            raise ValidationError(problems)
        if latest is not None and version <= latest.version:
            raise ConflictError(f"version {latest.version} of the {purpose.value} notice exists; publish version {latest.version + 1} or higher")
        sha_zh, sha_en = text_sha256(text_zh), text_sha256(text_en)
        notice = Notice(
            purpose=purpose,
            version=version,
            text_zh=text_zh,
            text_en=text_en,
            sha256_zh=sha_zh,
            sha256_en=sha_en,
            notice_hash=notice_hash(purpose, version, effective, material=material, sha256_zh=sha_zh, sha256_en=sha_en),
            material=material,
            effective_at=effective,
            published_at=now,
            published_by=published_by,
        )
        try:
            with conn.begin_nested():
                conn.execute(self._insert(notice))
        except IntegrityError as exc:  # another process published this version first
            raise ConflictError(f"version {version} of the {purpose.value} notice exists") from exc
        return notice

    @staticmethod
    def _insert(notice: Notice) -> Insert:
        return insert(consent_notices).values(
            purpose=notice.purpose.value,
            version=notice.version,
            text_zh=notice.text_zh,
            text_en=notice.text_en,
            sha256_zh=notice.sha256_zh,
            sha256_en=notice.sha256_en,
            notice_hash=notice.notice_hash,
            material=notice.material,
            effective_at=notice.effective_at,
            published_at=notice.published_at,
            published_by=notice.published_by,
        )


__all__ = ["LATEST_EFFECTIVE_AT", "MAX_TEXT_LENGTH", "NoticeBook", "notice_hash", "text_sha256"]
