"""``flk serve``: run the deployable verifier server (ASGI over the verify pipeline).

Configuration comes from environment variables (SPEC section 9) and an optional TOML
file (``--config``); flags override both. Everything is checked -- the
configuration, the data and WAL directories, the tenants and policy, the dedup
store (it is opened and pinged) -- *before* the socket is bound: a problem is
one message on stderr and exit code 2.

With no configuration at all the server listens on 127.0.0.1:8080, keeps its
SQLite dedup store, inbox WAL and HMAC key in ``./data`` and says so. Sign PCS
for it with ``PCS_HMAC_KEY=$(cat data/hmac.key) flk agent build ...``.

Logs are JSON lines on stderr, from the first line (what the configuration left to
defaults is a ``config_note`` line; ``--check`` answers in plain lines); the first ``listening`` line carries the bound
port (useful with ``--port 0``). It is written once every worker listens (each on
its own ``SO_REUSEPORT`` socket by default, ``REUSE_PORT``;
:mod:`flk.impl.server.supervisor`), so a connection made after it is not refused.
"""

from __future__ import annotations

import os
import sys
import time


def configure(p) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration file (env overrides it)")
    p.add_argument("--host", help="listen address (default 127.0.0.1; env HOST)")
    p.add_argument("--port", type=int, help="listen port, 0 = any free port (default 8080; env PORT)")
    p.add_argument("--workers", type=int,
                   help="worker processes (default: the core count, 1 with DEDUP_BACKEND=memory; env WORKERS)")
    p.add_argument("--data-dir", help="data directory (default ./data; env DATA_DIR)")
    p.add_argument("--check", action="store_true",
                   help="validate the configuration as a start would and exit: creates nothing (no directory, "
                        "key file or SQLite file; says what a start would create), binds nothing; a network "
                        "store is opened and pinged")


def preflight(cfg, dry: bool = False) -> list[str]:
    """Everything that can be wrong before binding; raises ConfigError. ``dry`` (``--check``):
    nothing is created -- a missing directory or SQLite file is checked to be creatable and
    named in the returned notes ("would create ..."), a WAL lock that is not there yet is
    held by nobody."""
    from ...server.config import ConfigError
    from ...server.pipeline import build_verifier

    would: list[str] = []
    _check_host(cfg.host)
    for d, setting in dict.fromkeys(((cfg.data_dir, "DATA_DIR"), (cfg.wal_dir, "WAL_DIR"))):
        if dry and not os.path.exists(d):
            _creatable(d, setting)
            would.append(f"would create directory {os.path.abspath(d)}")
            continue
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create directory {d}: {exc.strerror}") from None
        if not os.access(d, os.W_OK):
            raise ConfigError(f"directory {d} is not writable")
    from ...server.app import WalDirBusy, lock_wal_dir

    for i in range(cfg.workers):  # another server on this DATA_DIR/WAL_DIR?
        lock = cfg.worker_wal_dir(i).rstrip("/") + ".lock"
        if dry and not os.path.exists(lock):
            continue  # no lock file: no server has run there since it was made
        try:
            os.close(lock_wal_dir(cfg.worker_wal_dir(i)))
        except WalDirBusy as exc:
            raise ConfigError(f"{exc}: is another flk serve running on {cfg.data_dir}?") from None
    if cfg.crr is not None and cfg.crr.store_url.startswith("s3://"):
        from ...core.optional import MissingBackend, require

        try:
            require("boto3")
        except MissingBackend as exc:
            raise ConfigError(f"CRR_STORE_URL: {exc}") from None
    build_verifier(cfg)  # tenants, policy
    from ...server.app import openapi_document

    openapi_document()
    if dry and cfg.dedup_backend == "sqlite" and not os.path.exists(cfg.sqlite_path):
        _creatable(os.path.dirname(os.path.abspath(cfg.sqlite_path)), "the directory of SQLITE_PATH")
        return [*would, f"would create the SQLite dedup store {os.path.abspath(cfg.sqlite_path)}"]
    try:
        store = cfg.open_store(time.time())
    except Exception as exc:  # noqa: BLE001 -- any failure to open is a configuration problem here
        raise ConfigError(cfg.redact(f"dedup store {cfg.dedup_backend} cannot be opened: {type(exc).__name__}: "
                                     f"{str(exc)[:200]}")) from None
    try:
        if not store.ping():
            raise ConfigError(f"dedup store {cfg.dedup_backend} does not answer a ping")
    finally:
        store.close()
    return would


def _check_host(host: str) -> None:
    """HOST must resolve to an address (the bind would fail on it after the checks)."""
    import socket

    from ...server.config import ConfigError

    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"HOST {host!r} is not an address to listen on: {reason}") from None


def _creatable(path: str, setting: str) -> None:
    """``path`` (missing) could be made: a directory made and removed at once in its nearest
    existing ancestor (a permission check alone passes root, and /proc)."""
    import tempfile

    from ...server.config import ConfigError

    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    must = f"{setting} {path} must be a writable directory: cannot create it"
    if not os.path.isdir(parent):
        raise ConfigError(f"{must} ({parent} is not a directory)")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".flk-check-", dir=parent))
    except OSError as exc:
        raise ConfigError(f"{must} ({exc.strerror or type(exc).__name__} in {parent})") from None


def run(args) -> int:
    from ...server.config import ConfigError, load_config
    from ...server.logs import JsonLogger
    from . import UsageError

    overrides = {"HOST": args.host, "PORT": args.port, "WORKERS": args.workers, "DATA_DIR": args.data_dir}
    try:
        cfg = load_config(os.environ, args.config, overrides, create_key=None if args.check else True)
        would = preflight(cfg, dry=args.check)
    except ConfigError as exc:
        raise UsageError(f"configuration: {exc}") from None
    log = JsonLogger(level=cfg.log_level)
    for note in (*cfg.notes, *would):  # --check answers a person in plain lines; a server's stderr is its log: JSON only
        if args.check:
            print(f"flk serve: {note}", file=sys.stderr)
        else:
            log.info("config_note", note=note)
    log.info("config", **cfg.describe())
    if args.check:
        print("flk serve: configuration ok", file=sys.stderr)
        return 0
    from ...server.supervisor import bind_socket, is_shared, serve_app_factory

    try:
        sock = bind_socket(cfg.host, cfg.port, cfg.workers, reuse_port=cfg.reuse_port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}") from None
    port = sock.getsockname()[1]

    def listening() -> None:  # every worker listens: a connection from now on is not refused
        log.info("listening", host=cfg.host, port=port, workers=cfg.workers, pid=os.getpid(),
                 listeners="shared" if is_shared(sock) else "per-worker")

    return serve_app_factory("flk.impl.server.app:create_app", (cfg,), sock, cfg.workers,
                             drain_timeout_s=cfg.drain_timeout_s, log=log, on_listening=listening,
                             cpu_affinity=cfg.worker_cpu_affinity)
