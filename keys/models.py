"""Tables of the member key store — a database of its own, apart from the data.

``member_keys``  one wrapped AES-256 key per (owner, scope, version): scope
                 ``data`` is the member's data key, ``retention-<YYYY>`` the key of
                 the member's treatment records whose retention ends in that year.
                 Deleting a row is crypto-shredding: nothing else holds the key.
``root_keys``    wrapped root keys (``blind-index``, ``pseudonym``) from which
                 per-field and per-consumer keys are derived (HKDF).
``signing_keys`` Ed25519 signing keys per purpose (``audit``, ``jwt``, ``receipts``) and
                 version: the wrapped 32-byte private seed beside its public key;
                 the highest version is current, older ones are listed for
                 verification until ``retire_after`` (the rotation overlap).
``kek_wraps``    how many wraps each KEK version has made (AES-GCM nonce budget).

Keys are stored only wrapped by a KEK version; ``kek_version`` says which.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Index, Integer, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class KeystoreBase(DeclarativeBase):
    """The key store's declarative base (its own metadata, apart from the data database's)."""


class MemberKeyRow(KeystoreBase):
    __tablename__ = "member_keys"
    __table_args__ = (Index("ix_member_keys_kek_version", "kek_version"),)

    owner_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    kek_version: Mapped[int] = mapped_column(Integer)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RootKeyRow(KeystoreBase):
    __tablename__ = "root_keys"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    kek_version: Mapped[int] = mapped_column(Integer)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SigningKeyRow(KeystoreBase):
    __tablename__ = "signing_keys"
    __table_args__ = (
        CheckConstraint("version >= 1", name="ck_signing_keys_version"),
        CheckConstraint("length(public_key) = 32", name="ck_signing_keys_public_key"),
    )

    purpose: Mapped[str] = mapped_column(String(16), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    kek_version: Mapped[int] = mapped_column(Integer)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary(128))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    activated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    retire_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class KekWrapsRow(KeystoreBase):
    __tablename__ = "kek_wraps"

    kek_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    wraps: Mapped[int] = mapped_column(BigInteger)


__all__ = ["KekWrapsRow", "KeystoreBase", "MemberKeyRow", "RootKeyRow", "SigningKeyRow"]
