"""``flk demo``: the whole lab end to end on embedded defaults, in a few minutes.

Stages (each reported with its verdict and time):

1. **vectors** -- the conformance runner checks the reference core against every
   frozen test vector (``flk conformance vectors --adapter builtin``);
2. **simulator** -- flagship scenarios of the catalog with their invariant/SLO
   tables and plots;
3. **proofs** -- the quick tier of ``flk prove``;
4. **server** -- ``flk serve`` on SQLite, driven by ``flk agent load`` with
   duplicates, bad signatures and conflicts, then the server conformance suite
   against it;
5. **report** -- one styled, self-contained HTML page (:mod:`flk.impl.lab.report`: scenario
   descriptions, invariant and SLO tables, headline figures, captioned plots, the
   vectors / proofs / server summaries, version, commit and date) whose path is printed.

Every stage runs the public CLI or API in a subprocess-free or subprocess way
that a user could repeat by hand; the commands are listed in the report.

What the stages write besides the report -- the vectors and conformance reports,
the server's data dir and ``serve.log``, the load history -- goes to ``work/``
in the output folder (:data:`WORK`), emptied at the start of each run (only a folder
the demo made: :func:`fresh_work`): a failed stage's log is there to read, and runs
never pile up in the temp folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..core import textdata

FLK = [sys.executable, "-m", "flk.impl"]
FLAGSHIP_SINGLE = ["crash-restart", "dedup-outage", "nemesis-random"]
FLAGSHIP_CRR = ["crr-normal", "region-failover", "split-brain"]
DEMO_KEY = "flk-demo-hmac-key-not-a-secret-0001"  # the demo's own throwaway server key
WORK = "work"  # the stages' files, in the output folder
WORK_MARK = ".flk-demo-work"  # in every work folder the demo made: only such a folder is ever emptied


class WorkInTheWay(Exception):
    """The output folder holds a ``work`` folder the demo did not make: it is never emptied."""


def fresh_work(out_dir: Path) -> Path:
    """``out_dir/work``, empty and marked: the last run's (marked) folder is removed first; a
    folder of that name without the mark is somebody else's and raises :class:`WorkInTheWay`."""
    work = Path(out_dir).resolve() / WORK  # the folder resolved, never a link named work
    if work.exists() or work.is_symlink():
        if work.is_symlink() or not (work / WORK_MARK).is_file():
            raise WorkInTheWay(f"{work} exists and was not made by flk demo (it is never emptied): "
                               "choose another --out or move it")
        shutil.rmtree(work)
    work.mkdir()
    (work / WORK_MARK).write_text("made by flk demo; emptied by its next run\n", encoding="utf-8")
    return work


@dataclass
class Stage:
    name: str
    status: str = "skipped"  # pass | fail | skipped
    seconds: float = 0.0
    summary: str = ""
    command: str = ""
    details: list = field(default_factory=list)
    data: dict = field(default_factory=dict)  # structured results the report renders (see report.py)


def _run(args: list[str], env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def _read_json(path: Path) -> dict | None:
    try:
        return textdata.json_loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def stage_vectors(work: Path) -> Stage:
    st = Stage("vectors", command="flk conformance vectors --adapter builtin")
    t0 = time.perf_counter()
    report = work / "vectors.json"
    p = _run([*FLK, "conformance", "vectors", "--adapter", "builtin", "--json", str(report)])
    st.seconds = time.perf_counter() - t0
    st.data["report"] = _read_json(report)
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    st.summary = lines[-1] if lines else p.stderr.strip()[-200:]
    st.status = "pass" if p.returncode == 0 else "fail"
    return st


def stage_sim(out: Path) -> Stage:
    from flk.sim import api
    from flk.sim.scenario import list_scenarios

    names = [n for n in FLAGSHIP_CRR if n in list_scenarios()] or FLAGSHIP_SINGLE
    st = Stage("simulator", command="flk sim run NAME --seed 1 --out " + str(out))
    t0 = time.perf_counter()
    ok = True
    for name in names:
        # the demo's own folder: a run of an older checkout (other scenario content) is replaced
        res = api.run(name, seed=1, out=out, force=True)
        ok &= res.valid
        st.data.setdefault("run_dirs", []).append(res.out_dir)
        m = res.results["metrics"]
        failed = [c["id"] for c in res.results["invariants"] if not c["ok"]]
        failed += ["SLO " + s["metric"] for s in res.results["slos"] if not s["ok"]]
        st.details.append({
            "scenario": name, "valid": res.valid, "requests": m["requests"],
            "error_rate": round(m["error_rate"], 4), "p95_ms": round(m["latency_p95_ms"], 1),
            "checks": len(res.results["invariants"]) + len(res.results["slos"]),
            "failed": ", ".join(failed) or "-", "digest": res.digest[:16],
        })
    st.seconds = time.perf_counter() - t0
    st.status = "pass" if ok else "fail"
    st.summary = f"{sum(d['valid'] for d in st.details)}/{len(st.details)} scenarios valid"
    return st


def stage_proofs() -> Stage:
    st = Stage("proofs", command="flk prove --tier quick --json")
    t0 = time.perf_counter()
    p = _run([*FLK, "prove", "--tier", "quick", "--json"], timeout=600)
    st.seconds = time.perf_counter() - t0
    try:
        doc = textdata.json_loads(p.stdout)
        results = doc["results"] if isinstance(doc, dict) else doc
        st.data["results"] = results
        for r in results:
            st.details.append({k: r.get(k) for k in ("id", "status", "expected", "seconds") if k in r})
        st.summary = f"{len(results)} proofs"
    except (ValueError, KeyError, TypeError):
        st.summary = (p.stdout or p.stderr).strip().splitlines()[-1:] and (p.stdout or p.stderr).strip().splitlines()[-1]
    st.status = "pass" if p.returncode == 0 else "fail"
    return st


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, deadline_s: float = 60.0) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "/ready", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def stage_server(work: Path) -> Stage:
    st = Stage("server", command="flk serve (SQLite) + flk agent load + flk conformance server")
    t0 = time.perf_counter()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PCS_HMAC_KEY": DEMO_KEY, "DEDUP_BACKEND": "sqlite"}
    data = work / "serve-data"
    log = open(work / "serve.log", "w")
    proc = subprocess.Popen([*FLK, "serve", "--port", str(port), "--data-dir", str(data)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        if not _wait_ready(url, proc):
            st.status, st.summary = "fail", f"flk serve did not become ready (see {work / 'serve.log'})"
            return st
        hist = work / "load-history.jsonl"
        p = _run([*FLK, "agent", "load", "--url", url, "--n", "3000", "--seed", "1", "--concurrency", "16",
                  "--dup-rate", "0.1", "--bad-sig-rate", "0.05", "--conflict-rate", "0.02", "--json",
                  "--no-progress", "--history", str(hist)], env=env, timeout=300)
        ok = p.returncode == 0
        try:
            summary = textdata.json_loads(p.stdout)
            st.data["load"] = summary
            st.details.append({"load": "flk agent load", **{k: v for k, v in summary.items() if not isinstance(v, (dict, list))}})
            by = summary.get("by_status") or summary.get("status") or {}
            st.summary = "load: " + ", ".join(f"{k}: {v}" for k, v in sorted(by.items())) if by else "load done"
        except ValueError:
            st.summary = "load: " + (p.stderr.strip().splitlines() or ["no output"])[-1]
            ok = False
        conformance = work / "conformance-server.json"
        c = _run([*FLK, "conformance", "server", "--url", url, "--hmac-key", DEMO_KEY, "--json", str(conformance)],
                 env=env, timeout=300)
        last = [ln for ln in c.stdout.splitlines() if ln.strip()]
        st.details.append({"conformance server": last[-1] if last else c.stderr.strip()[-200:]})
        st.data["conformance"] = _read_json(conformance)
        st.data["conformance_summary"] = st.details[-1]["conformance server"]
        ok &= c.returncode == 0
        st.status = "pass" if ok else "fail"
        return st
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        st.seconds = time.perf_counter() - t0


def write_report(path: Path, stages: list[Stage], total_s: float) -> None:
    """The demo's HTML page (styled, self-contained); the layout lives in :mod:`.report`."""
    from .report import write_demo_report

    write_demo_report(path, stages, total_s)


def run_demo(out_dir: Path | None = None, stages: tuple[str, ...] = ("vectors", "simulator", "proofs", "server")) -> int:
    t0 = time.perf_counter()
    out_dir = Path(out_dir) if out_dir else Path("runs") / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = fresh_work(out_dir)  # the last run's files go; this run's stay beside its report
    done: list[Stage] = []
    plan = {"vectors": lambda: stage_vectors(work), "simulator": lambda: stage_sim(out_dir / "sim"),
            "proofs": stage_proofs, "server": lambda: stage_server(work)}
    for name in stages:
        print(f"[demo] {name} ...", file=sys.stderr, flush=True)
        try:
            st = plan[name]()
        except Exception as exc:  # noqa: BLE001 - a stage's failure is reported, the demo goes on
            st = Stage(name, status="fail", summary=f"{type(exc).__name__}: {exc}"[:300])
        done.append(st)
        print(f"[demo] {name}: {st.status} ({st.seconds:.1f} s) {st.summary}", file=sys.stderr, flush=True)
    total = time.perf_counter() - t0
    report = out_dir / "report.html"
    write_report(report, done, total)
    print()
    print(f"{'stage':<12} {'status':<10} {'seconds':>8}  summary")
    for s in done:
        print(f"{s.name:<12} {s.status:<10} {s.seconds:>8.1f}  {s.summary}")
        for d in s.details:
            print("             " + "  ".join(f"{k}={v}" for k, v in d.items()))
    print(f"\nreport: {report.resolve()}")
    return 0 if all(s.status == "pass" for s in done) else 1
