"""SIGHUP: a worker reads its tenants file again, without a restart.

Why this module exists: rotating a tenant's key (SPEC.md 4.4: add the new key,
signers switch, drop the old one after the overlap), adding a tenant or changing
its limits should not cost a restart -- a restart refuses connections while it
boots and replays the WAL. With ``TENANTS_FILE`` set, ``kill -HUP`` of ``flk
serve`` (the supervisor passes it to every worker) makes each worker read the
file again and use it from its next batch on:

* the new tenants and the hooks they ask for (PII modes, VRF) form a new
  verifier (:func:`flk.impl.server.pipeline.reloaded_verifier`); a batch already
  begun finishes with the verifier it began with, so no request sees half of each;
  the token buckets and daily quotas are kept (per tenant id);
* the submit path (:class:`flk.impl.server.batchdriver.BatchDriver`), the tenant
  reads and cross-region replay (the replication thread's next step) take it;
* an unreadable or invalid file changes nothing: the worker keeps the tenants it
  has and logs ``tenants_reload_failed`` with the reason (a field name, never a
  key); ``flk_tenants_reloads_total{result="failed"}`` counts it;
* a success logs ``tenants_reloaded`` (tenant count, this worker's ``generation``
  of the file, 0 at start) and counts ``result="ok"``.

A worker that was still starting when the signal came (its handler not yet
installed) compares the file with what it read at start once the handler is in
place, and reloads if it changed: a rewrite plus SIGHUP during a restart is not
lost. Without ``TENANTS_FILE`` (tenants from ``TENANTS`` / ``PCS_*``: settings a
restart reads) the signal is answered by ``tenants_reload_failed`` and nothing
changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from .config import ConfigError, ServerConfig
from .pipeline import reloaded_verifier


def file_stamp(path: str) -> tuple | None:
    """What tells a rewritten file from the one read before (None: no such file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class TenantsReload:
    """One worker's reloads of ``cfg.tenants_file``: ``current()`` is the verifier in use,
    ``use(verifier)`` swaps every holder of it (event loop only)."""

    def __init__(self, cfg: ServerConfig, log: Any, registry: Any, current: Callable[[], Any],
                 use: Callable[[Any], None]) -> None:
        self.cfg, self.log, self.current, self.use = cfg, log, current, use
        self.generation = 0
        self.reloads = Counter("flk_tenants_reloads", "Reloads of the tenants file (SIGHUP) by result",
                               ["result"], registry=registry)
        for result in ("ok", "failed"):
            self.reloads.labels(result=result)
        self.stamp = file_stamp(cfg.tenants_file) if cfg.tenants_file else None  # before the start reads it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: asyncio.Task | None = None
        self._again = False

    def install(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Handle SIGHUP on ``loop`` (False where signals cannot be handled: not the main
        thread, as under a test client). Reloads at once if the file changed since the start read it."""
        try:
            loop.add_signal_handler(signal.SIGHUP, self.request)
        except (ValueError, RuntimeError, NotImplementedError):
            return False
        self._loop = loop
        if self.cfg.tenants_file and file_stamp(self.cfg.tenants_file) != self.stamp:
            self.request()
        return True

    def uninstall(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                self._loop.remove_signal_handler(signal.SIGHUP)
            self._loop = None

    def request(self) -> None:
        """(Event loop.) A reload; one that comes while one runs makes it run once more after."""
        if self._running is not None and not self._running.done():
            self._again = True
            return
        self._running = asyncio.get_running_loop().create_task(self._reload_until_settled())

    async def _reload_until_settled(self) -> None:
        while True:
            self._again = False
            await self.reload()
            if not self._again:
                return

    async def reload(self) -> bool:
        """Read the file (off the event loop) and use it; False if it was refused."""
        loop = asyncio.get_running_loop()
        stamp = file_stamp(self.cfg.tenants_file) if self.cfg.tenants_file else None
        try:
            verifier = await loop.run_in_executor(None, reloaded_verifier, self.cfg, self.current())
        except ConfigError as exc:
            self.reloads.labels(result="failed").inc()
            self.log.error("tenants_reload_failed", error=str(exc)[:300], generation=self.generation)
            return False
        self.use(verifier)
        self.stamp = stamp
        self.generation += 1
        self.reloads.labels(result="ok").inc()
        self.log.info("tenants_reloaded", tenants=len(verifier.tenants), generation=self.generation)
        return True
