"""Await inbox-WAL durability with one append and one commit-thread callback per group.

Why this module exists: ``GroupCommitter.append_async`` appends, takes the
committer's lock and registers one callback per record, and each registration
may wake the commit thread; at thousands of requests per second that is a lock
round and a thread wake-up (and a GIL hand-over) per request. Here the event
loop collects the records of one loop iteration and appends them together
(``append_many``: one lock, one nudge of the commit thread), keeps the waiting
groups in its own :class:`flk.impl.storage.groupcommit.GroupCommit` (the one
rule that releases group-commit waiters) -- one waiter per appended group --
and registers a single ``on_durable`` for the *highest* pending index. When it
fires, the machine releases every group whose last record is durable
(``log.durable_index``; durability is a prefix of the log, so the whole group
is), and one new registration covers whatever is still pending. A request is
released only after the fsync that covers its record has returned
(INV-WAL-FIRST), exactly as with ``append_async``; a failed group commit fails
every waiter not yet durable; a failed append fails every request of its group.

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
        self._batch: list[tuple[bytes, asyncio.Future]] = []  # appends of this loop iteration
        self.appends = 0  # append_many calls (groups) so far
        self.records = 0  # records appended so far

    async def append(self, payload: bytes) -> int:
        """Append ``payload``; return its index once it is durable."""
        loop = self._loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._batch.append((payload, fut))
        if len(self._batch) == 1:
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        """(Event loop.) Append the collected records as one group and wait for it."""
        batch, self._batch = self._batch, []
        try:
            first = self.committer.append_many([payload for payload, _ in batch])
        except Exception as exc:  # noqa: BLE001 -- WalError/OSError: every request of the group gets it
            self._settle([Release([(fut, -1) for _, fut in batch], -1, exc)])
            return
        self.appends += 1
        self.records += len(batch)
        last = first + len(batch) - 1
        group = [(fut, first + i) for i, (_, fut) in enumerate(batch)]
        now = self._loop.time()
        self._machine.append(last, now)
        release = self._machine.wait(last, group, now)  # (the machine learns of durability in _release)
        if release is not None:
            self._settle([release])
        elif not self._registered:
            self._register()

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
        released = self._machine.durable_advanced(self.log.durable_index, now)
        if err is not None:
            error = err if isinstance(err, BaseException) else RuntimeError(str(err))
            released += self._machine.sync_failed(error, now)
        self._settle(released)
        if self._machine.waiting():
            self._register()

    @staticmethod
    def _settle(releases: list[Release]) -> None:
        for release in releases:
            for fut, index in release.waiter:
                if fut.done():
                    continue
                if release.error is None:
                    fut.set_result(index)
                else:
                    fut.set_exception(release.error)
