"""Talking to an adapter: a subprocess over pipes, or the reference core in process.

Why this module exists: the runner must never hang, whatever the adapter
does. :class:`ProcessAdapter` writes and reads the adapter's pipes
non-blockingly with a deadline per call (``selectors``), drains the adapter's
stderr all the time (so a chatty adapter cannot block on a full pipe) and keeps
its tail for crash reports. Each call ends in exactly one :class:`Reply`:
``ok`` (a well-formed response with the request's id), ``timeout``, ``crash``
(the adapter closed stdout or died) or ``malformed``. After a timeout or crash
the runner kills the adapter and starts it again.

Request ids are increasing integers; a late answer to an earlier request (after
a malformed line, say) is recognised by its id and discarded, so one bad line
does not shift every later answer by one.

:class:`BuiltinAdapter` runs :func:`flk.conformance.ops.handle` in process,
with requests and responses taken through JSON text exactly as on the wire.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flk.impl.core import textdata

ERROR_KINDS = ("unsupported", "invalid_input", "internal")
MAX_LINE = 64 * 1024 * 1024
STDERR_TAIL = 4096


class AdapterBroken(Exception):
    """The adapter cannot be used at all (cannot start, bad hello, keeps crashing)."""


@dataclass
class Reply:
    status: str  # "ok" | "timeout" | "crash" | "malformed"
    response: dict | None = None
    detail: str = ""
    elapsed: float = 0.0


def validate_response(obj: Any, rid: int) -> str | None:
    """Why ``obj`` is not a well-formed response to request ``rid`` (None if it is)."""
    if not isinstance(obj, dict):
        return f"response is a JSON {type(obj).__name__}, not an object"
    if obj.get("id") != rid or isinstance(obj.get("id"), bool):
        return f"response id {obj.get('id')!r} does not match request id {rid}"
    ok = obj.get("ok")
    if not isinstance(ok, bool):
        return "response has no boolean 'ok'"
    if ok:
        if not isinstance(obj.get("output"), dict):
            return "ok response has no 'output' object"
    else:
        err = obj.get("error")
        if not isinstance(err, dict):
            return "error response has no 'error' object"
        if err.get("kind") not in ERROR_KINDS:
            return f"error kind {err.get('kind')!r} is not one of {ERROR_KINDS}"
        if not isinstance(err.get("message"), str):
            return "error has no string 'message'"
    return None


def validate_hello(output: Mapping[str, Any]) -> str | None:
    for key in ("name", "version"):
        if not isinstance(output.get(key), str) or not output.get(key):
            return f"hello output needs a non-empty string {key!r}"
    for key in ("ops", "profiles"):
        v = output.get(key)
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            return f"hello output needs {key!r}: a list of strings"
    return None


def _encode(request: Mapping[str, Any]) -> bytes:
    # ASCII JSON: lone surrogates in negative vectors travel as \\uXXXX escapes
    return (json.dumps(request, ensure_ascii=True, allow_nan=False, separators=(",", ":")) + "\n").encode(
        "ascii"
    )


class BuiltinAdapter:
    """The reference core in process (``--adapter builtin``)."""

    description = "builtin"

    def __init__(self) -> None:
        self.hello: dict = {}
        self.restarts = 0
        self.next_id = 1

    def start(self, timeout: float = 0.0) -> dict:
        reply = self.call({"op": "hello", "profile": "v1", "input": {}}, timeout)
        assert reply.response is not None
        self.hello = reply.response["output"]
        return self.hello

    def call(self, request: Mapping[str, Any], timeout: float) -> Reply:
        from .ops import handle

        rid = self.next_id
        self.next_id += 1
        t0 = time.perf_counter()
        wire = textdata.json_loads(_encode({**request, "id": rid}))
        response = textdata.json_loads(json.dumps(handle(wire), ensure_ascii=True))
        why = validate_response(response, rid)
        elapsed = time.perf_counter() - t0
        if why:
            return Reply("malformed", response, why, elapsed)
        return Reply("ok", response, "", elapsed)

    def kill(self) -> None:
        pass

    def close(self) -> None:
        pass

    def stderr_tail(self) -> str:
        return ""


class ProcessAdapter:
    """An adapter process speaking newline-delimited JSON on stdin/stdout."""

    def __init__(
        self,
        command: Sequence[str],
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if not command:
            raise AdapterBroken("empty adapter command")
        self.command = list(command)
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.description = " ".join(self.command)
        self.proc: subprocess.Popen | None = None
        self.sel: selectors.BaseSelector | None = None
        self.buf = bytearray()
        self.err_tail = bytearray()
        self.next_id = 1
        self.unanswered: set[int] = set()  # ids whose answer may still arrive late
        self.hello: dict = {}
        self.restarts = 0

    # -- lifecycle -------------------------------------------------------
    def start(self, timeout: float = 30.0) -> dict:
        """Start the process and do the hello handshake; raises :class:`AdapterBroken`."""
        self.kill()
        try:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,  # so kill() reaches the adapter's own children
            )
        except OSError as exc:
            raise AdapterBroken(f"cannot start adapter {self.description!r}: {exc}") from None
        self.buf = bytearray()
        self.err_tail = bytearray()
        self.unanswered.clear()
        self.sel = selectors.DefaultSelector()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            os.set_blocking(stream.fileno(), False)
        self.sel.register(self.proc.stdout.fileno(), selectors.EVENT_READ, "out")
        self.sel.register(self.proc.stderr.fileno(), selectors.EVENT_READ, "err")
        reply = self.call({"op": "hello", "profile": "v1", "input": {}}, timeout)
        if reply.status != "ok":
            self.kill()
            raise AdapterBroken(f"hello failed ({reply.status}): {reply.detail}")
        resp = reply.response or {}
        if not resp.get("ok"):
            self.kill()
            raise AdapterBroken(f"hello answered an error: {resp.get('error')}")
        why = validate_hello(resp["output"])
        if why:
            self.kill()
            raise AdapterBroken(f"bad hello: {why}")
        self.hello = resp["output"]
        return self.hello

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if self.sel is not None:
            self.sel.close()
            self.sel = None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not wait
            pass
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                stream.close()
            except OSError:
                pass

    def close(self, grace: float = 2.0) -> None:
        """Close stdin (end of requests), give the adapter ``grace`` seconds to exit, then kill."""
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def stderr_tail(self, limit: int = 600) -> str:
        text = bytes(self.err_tail[-limit:]).decode("utf-8", "replace").strip()
        return text

    # -- one request -----------------------------------------------------
    def _drain(self, timeout: float) -> str | None:
        """Read whatever is ready within ``timeout``; 'eof' when stdout closed."""
        assert self.sel is not None and self.proc is not None
        for key, _ in self.sel.select(max(timeout, 0.0)):
            if key.data == "in":
                continue
            try:
                data = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if key.data == "out":
                if not data:
                    return "eof"
                self.buf += data
            else:
                if not data:
                    self.sel.unregister(key.fd)
                else:
                    self.err_tail += data
                    del self.err_tail[:-STDERR_TAIL]
        return None

    def _crash(self, what: str) -> Reply:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=3.0)
            how = f"adapter exited with status {code}" if code >= 0 else f"adapter killed by signal {-code}"
        except subprocess.TimeoutExpired:
            how = "adapter closed its stdout"
        tail = self.stderr_tail()
        return Reply("crash", None, f"{how} {what}" + (f"; stderr tail: {tail}" if tail else ""))

    def call(self, request: Mapping[str, Any], timeout: float) -> Reply:
        if self.proc is None or self.sel is None:
            return Reply("crash", None, "adapter is not running")
        rid = self.next_id
        self.next_id += 1
        data = memoryview(_encode({**request, "id": rid}))
        t0 = time.monotonic()
        deadline = t0 + timeout
        fd_in = self.proc.stdin.fileno()
        # write the request (the adapter may be slow to read: never block)
        self.sel.register(fd_in, selectors.EVENT_WRITE, "in")
        try:
            while data:
                try:
                    n = os.write(fd_in, data[:65536])
                    data = data[n:]
                    continue
                except BlockingIOError:
                    pass
                except (BrokenPipeError, OSError):
                    return self._crash("while the request was being written")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return Reply("timeout", None, f"no response within {timeout:g} s (request not read)",
                                 time.monotonic() - t0)
                if self._drain(min(remaining, 0.05)) == "eof":
                    return self._crash("while the request was being written")
        finally:
            if self.sel is not None:
                self.sel.unregister(fd_in)
        # read lines until the one answering this request
        stale = 0
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                if len(self.buf) > MAX_LINE:
                    self.buf.clear()
                    self.kill()  # the rest of the line would poison the next answers
                    return Reply("crash", None, f"response line longer than {MAX_LINE} bytes (adapter killed)")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return Reply("timeout", None, f"no response within {timeout:g} s", time.monotonic() - t0)
                if self._drain(remaining) == "eof":
                    line = bytes(self.buf).strip()
                    self.buf.clear()
                    what = f"after an unterminated line {line[:200]!r}" if line else "before answering"
                    return self._crash(what)
                continue
            line = bytes(self.buf[:nl]).strip()
            del self.buf[: nl + 1]
            if not line:
                continue
            elapsed = time.monotonic() - t0
            try:
                obj = textdata.json_loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                self.unanswered.add(rid)
                return Reply("malformed", None, f"response is not UTF-8 JSON ({exc}): {line[:200]!r}", elapsed)
            oid = obj.get("id") if isinstance(obj, dict) else None
            if isinstance(oid, int) and not isinstance(oid, bool) and oid in self.unanswered:
                self.unanswered.discard(oid)
                stale += 1  # a late answer to an earlier request: skip it
                continue
            why = validate_response(obj, rid)
            if why:
                self.unanswered.add(rid)
                return Reply("malformed", obj if isinstance(obj, dict) else None, why, elapsed)
            return Reply("ok", obj, f"{stale} stale line(s) skipped" if stale else "", elapsed)


class AdapterSpecError(ValueError):
    """An ``--adapter`` value that names no adapter (the CLI maps it to exit 2)."""


def make_adapter(spec: str):
    """``"builtin"`` -> the in-process reference; anything else is a command line
    (shell quoting) started as a :class:`ProcessAdapter`."""
    import shlex

    if spec.strip() == "builtin":
        return BuiltinAdapter()
    try:
        argv = shlex.split(spec)
    except ValueError as exc:
        raise AdapterSpecError(f"--adapter: cannot parse command line: {exc}") from None
    if not argv:
        raise AdapterSpecError("--adapter: empty command")
    return ProcessAdapter(argv)
