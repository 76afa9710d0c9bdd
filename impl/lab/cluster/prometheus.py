"""A real Prometheus scraping the real regions of a cluster run (``flk cluster run --prometheus``).

Why this module exists: the simulator proves the shipped alert rules
(``deploy/prometheus/rules``) over its own per-region series (:mod:`flk.sim.alerts`); on a
real cluster the same declarations are checked against what a real Prometheus, scraping
each region's real ``/metrics``, reports. Nothing is modelled here: the process is Debian's
``prometheus`` (``scripts/install_deb.sh``), on loopback, its storage in the run's work dir.

Configuration (written per run): scrape and rule-evaluation interval 1 s (the simulator's
scraper's; the rules' ``for`` are seconds), job ``flk``, one static target per region
(``<region ip>:SERVER_PORT`` on the run's bridge, label ``instance`` = the region id, as the
simulator names its series), HTTP Basic with the run's operator credential (a 0600 file in
the work dir), the shipped rule files. The scrapes cross the same bridge as the clients, so a
cut that isolates a region from the clients isolates it from Prometheus too (``up`` 0).

After the quiescence -- before the final reads stop the servers, which would make every
region "down" -- :meth:`Prometheus.firing` reads the raw samples of
``ALERTS{alertstate="firing"}`` over the run (a range selector at the end: one sample per
rule evaluation, with its timestamp) into the evaluation record :func:`flk.sim.alerts.checks`
reads (``firing``: alert -> instance -> seconds since the run's start), so the
``ALERT-<name>`` checks are the simulator's own code over the real Prometheus' answers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from flk.sim import alerts

from ...core import textdata

INTERVAL_S = 1


def binary() -> str | None:
    return shutil.which("prometheus")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Prometheus:
    """One Prometheus process for one run (see the module docstring)."""

    def __init__(self, work: Path, targets: dict[str, str], credential: tuple[str, str], port: int | None = None):
        self.dir = work / "prometheus"
        self.targets, self.credential = targets, credential
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        user, _ = self.credential
        rules = "\n".join(f"  - {alerts.RULES_DIR / f}" for f in alerts.RULE_FILES)
        static = "\n".join(f"      - targets: ['{addr}']\n        labels: {{instance: '{rid}'}}"
                           for rid, addr in self.targets.items())
        return (f"global:\n  scrape_interval: {INTERVAL_S}s\n  scrape_timeout: {INTERVAL_S}s\n"
                f"  evaluation_interval: {INTERVAL_S}s\nrule_files:\n{rules}\nscrape_configs:\n"
                f"  - job_name: flk\n    metrics_path: /metrics\n    basic_auth:\n      username: {user}\n"
                f"      password_file: {self.dir / 'operator-pass'}\n    static_configs:\n{static}\n")

    def start(self, adopt=lambda _pid: None, timeout: float = 60.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        secret = self.dir / "operator-pass"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.credential[1])
        (self.dir / "prometheus.yml").write_text(self.config(), encoding="utf-8")
        args = [binary() or "prometheus", f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn"]
        with open(self.dir / "prometheus.log", "ab") as log:
            self.proc = subprocess.Popen(args, cwd=self.dir, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env={**os.environ, "GOMAXPROCS": "1"})
        adopt(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("prometheus exited: " + self.log_tail())
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1.0) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise TimeoutError("prometheus not ready: " + self.log_tail())
        self.wait_scraped(deadline)

    def wait_scraped(self, deadline: float) -> None:
        """Wait until every target has been scraped once. A ready Prometheus hands its static
        targets to the scrape manager only at the discovery manager's next update (up to 5 s
        later): a run started at "ready" went unscraped for its first ~5 s, so every counter's
        first sample held the run's start (a rate over it missed those requests) and alerts the
        simulator fires on a fault in those seconds could not fire (measured: first scrape 4.9 s
        after the workload started)."""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("prometheus exited: " + self.log_tail())
            try:
                seen = {r["metric"].get("instance") for r in self.api("query", query='up{job="flk"}')["result"]}
            except (OSError, RuntimeError):
                seen = set()
            if seen >= set(self.targets):
                return
            time.sleep(0.2)
        raise TimeoutError(f"prometheus scraped no sample of {sorted(set(self.targets))} in time: " + self.log_tail())

    def log_tail(self) -> str:
        try:
            return (self.dir / "prometheus.log").read_text(errors="replace")[-800:]
        except OSError:
            return ""

    def api(self, path: str, **params) -> dict:
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}", timeout=30) as r:
            doc = textdata.json_loads(r.read())
        if doc.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {doc.get('error', doc)}")
        return doc["data"]

    def firing(self, t0_wall: float, end_wall: float) -> dict:
        """The evaluation record of :func:`flk.sim.alerts.checks`: every (alert, instance) firing
        sample between the run's start and ``end_wall``, in seconds since the start."""
        names = alerts.alert_names()
        time.sleep(INTERVAL_S * 1.5)  # the rule evaluation of the last second is written
        span = max(1, int(end_wall - t0_wall) + 1)
        data = self.api("query", query=f'ALERTS{{alertstate="firing"}}[{span}s]', time=f"{end_wall:.3f}")
        firing: dict[str, dict[str, list[float]]] = {}
        for s in data["result"]:
            alert, inst = s["metric"].get("alertname", "?"), s["metric"].get("instance", "?")
            ts = [round(float(t) - t0_wall, 3) for t, _ in s["values"] if t0_wall <= float(t) <= end_wall]
            if ts:
                firing.setdefault(alert, {}).setdefault(inst, []).extend(ts)
        ups = self.api("query", query=f'count_over_time(up{{job="flk"}}[{span}s])', time=f"{end_wall:.3f}")
        scrapes = {r["metric"].get("instance", "?"): int(float(r["value"][1])) for r in ups["result"]}
        return {"firing": {a: {i: sorted(ts) for i, ts in sorted(v.items())} for a, v in sorted(firing.items())},
                "evaluated": int(end_wall - t0_wall) * len(names), "alerts": list(names),
                "end_s": int(end_wall - t0_wall), "engine": "prometheus", "scrapes": scrapes}

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except (OSError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait(10)
