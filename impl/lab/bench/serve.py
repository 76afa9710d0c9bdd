"""``flk bench serve``: the real server under ``wrk`` vs a bare Starlette handler.

What is measured: ``flk serve`` with the SQLite dedup store
and the fsync'd, group-committed inbox WAL, WORKERS=2 on this machine, driven
by ``wrk`` (Debian package; ``scripts/install_wrk.sh``) at 32 connections with
distinct, validly signed PCS bodies (:mod:`flk.impl.testing.workload`; a small
Lua script cycles through them, so every request is a fresh verification and
a fresh dedup write). In the same run, under the same load, the bare
Starlette handler of :mod:`flk.impl.testing.bare` (parse the JSON, answer 200)
on the same stack and worker count; the figure of merit is the ratio.
Then the memory (WORKERS=1: a memory store cannot be shared between
processes), Redis and Postgres backends. Every run starts a fresh server with
an empty data dir; figures are medians over ``repeat`` runs.

Goals: >= 5,000 req/s with p99 <= 25 ms on SQLite, ratio >= 0.7. Besides
req/s the run reports the servers' CPU time per request (process tree, from
/proc): less sensitive to the load than throughput. The machine is shared: wrk, the server and whatever else runs compete for the same cores,
so read the figures as medians of a noisy machine.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

KEY = "bench-serve-key-0123456789abcdef"
CONNECTIONS = 32
THREADS = 2

LUA = r"""
local bodies = {}
local counter = 0
local offset = 0
function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  offset = tonumber(args[2] or "0")
end
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function request()
  counter = counter + 1
  local i = ((offset + counter * 2 + (tid or 0)) % #bodies) + 1
  return wrk.format("POST", "/v1/pcs/submit", {["Content-Type"] = "application/json"}, bodies[i])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _flk() -> str:
    return str(pathlib.Path(sys.executable).parent / "flk")


class _Proc:
    """A server subprocess on port 0; ``port`` parsed from its JSON log."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, ready_path: str | None) -> None:
        self.log_path = os.path.join(cwd, "server.log")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=log, start_new_session=True)
        self.port = None
        workers = int(env.get("WORKERS", "1"))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self._tail()}")
            text = open(self.log_path, errors="replace").read()
            for line in text.splitlines():
                if line.startswith("{") and '"listening"' in line:
                    self.port = json.loads(line)["port"]
            ready = ready_path is None or text.count('"event":"worker_ready"') >= workers
            if self.port is not None and ready:
                try:
                    httpx.get(f"http://127.0.0.1:{self.port}{ready_path or '/'}", timeout=2)
                    return
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"server not ready: {self._tail()}")

    def _tail(self) -> str:
        return open(self.log_path, errors="replace").read()[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    script = pathlib.Path(__file__).resolve().parents[3] / "scripts" / "install_wrk.sh"
    if script.exists():
        subprocess.run(["bash", str(script)], check=False, capture_output=True)
    path = shutil.which("wrk")
    if not path:
        raise RuntimeError("wrk is not installed (run scripts/install_wrk.sh)")
    return path


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(d)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / tick)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += stats[p][1]
        todo += [c for c, (ppid, _) in stats.items() if ppid == p]
    return total


def _wrk(port: int, bodies_path: str, lua_path: str, seconds: float, offset: int = 0,
         pid: int | None = None) -> dict:
    cpu0 = _tree_cpu_s(pid) if pid else 0.0
    out = subprocess.run(
        [ensure_wrk(), f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
         "-s", lua_path, f"http://127.0.0.1:{port}/v1/pcs/submit", "--", bodies_path, str(offset)],
        capture_output=True, text=True, timeout=seconds + 60,
    )
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            r = json.loads(line[8:])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
            if pid:
                r["cpu_us_per_req"] = (_tree_cpu_s(pid) - cpu0) * 1e6 / max(1, r["requests"])
            return r
    raise RuntimeError(f"wrk gave no result: {out.stdout[-500:]} {out.stderr[-500:]}")


def _env(**extra: str) -> dict[str, str]:
    drop = {"PORT", "WORKERS", "DATA_DIR", "WAL_DIR", "DEDUP_BACKEND", "REDIS_ADDR", "POSTGRES_CONN",
            "TENANTS", "MULTI_TENANT", "PCS_HMAC_KEYS", "METRICS_USER", "METRICS_PASS", "TOKEN_RATE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


def _services() -> dict[str, str]:
    out: dict[str, str] = {}
    path = pathlib.Path(__file__).resolve().parents[3] / ".services.env"
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip()
    out.update({k: v for k, v in os.environ.items() if k.startswith("FLK_TEST_")})
    return out


def _run_server(work: str, bodies_path: str, lua_path: str, seconds: float, env: dict[str, str]) -> dict:
    data = tempfile.mkdtemp(prefix="data-", dir=work)
    proc = _Proc([_flk(), "serve", "--port", "0"],
                 _env(PCS_HMAC_KEY=KEY, DATA_DIR=data, LOG_LEVEL="info", **env), data, "/ready")
    try:
        # warm-up on the second half of the bodies; the measured run sends the first half: fresh PCS
        _wrk(proc.port, bodies_path, lua_path, 1, offset=_count(bodies_path) // 2)
        return _wrk(proc.port, bodies_path, lua_path, seconds, pid=proc.proc.pid)
    finally:
        proc.stop()
        shutil.rmtree(data, ignore_errors=True)


def _count(path: str) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def _run_bare(work: str, bodies_path: str, lua_path: str, seconds: float, workers: int) -> dict:
    proc = _Proc([sys.executable, "-m", "flk.impl.testing.bare", "--port", "0", "--workers", str(workers)],
                 _env(), work, None)
    try:
        _wrk(proc.port, bodies_path, lua_path, 1)
        return _wrk(proc.port, bodies_path, lua_path, seconds, pid=proc.proc.pid)
    finally:
        proc.stop()


def _median(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 3)


def run(repeat: int = 3, quick: bool = False) -> dict:
    from ...testing.workload import bodies

    seconds = 2.0 if quick else 5.0
    workers = 2
    work = tempfile.mkdtemp(prefix="flk-bench-serve-")
    try:
        n = 16_000 if quick else 80_000
        bodies_path = os.path.join(work, "bodies.jsonl")
        with open(bodies_path, "wb") as fh:
            for b in bodies(KEY.encode(), n, seed=7):
                fh.write(b + b"\n")
        lua_path = os.path.join(work, "post.lua")
        with open(lua_path, "w") as fh:
            fh.write(LUA)
        figures: dict = {"connections": CONNECTIONS, "wrk_threads": THREADS, "workers": workers,
                         "seconds_per_run": seconds, "repeat": repeat, "distinct_bodies": n,
                         "note": "medians on a shared, noisy 2-core machine; wrk runs on the same cores"}
        backends: list[tuple[str, dict[str, str]]] = [("sqlite", {"WORKERS": str(workers)})]
        svc = _services()
        if not quick:
            backends.append(("memory", {"WORKERS": "1", "DEDUP_BACKEND": "memory"}))
            if svc.get("FLK_TEST_REDIS_URL"):
                backends.append(("redis", {"WORKERS": str(workers), "DEDUP_BACKEND": "redis",
                                           "REDIS_ADDR": svc["FLK_TEST_REDIS_URL"],
                                           "DEDUP_NAMESPACE": f"bench_{os.getpid()}"}))
            if svc.get("FLK_TEST_POSTGRES_DSN"):
                backends.append(("postgres", {"WORKERS": str(workers), "DEDUP_BACKEND": "postgres",
                                              "POSTGRES_CONN": svc["FLK_TEST_POSTGRES_DSN"]}))
        bare_runs, runs = [], {name: [] for name, _ in backends}
        for i in range(repeat):
            bare_runs.append(_run_bare(work, bodies_path, lua_path, seconds, workers))
            for name, env in backends:
                if name == "redis":
                    env = dict(env, DEDUP_NAMESPACE=f"bench_{os.getpid()}_{i}")
                if name == "postgres":
                    env = dict(env, DEDUP_NAMESPACE=f"bench_{os.getpid()}_{i}")
                try:
                    runs[name].append(_run_server(work, bodies_path, lua_path, seconds, env))
                finally:
                    if name in ("redis", "postgres"):
                        _drop_namespace(name, env, svc)
        figures["bare_rps"] = _median(bare_runs, "rps")
        figures["bare_p99_ms"] = round(_median(bare_runs, "p99_us") / 1000, 3)
        for name, rs in runs.items():
            figures[f"{name}_rps"] = _median(rs, "rps")
            figures[f"{name}_p50_ms"] = round(_median(rs, "p50_us") / 1000, 3)
            figures[f"{name}_p99_ms"] = round(_median(rs, "p99_us") / 1000, 3)
            figures[f"{name}_non2xx"] = int(statistics.median(r["status"] for r in rs))
            figures[f"{name}_socket_errors"] = int(statistics.median(
                r["connect"] + r["read"] + r["write"] + r["timeout"] for r in rs))
            figures[f"{name}_runs_rps"] = [round(r["rps"]) for r in rs]
            figures[f"{name}_cpu_us_per_req"] = round(_median(rs, "cpu_us_per_req"), 1)
        figures["bare_runs_rps"] = [round(r["rps"]) for r in bare_runs]
        figures["bare_cpu_us_per_req"] = round(_median(bare_runs, "cpu_us_per_req"), 1)
        # server CPU per request is less sensitive to the machine's load than req/s
        figures["cpu_ratio_bare_vs_sqlite"] = round(figures["bare_cpu_us_per_req"]
                                                    / max(figures["sqlite_cpu_us_per_req"], 1e-9), 3)
        figures["ratio_sqlite_vs_bare"] = round(figures["sqlite_rps"] / figures["bare_rps"], 3)
        figures["goal_sqlite_rps_5000"] = figures["sqlite_rps"] >= 5000
        figures["goal_sqlite_p99_25ms"] = figures["sqlite_p99_ms"] <= 25
        figures["goal_ratio_0_7"] = figures["ratio_sqlite_vs_bare"] >= 0.7
        return figures
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _drop_namespace(name: str, env: dict[str, str], svc: dict[str, str]) -> None:
    from ...dedup import open_store

    ns = env["DEDUP_NAMESPACE"]
    try:
        if name == "postgres":
            store = open_store(svc["FLK_TEST_POSTGRES_DSN"], table=f"flk_dedup_{ns}")
            store.drop_table()
            store.close()
        else:
            import redis

            r = redis.Redis.from_url(svc["FLK_TEST_REDIS_URL"])
            keys = list(r.scan_iter(match=f"flk:dedup:{ns}:*", count=1000))
            for i in range(0, len(keys), 1000):
                r.delete(*keys[i:i + 1000])
            r.close()
    except Exception:  # noqa: BLE001 -- cleanup is best effort
        pass
