"""Private Redis and PostgreSQL processes a test may freeze (SIGSTOP) or kill -9.

The shared services of ``scripts/services.sh`` are used by other tests in
parallel, so the fault tests start their own: a ``redis-server`` or a fresh
PostgreSQL cluster (``initdb`` + ``pg_ctl``) on a free loopback port, in a
temporary directory. They skip when the binaries are missing, except with
CI=true (then they fail).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def _need(ok: bool, what: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(what)
        pytest.skip(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.split("/")[2]))
    return out


class _PrivateStore:
    """A private server's start and restart (``_start``); a first start that fails closes the
    store (its temp folder goes: the caller's ``finally`` never held a started store), a
    restart that fails leaves the data for the caller's own ``close``."""

    _started = False

    def start(self):
        try:
            self._start()
        except BaseException:
            if not self._started:
                self.close()
            raise
        self._started = True
        return self


class PrivateRedis(_PrivateStore):
    def __init__(self, persistent: bool = False) -> None:
        _need(shutil.which("redis-server") is not None, "redis-server not installed (scripts/services.sh)")
        self.dir = tempfile.mkdtemp(prefix="flk-redis-")
        self.port = free_port()
        self.persistent = persistent
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _start(self) -> None:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
                                      self.dir, "--save", "", *aof], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None and self.proc.poll() is None else []

    def stop_signal(self, sig: int) -> None:
        for pid in self.pids():
            os.kill(pid, sig)

    def kill9(self) -> None:
        self.stop_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivatePostgres(_PrivateStore):
    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        _need(bool(bins), "PostgreSQL not installed (scripts/services.sh)")
        self.bin = os.path.dirname(bins[-1])
        self.root = tempfile.mkdtemp(prefix="flk-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = free_port()
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        if os.getuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, *args: str) -> None:
        subprocess.run([*self.as_pg, *args], check=True, capture_output=True, timeout=120)

    def _start(self) -> None:
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            self._pg(f"{self.bin}/initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync")
        self._pg(f"{self.bin}/pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "log"), "-w", "-t", "60",
                 "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off", "start")

    def postmaster(self) -> int | None:
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as fh:
                return int(fh.readline())
        except (OSError, ValueError):
            return None

    def pids(self) -> list[int]:
        pm = self.postmaster()
        return [] if pm is None else [pm, *_children(pm)]

    def stop_signal(self, sig: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def kill9(self) -> None:
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z" for p in pids):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)

    def close(self) -> None:
        self.stop_signal(signal.SIGCONT)
        subprocess.run([*self.as_pg, f"{self.bin}/pg_ctl", "-D", self.data, "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
