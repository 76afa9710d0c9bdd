"""Alerts proved by chaos runs: the simulator's regions as Prometheus targets.

Why this module exists: an alert rule is only worth its page if it fires in the
situation it is written for and stays silent otherwise. The lab can show both:

1. :class:`Scraper` scrapes every region once a simulated second, the way Prometheus
   scrapes ``flk serve``: the same metric names and labels ``/metrics`` exports
   (``flk_http_requests_total``, ``flk_http_latency_seconds``, the verifier's
   counters, ``flk_store_breaker_state``, ``flk_store_call_seconds``, the
   ``flk_crr_*`` family, ``up``). Gauges are read from the region's own production
   objects (breaker, limiter, GuardedStore, Shipper, Reader, DivergenceDetector);
   counters are the region process's own (:mod:`flk.sim.exporter`: the verifier's
   are the shipped ``Metrics`` as the core's sink); a region that is down or paused
   does not answer the scrape (``up`` 0, its other series absent) and a restart
   starts its counters from zero, as a real restart does. It only reads: the
   history, and so the digest, is the same with it or without it.
2. :func:`openmetrics` writes those samples as timestamped OpenMetrics text, and
   :func:`promtool_test` as the input series of a ``promtool test rules`` file over
   the rules the project ships (``deploy/prometheus/rules``). Prometheus' own rule
   engine (promtool) evaluates them once a second; every evaluation of every alert
   is a probe that expects no alert, so promtool's report lists exactly the
   (alert, time, instance) triples that fired.
3. :func:`checks` compares them with the scenario's ``[alerts]`` declaration:
   ``ALERT-<name>`` passes when an alert that must fire fired within ``within_s``
   of the first fault (the time to fire is in the note), or when an alert that must
   stay silent never fired.

4. :func:`proof` runs a scenario over many seeds and counts what held (the full tier's alert
   table, tests/observability/test_alert_proofs.py); :func:`proof_table` prints it.

Without promtool the checks are "not exercised" (never a pass); with CI=true the
test suite fails instead (tests/observability).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

from flk.impl.replication.divergence import severity_level

from .checkers import CheckResult

RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "rules"
RULE_FILES = ("flk-recording.yml", "flk-alerts.yml")


def alert_names() -> tuple[str, ...]:
    """The alert names of the shipped rule files (empty when the rules are not installed)."""
    path = RULES_DIR / "flk-alerts.yml"
    if not path.exists():
        return ()
    return tuple(re.findall(r"^\s*- alert:\s*(\S+)", path.read_text(encoding="utf-8"), re.M))


def declared(data: dict) -> bool:
    """Does the scenario declare alerts (``[alerts]`` fire or silent)?"""
    section = data.get("alerts") or {}
    return bool(section.get("fire") or section.get("silent"))


def save(scraper: Scraper, end_s: int, out_dir: Path) -> None:
    """The run's scrapes as ``series.om`` (OpenMetrics, timestamped) and the promtool test file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "series.om").write_text(openmetrics(scraper), encoding="utf-8")
    names = alert_names()
    if names:
        (out_dir / "alerts.test.yml").write_text(promtool_test(scraper, end_s, names), encoding="utf-8")


def promtool() -> str | None:
    return shutil.which("promtool")


class RegionSeries:
    """What each region's ``/metrics`` shows at a moment: :meth:`scrape` (the series
    :class:`Scraper` samples and the simulated operators read, as the deployed controller
    reads ``flk serve``'s). The counters are the region process's own
    (:class:`flk.sim.exporter.ProcessMetrics`: the shipped verifier ``Metrics`` as the core's
    sink, the HTTP counters where ``flk serve`` counts them; a restarted process counts from
    zero); the gauges are read from its production objects (breaker, limiter, GuardedStore,
    Shipper, Reader, DivergenceDetector). Making one switches the regions' counting on
    (:meth:`flk.sim.world.World.export_metrics`)."""

    def __init__(self, world) -> None:
        self.world = world
        world.export_metrics()

    def scrape(self, rid: str) -> dict:
        """``{(name, labels): value}`` of region ``rid`` now."""
        from flk.impl.verifier.admission import STATE_CODES, STORE_CALL_BUCKETS

        region = self.world.regions[rid]
        if not region.up or region.paused or region.restarting:
            return {("up", ()): 0.0}
        out: dict = {("up", ()): 1.0}
        out.update(region.exported.samples())  # type: ignore[union-attr] -- export_metrics made it
        limiter = region.admission.limiter
        out[("flk_store_breaker_state", ())] = float(STATE_CODES[region.admission.breaker.state])
        out[("flk_inflight", ())] = float(region.inflight)
        out[("flk_inflight_limit", ())] = float(getattr(limiter, "limit", 0))
        times = region.guarded.call_seconds
        for le, n in zip(STORE_CALL_BUCKETS, times.buckets, strict=True):
            out[("flk_store_call_seconds_bucket", (("le", repr(le)),))] = float(n)
        out[("flk_store_call_seconds_bucket", (("le", "+Inf"),))] = float(times.count)
        out[("flk_store_call_seconds_count", ())] = float(times.count)
        out[("flk_store_call_seconds_sum", ())] = times.total
        out[("flk_store_failed_items_total", ())] = float(region.guarded.unanswered_items)
        out[("flk_store_batched_items", ())] = float(region.guarded.batched_items)
        rep = self.world.repl.get(rid)
        if rep is not None:
            w = (("worker", "0"),)
            out[("flk_crr_replication_lag_seconds", w)] = rep.exported_lag_s()  # the shipper's own gauge
            out[("flk_crr_ship_failures", w)] = float(rep.shipper.failures)
            out[("flk_crr_shipped_records_total", w)] = float(rep.shipper.shipped_records)
            out[("flk_crr_applied_records_total", w)] = float(rep.reader.applied_records)
            out[("flk_crr_rejected_streams", w)] = float(len(rep.reader.rejected))
            out[("flk_crr_read_stalled_seconds", w)] = rep.reader.stalled_s(region.now())
            out[("flk_crr_read_parked_records", w)] = float(rep.reader.parked_count)
            out[("flk_crr_conflicts_total", w)] = float(rep.reconciler.counters["conflicts"])  # as flk serve
            out[("flk_crr_divergence_severity", w)] = float(severity_level(a.severity for a in rep.detector.last))  # as flk serve
            for peer, periods in rep.detector.unseen.items():  # the detector's own count, as flk serve exports it
                out[("flk_crr_peer_unseen_periods", (*w, ("peer", peer)))] = float(periods)
        return out


class Scraper:
    """Scrapes every region once a simulated second (see the module docstring)."""

    def __init__(self, world, interval_s: float = 1.0) -> None:
        self.world = world
        self.interval_s = interval_s
        self.samples: list[tuple[float, str, dict]] = []  # (t, region, {series key: value}); up only when down
        self.view = RegionSeries(world)
        world.env.process(self._run())

    def _run(self):
        env = self.world.env
        while True:
            yield env.timeout(self.interval_s)
            for rid in self.world.region_ids:
                self.samples.append((env.now, rid, self.view.scrape(rid)))


def exposition(sample: dict, region: str) -> str:
    """One scrape (:meth:`RegionSeries.scrape`) as the Prometheus text ``/metrics`` answers."""
    return "".join(f"{_series_name(key, region)} {_fmt(value)}\n" for key, value in sample.items())


def _series_name(key: tuple, region: str) -> str:
    name, labels = key
    pairs = [("job", "flk"), ("instance", region), *labels]
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}"


def series(scraper: Scraper) -> dict[str, dict[int, float]]:
    """``{series: {second: value}}`` of every scrape."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for t, rid, sample in scraper.samples:
        sec = int(round(t))
        for key, value in sample.items():
            out[_series_name(key, rid)][sec] = value
    return out


def openmetrics(scraper: Scraper) -> str:
    """The scrapes as OpenMetrics text with timestamps (simulated seconds), one family per name."""
    by_family: dict[str, list[str]] = defaultdict(list)
    for t, rid, sample in scraper.samples:
        for key, value in sorted(sample.items()):
            by_family[key[0]].append(f"{_series_name(key, rid)} {value!r} {t:.3f}")
    lines = []
    for name in sorted(by_family):
        family = re.sub(r"_(total|bucket|count|sum)$", "", name)
        kind = "counter" if name.endswith("_total") else "histogram" if family != name else "gauge"
        if kind != "gauge":
            lines.append(f"# TYPE {family} {kind}")
        else:
            lines.append(f"# TYPE {name} gauge")
        lines.extend(by_family[name])
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _fmt(v: float) -> str:
    return repr(float(v)) if v != int(v) else str(int(v))


def promtool_test(scraper: Scraper, end_s: int, names: tuple[str, ...]) -> str:
    """A ``promtool test rules`` file: the scrapes as input series (``_`` where a scrape is
    missing), the shipped rules, and for every alert an empty expectation at every second
    (each one that fired is then reported as a failure naming it, its time and labels)."""
    lines = ["rule_files:"] + [f"  - {RULES_DIR / f}" for f in RULE_FILES]
    lines += ["evaluation_interval: 1s", "tests:", "  - interval: 1s", "    input_series:"]
    for name, points in sorted(series(scraper).items()):
        values = " ".join(_fmt(points[s]) if s in points else "_" for s in range(end_s + 1))
        lines += [f"      - series: '{name}'", f"        values: '{values}'"]
    lines.append("    alert_rule_test:")
    for s in range(1, end_s + 1):
        for alert in names:
            lines += [f"      - eval_time: {s}s", f"        alertname: {alert}", "        exp_alerts: []"]
    return "\n".join(lines) + "\n"


_FAILED = re.compile(r"alertname: (\w+), time: ([0-9hms.]+),\s*\n\s*exp:\[.*?\],?\s*\n\s*got:\[(.*?)\n\s*\]",
                     re.S)


def _seconds(text: str) -> float:
    total = 0.0
    for num, unit in re.findall(r"([0-9.]+)(ms|h|m|s)", text):
        total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


def evaluate(scraper: Scraper, end_s: int) -> dict | None:
    """Run promtool over the scrapes: ``{"firing": {alert: {instance: [seconds...]}}, "evaluated": n,
    "end_s": end_s}``, or None without promtool or rules."""
    tool, names = promtool(), alert_names()
    if tool is None or not names:
        return None
    text = promtool_test(scraper, end_s, names)
    with tempfile.TemporaryDirectory(prefix="flk-alerts-") as tmp:
        test = Path(tmp) / "alerts.test.yml"
        test.write_text(text, encoding="utf-8")
        proc = subprocess.run([tool, "test", "rules", str(test)], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "GOMAXPROCS": "1"})
    report = proc.stdout + proc.stderr
    if (proc.returncode != 0 and "alertname:" not in report) or "err:" in report:
        raise RuntimeError("promtool could not evaluate the rules: " + report[-600:])
    firing: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for alert, at, got in _FAILED.findall(report):
        for inst in re.findall(r'instance="([^"]*)"', got):
            firing[alert][inst].append(_seconds(at))
    return {"firing": {a: {i: sorted(ts) for i, ts in v.items()} for a, v in sorted(firing.items())},
            "evaluated": end_s * len(names), "alerts": list(names), "end_s": end_s}


def first_fault_s(fault_log: list[dict], kinds: tuple[str, ...] = ()) -> float | None:
    starts = [float(f["at_s"]) for f in fault_log if not kinds or f.get("kind") in kinds]
    return min(starts) if starts else None


def time_to_fire(result: dict, fire: dict, fault_log: list[dict]) -> tuple[float, float | None]:
    """``(t0, seconds)``: the fault start a ``fire`` declaration counts from (0 without a fault)
    and how long after it the alert first fired (None: it never fired at or after ``t0``)."""
    after = first_fault_s(fault_log, tuple(fire.get("after") or ()))
    after = 0.0 if after is None else after
    times = sorted(t for ts in result["firing"].get(fire["alert"], {}).values() for t in ts if t >= after)
    return after, (times[0] - after if times else None)


def checks(result: dict | None, declared: dict, fault_log: list[dict]) -> list[CheckResult]:
    """``ALERT-<name>`` checks of a run's ``[alerts]`` declaration (see the module docstring)."""
    fire = declared.get("fire") or []
    silent = list(declared.get("silent") or [])
    if not fire and not silent:
        return []
    if result is None:
        note = "not exercised: promtool or deploy/prometheus/rules not installed"
        return [CheckResult(f"ALERT-{f['alert']}", "eventually", True, 0, note=note) for f in fire] + \
               [CheckResult(f"ALERT-{n}", "always", True, 0, note=note) for n in silent if n != "*"]
    names = result["alerts"]
    firing = result["firing"]
    out = []
    expected = {f["alert"] for f in fire}
    for f in fire:
        alert = f["alert"]
        after, took = time_to_fire(result, f, fault_log)
        within = float(f.get("within_s", 30.0))
        ok = took is not None and took <= within
        note = (f"fired {took:.0f} s after the fault at {after:g} s (budget {within:g} s) on "
                f"{', '.join(sorted(i for i, ts in firing[alert].items() if any(t >= after for t in ts)))}"
                if took is not None else f"never fired (budget {within:g} s after the fault at {after:g} s)")
        viol = [] if ok else [{"alert": alert, "first_fired_s": None if took is None else after + took,
                               "fault_at_s": after}]
        out.append(CheckResult(f"ALERT-{alert}", "eventually", ok, result["evaluated"], viol, note))
    skip = set(declared.get("unchecked") or [])
    quiet = [n for n in names if n not in expected and n not in skip] if "*" in silent \
        else [n for n in silent if n != "*"]
    for alert in quiet:
        got = firing.get(alert, {})
        ok = not got
        note = "silent" if ok else "fired at " + "; ".join(f"{i}: {ts[0]:g}-{ts[-1]:g} s" for i, ts in got.items())
        viol = [] if ok else [{"alert": alert, "instance": i, "fired_s": ts[:5]} for i, ts in got.items()]
        out.append(CheckResult(f"ALERT-{alert}", "always", ok, result["evaluated"], viol, note))
    return out


def false_alarms(result: dict | None, declared: dict) -> int | None:
    """Alerts that fired and were not declared to fire (None: not evaluated)."""
    if result is None:
        return None
    expected = {f["alert"] for f in declared.get("fire") or []}
    return sum(1 for a in result["firing"] if a not in expected)


def proof(name: str, seeds) -> dict:
    """A catalog scenario's ``[alerts]`` declaration over ``seeds`` (the full tier's alert table):
    ``fired``/``expected`` counts the (seed, fire declaration) pairs that fired within their
    budget, ``missed`` lists the others, ``silent_violations`` every (seed, alert) that fired
    though declared silent, ``times`` the times to fire per alert (s after the fault) and
    ``not_exercised`` the runs without an evaluation (no promtool). Runs ``flk.sim.api``."""
    from . import api

    seeds = list(seeds)
    row: dict = {"scenario": name, "seeds": seeds, "expected": 0, "fired": 0, "missed": [],
                 "silent_violations": [], "times": defaultdict(list), "not_exercised": 0, "false_alarms": 0}
    for seed in seeds:
        res = api.run(name, seed=seed)
        declared_ = res.scenario.data.get("alerts") or {}
        result = res.results.get("alerts")
        if result is None:
            row["not_exercised"] += 1
            continue
        row["false_alarms"] += false_alarms(result, declared_)
        for f in declared_.get("fire") or []:
            row["expected"] += 1
            _, took = time_to_fire(result, f, res.results["fault_schedule"])
            if took is not None:
                row["times"][f["alert"]].append(took)
            if took is not None and took <= float(f.get("within_s", 30.0)):
                row["fired"] += 1
            else:
                row["missed"].append({"seed": seed, "alert": f["alert"], "took_s": took})
        for c in res.results["invariants"]:
            if c["id"].startswith("ALERT-") and c["kind"] == "always" and not c["ok"]:
                row["silent_violations"].append({"seed": seed, "alert": c["id"][6:], "note": c["note"]})
    row["times"] = dict(row["times"])
    return row


def proof_table(rows: list[dict]) -> str:
    """The rows of :func:`proof` as a Markdown table: fired/expected (seed, declaration) pairs, silent
    violations, alerts that fired without being required (:func:`false_alarms` summed over the runs:
    with ``silent = ["*"]`` and no violation these are its ``unchecked`` ones), median time to fire."""
    from statistics import median

    out = ["| scenario | fired/expected | silent violations | fired, not required | median time to fire (s) |",
           "|---|---|---|---|---|"]
    for r in rows:
        med = ", ".join(f"{a} {median(ts):g}" for a, ts in sorted(r["times"].items())) or "-"
        exp = "not exercised" if r["not_exercised"] else f"{r['fired']}/{r['expected']}"
        out.append(f"| {r['scenario']} | {exp} | {len(r['silent_violations'])} | {r['false_alarms']} | {med} |")
    return "\n".join(out) + "\n"
