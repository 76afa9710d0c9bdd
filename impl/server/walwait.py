"""Await inbox-WAL durability with one commit-thread callback per group, not per request.

Why this module exists: ``GroupCommitter.append_async`` registers one callback
per record, and each registration wakes the commit thread; at thousands of
requests per second that is a thread wake-up (and a GIL hand-over) per request.
Here the event loop keeps the waiting records itself, in its own
:class:`flk.impl.storage.groupcommit.GroupCommit` (the one rule that releases
group-commit waiters), and registers a single ``on_durable`` for the *highest*
pending index. When it fires, the machine releases every waiter whose record is
durable (``log.durable_index``), and one new registration covers whatever is
still pending. A waiter is released only after the fsync that covers its
record has returned (INV-WAL-FIRST), exactly as with ``append_async``; a failed
group commit fails every waiter not yet durable.

This driver only waits: the commit thread of the
:class:`flk.impl.storage.wal.GroupCommitter` decides when to fsync.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..storage.groupcommit import GroupCommit, Release


class WalWaiter:
    def __init__(self, committer: Any) -> None:
        self.committer = committer
        self.log = committer.log
        self._machine = GroupCommit(durable=self.log.durable_index)
        self._registered = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def append(self, payload: bytes) -> int:
        """Append ``payload``; return its index once it is durable."""
        idx = self.committer.append(payload)
        if self.log.is_durable(idx):
            return idx
        loop = self._loop = asyncio.get_running_loop()
        fut = loop.create_future()
        now = loop.time()
        self._machine.append(idx, now)
        release = self._machine.wait(idx, fut, now)  # (the machine learns of durability in _release)
        if release is not None:
            self._settle([release])
        elif not self._registered:
            self._register()
        await fut
        return idx

    def _register(self) -> None:
        self._registered = True
        target = self._machine.appended - 1
        loop = self._loop

        def fired(err) -> None:  # commit thread (or this thread, if already durable)
            loop.call_soon_threadsafe(self._release, err)

        self.committer.on_durable(target, fired)

    def _release(self, err) -> None:
        self._registered = False
        now = self._loop.time()
        if err is None:
            released = self._machine.durable_advanced(self.log.durable_index, now)
        else:
            error = err if isinstance(err, BaseException) else RuntimeError(str(err))
            released = self._machine.durable_advanced(self.log.durable_index, now)
            released += self._machine.sync_failed(error, now)
        self._settle(released)
        if self._machine.waiting():
            self._register()

    @staticmethod
    def _settle(releases: list[Release]) -> None:
        for release in releases:
            fut = release.waiter
            if fut.done():
                continue
            if release.error is None:
                fut.set_result(None)
            else:
                fut.set_exception(release.error)
