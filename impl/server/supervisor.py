"""Worker processes on one port; dead workers are replaced.

Why this module exists: one Python process uses one core. ``WORKERS=N`` runs N
uvicorn servers in N processes on one port and one dedup store, each with its own
inbox WAL directory ``WAL_DIR/worker-<i>``. Worker ``i`` that dies is restarted as
worker ``i`` again -- it reopens (and replays) the same WAL directory, so nothing
it acknowledged is forgotten.

How the workers share the port (``REUSE_PORT``):

* **own listeners** (the default with several workers on Linux): the supervisor
  binds the port with ``SO_REUSEPORT`` but does not listen on it (it only holds
  the port); each worker binds its own ``SO_REUSEPORT`` socket to the same address
  and listens, before its application starts, so connections wait in its backlog
  meanwhile. The kernel spreads new connections over the listening workers by a
  hash of their addresses. The supervisor announces ``listening`` (``on_listening``)
  once every worker listens, so a connection made after it is never refused. A
  worker that dies takes the connections still waiting in its backlog with it
  (reset; Linux moves them to another worker only with the
  ``net.ipv4.tcp_migrate_req`` sysctl), and its replacement listens again.
* **one shared socket** (``REUSE_PORT=false``, one worker, or not Linux): the
  supervisor listens and the workers accept from the same socket. Whichever
  accepts first takes a burst: ``flk serve``, 2 workers, 32 connections opened at
  once by ``wrk``: requests per worker in a 5 s turn from 46k/46k to 8k/71k; the
  uneven turns ran 12-13k req/s against 15k, their small worker answering batches
  of 1-3. With own listeners the same bench's smallest worker share was 0.42-0.48
  in four turns (0.23-0.48 shared).

Shutdown: SIGTERM or SIGINT to the supervisor is forwarded to every worker;
each worker stops accepting, drains its in-flight requests (up to
``drain_timeout_s``), then flushes and fsyncs its WAL in the application's
lifespan shutdown. With ``WORKERS=1`` the single worker runs in the
supervisor's own process (no extra process to kill or to wait for).

A worker that fails during startup (exit code 3: e.g. a corrupt WAL it refuses
to skip) is not restarted in a loop: the supervisor stops and exits 1.

Where the workers run (``WORKER_CPU_AFFINITY``, :func:`worker_cpus`): a worker is
two busy threads -- the event loop and the submit batch thread -- that hand every
batch to each other and take turns at one GIL. Left to the scheduler they wander
between cores, and each hand-off wakes the other thread on another core. With
``auto`` (the default), when the workers are at least as many as the cores this
process may use (the default worker count is that core count), worker ``i`` and
every thread it starts run on the ``i``-th of those cores (round robin beyond);
fewer workers than cores are not pinned, so several servers on one host never
pile onto the first cores. ``on`` pins round robin with any worker count (a
dedicated host), ``off`` never. Measured on a 2-core machine (2 workers, 32
connections, realistic bodies, 4 interleaved rounds of the server pinned and
unpinned, an unpinned bare Starlette between them): 26,998 vs 19,642 req/s
median (0.802 vs 0.595 of bare Starlette), the batch driver's hand-off stage
39-48 vs 100-123 us per request, CPU per request unchanged (the gain is the
closed loop's latency); 4 workers on 2 cores 0.59 vs 0.44; at 128 connections
0.835 vs 0.686. Bare Starlette on this supervisor gains about 5 % from it
(34,489 vs 32,927, 4 rounds), and ``flk bench serve`` runs it so. A restarted
worker ``i`` runs where worker ``i`` ran. One worker is never pinned (its
threads may use every core).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

STARTUP_FAILURE = 3


BACKLOG = 2048


#: ``WORKER_CPU_AFFINITY``'s values (:func:`worker_cpus`)
CPU_AFFINITY_MODES = ("auto", "on", "off")


def allowed_cpus() -> list[int]:
    """The cores this process may run on (empty where the platform cannot say)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return []


def worker_cpus(workers: int, allowed: Any, mode: str = "auto") -> list[frozenset[int] | None]:
    """The cores of each of ``workers`` workers (None: not pinned) over the cores
    ``allowed``: with ``mode`` ``on``, or ``auto`` and at least as many workers as cores,
    worker ``i`` runs on the ``i``-th core in order (round robin beyond); one worker, fewer
    than two cores, ``off``, or ``auto`` with fewer workers than cores: none is pinned."""
    if mode not in CPU_AFFINITY_MODES:
        raise ValueError(f"cpu affinity mode must be one of {', '.join(CPU_AFFINITY_MODES)}")
    cpus = sorted(set(allowed))
    if workers < 2 or len(cpus) < 2 or mode == "off" or (mode == "auto" and workers < len(cpus)):
        return [None] * max(0, workers)
    return [frozenset({cpus[i % len(cpus)]}) for i in range(workers)]


def pin_process(cpus: frozenset[int]) -> str | None:
    """Run every thread of this process on ``cpus`` (threads it starts later inherit it
    from the one that starts them). None when done, else why not (the process then runs
    where it did): the platform has no affinity call, or the kernel refused."""
    try:
        os.sched_setaffinity(0, cpus)  # this thread first: the one that starts the others
        try:
            tids = [int(t) for t in os.listdir("/proc/self/task")]
        except OSError:
            tids = []
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
            except ProcessLookupError:  # the thread ended meanwhile
                pass
    except AttributeError:  # pragma: no cover - not Linux
        return "no sched_setaffinity on this platform"
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def cpu_list(cpus: frozenset[int] | None) -> str:
    """``cpus`` as the kernel writes a CPU list (``0``, ``0,2``); ``""`` for None."""
    return "" if cpus is None else ",".join(str(c) for c in sorted(cpus))


def reuse_port_supported() -> bool:
    """Linux's ``SO_REUSEPORT`` spreads connections over the listeners (elsewhere the
    option exists but does not balance)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_socket(host: str, port: int, workers: int = 1, reuse_port: bool = False) -> socket.socket:
    """The supervisor's socket on ``host:port``: listening, for the workers to share; with
    ``reuse_port``, several workers and Linux, bound with ``SO_REUSEPORT`` and not listening --
    it holds the port for the workers' own listeners (:func:`worker_listener`)."""
    reuse_port = reuse_port and workers > 1 and reuse_port_supported()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if not reuse_port:
            sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def is_shared(sock: socket.socket) -> bool:
    """``sock`` (from :func:`bind_socket`) listens for all the workers (else each worker
    listens on its own socket)."""
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


def worker_listener(sock: socket.socket) -> socket.socket:
    """The socket a worker serves: ``sock`` itself when it listens (shared), else the
    worker's own ``SO_REUSEPORT`` socket on ``sock``'s address, listening."""
    if is_shared(sock):
        return sock
    own = socket.socket(sock.family, socket.SOCK_STREAM)
    try:
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        own.bind(sock.getsockname())
        own.listen(BACKLOG)
    except OSError:
        own.close()
        raise
    return own


def _http_settings(factory_args: tuple) -> tuple[Any, float]:
    """The HTTP limits and keep-alive timeout: from the factory's first argument when it
    is a server configuration (``flk serve``), else the defaults."""
    from .httpguard import HttpLimits

    cfg = factory_args[0] if factory_args else None
    if hasattr(cfg, "max_header_bytes"):
        return HttpLimits.from_config(cfg), float(cfg.keep_alive_s)
    return HttpLimits(), 30.0


def _uvicorn_config(app: Any, drain_timeout_s: float, factory_args: tuple = (), worker: int | None = None):
    """uvicorn on uvloop + httptools with the guarded protocol (:mod:`.httpguard`); the h11
    fallback gets only its incomplete-event size limit. Its log records (and any library's)
    are JSON lines of worker ``worker`` (:func:`flk.impl.server.logs.worker_log_config`)."""
    import uvicorn

    from .logs import worker_log_config

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
        log_config=worker_log_config(worker, getattr(factory_args[0] if factory_args else None, "redact", None)),
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


def run_worker(factory_path: str, factory_args: tuple, index: int, sock: socket.socket, drain_timeout_s: float,
               listening: Any = None) -> int:
    """Run one uvicorn server for ``factory(*factory_args, index)`` on ``sock`` (or on its own
    listener, :func:`worker_listener`); ``listening.set()`` once it listens."""
    import uvicorn

    # SIGHUP reloads the tenants file once the app started (flk.impl.server.reload); before
    # that it must not end the process (its default): the app reads the file at its start
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        sock = worker_listener(sock)
    except OSError as exc:
        print(json.dumps({"event": "worker_listen_failed", "detail": f"worker-{index}", "error": exc.strerror}),
              file=sys.stderr, flush=True)
        return STARTUP_FAILURE
    if listening is not None:
        listening.set()
    app = _load_factory(factory_path)(*factory_args, index)
    server = _frozen_after_startup(uvicorn)(_uvicorn_config(app, drain_timeout_s, factory_args, index))
    logging.captureWarnings(True)  # a Python warning is a log record too (py.warnings): a JSON line, not raw text
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
    orphan keeps serving on the port."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _child(factory_path: str, factory_args: tuple, index: int, sock: socket.socket, drain_timeout_s: float,
           listening: Any, cpus: frozenset[int] | None = None) -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the started app handles it (run_worker)
    _die_with_parent()
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the supervisor died before prctl took effect
        sys.exit(1)
    if cpus is not None:  # before the application starts a thread: they all inherit it
        refused = pin_process(cpus)
        if refused is not None:  # served unpinned: said once, on the workers' log stream
            from .logs import JsonLogger

            JsonLogger(worker=index).warning("worker_cpu_affinity_failed", reason=refused)
    sys.exit(run_worker(factory_path, factory_args, index, sock, drain_timeout_s, listening))


def serve_app_factory(
    factory_path: str,
    factory_args: tuple,
    sock: socket.socket,
    workers: int,
    drain_timeout_s: float = 10.0,
    log=None,
    on_listening: Callable[[], None] | None = None,
    cpu_affinity: str = "auto",
) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code. ``on_listening()`` runs
    once every worker listens (at once when ``sock`` listens for them all);
    ``cpu_affinity``: where the workers run (:func:`worker_cpus`)."""
    announce = on_listening or (lambda: None)
    if workers == 1:
        return _serve_in_process(factory_path, factory_args, sock, drain_timeout_s, log, announce)
    cpus = worker_cpus(workers, allowed_cpus(), cpu_affinity)
    ctx = multiprocessing.get_context("spawn")
    procs: dict[int, Any] = {}
    events: dict[int, Any] = {}  # each worker's "listening" event (kept: its process unpickles it)
    stopping = {"flag": False, "signal": None}
    shared = is_shared(sock)
    waiting = set() if shared else set(range(workers))  # until every worker listened (a restarted one anew)

    def start(i: int) -> None:
        listening = ctx.Event()
        p = ctx.Process(target=_child, args=(factory_path, factory_args, i, sock, drain_timeout_s, listening,
                                             cpus[i]),
                        name=f"flk-worker-{i}", daemon=False)
        p.start()
        procs[i], events[i] = p, listening
        if log:
            log.info("worker_started", detail=f"worker-{i}", pid=p.pid, cpus=cpu_list(cpus[i]) or "any")

    def on_signal(signum, _frame) -> None:
        stopping["flag"] = True
        stopping["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, lambda *_: _pass_on(procs, signal.SIGHUP))  # each worker reloads its tenants
    if shared:
        announce()
    for i in range(workers):
        start(i)
    last_restart: dict[int, float] = {}
    exit_code = 0
    while not stopping["flag"]:
        time.sleep(0.01 if waiting else 0.1)
        if waiting and all(events[i].is_set() for i in waiting):
            waiting.clear()
            announce()
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
            _pause_if_crash_loop(last_restart, i)
            start(i)
    _stop_workers(list(procs.values()), drain_timeout_s)
    if log:
        log.info("stopped", signal=stopping["signal"], exit_code=exit_code)
    return exit_code


def _pass_on(procs: dict, sig: int) -> None:
    """Send ``sig`` to every live worker."""
    for p in list(procs.values()):
        if p.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)


def _pause_if_crash_loop(last_restart: dict[int, float], i: int) -> None:
    """Worker ``i`` died within a second of its last restart: wait a second before the next."""
    if time.monotonic() - last_restart.get(i, -1e9) < 1.0:
        time.sleep(1.0)
    last_restart[i] = time.monotonic()


def _serve_in_process(factory_path: str, factory_args: tuple, sock: socket.socket, drain_timeout_s: float,
                      log, announce: Callable[[], None]) -> int:
    """``WORKERS=1``: the one worker runs in the supervisor's own process."""
    try:
        sock = worker_listener(sock)
    except OSError as exc:
        if log:
            log.error("worker_startup_failed", detail="worker-0", error=exc.strerror)
        return 1
    announce()
    return run_worker(factory_path, factory_args, 0, sock, drain_timeout_s)


def _stop_workers(procs: list, drain_timeout_s: float) -> None:
    """SIGTERM every live worker, wait for their drain, then kill what is left."""
    for p in procs:
        if p.is_alive():
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + drain_timeout_s + 5.0
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
