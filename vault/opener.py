"""What a worker process opens to reach the vault itself (seeding, extracts): a picklable ``Opener`` returns one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sqlalchemy import Engine

from keys.member_keys import MemberKeys
from vault.members import MemberRepository


class OpenedVault(Protocol):
    """The data engine, the key store and the member repository of a vault a worker opened; closed when the worker is done."""

    @property
    def data_engine(self) -> Engine: ...

    @property
    def keys(self) -> MemberKeys: ...

    @property
    def members(self) -> MemberRepository: ...

    def close(self) -> None: ...


Opener = Callable[[], OpenedVault]

__all__ = ["OpenedVault", "Opener"]
