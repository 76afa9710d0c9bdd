"""A region of a real cluster: its ``flk serve`` and its object store, as processes in
the region's network namespace, and the real mechanisms its faults use.

Why this module exists: the simulator's region is the real pipeline on a simulated
disk and clock; here it is the deployed server. Each region has its own data
directory (inbox WAL, SQLite dedup store or its own Redis/Postgres namespace,
replication state), listens on ``<region ip>:SERVER_PORT`` and replicates through
its own store (:mod:`.storenode`) over the real CRR transport (S3 API).

Faults, each by the mechanism named in its method: ``kill`` (SIGKILL of the
server's process group; ``start`` again on the same data directory is the
restart), ``pause``/``resume`` (SIGSTOP/SIGCONT of the group), clock skew (the
server runs under libfaketime reading ``faketime.rc``, :mod:`.faketime`; the fault
writes the offset, which moves its wall clock only, forward or back, as a real host's
clock step does; the heal writes ``+0``). Every process is started in its own session so
the runner's Ctrl-C reaches only the runner, which then ends them all.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from ...core import textdata
from . import faketime
from .storenode import CREDENTIALS, store_url

SERVER_PORT = 18280
STORE_PORT = 18281
REDIS_PORT = 18282
PG_PORT = 18283
STORE_PROXY_PORT = 18284  # the delaying forwarder to the dedup store of a run with store_latency (storeproxy)
WAL_TMPFS_MB = 32  # the WAL disk of a region a disk_full fault hits
# that region's WAL_PREALLOCATE: the zeros its inbox WAL writes ahead are space it already holds, so
# with flk serve's default (1 MiB, some 1,500 records) it accepts through a short full disk at a
# scenario's rates, and the fault would never reach the refusal it exists for; 4 KiB is a few records
DISK_FULL_WAL_PREALLOCATE = 4096
SERVER_VARS = ("HOST", "PORT", "WORKERS", "DATA_DIR", "WAL_DIR", "DEDUP_BACKEND", "SQLITE_PATH", "REDIS_ADDR",
               "POSTGRES_CONN", "TOKEN_RATE", "PCS_SIGN_ALG", "PCS_HMAC_KEY", "PCS_HMAC_KEYS", "MULTI_TENANT",
               "TENANTS", "TENANTS_FILE", "REGION_ID", "POLICY", "METRICS_USER", "METRICS_PASS", "DEDUP_NAMESPACE",
               "LD_PRELOAD", "STORE_TIMEOUT_S", "MAX_INFLIGHT", "MIN_INFLIGHT", "TARGET_LATENCY_MS",
               "BREAKER_FAILURES", "BREAKER_OPEN_S", "WAL_GROUP_DELAY_MS")


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(entry))
    return out


def pg_bindir() -> str | None:
    """Debian's PostgreSQL server binaries (``initdb``, ``postgres``), the newest installed."""
    import glob

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


class RegionProcess:
    """One region's processes and the faults applied to them."""

    def __init__(self, net, name: str, root: Path, peers: list[str], ship_interval_s: float, tenants: str,
                 backend_env: dict[str, str], shim: Path | None) -> None:
        self.net, self.name = net, name
        self.dir = root / name
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        self.peers = peers
        env = {k: v for k, v in os.environ.items() if k not in SERVER_VARS and not k.startswith(("CRR_", "FAKETIME"))}
        env.update(REGION_ID=name, DATA_DIR=str(self.dir / "data"), WORKERS="1", MULTI_TENANT="true",
                   TENANTS=tenants, HOST="0.0.0.0", CRR_STORE_URL=store_url("127.0.0.1", STORE_PORT),
                   CRR_PEERS=",".join(peers), CRR_SHIP_INTERVAL_S=str(ship_interval_s),
                   AWS_ACCESS_KEY_ID=CREDENTIALS["aws_access_key_id"],
                   AWS_SECRET_ACCESS_KEY=CREDENTIALS["aws_secret_access_key"], AWS_DEFAULT_REGION="us-east-1",
                   **backend_env)
        self.faketime_file = self.dir / "faketime.rc"
        if shim is not None:  # a run with a clock fault: the wall clock moves, the monotonic one never
            self.faketime_file.write_text(faketime.offset_text(0.0))
            env.update(faketime.preload_env(shim, self.faketime_file))
        self.env = env
        self.server: subprocess.Popen | None = None
        self.store: subprocess.Popen | None = None
        self.redis: subprocess.Popen | None = None
        self.postgres: subprocess.Popen | None = None
        self.proxy: subprocess.Popen | None = None  # the store's delaying forwarder (store_latency)
        self.paused = False
        self.incarnation = 0
        self.failed_starts = 0  # the last start's starts that exited before /ready (start(retry_s=...))
        self.plant: list[str] = []
        self.wal_mount: Path | None = None  # a planted bug: ``NAME --window S`` for flk.impl.lab.cluster.planted

    @property
    def ip(self) -> str:
        return self.net.ip(self.name)

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{SERVER_PORT}"

    def _popen(self, args: list[str], log: Path, env: dict) -> subprocess.Popen:
        with open(log, "ab") as out:
            return subprocess.Popen([*self.net.exec_prefix(self.name), *args], cwd=self.dir, env=env, stdout=out,
                                    stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)

    def start_store(self, timeout: float = 60.0) -> None:
        peers = [f"--peer={p}={self.net.ip(p)}:{STORE_PORT}" for p in self.peers]
        env = {k: v for k, v in self.env.items() if k != "LD_PRELOAD"}
        self.store = self._popen([sys.executable, "-m", "flk.impl.lab.cluster.storenode", "--region", self.name,
                                  "--port", str(STORE_PORT), "--log", str(self.dir / "store-events.jsonl"),
                                  "--control", str(self.dir), *peers],
                                 self.dir / "store.log", env)
        deadline = time.monotonic() + timeout
        log = self.dir / "store-events.jsonl"
        while time.monotonic() < deadline:
            if self.store.poll() is not None:
                raise RuntimeError(f"{self.name}: object store exited: {self.tail('store.log')}")
            if log.exists() and '"listening"' in log.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: object store not ready: {self.tail('store.log')}")

    def start_redis(self, timeout: float = 30.0) -> None:
        """The region's own Redis (its dedup store) in its namespace, no persistence: it is a
        separate service that outlives a crash of ``flk serve``, like the simulator's store."""
        import socket

        self.redis = self._popen(["redis-server", "--bind", "0.0.0.0", "--port", str(REDIS_PORT), "--save", "",
                                  "--appendonly", "no", "--protected-mode", "no", "--dir", str(self.dir)],
                                 self.dir / "redis.log", {k: v for k, v in self.env.items() if k != "LD_PRELOAD"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.redis.poll() is not None:
                raise RuntimeError(f"{self.name}: redis-server exited: {self.tail('redis.log')}")
            try:
                with socket.create_connection((self.ip, REDIS_PORT), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"{self.name}: redis-server not ready")

    def start_proxy(self, upstream_port: int, timeout: float = 30.0) -> None:
        """The region's delaying forwarder to its dedup store (:mod:`.storeproxy`) on
        :data:`STORE_PROXY_PORT`, in its namespace, no delay yet (:meth:`set_store_delay`)."""
        self.proxy = self._popen([sys.executable, "-m", "flk.impl.lab.cluster.storeproxy", "--listen",
                                  str(STORE_PROXY_PORT), "--to", f"127.0.0.1:{upstream_port}", "--delay-file",
                                  str(self.dir / "store-delay.ms"), "--log", str(self.dir / "proxy-events.jsonl")],
                                 self.dir / "proxy.log", {k: v for k, v in self.env.items() if k != "LD_PRELOAD"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proxy.poll() is not None:
                raise RuntimeError(f"{self.name}: store proxy exited: {self.tail('proxy.log')}")
            if self._json_lines("proxy-events.jsonl", '"listening"'):
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name}: store proxy not ready: {self.tail('proxy.log')}")

    def set_store_delay(self, ms: float, timeout: float = 5.0) -> bool:
        """Every round trip to the dedup store takes ``ms`` longer from now (0: none): the proxy's
        delay file, then SIGUSR1; True once the proxy logged the new delay."""
        start = self.log_size("proxy-events.jsonl")
        tmp = self.dir / "store-delay.ms.tmp"
        tmp.write_text(f"{float(ms)}\n")
        os.replace(tmp, self.dir / "store-delay.ms")
        if not self._signal(self.proxy, signal.SIGUSR1):
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._json_lines("proxy-events.jsonl", '"delay_set"', start):
                return True
            time.sleep(0.01)
        return False

    def start_postgres(self, timeout: float = 90.0) -> None:
        """The region's own PostgreSQL (its dedup store) in its namespace: a fresh cluster
        (``initdb`` as the ``postgres`` user, trust auth on the namespace's addresses), a
        separate service that outlives a crash of ``flk serve``."""
        bindir = pg_bindir()
        assert bindir is not None
        pg = self.dir / "pg"
        os.chmod(self.dir.parent, 0o711)
        os.chmod(self.dir, 0o711)
        pg.mkdir(exist_ok=True)
        shutil.chown(pg, "postgres", "postgres")
        env = {k: v for k, v in self.env.items() if k != "LD_PRELOAD"}
        done = subprocess.run(["runuser", "-u", "postgres", "--", f"{bindir}/initdb", "-D", str(pg / "data"), "-U",
                               "postgres", "-A", "trust", "--no-sync"], capture_output=True, env=env, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{self.name}: initdb failed: {done.stderr.decode(errors='replace')[-500:]}")
        with open(pg / "data" / "pg_hba.conf", "a", encoding="utf-8") as hba:  # the runner reads from the bridge
            hba.write("host all all 0.0.0.0/0 trust\n")
        self.postgres = self._popen(["runuser", "-u", "postgres", "--", f"{bindir}/postgres", "-D", str(pg / "data"),
                                     "-h", "0.0.0.0", "-p", str(PG_PORT), "-k", str(pg)], self.dir / "postgres.log",
                                    env)
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.postgres.poll() is not None:
                raise RuntimeError(f"{self.name}: postgres exited: {self.tail('postgres.log')}")
            try:
                psycopg.connect(self.pg_dsn(self.ip), connect_timeout=1).close()
                return
            except psycopg.Error:
                time.sleep(0.2)
        raise TimeoutError(f"{self.name}: postgres not ready")

    @staticmethod
    def pg_dsn(host: str, port: int = PG_PORT) -> str:
        return f"postgresql://postgres@{host}:{port}/postgres"

    def dedup_down(self, down: bool) -> bool:
        """A dedup outage: SIGSTOP of the region's Redis or PostgreSQL process group (connections
        hang, then the server's store timeout answers 503); SIGCONT heals."""
        sig = signal.SIGSTOP if down else signal.SIGCONT
        if self.postgres is None:
            return self._signal(self.redis, sig)
        # every postgres child (backend, checkpointer, ...) calls setsid(): no process group holds
        # them all, so the postmaster (postmaster.pid) and each of its children get the signal
        try:
            pid = int((self.dir / "pg" / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        hit = False
        for p in [pid, *_children(pid)]:
            try:
                os.kill(p, sig)
                hit = True
            except OSError:
                pass
        return hit

    def start(self, timeout: float = 90.0, retry_s: float | None = None,
              on_exit: Callable[[str], None] | None = None) -> float:
        """Start (or restart) ``flk serve`` on the region's data directory; returns the seconds
        until ``/ready`` answered 200. ``retry_s``: a start that exits (its dedup store does not
        answer, or refuses the start-up replay) is started again that much later, as a process
        manager does (``failed_starts`` counts them, ``on_exit`` hears each with its reason:
        flk serve's last error line); without it an exit raises."""
        t0 = time.monotonic()
        self.failed_starts = 0
        self._popen_server()
        with httpx.Client(timeout=2) as client:
            while time.monotonic() - t0 < timeout:
                if self.server.poll() is not None:
                    if retry_s is None:
                        raise RuntimeError(f"{self.name}: flk serve exited: {self.tail('server.log')}")
                    self.failed_starts += 1
                    if on_exit is not None:
                        on_exit(self.exit_reason())
                    time.sleep(retry_s)
                    self._popen_server()
                    continue
                try:
                    if client.get(self.url + "/ready").status_code == 200:
                        return time.monotonic() - t0
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"{self.name}: flk serve not ready: {self.tail('server.log')}")

    def _popen_server(self) -> None:
        entry = ["flk.impl.lab.cluster.planted", *self.plant] if self.plant else ["flk.impl"]
        self.server = self._popen([sys.executable, "-m", *entry, "serve", "--port", str(SERVER_PORT)],
                                  self.dir / "server.log", self.env)
        self.incarnation += 1
        self.paused = False

    def exit_reason(self) -> str:
        """Why the last start of ``flk serve`` exited: its last ``error:`` line (without the
        ``flk serve: error: configuration:`` prefix), or its exit code."""
        for line in reversed(self.tail("server.log").splitlines()):
            if line.startswith("flk serve: error:"):
                return line.rsplit("error:", 1)[1].strip().removeprefix("configuration:").strip()[:160]
        return f"exit code {self.server.returncode if self.server is not None else '?'}"

    def tail(self, name: str, n: int = 1500) -> str:
        try:
            return (self.dir / name).read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # -- faults --------------------------------------------------------------------------------
    def _signal(self, proc: subprocess.Popen | None, sig: int) -> bool:
        if proc is None or proc.poll() is not None:
            return False
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> bool:
        """SIGKILL of the server's process group (a crash: no shutdown code runs)."""
        hit = self._signal(self.server, signal.SIGCONT) and self._signal(self.server, signal.SIGKILL)
        if self.server is not None:
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                pass
        return hit

    def pause(self) -> bool:
        self.paused = self._signal(self.server, signal.SIGSTOP)
        return self.paused

    def reload(self) -> bool:
        """SIGHUP to the server: it reads its tenants file again (flk.impl.server.reload)."""
        return self._signal(self.server, signal.SIGHUP)

    def resume(self) -> bool:
        self.paused = False
        return self._signal(self.server, signal.SIGCONT)

    def mount_wal(self) -> None:
        """Put this region's WAL on its own small tmpfs (before the server starts), so that a
        disk_full fault can fill it without touching the machine's disk."""
        mount = self.dir / "wal-disk"
        mount.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={WAL_TMPFS_MB}m,mode=0700", "flkwal", str(mount)],
                       check=True, capture_output=True, timeout=30)
        self.wal_mount = mount
        self.net.adopt_mount(str(mount))
        self.env["WAL_DIR"] = str(mount / "wal")
        self.env["WAL_PREALLOCATE"] = str(DISK_FULL_WAL_PREALLOCATE)

    def fill_wal_disk(self, full: bool) -> int:
        """disk_full: write a filler file until the tmpfs answers ENOSPC (returns the bytes
        written); heal (``full`` false): delete it."""
        assert self.wal_mount is not None
        filler = self.wal_mount / "filler"
        if not full:
            filler.unlink(missing_ok=True)
            return 0
        written = 0
        block = b"\0" * (1 << 20)
        with open(filler, "ab", buffering=0) as f:
            for size in (1 << 20, 4096, 1):
                try:
                    while True:
                        written += f.write(block[:size])
                except OSError:
                    continue
        return written

    def unmount_wal(self) -> list[str]:
        """Unmount the WAL tmpfs (after every process is gone); what could not be unmounted."""
        if self.wal_mount is None:
            return []
        done = subprocess.run(["umount", str(self.wal_mount)], capture_output=True, timeout=30)
        if done.returncode != 0:
            done = subprocess.run(["umount", "-l", str(self.wal_mount)], capture_output=True, timeout=30)
        if done.returncode != 0:
            return [f"mount {self.wal_mount}"]
        self.wal_mount = None
        return []

    def hold_shipping(self, on: bool) -> None:
        """ship_stop: the server's shipper pauses while ``DATA_DIR/crr.pause-ship`` exists (its
        replication service reads the file every step); heal deletes it."""
        flag = self.dir / "data" / "crr.pause-ship"
        if on:
            flag.write_text("")
        else:
            flag.unlink(missing_ok=True)

    def bitflip(self, on: bool) -> None:
        """Ask the region's store to flip a byte of its next shipped segment (``on``), or to
        upload every flipped segment again (heal): flag files the store node polls."""
        (self.dir / ("corrupt-next" if on else "repair")).write_text("")

    def set_skew(self, seconds: float) -> None:
        """The server's wall clock ``seconds`` off the machine's (libfaketime re-reads the file
        within a second, ``FAKETIME_CACHE_DURATION=1``); its monotonic clock is untouched."""
        self.faketime_file.write_text(faketime.offset_text(seconds))

    @property
    def up(self) -> bool:
        return self.server is not None and self.server.poll() is None

    def stop(self) -> None:
        """Graceful stop (SIGTERM, then SIGKILL) of the server, then of the store."""
        for proc in (self.server, self.store, self.proxy, self.redis, self.postgres):
            self._stop_gracefully(proc)

    def stop_server(self) -> None:
        self._stop_gracefully(self.server)

    def _stop_gracefully(self, proc) -> None:
        """SIGCONT (a paused process cannot exit), SIGTERM, 20 s; then SIGKILL."""
        if proc is None or proc.poll() is not None:
            return
        self._signal(proc, signal.SIGCONT)
        self._signal(proc, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            self._signal(proc, signal.SIGKILL)
            proc.wait(10)

    def kill_all(self) -> None:
        if self.postgres is not None and self.postgres.poll() is None:
            # postgres children are in sessions of their own (a stopped backend would outlive the group kill)
            self.dedup_down(False)
            try:
                pid = int((self.dir / "pg" / "data" / "postmaster.pid").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pid = 0
            for p in ([pid, *_children(pid)] if pid else []):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        for proc in (self.server, self.store, self.proxy, self.redis, self.postgres):
            if proc is not None and proc.poll() is None:
                self._signal(proc, signal.SIGCONT)
                self._signal(proc, signal.SIGKILL)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass

    def log_size(self, name: str = "server.log") -> int:
        """The bytes of ``name`` in the region's folder so far (0 when there is none yet): an
        offset to read only what is written after it (:meth:`server_events`)."""
        try:
            return (self.dir / name).stat().st_size
        except OSError:
            return 0

    def _json_lines(self, name: str, needle: str = "", start: int = 0) -> list[dict]:
        """The JSON objects of the lines of ``name`` in the region's folder, from byte ``start``
        on, that hold ``needle`` (a line cut off or not JSON is skipped: a log being written)."""
        try:
            with open(self.dir / name, "rb") as f:
                f.seek(start)
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            if needle not in line:
                continue
            try:
                doc = textdata.json_loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                out.append(doc)
        return out

    def server_events(self, event: str, start: int = 0) -> list[dict]:
        """The JSON log lines of ``event`` in the region's ``flk serve`` log (every start's), from
        byte ``start`` on (:meth:`log_size`)."""
        return [d for d in self._json_lines("server.log", f'"{event}"', start)
                if d.get("event") == event and isinstance(d.get("ts"), (int, float))]

    def store_events(self) -> list[dict]:
        """The store node's event lines (``store-events.jsonl``: seen, copied, corrupted, ...)."""
        return self._json_lines("store-events.jsonl")
