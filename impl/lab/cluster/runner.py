"""``flk cluster run``: a catalog scenario on real ``flk serve`` regions, real faults, the
simulator's run-directory layout and checkers.

Why this module exists: the simulator's figures are only worth as much as its
likeness to the deployed server. This runner takes the *same* scenario file,
starts every region as a real process in its own network namespace
(:mod:`.network`, :mod:`.regions`, :mod:`.storenode`), drives the scenario's
workload in wall-clock time (:mod:`.driver`), applies the fault schedule by real
mechanisms, heals, waits the quiescence, stops every region, reads each region's
final state from its disk, and writes what ``flk sim run`` writes
(``scenario.toml``, ``history.jsonl``, ``results.json``, ``metrics.csv``, plots).

With ``[routing] enabled`` the clients reach the regions through the real health-checked
router (:mod:`.router`, a process on the clients' bridge address with the scenario's check
interval, timeout and thresholds); its rotation changes become ``route.down`` / ``route.up``,
so ``failover_detection_s`` and ``rto_s`` are measured as the simulator measures them. With
``prometheus`` a real Prometheus scrapes the regions (:mod:`.prometheus`) and the scenario's
``[alerts]`` declarations become ``ALERT-<name>`` checks (:func:`flk.sim.alerts.checks`).

Phases: preflight (every fault must be appliable: one that is not is refused
before anything starts, :class:`Refused`, exit 2) -> network and processes up ->
workload + faults for ``duration_s`` -> heal everything -> ``quiescence_s`` ->
graceful stop, final reads -> cleanup (also on Ctrl-C / SIGTERM: every process,
namespace and link made is removed; :func:`run` re-raises ``KeyboardInterrupt``).

Checks, by INV-ID: the black-box history checker (:mod:`flk.model.history`, through
:mod:`flk.sim.observed`) for INV-FWW, INV-IDEMPOTENT-REPLAY and INV-NO-ACKED-LOSS;
the simulator's INV-CONVERGENCE and INV-AT-LEAST-ONCE over the final reads and the
client history; the workload's "sometimes" checks, and per fault kind a proof it
hit something (dropped packets, requests in flight at a SIGKILL). Invariants only
the server's inside can show (INV-WAL-FIRST, INV-VERIFY-BEFORE-DEDUP,
INV-TENANT-ISOLATION) are reported "not exercised" with the reason.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import hashlib
import importlib.util
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from flk.sim import alerts, artifacts, checkers, faults, metrics
from flk.sim.history import History
from flk.sim.observed import check_run
from flk.sim.region import SIM_EPOCH
from flk.sim.replication import settle_s
from flk.sim.scenario import REGION_FIELDS, Scenario

from ...core import textdata
from ...replication.divergence import SEVERITY_LEVEL
from ...verifier.admission import AdmissionSettings
from . import faketime
from . import prometheus as prom
from .driver import Clock, Workload
from .hostload import HostCpu
from .network import WORK_DIR_PREFIX, Network, cleanup_ledger, missing_tools
from .regions import (
    DISK_FULL_WAL_PREALLOCATE,
    PG_PORT,
    REDIS_PORT,
    SERVER_PORT,
    STORE_PORT,
    STORE_PROXY_PORT,
    WAL_TMPFS_MB,
    RegionProcess,
    pg_bindir,
)
from .tenantsfile import TenantsFile

ROUTER_PORT = 18290  # on the clients' bridge address (one per run's prefix)

# fault kind -> what really happens (the documentation of the mechanism; anything else is refused)
MECHANISMS = {
    "crash": "SIGKILL of the region's flk serve process group; heal: restart on the same data directory. With "
             "region_defaults.dead_process = \"silent\" (the simulator's default: a dead host) nftables rules in the "
             "region's namespace drop every packet to and from its server port from just before the SIGKILL until "
             "the restart begins, so attempts and health checks wait their timeouts; with \"refuse\" the live "
             "host refuses connects and resets what the process held",
    "restart": "alias of crash (starts healed, the end kills)",
    "pause": "SIGSTOP of the region's flk serve process group; heal: SIGCONT",
    "resume": "alias of pause",
    "partition": "nftables drop rules (with counters) in the regions' network namespaces; heal deletes them",
    "clock_skew": "libfaketime (FAKETIME_TIMESTAMP_FILE, re-read within a second) under every region's flk serve "
                  "moves the target's wall clock by skew_s, forward or back, as a host's clock step does; its "
                  "monotonic clock is left alone (FAKETIME_DONT_FAKE_MONOTONIC), and a shim preloaded before "
                  "the library (flk.impl.lab.cluster.faketime, compiled for the run) mends the two timed waits "
                  "libfaketime 0.9.10 gets wrong in that mode (time.sleep, and Event.wait / Queue.get(timeout)); "
                  "heal writes +0, the server keeps running",
    "clock_jump": "as clock_skew",
    "store_down": "mode hang: SIGSTOP of the region's own redis-server (--backend redis) or PostgreSQL "
                  "processes (--backend postgres), heal: SIGCONT; mode refuse (the default): an nftables rule in "
                  "the region's namespace answers every packet to the store's port with a TCP reset (a connect is "
                  "refused, an open connection reset), heal deletes it",
    "store_up": "alias of store_down",
    "store_latency": "every region of the run reaches its Redis or PostgreSQL (--backend redis or postgres) through "
                     "a forwarder in its namespace (flk.impl.lab.cluster.storeproxy, this kernel has no tc netem); "
                     "the fault makes the target's forwarder hold every byte flk serve sends to its store ms "
                     "milliseconds (in order; the answers pass at once), so each round trip takes ms longer: one "
                     "per Redis store call, two per PostgreSQL call (the pool's connection check, then the "
                     "call's pipelined transaction); heal sets 0",
    "disk_full": f"the region's WAL directory is a {WAL_TMPFS_MB} MiB tmpfs mounted for the run; the fault fills it "
                 "with a filler file until ENOSPC (the server's appends and fsyncs fail once the zeros its WAL "
                 f"wrote ahead are used: that region runs with WAL_PREALLOCATE={DISK_FULL_WAL_PREALLOCATE}, not "
                 "the default 1 MiB, which a short fault at a scenario's rate never uses up); heal deletes the "
                 "filler. The simulator refuses this kind (no disk-space model)",
    "disk_free": "alias of disk_full",
    "reader_rewind": "the region's stored answers are read (the snapshot), then the file DATA_DIR/crr.rewind "
                     "orders its running flk serve's replication reader to forget its watermarks and re-read "
                     "every shipped segment (live, no restart; the server removes the file); every answer "
                     "stored before must stay byte-identical",
    "bitflip_shipped": "one byte of the region's next shipped segment changed in its object store before any "
                       "copy; heal uploads the original again to every store",
    "ship_stop": "the file DATA_DIR/crr.pause-ship of the region's flk serve: its shipper stops sealing and "
                 "uploading (no failure to report; its replication lag grows) while its reader, reconciler and "
                 "divergence check run on; heal deletes the file and the backlog ships",
    "ship_start": "alias of ship_stop",
    "objstore_down": "an nftables rule in each target region's namespace answers every packet its processes send to "
                     "an object store's port with a TCP reset: its flk serve can neither ship, read nor publish a "
                     "divergence summary, and its store's copier cannot push to the peers' stores (target \"*\": "
                     "every region, the whole object store down); heal deletes the rules. Unlike the simulator's "
                     "single-region outage, the region's segments already in its own store stop reaching its peers "
                     "too",
    "objstore_up": "alias of objstore_down",
    "rotate_key": "the regions' tenants file (TENANTS_FILE) gets each tenant's next key, valid from now, and "
                  "ends the current one workload.rotation_overlap_s later; every running flk serve is sent SIGHUP "
                  "and reads it again (its tenants_reloaded line) before the agents sign with the new key; a "
                  "region down at that moment reads the file when it restarts",
    "agent_crash": "the agent's deliveries are cancelled and it takes no arrivals (the agents run inside the "
                   "runner's process: nothing is killed, and nothing torn); its outbox (workload.outbox: a real "
                   "one in the run's folder, fsync per append) stays on disk; heal reopens it and resubmits every "
                   "pending record with the same signed bytes",
}
INSIDE_ONLY = {
    "INV-WAL-FIRST": "needs the server's WAL and dedup events; a real cluster shows the client view only",
    "INV-VERIFY-BEFORE-DEDUP": "needs the server's dedup accesses; a real cluster shows the client view only",
    "INV-TENANT-ISOLATION": "needs the server's dedup keys; a real cluster shows the client view only",
}
BACKENDS = ("sqlite", "redis", "postgres")
COST_MODELS = ("store_ms", "fsync_ms", "verify_ms")  # the simulator's costs; a real region has its own
SAMPLE_S = 1.0  # the sampler polls every region's /v1/crr/status this often
REWIND_WAIT_S = 10.0  # a reader_rewind waits this long at most for the server to take its order
RELOAD_WAIT_S = 5.0  # a rotate_key waits this long at most for every running server's reload
CHECK_LINES_S = 0.5  # the crr_divergence lines of one check are written together (microseconds apart; at most
# a quarter of the divergence period, so two checks are never one)


def replication_env(rep: dict) -> dict[str, str]:
    """The ``flk serve`` settings of a scenario's ``[replication]`` table that the cluster's servers
    run as the simulator's regions do (the ship interval is passed with the region itself): the
    reader's and the divergence check's periods and settle time, the reconciliation mode."""
    return {"CRR_READ_INTERVAL_S": str(float(rep["read_interval_s"])),
            "CRR_DIVERGENCE_INTERVAL_S": str(float(rep["divergence_interval_s"])),
            "CRR_DIVERGENCE_SETTLE_S": str(settle_s(rep)),
            "CRR_MODE": str(rep["mode"])}


class Refused(Exception):
    """The scenario asks for something the runner cannot do on this machine (exit 2)."""


@dataclass
class Recorder:
    """Events in the simulator's vocabulary, timed from the run's start (sorted at the end)."""

    clock: Clock
    events: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, t: float, type_: str, **fields) -> None:
        with self.lock:
            self.events.append({"t_us": int(round(t * 1_000_000)), "type": type_, **fields})

    def now(self, type_: str, **fields) -> None:
        self.record(self.clock.now, type_, **fields)

    def history(self) -> History:
        h = History()
        for e in sorted(self.events, key=lambda e: e["t_us"]):
            fields = {k: v for k, v in e.items() if k not in ("t_us", "type")}
            h.record(e["t_us"] / 1_000_000, e["type"], **fields)
        return h


# -- preflight --------------------------------------------------------------------------------

def parse_plant(plant: str | None, data: dict) -> tuple[str | None, list[str], list[str]]:
    """``NAME[@REGION]`` -> (name, the planted regions (all without ``@``), reasons it cannot run)."""
    from .planted import PLANTS

    if not plant:
        return None, [], []
    name, _, region = plant.partition("@")
    ids = [r["id"] for r in data["regions"]]
    out = []
    if name not in PLANTS:
        out.append(f"--plant {name!r}: no planted server bug of that name (known: {', '.join(PLANTS)})")
    if region and region not in ids:
        out.append(f"--plant {plant!r}: no region {region!r} (regions: {', '.join(ids)})")
    return name, [region] if region else ids, out


def preflight(data: dict, backend: str, plant: str | None = None, prometheus: bool = False) -> list[str]:
    """Every reason this scenario cannot run on a real cluster here (empty: it can)."""
    out = list(parse_plant(plant, data)[2])
    if prometheus and prom.binary() is None:
        out.append("--prometheus: needs prometheus (Debian package prometheus; `make setup` installs it)")
    if prometheus and not alerts.alert_names():
        out.append(f"--prometheus: no alert rules at {alerts.RULES_DIR}")
    if plant and backend != "sqlite":
        out.append(f"--plant {plant}: the planted dedup race is in the SQLite store: needs --backend sqlite")
    if backend not in BACKENDS:
        out.append(f"--backend {backend!r}: one of {', '.join(BACKENDS)}")
    if backend == "postgres" and (pg_bindir() is None or shutil.which("runuser") is None):
        out.append("--backend postgres: needs the PostgreSQL server binaries (Debian package postgresql; "
                   "`make services`) and runuser")
    if backend == "postgres" and importlib.util.find_spec("psycopg") is None:
        out.append("--backend postgres: needs psycopg (pip install 'flk-lab[postgres]')")
    if backend == "redis" and shutil.which("redis-server") is None:
        out.append("--backend redis: needs redis-server (Debian package redis-server; `make services`)")
    out += [f"needs {m}" for m in missing_tools()]
    replicated = bool(data["replication"]["enabled"]) and len(data["regions"]) > 1
    for module, what in (("moto", "moto[server]"), ("boto3", "boto3")):
        if replicated and importlib.util.find_spec(module) is None:
            out.append(f"needs {what} for the regions' object stores (pip install 'flk-lab[dev]')")
    nemesis = [{"kind": k} for k in data["nemesis"]["kinds"]] if data["nemesis"]["enabled"] else []
    out += _fault_problems([*data["faults"], *nemesis], backend)
    net = data["network"]
    for key in ("loss", "duplicate", "reorder"):
        if net.get(key):
            out.append(f"network.{key} = {net[key]}: the real network does not lose, duplicate or reorder "
                       "on purpose (would need tc netem)")
    w = data["workload"]
    if float(w.get("tenant_rate_per_s", 0.0)) > 0 and float(w.get("tenant_burst", 0.0)) < 1:
        out.append("workload.tenant_burst < 1 with a tenant rate: flk serve's token bucket holds at least one "
                   "request (its tenants file refuses a smaller burst)")
    out += _unmodelled(data)
    for r in data["regions"]:
        extra = sorted(k for k in r if k != "id")
        if extra:
            out.append(f"regions[{r['id']}] {', '.join(extra)}: only plain regions (one SQLite dedup store) "
                       "run on real clusters")
    if data.get("links"):
        out.append("links: per-link latency/bandwidth are not applied on real clusters")
    out += server_settings_problems(data["region_defaults"])
    need = open_files_needed(data)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < need:
        out.append(f"workload.max_in_flight = {data['workload']['max_in_flight']}: the driver holds one connection "
                   f"per open submission and needs {need} open files; this process may open {hard} at most "
                   "(ulimit -Hn)")
    return out


def _unmodelled(data: dict) -> list[str]:
    """What the scenario asks for that the runner would otherwise leave out unsaid: the
    operator's policies, explicit operations, the scenario's own cost model of the simulated
    store, disk or CPU, and region stores other than the one dedup store of each real region (a
    run without them would judge a study of something that never ran)."""
    out = []
    if data.get("policies"):
        kinds = sorted({p.get("kind", "?") for p in data["policies"]})
        out.append(f"policies ({', '.join(kinds)}): the operator's controllers are not run on real clusters yet")
    if data.get("schedule"):
        out.append("schedule: explicit operations are not run on real clusters yet")
    if not data["study"].get("profile"):  # a profile is fitted to a real cluster: its costs are the real ones
        for f in REGION_FIELDS:
            if f.name in COST_MODELS and data["region_defaults"].get(f.name, f.default) != f.default:
                out.append(f"region_defaults.{f.name} = {data['region_defaults'][f.name]}: the simulator's cost "
                           "model, set by the scenario; a real region's store, disk and CPU answer at their own "
                           "speed (nothing slows them), so the study would judge a system not in that state")
    dedup = data["region_defaults"].get("dedup", "memory")
    if dedup != "memory":
        out.append(f"region_defaults.dedup = {dedup!r}: a real region has one dedup store (--backend); sharded, "
                   "tiered and migrating stores are not built on real clusters yet")
    return out


def _fault_problems(faults: list[dict], backend: str) -> list[str]:
    """Why the scenario's faults cannot run here (:func:`preflight`'s part for them)."""
    out: list[str] = []
    kinds = sorted({f["kind"] for f in faults})
    for kind in kinds:
        if kind not in MECHANISMS:
            out.append(f"fault {kind!r}: no real mechanism in flk cluster yet (supported: {', '.join(MECHANISMS)})")
        elif kind in ("store_down", "store_up") and backend == "sqlite":
            out.append(f"fault {kind!r}: a dedup outage stops or refuses the region's Redis or PostgreSQL: needs "
                       "--backend redis or postgres (SQLite is a file inside flk serve, not a service)")
        elif kind == "store_latency" and backend == "sqlite":
            out.append("fault 'store_latency': the delay is added on the way to the region's Redis or PostgreSQL: "
                       "needs --backend redis or postgres (SQLite is a file inside flk serve, no connection to slow)")
        elif kind in ("clock_skew", "clock_jump") and faketime.library() is None:
            out.append(f"fault {kind!r}: needs libfaketime (Debian package faketime; `make setup` installs it)")
        elif kind in ("clock_skew", "clock_jump") and faketime.compiler() is None:
            out.append(f"fault {kind!r}: needs a C compiler (cc or gcc; Debian package gcc, `make setup` installs "
                       "it) to build the shim that mends libfaketime's timed waits")
    return out


def server_settings_env(region: dict) -> dict[str, str]:
    """The settings of a simulated region that are ``flk serve``'s, as its environment: the
    admission (AIMD limit, breaker: :class:`AdmissionSettings`, which builds the simulated region's
    too), the group-commit window, the store timeout and the WAL checkpoint settings. Without them a real region ran the
    server's defaults whatever the scenario said (overload-backpressure's ceiling of 24)."""
    settings = AdmissionSettings.from_mapping(region)
    env = {f.name.upper(): repr(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
    env["WAL_GROUP_DELAY_MS"] = repr(float(region["group_commit_ms"]))
    env["STORE_TIMEOUT_S"] = repr(float(region["store_timeout_s"]))
    env["WAL_CHECKPOINT_S"] = repr(float(region["wal_checkpoint_s"]))
    env["WAL_CHECKPOINT_RECORDS"] = str(int(region["wal_checkpoint_records"]))
    env["WAL_RETENTION"] = str(region["wal_retention"])
    return env


def server_settings_problems(region: dict) -> list[str]:
    """Why ``flk serve`` would refuse the region settings :func:`server_settings_env` gives it
    (a simulated region takes a wider range: a group-commit window over 1 s, say)."""
    from ...server.config import ConfigError, load_config

    with tempfile.TemporaryDirectory(prefix="flk-settings-") as tmp:
        try:
            load_config({"DATA_DIR": tmp, "PCS_HMAC_KEY": "0" * 32, **server_settings_env(region)}, create_key=False)
        except ConfigError as exc:
            return [f"region_defaults: flk serve refuses this region's settings: {str(exc)[:200]}"]
    return []


def open_files_needed(data: dict) -> int:
    """Open files the driver's process needs: one connection per open submission
    (``workload.max_in_flight``) plus a margin for the sampler's connections, logs and pipes."""
    return int(data["workload"]["max_in_flight"]) + 1024


def raise_open_files(need: int) -> None:
    """Raise this process's soft limit on open files to ``need`` (preflight checked the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else min(need, hard), hard))


# -- the run ----------------------------------------------------------------------------------

class ClusterRun:
    def __init__(self, sc: Scenario, seed: int, backend: str, work: Path, prefix: str,
                 log=lambda _m: None, plant: str | None = None, plant_window_s: float = 1.0,
                 prometheus: bool = False) -> None:
        self.prometheus = prometheus
        self.prom: prom.Prometheus | None = None
        self.alert_eval: dict | None = None
        self.end_wall = 0.0
        self.sc, self.data, self.seed, self.backend = sc, sc.data, seed, backend
        self.plant, self.plant_window_s = plant, plant_window_s
        self.work, self.prefix, self.log = work, prefix, log
        self.region_ids = [r["id"] for r in self.data["regions"]]
        # the scenario's faults, then what its nemesis starts at this seed (the simulator's choices)
        self.faults = [*self.data["faults"], *faults.nemesis_schedule(self.data, seed, self.region_ids)]
        self.replicated = bool(self.data["replication"]["enabled"]) and len(self.region_ids) > 1
        # a store_latency fault: every region reaches its store through the delaying proxy, from the start
        self.store_proxied = backend != "sqlite" and any(f["kind"] == "store_latency" for f in self.faults)
        self.duration = float(self.data["scenario"]["duration_s"])
        self.quiescence = float(self.data["scenario"]["quiescence_s"])
        # the process manager's delay before it starts again a region whose start failed (the simulator's too)
        self.restart_delay_s = float(self.data["region_defaults"].get("restart_delay_s", 1.0))
        self.clock = Clock()
        self.rec = Recorder(self.clock)
        self.net = Network(prefix, self.region_ids, str(ledger_path(prefix)),
                           ports=(18280, 18281))
        self.regions: dict[str, RegionProcess] = {}
        self.partitions: list[dict] = []
        self.background: list[asyncio.Future] = []  # fault work the end of the workload must not cancel
        self.rewinds: dict[str, dict[str, str]] = {}  # region -> "tenant/pcs_id" -> body sha at a reader rewind
        self.fault_log: list[dict] = []
        self.active: dict[int, dict] = {}
        self.samples: list[dict] = []
        self.timings: dict[str, float] = {}
        self.host: HostCpu | None = None  # the host's CPU while the workload and quiescence run
        self.wall_t0 = 0.0
        self.routed = bool(self.data["routing"]["enabled"])
        self.router: subprocess.Popen | None = None
        self.operator = ("operator", secrets.token_hex(16))  # this run's operator credential (never written)
        self.tenants = TenantsFile(self.work / "tenants.toml", int(self.data["workload"]["tenants"]),
                                   self.data["workload"], any(f["kind"] == "rotate_key" for f in self.faults))

    # -- setup and teardown ------------------------------------------------------------------
    def setup(self) -> None:
        left = cleanup_ledger(str(ledger_path(self.prefix)))
        if left:
            raise Refused(f"leftovers of an earlier run could not be removed: {', '.join(left)}")
        self.net.adopt_dir(str(self.work))  # a killed run's cleanup removes it too
        t0 = time.monotonic()
        self.net.up()
        tenants = self.tenants.setting()
        limits = self.tenants.write() if self.tenants.needed else None
        shim = None
        if any(f["kind"] in ("clock_skew", "clock_jump") for f in self.faults):
            try:
                shim = faketime.build_shim(self.work)
            except faketime.ShimUnavailable as exc:
                raise Refused(f"clock faults: the libfaketime shim could not be built: {exc}") from None
        operator = {"METRICS_USER": self.operator[0], "METRICS_PASS": self.operator[1],
                    **server_settings_env(self.data["region_defaults"])}
        if self.backend == "redis":
            operator.update(DEDUP_BACKEND="redis", REDIS_ADDR=f"127.0.0.1:{self.store_port}")
        if self.backend == "postgres":
            operator.update(DEDUP_BACKEND="postgres", POSTGRES_CONN=RegionProcess.pg_dsn("127.0.0.1", self.store_port))
        for rid in self.region_ids:
            peers = [p for p in self.region_ids if p != rid] if self.replicated else []
            self.regions[rid] = RegionProcess(self.net, rid, self.work, peers,
                                              float(self.data["replication"]["ship_interval_s"]), tenants, operator,
                                              shim)
            if limits is not None:  # the TENANTS setting has no room for limits or key windows: the file has
                del self.regions[rid].env["TENANTS"]
                self.regions[rid].env["TENANTS_FILE"] = str(limits)
            if not self.replicated:
                for k in [k for k in self.regions[rid].env if k.startswith("CRR_")]:
                    del self.regions[rid].env[k]
            else:
                self.regions[rid].env.update(replication_env(self.data["replication"]))
        for f in self.faults:
            if f["kind"] in ("disk_full", "disk_free"):
                for t in self.targets(f):
                    if not self.regions[t].wal_mount:
                        self.regions[t].mount_wal()
        name, planted, _ = parse_plant(self.plant, self.data)
        for rid in planted:
            self.regions[rid].plant = [name, "--window", str(self.plant_window_s)]
        if self.backend == "redis":
            for r in self.regions.values():
                r.start_redis()
        if self.backend == "postgres":
            for r in self.regions.values():
                r.start_postgres()
        if self.store_proxied:
            for r in self.regions.values():
                r.start_proxy(REDIS_PORT if self.backend == "redis" else PG_PORT)
        if self.replicated:
            for r in self.regions.values():
                r.start_store()
        for r in self.regions.values():
            r.start()
        if self.routed:
            self.start_router()
        if self.prometheus:
            self.prom = prom.Prometheus(self.work, {rid: f"{self.regions[rid].ip}:{SERVER_PORT}"
                                                    for rid in self.region_ids}, self.operator)
            self.prom.start(self.net.adopt)
        self.timings["setup_s"] = round(time.monotonic() - t0, 3)

    @property
    def router_url(self) -> str:
        return f"http://{self.net.client_ip}:{ROUTER_PORT}"

    def start_router(self, timeout: float = 30.0) -> None:
        """The health-checked router (:mod:`.router`) on the clients' bridge address, probing
        every region with the scenario's ``[routing]`` parameters."""
        cfg = self.data["routing"]
        events = self.work / "router-events.jsonl"
        args = [sys.executable, "-m", "flk.impl.lab.cluster.router", "--listen", f"{self.net.client_ip}:{ROUTER_PORT}",
                "--interval", str(float(cfg["health_interval_s"])), "--timeout-ms", str(float(cfg["health_timeout_ms"])),
                "--unhealthy", str(int(cfg["unhealthy_threshold"])), "--healthy", str(int(cfg["healthy_threshold"])),
                "--events", str(events), *[f"--upstream={rid}={self.regions[rid].ip}:{SERVER_PORT}"
                                           for rid in self.region_ids]]
        with open(self.work / "router.log", "ab") as log:
            self.router = subprocess.Popen(args, cwd=self.work, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                           start_new_session=True)
        self.net.adopt(self.router.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.router.poll() is not None:
                raise RuntimeError("the router exited: " + (self.work / "router.log").read_text(errors="replace")[-800:])
            if events.exists() and '"listening"' in events.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise TimeoutError("the router did not start listening")

    def stop_router(self) -> None:
        if self.router is not None and self.router.poll() is None:
            os.killpg(self.router.pid, signal.SIGKILL)
            self.router.wait(10)

    def router_status(self) -> dict:
        import httpx

        try:
            return httpx.get(self.router_url + "/_router/status", timeout=2.0).json()
        except (httpx.HTTPError, ValueError):
            return {}

    def router_events(self) -> None:
        """The router's rotation changes as the simulator's ``route.down`` / ``route.up``."""

        path = self.work / "router-events.jsonl"
        if not path.exists():
            return
        for line in path.read_text(errors="replace").splitlines():
            try:
                e = textdata.json_loads(line)
            except ValueError:
                continue
            if e.get("event") in ("down", "up") and e["t"] <= self.end_wall:
                self.rec.record(e["t"] - self.wall_t0, f"route.{e['event']}", region=e["region"])

    def teardown(self) -> list[str]:
        left = []
        if self.prom is not None:
            self.prom.stop()
        self.stop_router()
        for r in self.regions.values():
            r.kill_all()
            left += r.unmount_wal()
        return left + self.net.down()

    # -- faults ------------------------------------------------------------------------------
    async def fault(self, index: int, spec: dict) -> None:
        await asyncio.sleep(max(0.0, float(spec["at_s"]) - self.clock.now))
        if self.clock.now >= self.duration:
            return
        await self.begin(index, spec)
        dur = spec.get("duration_s")
        if dur is not None:
            await asyncio.sleep(max(0.0, float(spec["at_s"]) + float(dur) - self.clock.now))
            # a heal already begun (a restart that outlasts the workload) runs to its end: the end of
            # the workload cancels this task, and the heal phase waits for the background work
            self.background.append(asyncio.ensure_future(self.end(index)))

    def targets(self, spec: dict) -> list[str]:
        t = spec.get("target", "*")
        if t == "*":
            return list(self.region_ids)
        return [t] if isinstance(t, str) else list(t)

    def agent_targets(self, spec: dict) -> list[str]:
        """An agent_crash's agents (``agent-0``, ...; ``*``: all), as the simulator names them."""
        t = spec.get("target", "*")
        ids = [a.id for a in self.workload.agents]
        return ids if t == "*" else [a for a in ([t] if isinstance(t, str) else list(t)) if a in ids]

    async def inflight_at(self, region: str) -> int:
        """Requests in flight at ``region`` now (behind the router the clients know the router only;
        it knows what it has in flight where)."""
        if not self.routed:
            return self.workload.inflight_at(region)
        return int((await asyncio.to_thread(self.router_status)).get("inflight", {}).get(region, 0))

    async def begin(self, index: int, spec: dict) -> None:
        kind = next(iter(faults.REGISTRY[spec["kind"]].kinds))  # its fault's first kind: restart -> crash, ...
        self.active[index] = {**spec, "kind": kind}
        if kind == "crash":
            silent = self.data["region_defaults"]["dead_process"] == "silent"
            for t in self.targets(spec):
                inflight = await self.inflight_at(t)
                lag = self.last_ship_lag.get(t, 0.0)
                if silent:  # a dead host: nothing answers, not even the kernel's resets of the killed process
                    await asyncio.to_thread(self.net.silence, index, t, SERVER_PORT)
                hit = await asyncio.to_thread(self.regions[t].kill)
                self.rec.now("fault.start", kind="crash", target=t, inflight=inflight, killed=hit,
                             mechanism="SIGKILL, host silent (nftables drop)" if silent else "SIGKILL",
                             rpo_s=round(lag, 6))
        elif kind == "pause":
            for t in self.targets(spec):
                inflight = await self.inflight_at(t)
                self.regions[t].pause()
                self.rec.now("fault.start", kind="pause", target=t, inflight=inflight, mechanism="SIGSTOP")
        elif kind == "partition":
            a = list(spec.get("a") or [self.region_ids[0]])
            b = list(spec.get("b") or ["clients"])
            symmetric = bool(spec.get("symmetric", True))
            rules = await asyncio.to_thread(self.net.cut, index, a, b, symmetric)
            self.rec.now("fault.start", kind="partition", target=f"{','.join(a)}|{','.join(b)}", symmetric=symmetric,
                         rules=len(rules), mechanism="nftables drop")
        elif kind in ("bitflip_shipped", "ship_stop", "objstore_down"):
            await self._begin_replication_fault(kind, index, spec)
        elif kind == "agent_crash":
            for a in self.agent_targets(spec):
                cut = self.workload.crash_agent(a)
                self.rec.now("fault.start", kind="agent_crash", target=a, cut=cut, mechanism="deliveries cancelled")
        elif kind == "reader_rewind":  # every target at once, as in the simulator
            targets = self.targets(spec)
            for t, got in zip(targets, await asyncio.gather(*(asyncio.to_thread(self.rewind_reader, t)
                                                              for t in targets)), strict=True):
                self.rec.now("fault.start", kind="reader_rewind", target=t, mechanism="DATA_DIR/crr.rewind (live)",
                             stored_before=len(got["snapshot"]), taken=got["taken"])
        elif kind == "disk_full":
            for t in self.targets(spec):
                filled = await asyncio.to_thread(self.regions[t].fill_wal_disk, True)
                self.rec.now("fault.start", kind="disk_full", target=t, filled_bytes=filled,
                             mechanism="tmpfs filled to ENOSPC")
        elif kind == "store_down":
            await self._store_down(index, spec, True)
        elif kind == "store_latency":
            await self._store_latency(spec, True)
        elif kind == "clock_skew":
            skew = float(spec.get("skew_s", 30.0))
            for t in self.targets(spec):
                self.regions[t].set_skew(skew)
                self.rec.now("fault.start", kind=spec["kind"], target=t, skew_s=skew, mechanism="libfaketime")
        elif kind == "rotate_key":
            await self.rotate_keys(spec)

    async def rotate_keys(self, spec: dict) -> None:
        """rotate_key: the tenants file gets each tenant's next key (valid from now) and ends the
        current one ``workload.rotation_overlap_s`` from now; every running server is sent SIGHUP and
        confirms (its ``tenants_reloaded`` line, :data:`RELOAD_WAIT_S` at most) before the agents sign
        with the new key (a paused one reloads when it runs again; a region down now reads the file at
        its restart). The simulator's rotation takes no time."""
        tenants = [spec["tenant"]] if spec.get("tenant") is not None else sorted(self.tenants.keys)
        self.tenants.rotate(tenants, time.time(), float(self.data["workload"].get("rotation_overlap_s", 5.0)))
        await asyncio.to_thread(self.tenants.write)
        live = [rid for rid, r in self.regions.items() if r.up and not r.paused]
        offset = {rid: self.regions[rid].log_size() for rid in live}  # only what is logged after the SIGHUP is read
        for r in self.regions.values():
            r.reload()  # a paused (SIGSTOPped) server keeps the signal pending: it reloads when it runs again
        deadline, waiting = time.monotonic() + RELOAD_WAIT_S, set(live)
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            waiting = {rid for rid in waiting
                       if not await asyncio.to_thread(self.regions[rid].server_events, "tenants_reloaded", offset[rid])}
        factory = self.workload.world.factory
        for tid in tenants:
            factory.key_generation[tid] = self.tenants.generation(tid)
        self.rec.now("fault.start", kind="rotate_key", target=",".join(tenants), reloaded=len(live) - len(waiting),
                     running=len(live), mechanism="tenants file rewritten, SIGHUP")

    async def _begin_replication_fault(self, kind: str, index: int, spec: dict) -> None:
        """A fault of the replication path: a shipped segment's byte flipped, a held shipper, or
        the object stores refusing (:meth:`begin`)."""
        targets = self.targets(spec)
        if kind == "objstore_down":
            for t in targets:
                await asyncio.to_thread(self.net.reject_port, index, t, STORE_PORT)
            self.rec.now("fault.start", kind="objstore_down", target=",".join(targets),
                         mechanism=f"nftables reject of port {STORE_PORT}")
            return
        for t in targets:
            if kind == "bitflip_shipped":
                self.regions[t].bitflip(True)
                self.rec.now("fault.start", kind="bitflip_shipped", target=t, mechanism="byte flip in the store")
            else:
                self.regions[t].hold_shipping(True)
                self.rec.now("fault.start", kind="ship_stop", target=t, mechanism="crr.pause-ship")

    def _start_failed(self, region: str, reason: str) -> None:
        """A start of ``region``'s flk serve exited (the simulator's event: its regions' starts fail alike)."""
        self.rec.now("srv.start_failed", region=region, reason=reason)

    async def end(self, index: int) -> None:
        spec = self.active.pop(index, None)
        if spec is None:
            return
        kind = spec["kind"]
        if kind == "crash":
            down = [t for t in self.targets(spec) if not self.regions[t].up]
            for t in down:
                self.rec.now("fault.end", kind="crash", target=t)
            await asyncio.to_thread(self.net.heal, index)  # a silent host answers again (no rule: nothing)
            for t in down:
                # a start that exits (its store is down) is started again, as the process manager does
                took = await asyncio.to_thread(self.regions[t].start, retry_s=self.restart_delay_s,
                                               on_exit=partial(self._start_failed, t))
                self.rec.now("region.ready", region=t, restart_s=round(took, 3),
                             failed_starts=self.regions[t].failed_starts)
        elif kind == "pause":
            for t in self.targets(spec):
                self.regions[t].resume()
                self.rec.now("fault.end", kind="pause", target=t)
        elif kind == "disk_full":
            for t in self.targets(spec):
                await asyncio.to_thread(self.regions[t].fill_wal_disk, False)
                self.rec.now("fault.end", kind="disk_full", target=t)
        elif kind == "partition":
            listing = await asyncio.to_thread(self.net.listing, index)
            counts = await asyncio.to_thread(self.net.heal, index)
            packets = sum(c["packets"] for c in counts)
            a = list(spec.get("a") or [self.region_ids[0]])
            b = list(spec.get("b") or ["clients"])
            self.partitions.append({"fault": index, "sides": [a, b], "symmetric": bool(spec.get("symmetric", True)),
                                    "dropped_packets": packets, "rules": counts, "nft_listing": listing})
            self.rec.now("fault.end", kind="partition", target=f"{','.join(a)}|{','.join(b)}",
                         dropped_packets=packets)
        elif kind == "bitflip_shipped":
            for t in self.targets(spec):
                self.regions[t].bitflip(False)
                self.rec.now("fault.end", kind="bitflip_shipped", target=t)
        elif kind == "ship_stop":
            for t in self.targets(spec):
                self.regions[t].hold_shipping(False)
                self.rec.now("fault.end", kind="ship_stop", target=t)
        elif kind == "agent_crash":
            for a in self.agent_targets(spec):
                self.rec.now("fault.end", kind="agent_crash", target=a)
                self.workload.restart_agent(a)
        elif kind == "objstore_down":
            await asyncio.to_thread(self.net.heal, index)
            self.rec.now("fault.end", kind="objstore_down", target=",".join(self.targets(spec)))
        elif kind == "store_down":
            await self._store_down(index, spec, False)
        elif kind == "store_latency":
            await self._store_latency(spec, False)
        elif kind == "clock_skew":
            for t in self.targets(spec):
                self.regions[t].set_skew(0.0)
                self.rec.now("fault.end", kind=spec["kind"], target=t)

    @property
    def store_port(self) -> int:
        """The port a region's flk serve reaches its dedup store on: the delaying proxy's when
        the run has a store_latency fault, else the store's own."""
        if self.store_proxied:
            return STORE_PROXY_PORT
        return REDIS_PORT if self.backend == "redis" else PG_PORT

    async def _store_down(self, index: int, spec: dict, on: bool) -> None:
        """store_down begins (``on``) or ends at each target: a frozen store (``mode = "hang"``:
        SIGSTOP / SIGCONT) or a refused port (an nftables reset of the port the server uses,
        deleted at the heal)."""
        hang = spec.get("mode", "refuse") == "hang"
        mechanism = (f"SIGSTOP {'redis-server' if self.backend == 'redis' else 'postgres'}" if hang
                     else f"nftables reject of port {self.store_port}")
        if not hang and not on:
            await asyncio.to_thread(self.net.heal, index)
        for t in self.targets(spec):
            if hang:
                self.regions[t].dedup_down(on)
            elif on:
                await asyncio.to_thread(self.net.reject_port, index, t, self.store_port)
            if on:
                self.rec.now("fault.start", kind="store_down", target=t, mechanism=mechanism,
                             mode="hang" if hang else "refuse")
            else:
                self.rec.now("fault.end", kind="store_down", target=t)

    async def _store_latency(self, spec: dict, on: bool) -> None:
        """store_latency begins (``on``: the fault's ms) or ends (0) at each target's delaying
        proxy; ``applied``: the proxy logged its new delay."""
        ms = float(spec.get("ms", 50.0)) if on else 0.0
        for t in self.targets(spec):
            applied = await asyncio.to_thread(self.regions[t].set_store_delay, ms)
            if on:
                self.rec.now("fault.start", kind="store_latency", target=t,
                             mechanism=f"delaying proxy on port {STORE_PROXY_PORT}", ms=ms, applied=applied)
            else:
                self.rec.now("fault.end", kind="store_latency", target=t, applied=applied)

    async def heal_all(self) -> None:
        for index in sorted(self.active):
            await self.end(index)

    # -- samples -------------------------------------------------------------------------------
    def applied_at(self, stamp: object, polled: float) -> float:
        """When a region last applied a replicated record, in run time: its reader's own stamp
        (``/v1/crr/status`` ``read.last_applied_at``, the server's wall clock) when it falls within
        the poll period before ``polled``; else (no stamp, a skewed clock) the poll's time. The
        sampler polls once a second, so its time alone made the real convergence time up to a
        second late."""
        if isinstance(stamp, (int, float)) and polled - SAMPLE_S - 0.5 <= stamp - self.wall_t0 <= polled:
            return float(stamp) - self.wall_t0
        return polled

    async def sampler(self, client) -> None:
        """Once a second, each live region's ``/v1/crr/status``: ship lag, conflicts, rejected streams,
        applied records, and its dedup store's key count as of its last divergence summary
        (``divergence_count``, taken each period; a region down or cut off keeps its last one), whose
        spread is the simulator's key-count ``divergence`` (which reads every store each second)."""
        applied: dict[str, int] = {}
        rejected: dict[tuple, str] = {}
        self.last_ship_lag: dict[str, float] = {}
        keys: dict[str, int] = {}  # per region, its last known key count (a region down keeps its store)
        while True:
            await asyncio.sleep(SAMPLE_S)
            self.host.sample()  # the host's busy share of this second (cluster.host)
            if not self.replicated:
                continue
            row = {"t": self.clock.now, "ship_lag": {}, "conflicts": {}, "keys": {}}
            for rid, r in self.regions.items():
                if not r.up or r.paused:
                    continue
                try:
                    resp = await client.get(r.url + "/v1/crr/status", timeout=1.0, auth=self.operator)
                    m = resp.json()
                except Exception:  # noqa: BLE001 - cut off from the clients or restarting
                    continue
                ship, read, rc = m.get("ship", {}), m.get("read", {}), m.get("reconcile", {})
                row["ship_lag"][rid] = float(ship.get("lag_s") or 0.0)
                self.last_ship_lag[rid] = row["ship_lag"][rid]
                row["conflicts"][rid] = int(rc.get("conflicts", 0))
                counted = m.get("divergence_count")  # its dedup store's key count, as of its last summary
                if isinstance(counted, dict):
                    keys[rid] = int(counted.get("keys", 0))
                for stream, why in sorted((read.get("rejected") or {}).items()):
                    if rejected.get((rid, stream)) != why:
                        rejected[(rid, stream)] = why
                        self.rec.now("crr.reject", region=rid, segment=stream, reason=str(why)[:160])
                n = int(read.get("applied_records", 0))
                if n > applied.get(rid, 0):  # at the server's last apply, not at this poll (a second later)
                    self.rec.record(self.applied_at(read.get("last_applied_at"), self.clock.now), "crr.applied",
                                    region=rid, records=n - applied.get(rid, 0))
                applied[rid] = max(n, applied.get(rid, 0))
            row["keys"] = dict(keys)
            self.samples.append(row)

    # -- main --------------------------------------------------------------------------------
    async def drive(self) -> None:
        import httpx

        self.last_ship_lag = {}
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=64)
        async with httpx.AsyncClient(limits=limits) as client:
            self.workload = Workload(self.data, self.seed, self.region_ids, lambda r: self.regions[r].url,
                                     self.rec, self.clock, router_url=self.router_url if self.routed else None,
                                     outbox_dir=self.work / "agents")
            self.clock.t0 = time.monotonic()
            self.wall_t0 = time.time()
            self.host = HostCpu()
            self.rec.now("phase", name="workload")
            sampler = asyncio.create_task(self.sampler(client))
            faults = [asyncio.create_task(self.fault(i, f)) for i, f in enumerate(self.faults)]
            self.fault_log = [dict(f) for f in self.faults]
            try:
                await self.workload.run()
                await asyncio.sleep(max(0.0, self.duration - self.clock.now))
                for t in faults:
                    t.cancel()
                if self.background:
                    await asyncio.gather(*self.background, return_exceptions=True)
                self.rec.now("phase", name="heal")
                await self.heal_all()
                self.rec.now("phase", name="quiescence")
                w = self.data["workload"]
                await self.workload.drain(float(w["timeout_ms"]) / 1000.0 * int(w["max_attempts"]) + 5.0)
                await asyncio.sleep(max(0.0, self.duration + self.quiescence - self.clock.now))
                self.end_wall = time.time()
            finally:
                sampler.cancel()
                for t in [*faults, *self.background]:
                    t.cancel()
                await self.workload.drain(0.1)
        self.rec.now("phase", name="final")

    def scan_store(self, rid: str) -> list[tuple]:
        """Every (tenant, pcs_id, outcome) in region ``rid``'s dedup store (what it holds now; its server may run)."""
        from flk.impl.dedup import iter_entries, open_store

        r = self.regions[rid]
        if self.backend == "redis":
            store = open_store(f"redis://{r.ip}:{REDIS_PORT}/0")
        elif self.backend == "postgres":
            store = open_store(r.pg_dsn(r.ip))
        else:
            store = open_store("sqlite:///" + str(r.dir / "data" / "dedup.sqlite3"))
        try:  # what it holds now (the stored outcomes expire after the servers' 14-day DEDUP_TTL_S)
            return list(iter_entries(store, time.time()))
        finally:
            store.close()

    def rewind_reader(self, rid: str) -> dict:
        """reader_rewind: the stored answers' snapshot (read beside the running server), then the
        order ``DATA_DIR/crr.rewind``, which the server's replication thread takes at its next step
        (its reader forgets its watermarks and re-reads every shipped segment) and removes; waits
        for that, :data:`REWIND_WAIT_S` at most (``taken``: it was; a region down now takes it when
        it starts)."""
        r = self.regions[rid]
        snap = {f"{t}/{p}": hashlib.sha256(o.body).hexdigest()[:16] for t, p, o in self.scan_store(rid)}
        self.rewinds[rid] = snap  # compared with the final reads
        order = r.dir / "data" / "crr.rewind"
        order.touch()
        deadline = time.monotonic() + REWIND_WAIT_S
        while order.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return {"snapshot": snap, "taken": not order.exists()}

    def final_reads(self) -> None:
        from flk.impl.replication.reconcile import SqliteAuthoritativeStore

        t = self.clock.now
        for r in self.regions.values():
            r.stop_server()
        for rid, r in self.regions.items():
            final = {}
            for tenant, pcs_id, o in self.scan_store(rid):
                final[f"{tenant}/{pcs_id}"] = sha = hashlib.sha256(o.body).hexdigest()[:16]
                self.rec.record(t, "final.entry", region=rid, tenant=tenant, pcs_id=pcs_id,
                                digest=o.payload_digest, status=o.status, body_sha=sha)
            if rid in self.rewinds:
                changed = sorted(k for k, v in self.rewinds[rid].items() if final.get(k) != v)
                self.rec.record(t, "crr.rewind_check", region=rid, checked=len(self.rewinds[rid]),
                                changed=len(changed), examples=[k.split("/", 1) for k in changed[:3]])
            auth_path = r.dir / "data" / "crr" / "authoritative.sqlite3"
            if self.replicated and auth_path.exists():
                auth = SqliteAuthoritativeStore(str(auth_path))
                try:
                    for tenant, pcs_id, a in sorted(auth.items(), key=lambda x: (x[0], x[1])):
                        self.rec.record(t, "final.auth", region=rid, tenant=tenant, pcs_id=pcs_id,
                                        digest=a.authoritative.payload_digest, origin=a.authoritative.region,
                                        conflict=a.conflict)
                finally:
                    auth.close()

    def divergence_events(self) -> None:
        """The servers' flagged divergence checks as the simulator's ``crr.divergence`` events: the
        ``crr_divergence`` lines one check logs (one per flagged peer, written together) are one event
        with its worst severity. A server logs no line for a check that found all peers ok, so a real
        history holds the flagged checks only (``divergence_flagged`` counts the same thing)."""
        if not self.replicated:
            return
        apart = min(CHECK_LINES_S, float(self.data["replication"]["divergence_interval_s"]) / 4)  # checks: a period
        for rid, r in self.regions.items():
            group: list[dict] = []
            for e in [*r.server_events("crr_divergence"), None]:
                if group and (e is None or e["ts"] - group[-1]["ts"] > apart):
                    worst = max((g.get("severity") for g in group), key=lambda v: SEVERITY_LEVEL.get(v, 0))
                    self.rec.record(group[0]["ts"] - self.wall_t0, "crr.divergence", region=rid, peers=len(group),
                                    worst=worst)
                    group = []
                if e is not None:
                    group.append(e)

    def store_events(self) -> None:
        """Copies between the regions' stores (``crr.copied`` with the age of the segment's oldest
        record) and the per-second replication lag (``crr.sample``) from the stores' logs.

        Ages are true time, as the simulator's: from the send of the segment's earliest record
        (the ``sent_at`` its client wrote into the body, on this runner's clock:
        :func:`flk.impl.lab.cluster.storenode.first_sent_at`) to the copy or the sample. The
        record's ``received_at`` is its region's wall clock, which a clock fault moves: against
        the store node's clock it read -26 s for segments us wrote while its clock ran 30 s
        ahead. That figure stays as ``stamp_age_s`` (what the origin's stamps say); a segment
        whose records carry no ``sent_at`` is aged by its stamps."""
        if not self.replicated:
            return
        seen: dict[str, dict] = {}
        landed: dict[str, dict[str, float]] = defaultdict(dict)
        logs = {rid: r.store_events() for rid, r in self.regions.items()}
        for rid, lines in logs.items():  # every segment's first sight, before any copy of it
            for e in lines:
                if e.get("event") == "seen":
                    t, stamp = e["t"] - self.wall_t0, e["oldest"] - self.wall_t0
                    sent = runner_time(e.get("first_sent_at"))
                    seen[e["key"]] = {"origin": rid, "t": t,
                                      "oldest": sent if sent is not None and sent <= t else stamp}
        for rid, lines in logs.items():
            for e in lines:
                if e.get("event") == "corrupted":
                    self.rec.record(e["t"] - self.wall_t0, "crr.corrupted", region=rid, key=e["key"])
                elif e.get("event") == "copied" and e["key"].endswith(".log"):
                    t = e["t"] - self.wall_t0
                    landed[e["key"]][e["peer"]] = t
                    s = seen.get(e["key"])
                    stamp_age = e.get("age_s") or 0.0
                    self.rec.record(t, "crr.copied", origin=rid, region=e["peer"], key=e["key"],
                                    age_s=round(t - s["oldest"], 6) if s is not None else stamp_age,
                                    stamp_age_s=stamp_age)
        peers = {rid: [p for p in self.region_ids if p != rid] for rid in self.region_ids}
        for row in self.samples:
            t = row["t"]
            by_region, gauges = {}, {}
            for rid in self.region_ids:
                lag = row["ship_lag"].get(rid, 0.0)
                gauges[rid] = round(lag, 6)  # the region's own gauge alone (by_region: with its copies' age)
                for key, s in seen.items():
                    if s["origin"] != rid or s["t"] > t:
                        continue
                    if any(landed[key].get(p, float("inf")) > t for p in peers[rid]):
                        lag = max(lag, t - s["oldest"])
                by_region[rid] = round(lag, 6)
            keys = list(row["keys"].values())
            self.rec.record(t, "crr.sample", lag_s=max(by_region.values(), default=0.0), by_region=by_region,
                            divergence=(max(keys) - min(keys)) if keys else 0,
                            conflicts=max(row["conflicts"].values(), default=0), ship_gauge=gauges)


def runner_time(sent_at: object) -> float | None:
    """A body's ``sent_at`` (RFC 3339, UTC, as :meth:`flk.impl.agent.client.Submission.body_for`
    writes it) as seconds on the runner's clock: the cluster's clients stamp
    ``SIM_EPOCH + clock.now`` (:mod:`.driver`). None when it is not such a time."""
    if not isinstance(sent_at, str) or not sent_at.endswith("Z"):
        return None
    try:
        stamp = datetime.datetime.fromisoformat(sent_at[:-1] + "+00:00").timestamp()
    except ValueError:
        return None
    return stamp - SIM_EPOCH


def ledger_path(prefix: str) -> Path:
    return Path(tempfile.gettempdir()) / f"flk-cluster-{prefix}.json"


# -- checks and figures -----------------------------------------------------------------------

def blackbox_conflicts(events: list[dict]) -> tuple[int, int]:
    """(keys acked with different payloads by different regions, those whose authoritative
    outcome is not the payload acked first), from what the clients saw and the final reads."""
    send = {}
    for e in events:
        if e["type"] == "client.send":
            send[(e["req"], e["attempt"])] = e
    digests: dict[tuple, set] = defaultdict(set)
    first: dict[tuple, tuple[int, str]] = {}
    for e in events:
        if e["type"] == "client.recv" and e["status"] in (200, 202):
            s = send.get((e["req"], e["attempt"]))
            if s is None:
                continue
            key = (s["tenant"], s["pcs_id"])
            digests[key].add(s["digest"])
            if key not in first or e["t_us"] < first[key][0]:
                first[key] = (e["t_us"], s["digest"])
    auth = {}
    for e in events:
        if e["type"] == "final.auth":
            auth.setdefault((e["tenant"], e["pcs_id"]), e["digest"])
    split = [k for k, d in digests.items() if len(d) > 1]
    later = sum(1 for k in split if k in auth and auth[k] != first[k][1])
    return len(split), later


def check(events: list[dict], data: dict, partitions: list[dict]) -> list[dict]:
    ev = checkers._by_type(events)
    report = check_run(events)
    by_inv = defaultdict(list)
    for a in report.anomalies:
        by_inv[a.invariant].append(a.as_dict())
    rewound = 0
    for e in ev["crr.rewind_check"]:  # every answer stored at a reader rewind is the same in the final reads
        rewound += e["checked"]
        if e["changed"]:
            by_inv["INV-IDEMPOTENT-REPLAY"].append({"region": e["region"], "why": f"{e['changed']} stored answers "
                                                    "changed by re-reading shipped segments",
                                                    "examples": e["examples"]})
    out = []
    for inv in ("INV-FWW", "INV-IDEMPOTENT-REPLAY", "INV-NO-ACKED-LOSS"):
        checked = report.final_checked if inv == "INV-NO-ACKED-LOSS" else report.ops
        checked += rewound if inv == "INV-IDEMPOTENT-REPLAY" else 0
        out.append(checkers.CheckResult(inv, "always", not by_inv[inv], checked=checked,
                                        violations=by_inv[inv],
                                        note="black-box history checker (flk.model.history) over the client "
                                             "history and the final reads"))
    for inv, why in INSIDE_ONLY.items():
        out.append(checkers.CheckResult(inv, "always", True, checked=0, note=why))
    out.append(checkers.inv_convergence(events, ev))
    out.append(checkers.inv_at_least_once(events, ev))
    no_faults = [e for e in events if e["type"] not in ("fault.start", "fault.end")]
    out.extend(checkers.sometimes_checks(no_faults, data))
    starts = ev["fault.start"]
    for kind in sorted({f["kind"] for f in starts}):
        out.append(_fault_sometimes(kind, [f for f in starts if f["kind"] == kind], ev, data, partitions))
    if data["workload"].get("cross_region_conflict_rate", 0) > 0 and any(f["kind"] == "partition" for f in starts):
        n, _ = blackbox_conflicts(events)
        out.append(checkers.CheckResult("SOMETIMES-SPLIT-BRAIN-CONFLICT", "sometimes", n > 0, checked=len(starts),
                                        note=f"{n} pcs_ids acked with different payloads in different regions"))
    return out


def _fault_sometimes(kind: str, fs: list[dict], ev: dict, data: dict, partitions: list[dict]) -> checkers.CheckResult:
    """The "sometimes" check proving the faults ``fs`` of ``kind`` really hit something."""
    n = len(fs)
    if kind == "partition":
        dropped = sum(p["dropped_packets"] for p in partitions)
        return checkers.CheckResult("SOMETIMES-PARTITION-CUT", "sometimes", dropped > 0, checked=n,
                                    note=f"{dropped} packets dropped by the partitions' nftables rules")
    if kind == "crash":
        inflight = sum(f.get("inflight", 0) for f in fs)
        refused = _sent_while_down(ev, fs)
        return checkers.CheckResult("SOMETIMES-CRASH-HIT-TRAFFIC", "sometimes", inflight + refused > 0, checked=n,
                                    note=f"{inflight} requests in flight at SIGKILLs, {refused} attempts failed at "
                                         "a killed region before it was ready")
    if kind == "bitflip_shipped":
        corrupted, rejected = len(ev["crr.corrupted"]), len(ev["crr.reject"])
        return checkers.CheckResult("SOMETIMES-CORRUPTION-REJECTED", "sometimes", corrupted > 0 and rejected > 0,
                                    checked=n, note=f"{corrupted} shipped segments corrupted, {rejected} "
                                                    "rejections reported by the readers")
    if kind in ("ship_stop", "objstore_down"):  # the records not shipped waited: their lag grew past two ship periods
        targets = {t for f in fs for t in f["target"].split(",")}
        lag = max((v for e in ev["crr.sample"] for r, v in e.get("by_region", {}).items() if r in targets),
                  default=0.0)
        return checkers.CheckResult("SOMETIMES-LAG-GREW", "sometimes", lag > 2 * data["replication"]["ship_interval_s"],
                                    checked=n, note=f"max replication lag of the regions hit {lag:.1f} s")
    if kind == "agent_crash":  # the simulator's check: the reopened outboxes resubmitted something
        return checkers.outbox_resubmitted(fs, ev)
    if kind == "disk_full":
        hit = _during(ev, fs, "client.recv", lambda e: e["status"] >= 500)
        filled = sum(f.get("filled_bytes", 0) for f in fs)
        return checkers.CheckResult("SOMETIMES-DISK-FULL-REFUSED", "sometimes", hit > 0, checked=n,
                                    note=f"{filled} bytes filled the WAL tmpfs; {hit} answers from the full region "
                                         "were 5xx (fail closed)")
    if kind == "store_down":
        n503 = sum(1 for e in ev["client.recv"] if e["status"] == 503)
        # a hung store's calls outlast a short client timeout: such an attempt met the outage too
        waited = _during(ev, [f for f in fs if f.get("mode") == "hang"], "client.timeout",
                         lambda e: e.get("error") == "TimeoutError")
        return checkers.CheckResult("SOMETIMES-STORE-DOWN-503", "sometimes", n503 + waited > 0, checked=n,
                                    note=f"{n503} answers met the outage (503, fail closed)"
                                         + (f"; {waited} attempts timed out at a region whose store hung"
                                            if waited else ""))
    if kind == "rotate_key":  # the servers took the new keys: what was first sent after a rotation verified
        return checkers.rotated_key_accepted(fs, ev)
    return checkers.CheckResult(f"SOMETIMES-FAULT-{kind.upper()}", "sometimes", True, checked=n,
                                note=f"{n} {kind} faults applied")


def _during(ev: dict, faults: list[dict], typ: str, pred) -> int:
    """Events ``typ`` (``client.recv``, ``client.timeout``) of each fault's target region between
    the fault's start and its end that satisfy ``pred``."""
    n = 0
    for f in faults:
        until = min((e["t_us"] for e in ev["fault.end"] if e["kind"] == f["kind"] and e["target"] == f["target"]
                     and e["t_us"] >= f["t_us"]), default=float("inf"))
        n += sum(1 for e in ev[typ] if e["region"] == f["target"] and f["t_us"] <= e["t_us"] <= until and pred(e))
    return n


def _sent_while_down(ev: dict, crashes: list[dict]) -> int:
    """Attempts to a SIGKILLed region that failed before it was ready again: no answer, or (behind
    the router, which answers for a region that does not) a 502 naming it."""
    n = 0
    for f in crashes:
        ready = [e["t_us"] for e in ev["region.ready"] if e["region"] == f["target"] and e["t_us"] > f["t_us"]]
        until = min(ready, default=float("inf"))
        n += sum(1 for e in ev["client.timeout"] if e["region"] == f["target"] and f["t_us"] <= e["t_us"] <= until)
        n += sum(1 for e in ev["client.recv"] if e["region"] == f["target"] and e["status"] == 502
                 and f["t_us"] <= e["t_us"] <= until)
    return n


def results_of(run: ClusterRun, history: History, overrides: list[str], source: str) -> tuple[dict, list[dict]]:
    events = history.events
    checks = check(events, run.data, run.partitions)
    if run.prometheus:
        checks.extend(alerts.checks(run.alert_eval, run.data.get("alerts", {}), run.fault_log))
    conv = next((c for c in checks if c.id == "INV-CONVERGENCE" and c.exercised), None)
    m = metrics.summarize(events, run.duration, converged=None if conv is None else conv.ok)
    if "conflicts" in m:
        m["conflicts"], m["conflicts_won_by_later_write"] = blackbox_conflicts(events)
    slos = metrics.check_slos(m, run.data["slo"])
    stamp = artifacts.stamp(run.seed, list(overrides), source, plant=run.plant)
    results = {
        "scenario": run.sc.name, "seed": run.seed, "digest": history.digest, "events": history.count,
        "runner": "cluster",
        "invariants": [c.as_dict() for c in checks], "slos": slos, "metrics": m,
        "valid": all(c.ok for c in checks) and all(s["ok"] for s in slos),
        "fault_schedule": run.fault_log,
        **({"alerts": run.alert_eval} if run.alert_eval else {}),
        "parameters": {"overrides": list(overrides), "backend": run.backend,
                       **({"plant": run.plant, "plant_window_s": run.plant_window_s} if run.plant else {})},
        "stamp": stamp,
        "cluster": {"backend": run.backend, "network": {"prefix": run.prefix, "subnet": f"{run.net.base}.0/24",
                                                        "clients": run.net.client_ip,
                                                        "regions": {r: run.net.ip(r) for r in run.region_ids}},
                    "mechanisms": {k: MECHANISMS[k] for k in sorted({f['kind'] for f in run.data['faults']})},
                    "partitions": [{k: v for k, v in p.items() if k != "nft_listing"} for p in run.partitions],
                    "timings": run.timings,
                    "host": run.host.summary() if run.host is not None else {"measured": False}},
    }
    return results, metrics.timeseries(events)


def run(sc: Scenario, seed: int, backend: str = "sqlite", out: Path | None = None, plots: bool = True,
        prefix: str | None = None, log=lambda _m: None, plant: str | None = None,
        plant_window_s: float = 1.0, prometheus: bool = False) -> dict:
    """One cluster run; returns ``results`` (and writes ``out/<scenario>/<seed>/``). Raises
    :class:`Refused` before starting anything when the scenario cannot run here; on Ctrl-C
    (``KeyboardInterrupt``, SIGTERM too) removes everything it started and re-raises."""
    reasons = preflight(sc.data, backend, plant, prometheus)
    if reasons:
        raise Refused("; ".join(reasons))
    raise_open_files(open_files_needed(sc.data))
    prefix = prefix or os.environ.get("FLK_CLUSTER_PREFIX") or f"flk{os.getpid() % 100000:x}"
    out_dir = Path(out) / sc.name / str(seed) if out is not None else None
    work = Path(tempfile.mkdtemp(prefix=f"{WORK_DIR_PREFIX}{sc.name}-"))
    cr = ClusterRun(sc, seed, backend, work, prefix, log, plant, plant_window_s, prometheus)
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    left: list[str] = []
    try:
        log(f"cluster: {len(cr.region_ids)} regions in namespaces {prefix}-*, work dir {work}")
        cr.setup()
        log(f"cluster: up in {cr.timings['setup_s']:.1f} s; workload {cr.duration:.0f} s + quiescence "
            f"{cr.quiescence:.0f} s")
        asyncio.run(cr.drive())
        if cr.prom is not None:  # before the final reads stop every server
            cr.alert_eval = cr.prom.firing(cr.wall_t0, cr.end_wall)
            cr.prom.stop()
        cr.stop_router()  # its checks of the stopping servers are no part of the run
        cr.final_reads()
        cr.store_events()
        cr.divergence_events()
        cr.router_events()
    except BaseException:
        cr.teardown()
        _remove_tree(work)
        raise
    finally:
        left = cr.teardown()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
    history = cr.rec.history()
    results, rows = results_of(cr, history, list(sc.overrides), str(Path(sc.source).resolve()) if sc.source
                               else sc.name)
    results["cluster"]["left_behind"] = left
    if out_dir is not None:
        data = copy.deepcopy(sc.data)
        data["scenario"]["seed"] = seed
        results["out_dir"] = str(out_dir)
        artifacts.write_all(out_dir, data, history, results, rows, plots=plots)
        if cr.partitions:
            (out_dir / "partition-rules.txt").write_text("\n".join(
                f"# fault {p['fault']}: {p['sides'][0]} | {p['sides'][1]}, dropped packets "
                f"{p['dropped_packets']}\n{p['nft_listing']}" for p in cr.partitions), encoding="utf-8")
        logs = out_dir / "logs"
        logs.mkdir(exist_ok=True)
        for rid, r in cr.regions.items():
            for name in ("server.log", "store.log"):
                text = r.tail(name, 200_000)
                if text:
                    (logs / f"{rid}-{name}").write_text(text, encoding="utf-8")
    _remove_tree(work)
    return results


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
