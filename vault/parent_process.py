"""A worker process ends with the process that started it: ``exit_with_parent``.

An extract's and a seeding's worker processes are spawned by the process
running the command and serve it through queues. If that process dies
without stopping them (``SIGKILL``, the kernel's out-of-memory killer, a
``SIGTERM`` with no cleanup), nothing else would: an extract worker would wait
for its next task for ever — or for the rest of a message the parent was
writing when it died, which no timeout on the queue can cut short — holding
the opened vault (its key store, the KEK's cipher, the pseudonym root key),
and a seeding worker would go on seeding alone.

``multiprocessing.parent_process()`` holds a pipe to the parent that the
kernel closes when the parent dies. ``exit_with_parent`` starts a daemon
thread that waits on it and then ends the process at once (``os._exit``),
whatever its main thread is doing: what the process held goes with it, and
what it was writing to a database is rolled back as after any crash (an
extract worker only reads; a seeding worker's group of batches commits whole
or not at all).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading

ORPHANED = 70  # the exit status of a worker ended because its parent was gone (EX_SOFTWARE)


def exit_with_parent() -> None:
    """In a process started by ``multiprocessing``: end it as soon as its parent dies. Elsewhere: nothing."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])  # readable (end of file) once the parent is gone
        os._exit(ORPHANED)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


__all__ = ["ORPHANED", "exit_with_parent"]
