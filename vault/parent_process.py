"""Whether the process that started this one is gone: a worker process stops serving once it is.

An extract's and a seeding's worker processes are spawned by the process
running the command and serve it through queues. If that process dies
without stopping them (``SIGKILL``, the kernel's out-of-memory killer, a
``SIGTERM`` with no cleanup), nothing else would: an extract worker would wait
for its next task for ever, holding the opened vault (its key store, the
KEK's cipher, the pseudonym root key), and a seeding worker would go on
seeding alone. ``multiprocessing.parent_process()`` holds a pipe to the
parent that the kernel closes when the parent dies; a worker checks it while
it waits (every ``PARENT_POLL`` seconds) and before it claims more work.
"""

from __future__ import annotations

import multiprocessing

PARENT_POLL = 1.0  # seconds a waiting worker goes without checking on its parent


def parent_gone() -> bool:
    """True in a process started by ``multiprocessing`` whose parent has exited; False anywhere else."""
    parent = multiprocessing.parent_process()
    return parent is not None and not parent.is_alive()


__all__ = ["PARENT_POLL", "parent_gone"]
