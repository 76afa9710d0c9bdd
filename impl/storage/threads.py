"""Threads the operating system knows by name.

A Python thread's ``name`` lives in the interpreter only: ``top -H``, ``ps -T``, ``perf``,
``/proc/<pid>/task/<tid>/stat`` and ``flk bench serve``'s CPU split all see every thread of
a worker as ``python``. :class:`NamedThread` is :class:`threading.Thread` that, as its
first step on its own thread, gives the kernel its name (``/proc/thread-self/comm``: the
first 15 bytes of the UTF-8 name, cut at a character boundary) -- so the batch thread of a
worker reads ``submit-batch`` there. Where the kernel has no such file (not Linux) or
refuses the write, the thread runs unnamed, exactly as before: naming never stops a thread.
A thread pool's threads are named by :func:`name_pool_thread`, the pool's ``initializer``
(``ThreadPoolExecutor(..., thread_name_prefix="dedup", initializer=name_pool_thread)``:
``dedup_0``, ...).
"""

from __future__ import annotations

import threading

COMM_BYTES = 15  # the kernel's TASK_COMM_LEN less its terminating NUL


def os_name(name: str) -> bytes:
    """``name`` as the kernel keeps it: UTF-8, at most :data:`COMM_BYTES` bytes, never a
    cut character, no newline or NUL (``comm`` is one line; the kernel ends it at a NUL)."""
    raw = name.replace("\n", " ").replace("\0", " ").encode("utf-8", "replace")
    if len(raw) <= COMM_BYTES:
        return raw
    return raw[:COMM_BYTES].decode("utf-8", "ignore").encode("utf-8")


def name_this_thread(name: str) -> bool:
    """Give the calling thread's kernel task ``name`` (:func:`os_name`); False where it
    could not be done (no ``/proc/thread-self``, or the write refused)."""
    try:
        with open("/proc/thread-self/comm", "wb", buffering=0) as fh:
            fh.write(os_name(name))
        return True
    except (OSError, ValueError):  # no such file, a refused write: the thread stays unnamed
        return False


def name_pool_thread() -> None:
    """A ``ThreadPoolExecutor``'s ``initializer``: the pool thread's kernel task gets its
    Python name (``<thread_name_prefix>_<n>``)."""
    name_this_thread(threading.current_thread().name)


class NamedThread(threading.Thread):
    """:class:`threading.Thread` whose kernel task carries its ``name`` (see the module)."""

    def run(self) -> None:
        name_this_thread(self.name)
        super().run()
