"""Await inbox-WAL durability with one commit-thread callback per group, not per request.

Why this module exists: ``GroupCommitter.append_async`` registers one callback
per record, and each registration wakes the commit thread; at thousands of
requests per second that is a thread wake-up (and a GIL hand-over) per request.
Here the event loop keeps the waiting records itself and registers a single
``on_durable`` for the *highest* pending index; when it fires, every waiter
whose record is durable (``log.is_durable``) is released, and one new
registration covers whatever is still pending. A waiter is released only after
the fsync that covers its record has returned (INV-WAL-FIRST), exactly as with
``append_async``; a failed group commit fails every waiter not yet durable.
"""

from __future__ import annotations

import asyncio
from typing import Any


class WalWaiter:
    def __init__(self, committer: Any) -> None:
        self.committer = committer
        self.log = committer.log
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self._registered = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def append(self, payload: bytes) -> int:
        """Append ``payload``; return its index once it is durable."""
        idx = self.committer.append(payload)
        if self.log.is_durable(idx):
            return idx
        loop = self._loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiters.append((idx, fut))
        if not self._registered:
            self._register()
        await fut
        return idx

    def _register(self) -> None:
        self._registered = True
        target = max(i for i, _ in self._waiters)
        loop = self._loop

        def fired(err) -> None:  # commit thread (or this thread, if already durable)
            loop.call_soon_threadsafe(self._release, err)

        self.committer.on_durable(target, fired)

    def _release(self, err) -> None:
        self._registered = False
        keep: list[tuple[int, asyncio.Future]] = []
        for idx, fut in self._waiters:
            if fut.done():
                continue
            if self.log.is_durable(idx):
                fut.set_result(None)
            elif err is not None:
                fut.set_exception(err if isinstance(err, BaseException) else RuntimeError(str(err)))
            else:
                keep.append((idx, fut))
        self._waiters = keep
        if keep:
            self._register()
