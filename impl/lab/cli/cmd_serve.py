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
    p.add_argument("--check", action="store_true", help="validate the configuration and exit (no bind)")


def preflight(cfg) -> None:
    """Everything that can be wrong before binding; raises ConfigError."""
    from ...server.config import ConfigError
    from ...server.pipeline import build_verifier

    for d in (cfg.data_dir, cfg.wal_dir):
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create directory {d}: {exc.strerror}") from None
        if not os.access(d, os.W_OK):
            raise ConfigError(f"directory {d} is not writable")
    from ...server.app import WalDirBusy, lock_wal_dir

    for i in range(cfg.workers):  # another server on this DATA_DIR/WAL_DIR?
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


def run(args) -> int:
    from ...server.config import ConfigError, load_config
    from ...server.logs import JsonLogger
    from . import UsageError

    overrides = {"HOST": args.host, "PORT": args.port, "WORKERS": args.workers, "DATA_DIR": args.data_dir}
    try:
        cfg = load_config(os.environ, args.config, overrides)
        preflight(cfg)
    except ConfigError as exc:
        raise UsageError(f"configuration: {exc}") from None
    log = JsonLogger(level=cfg.log_level)
    for note in cfg.notes:  # --check answers a person in plain lines; a server's stderr is its log: JSON only
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
