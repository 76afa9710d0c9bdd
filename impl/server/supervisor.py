"""Worker processes on one listening socket; dead workers are replaced.

Why this module exists: one Python process uses one core. ``WORKERS=N`` runs N
uvicorn servers in N processes that share one listening socket (bound once by
the parent) and one dedup store, each with its own inbox WAL directory
``WAL_DIR/worker-<i>``. Which worker takes a new connection is whichever accepts
first: a burst of connections can land unevenly (``flk serve``, 2 workers, 32
connections opened at once by ``wrk``: requests per worker in a 5 s turn from
46k/46k to 8k/71k; the uneven turns ran 12-13k req/s against 15k, their small
worker answering batches of 1-3). ``SO_REUSEPORT`` listeners, one per worker, would
let the kernel spread them by address hash; not done. Worker ``i`` that dies is
restarted as worker ``i`` again -- it reopens (and replays) the same WAL
directory, so nothing it acknowledged is forgotten.

Shutdown: SIGTERM or SIGINT to the supervisor is forwarded to every worker;
each worker stops accepting, drains its in-flight requests (up to
``drain_timeout_s``), then flushes and fsyncs its WAL in the application's
lifespan shutdown. With ``WORKERS=1`` the single worker runs in the
supervisor's own process (no extra process to kill or to wait for).

A worker that fails during startup (exit code 3: e.g. a corrupt WAL it refuses
to skip) is not restarted in a loop: the supervisor stops and exits 1.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import socket
import sys
import time
from typing import Any

STARTUP_FAILURE = 3


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _http_settings(factory_args: tuple) -> tuple[Any, float]:
    """The HTTP limits and keep-alive timeout: from the factory's first argument when it
    is a server configuration (``flk serve``), else the defaults."""
    from .httpguard import HttpLimits

    cfg = factory_args[0] if factory_args else None
    if hasattr(cfg, "max_header_bytes"):
        return HttpLimits.from_config(cfg), float(cfg.keep_alive_s)
    return HttpLimits(), 30.0


def _uvicorn_config(app: Any, drain_timeout_s: float, factory_args: tuple = ()):
    """uvicorn on uvloop + httptools with the guarded protocol (:mod:`.httpguard`); the h11
    fallback gets only its incomplete-event size limit."""
    import uvicorn

    limits, keep_alive_s = _http_settings(factory_args)
    loop, http = "asyncio", "h11"
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - optional speed-up
        pass
    try:
        import httptools  # noqa: F401

        from .httpguard import protocol_class

        http = protocol_class(limits)
    except ImportError:  # pragma: no cover
        pass
    return uvicorn.Config(
        app,
        loop=loop,
        http=http,
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=max(1, int(drain_timeout_s)),
        timeout_keep_alive=max(1, round(keep_alive_s)),
        h11_max_incomplete_event_size=limits.max_header_bytes,
        proxy_headers=False,
    )


def _load_factory(path: str):
    mod, _, name = path.partition(":")
    return getattr(importlib.import_module(mod), name)


def freeze_started_heap() -> None:
    """Collect, then freeze the garbage collector's heap (``gc.freeze``): what a started
    process holds for its whole life goes to the permanent generation (see
    :func:`_frozen_after_startup`; ``flk bench verify`` holds its set-up the same way)."""
    import gc

    gc.collect()
    gc.freeze()


def _frozen_after_startup(uvicorn: Any) -> type:
    """uvicorn's ``Server`` that, once the application started (the lifespan: stores,
    WAL, replay, registries), collects and freezes the garbage collector's heap
    (``gc.freeze``): what the process holds from then on for its whole life -- modules,
    configuration, the app -- sits in the permanent generation, so the full collections
    that the requests' short-lived objects trigger do not traverse it each time (a full
    collection of a started worker's ~48,000 tracked objects took 5-35 ms of the event
    loop). Nothing else changes: objects are still freed by their reference counts, and
    cycles created later are collected as before."""

    class Server(uvicorn.Server):
        async def startup(self, sockets: list | None = None) -> None:
            await super().startup(sockets=sockets)
            freeze_started_heap()

    return Server


def run_worker(factory_path: str, factory_args: tuple, index: int, sock: socket.socket, drain_timeout_s: float) -> int:
    """Run one uvicorn server for ``factory(*factory_args, index)`` on ``sock``."""
    import uvicorn

    app = _load_factory(factory_path)(*factory_args, index)
    server = _frozen_after_startup(uvicorn)(_uvicorn_config(app, drain_timeout_s, factory_args))
    # uvicorn re-raises the signal it caught after a graceful shutdown; a Python
    # handler here turns that into a clean return instead of death by SIGTERM.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        server.run(sockets=[sock])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0 if server.started else STARTUP_FAILURE


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervisor dies (even by SIGKILL), so no
    orphan keeps serving on the shared socket."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _child(factory_path: str, factory_args: tuple, index: int, sock: socket.socket, drain_timeout_s: float) -> None:
    _die_with_parent()
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the supervisor died before prctl took effect
        sys.exit(1)
    sys.exit(run_worker(factory_path, factory_args, index, sock, drain_timeout_s))


def serve_app_factory(
    factory_path: str,
    factory_args: tuple,
    sock: socket.socket,
    workers: int,
    drain_timeout_s: float = 10.0,
    log=None,
) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    if workers == 1:
        return run_worker(factory_path, factory_args, 0, sock, drain_timeout_s)

    ctx = multiprocessing.get_context("spawn")
    procs: dict[int, Any] = {}
    stopping = {"flag": False, "signal": None}

    def start(i: int) -> None:
        p = ctx.Process(target=_child, args=(factory_path, factory_args, i, sock, drain_timeout_s),
                        name=f"flk-worker-{i}", daemon=False)
        p.start()
        procs[i] = p
        if log:
            log.info("worker_started", detail=f"worker-{i}", pid=p.pid)

    def on_signal(signum, _frame) -> None:
        stopping["flag"] = True
        stopping["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for i in range(workers):
        start(i)
    last_restart: dict[int, float] = {}
    exit_code = 0
    while not stopping["flag"]:
        time.sleep(0.1)
        for i, p in list(procs.items()):
            if p.is_alive() or stopping["flag"]:
                continue
            code = p.exitcode
            if code == STARTUP_FAILURE:
                if log:
                    log.error("worker_startup_failed", detail=f"worker-{i}", exit_code=code)
                stopping["flag"], exit_code = True, 1
                break
            if log:
                log.warning("worker_died", detail=f"worker-{i}", exit_code=code, reason="restarting")
            now = time.monotonic()
            if now - last_restart.get(i, -1e9) < 1.0:
                time.sleep(1.0)  # crash loop: slow down
            last_restart[i] = time.monotonic()
            start(i)
    for p in procs.values():
        if p.is_alive():
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + drain_timeout_s + 5.0
    for p in procs.values():
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
    if log:
        log.info("stopped", signal=stopping["signal"], exit_code=exit_code)
    return exit_code
