"""The cyclic garbage collector paused around bulk work whose objects are freed by reference counting.

Seeding and an extract's passes allocate millions of short-lived containers
(rows, tuples of values, per-member facts) and make almost no reference
cycles. Measured: a first pass over the 100,000-member bench vault in 21
ranges left 102 cyclic objects (a read connection's bookkeeping per range);
a whole extract in one process leaves 15 on SQLite and 167 on PostgreSQL
(its driver's), for 105 members as for 556 (``tests/vault/test_collector.py``).
The collector would still examine the young containers every 700
allocations, about 8 % of an extract's first pass. Paused, they are freed as
before by reference counting, and the few cycles wait for the collector's
next run once it is enabled again.

The pause is process-wide, so it is counted: threads that pause at the same
time (an API process runs an extract in a background thread while others
serve requests) leave the collector off until the last of them is done, and
it is enabled again only if it was enabled when the first began.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_pauses = 0  # blocks inside cyclic_gc_paused, in every thread
_was_enabled = False  # whether the collector was enabled when the first of them began


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """The collector disabled for the block, then enabled again once no block pauses it if it was enabled before the first."""
    global _pauses, _was_enabled  # noqa: PLW0603 — one process-wide count, as the collector is one
    with _lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()


__all__ = ["cyclic_gc_paused"]
