"""KEK rotation: add a version, re-wrap every stored key online, retire what is unreferenced.

Re-wrapping runs in batches, one transaction each, while readers and writers
go on: a key is readable under its old KEK until its row is updated, and under
the new one after. An interrupted rotation is resumed by running it again: if
any key is still wrapped by a version other than the current one, no new
version is added and the re-wrap carries on. Old versions are retired only
once no stored key refers to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from keys.member_keys import MemberKeys, RewrapCursor


@dataclass(frozen=True, slots=True)
class RotationReport:
    kek_version: int
    started_new_version: bool
    rewrapped: int
    retired: tuple[int, ...]


def rotate_kek(
    keys: MemberKeys,
    *,
    batch: int = 5000,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> RotationReport:
    refs = keys.kek_references()
    current = keys.provider.current_version()
    pending = sum(n for version, n in refs.items() if version != current)
    started = pending == 0
    if started:
        current = keys.provider.rotate()
        pending = sum(refs.values())
    done = 0
    progress(done, pending)
    while True:  # passes over the key store until one finds nothing left under an old KEK
        in_pass = 0
        cursor: RewrapCursor | None = None
        while True:
            n, cursor = keys.rewrap_from(cursor, batch)
            in_pass += n
            done += n
            progress(done, max(pending, done))
            if cursor is None:
                break
        if in_pass == 0:
            break
    return RotationReport(current, started, done, retire_unreferenced(keys))


def retire_unreferenced(keys: MemberKeys) -> tuple[int, ...]:
    """Retire every KEK version that is not current and wraps no stored key."""
    return keys.retire_unreferenced_keks()


__all__ = ["RotationReport", "retire_unreferenced", "rotate_kek"]
