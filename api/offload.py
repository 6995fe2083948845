"""Sync route bodies on a thread pool of the app's own: one cheap hop each.

A route that reads or writes the database is a plain function (SQLAlchemy's
sync API; a slow database must never block the event loop). FastAPI would
run it through anyio's ``to_thread``, which on every call looks up the async
backend, the default limiter and the idle-worker queue, takes and releases a
capacity token, and wakes a worker through a condition variable. Measured
on the member read (docs/benchmarks.md, issue 4), ``loop.run_in_executor``
on a plain ``ThreadPoolExecutor`` costs about a tenth less CPU a request.

``@offloaded`` turns such a function into the coroutine FastAPI awaits; the
signature FastAPI reads for its parameters stays the function's own
(``functools.wraps`` sets ``__wrapped__``). The caller's context variables
(the operational log's request id) are copied into the thread, as anyio does.

Reads that must stay off the event loop but are short and frequent — the
token check and the audited member reads, with a database server — go to a
small pool of their own instead (``in_read_pool``): each of its threads keeps
one connection checked out (no pool checkout, ping or reset a request), and
four threads keep a process on a database server busy while forty contend
for the GIL for nothing (docs/benchmarks.md, issue 4).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

# As many threads as anyio's default limiter gives FastAPI's sync routes.
THREADS = 40
# Token checks and audited reads off the event loop (a database server, a PKCS#11 token): each of these threads
# holds a read connection of its own (``api.services.Services.held_reads``), so they are few.
READ_THREADS = 4
_P = ParamSpec("_P")
_R = TypeVar("_R")
_pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="route")
_reads = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="read")


def offloaded(function: Callable[_P, _R]) -> Callable[_P, Awaitable[_R]]:
    """``function`` run in the route pool and awaited on the event loop."""

    @functools.wraps(function)
    async def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        call = functools.partial(contextvars.copy_context().run, function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(_pool, call)

    return run


async def in_pool(function: Callable[[], _R]) -> _R:
    """``function()`` run in the route pool, with the caller's context variables."""
    return await asyncio.get_running_loop().run_in_executor(_pool, contextvars.copy_context().run, function)


async def in_read_pool(function: Callable[[], _R]) -> _R:
    """``function()`` run in the read pool, with the caller's context variables."""
    return await asyncio.get_running_loop().run_in_executor(_reads, contextvars.copy_context().run, function)


__all__ = ["READ_THREADS", "THREADS", "in_pool", "in_read_pool", "offloaded"]
