"""Structured JSON logs that never carry payloads, signatures or keys.

Why this module exists: a server log ends up in places a PCS and its key must
never reach. Every line is one JSON object built from an explicit allow-list of
fields (:data:`ALLOWED`); anything else a caller passes is dropped, and string
values are truncated. Request bodies, headers (other than the request id and
tenant), signatures, keys and passwords have no field to go into; a
``redact`` callable (the server passes :meth:`ServerConfig.redact`) removes any
configured secret a string value might still quote (an exception's text, say).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
ALLOWED = frozenset({
    "event", "worker", "pid", "method", "path", "status", "problem", "tenant", "pcs_id",
    "request_id", "latency_ms", "bytes", "host", "port", "workers", "data_dir", "wal_dir",
    "dedup_backend", "store", "sign_alg", "multi_tenant", "tenants", "region_id", "policy_file",
    "metrics_auth", "max_body_bytes", "key_file", "reuse_port", "worker_cpu_affinity", "listeners", "note", "replayed", "records", "stored",
    "errors", "exit_code", "signal", "reason", "state", "limit", "inflight", "detail", "field",
    # replication: the failure text, divergence figures, the rejected stream
    "error", "severity", "peer", "count_divergence", "sample_mismatch", "open_conflicts", "stream", "segment",
    # a library's log record (JsonLogHandler): the logger's name
    "logger",
    # the batch driver's stage times at stop (flk.impl.server.batchdriver.StageTimes.as_dict)
    "requests", "batches", "mean_batch", "wait_us", "handoff_us", "append_us", "sync_us", "finish_us", "answer_us",
    "sync_wal_us", "wal_syncs", "wal_sync_call_us",
    # the dedup store failing and answering again (flk.impl.server.batchdriver.GuardedStore)
    "down_s", "failed_requests", "refused_requests", "breaker_opens",
    # a reload of the tenants file (flk.impl.server.reload): this worker's count of them
    "generation",
    # the cores a worker runs on (flk.impl.server.supervisor.worker_cpus)
    "cpus",
})
_MAX_STR = 200


class JsonLogger:
    def __init__(self, stream: IO[str] | None = None, level: str = "info", worker: int | None = None,
                 redact: Callable[[str], str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.redact = redact
        self.level = LEVELS.get(level, 20)
        self.worker = worker
        self._lock = threading.Lock()

    def enabled(self, level: str) -> bool:
        return LEVELS.get(level, 20) >= self.level

    def log(self, level: str, event: str, **fields: Any) -> None:
        if LEVELS.get(level, 20) < self.level:
            return
        rec: dict[str, Any] = {"ts": round(time.time(), 6), "level": level, "event": event}
        if self.worker is not None:
            rec["worker"] = self.worker
        for k, v in fields.items():
            if k not in ALLOWED or k == "event":
                continue
            if isinstance(v, str) and self.redact is not None:
                v = self.redact(v)
            if isinstance(v, str) and len(v) > _MAX_STR:
                v = v[:_MAX_STR] + "..."
            rec[k] = v
        line = json.dumps(rec, default=str, separators=(",", ":"))
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # closed stream at shutdown: logging never crashes the server
                pass

    def info(self, event: str, **fields: Any) -> None:
        self.log("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.log("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.log("error", event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self.log("debug", event, **fields)


class JsonLogHandler(logging.Handler):
    """The libraries' log records (uvicorn's "Invalid HTTP request received.", a driver's
    warnings) as this module's JSON lines, event ``library_log``: the logger's name and the
    record's message (its first 200 characters, redacted like any field; never an exception's
    traceback). A worker's root logger and uvicorn's loggers write through it
    (:func:`worker_log_config`), so a running server's stderr is JSON lines only -- before,
    uvicorn wrote ``WARNING:  Invalid HTTP request received.`` raw, once per malformed request."""

    def __init__(self, worker: int | None = None, redact: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self.json = JsonLogger(worker=worker, level="debug", redact=redact)  # logging's levels filter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = record.levelname.lower()
            self.json.log(level if level in LEVELS else "error", "library_log", logger=record.name,
                          detail=record.getMessage())
        except Exception:  # noqa: BLE001 -- logging never crashes the server
            self.handleError(record)


def worker_log_config(worker: int | None = None, redact: Callable[[str], str] | None = None) -> dict:
    """The ``logging.config.dictConfig`` of a server worker (uvicorn's ``log_config``): every
    record of WARNING and above -- uvicorn's, any library's -- through :class:`JsonLogHandler`;
    uvicorn's access log off (the app logs its own requests); ``redact``: the configuration's
    (:meth:`ServerConfig.redact`). ``psycopg.pool`` only from ERROR:
    its warning per failed reconnect is summed up by the batch thread's ``dedup_store_failing``."""
    handler = {"()": "flk.impl.server.logs.JsonLogHandler", "worker": worker, "redact": redact}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"json": handler},
        "root": {"handlers": ["json"], "level": "WARNING"},
        "loggers": {
            "uvicorn": {"handlers": ["json"], "level": "WARNING", "propagate": False},
            "uvicorn.error": {"level": "WARNING"},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "psycopg.pool": {"level": "ERROR"},
        },
    }
