"""Fault-space coverage: which (fault kind, invariant, situation) cells a set of runs reached.

Why this module exists: a search that finds nothing says little unless we know what it
reached. For every run :func:`of_run` records three sets from the history and results:

* the fault kinds that fired (``fault.start`` events; ``none`` for a run without faults),
* the invariants that were *exercised* (checked something: ``always`` and ``eventually``),
* the situations reached (:data:`SITUATIONS`, each a predicate over the history, plus every
  "sometimes" check that passed).

A cell ``(fault, invariant, situation)`` is hit by a run that has all three. :func:`aggregate`
counts runs per cell over any set of runs; :func:`write` puts the matrix in ``coverage.csv``
(long form: one row per hit cell), a heatmap (``coverage.png``: fault kind x situation, runs
per cell) and ``coverage.json``; the cells' count per commit (``stamp.git_commit``) is
appended to ``coverage-trend.csv`` one folder up. :data:`MINIMUM` is the declared minimum: the
cells the small exploration tier must reach (``make test`` fails on a cell never reached:
tests/sim/test_explore.py); :func:`gate` lists the missing ones.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from ..impl.core import textdata

NO_FAULT = "none"


def _regions(data: dict) -> set[str]:
    return {r["id"] for r in data["regions"]}


def _windows(ev: list[dict], kind: str) -> list[tuple[int, int]]:
    """(start, end) times (us) of each ``kind`` fault; an unhealed one ends at the run's end."""
    starts = [e for e in ev if e["type"] == "fault.start" and e.get("kind") == kind]
    ends = [e["t_us"] for e in ev if e["type"] == "fault.end" and e.get("kind") == kind]
    out = []
    for s in starts:
        end = next((t for t in ends if t >= s["t_us"]), 1 << 62)
        out.append((s["t_us"], end))
    return out


def _inside(t: int, windows: list[tuple[int, int]]) -> bool:
    return any(a <= t <= b for a, b in windows)


def _region_of(node) -> str:
    """The region a topology node belongs to (``r1/objstore`` is r1's object store)."""
    return str(node).split("/", 1)[0]


def _partition_cut_replication(ev, data):
    regions = _regions(data)
    return any(e["type"] == "net.drop" and _region_of(e.get("src")) in regions and _region_of(e.get("dst")) in regions
               and _region_of(e.get("src")) != _region_of(e.get("dst")) for e in ev)


def _partition_cut_clients(ev, data):
    regions = _regions(data)
    return any(e["type"] == "net.drop" and (_region_of(e.get("src")) in regions) != (_region_of(e.get("dst")) in regions)
               for e in ev)


def _crash_lost_unsynced(ev, data):
    """A crash while requests were received but not yet durable in the WAL."""
    crashes = [e["t_us"] for e in ev if e["type"] == "fault.start" and e.get("kind") == "crash"]
    if not crashes:
        return False
    durable = {(e["region"], e["d"]) for e in ev if e["type"] == "srv.wal_durable"}
    recv = [(e["t_us"], e["region"], e["d"]) for e in ev if e["type"] == "srv.recv"]
    return any((r, d) not in durable and any(t <= c for c in crashes) for t, r, d in recv)


def _conflict_under_partition(ev, data):
    windows = _windows(ev, "partition")
    if not windows:
        return False
    return any(e["type"] == "final.auth" and e.get("conflict") for e in ev) or any(
        e["type"] == "client.recv" and e.get("status") == 409 and _inside(e["t_us"], windows) for e in ev)


def _breaker_open(ev, data):
    """A request durable in the WAL answered 503 without a store call: the breaker refused it
    (``srv.breaker_refused``: a batch's store call the open breaker refused)."""
    refused = {(e["region"], d) for e in ev if e["type"] == "srv.breaker_refused" for d in e["ds"]}
    durable = {(e["region"], e["d"]) for e in ev if e["type"] == "srv.wal_durable"}
    return any(e["type"] == "srv.respond" and e.get("status") == 503 and (e["region"], e["d"]) in durable
               and (e["region"], e["d"]) in refused for e in ev if "d" in e)


def _quarantine(ev, data):
    return any(e["type"] in ("crr.reject", "srv.wal_corrupt") for e in ev)


def _failover_during_migration(ev, data):
    """A crash, partition or store outage that started while a shard migration ran."""
    windows = _windows(ev, "migrate")
    return bool(windows) and any(e["type"] == "fault.start" and e.get("kind") in ("crash", "partition", "store_down",
                                                                                    "shard_down", "pause")
                                 and _inside(e["t_us"], windows) for e in ev)


def _rotation_overlap_outage(ev, data):
    """A store outage or crash inside a key rotation's overlap window."""
    overlap = float(data["workload"].get("rotation_overlap_s", 5.0)) * 1e6
    rotations = [(e["t_us"], e["t_us"] + overlap) for e in ev if e["type"] == "fault.start"
                 and e.get("kind") == "rotate_key"]
    return bool(rotations) and any(e["type"] == "fault.start" and e.get("kind") in ("store_down", "crash")
                                   and _inside(e["t_us"], rotations) for e in ev)


def _clock_back_outage(ev, data):
    """A store outage while some region's clock read behind a time it already read."""
    back = []
    for s in (e for e in ev if e["type"] == "fault.start" and e.get("kind") == "clock_skew"):
        end = next((e["t_us"] for e in ev if e["type"] == "fault.end" and e.get("kind") == "clock_skew"
                    and e["t_us"] >= s["t_us"] and e.get("target") == s.get("target")), 1 << 62)
        back.append((end, end + 60_000_000) if float(s.get("skew_s", 0) or 0) > 0 else (s["t_us"], end))
    return bool(back) and any(e["type"] == "fault.start" and e.get("kind") == "store_down"
                              and _inside(e["t_us"], back) for e in ev)


def _status(code: int) -> Callable:
    return lambda ev, data: any(e["type"] == "client.recv" and e.get("status") == code for e in ev)


SITUATIONS: dict[str, tuple[Callable[[list, dict], bool], str]] = {
    "partition-cut-replication": (_partition_cut_replication, "a partition dropped region-to-region traffic"),
    "partition-cut-clients": (_partition_cut_clients, "a partition dropped client-region traffic"),
    "crash-lost-unsynced": (_crash_lost_unsynced, "a crash with received requests not yet durable"),
    "conflict-under-partition": (_conflict_under_partition, "a conflict (409 or cross-region) while partitioned"),
    "breaker-open": (_breaker_open, "the dedup breaker refused a durable request (503, no store call)"),
    "quarantine": (_quarantine, "a shipped segment or the WAL was quarantined as corrupt"),
    "failover-during-migration": (_failover_during_migration, "a crash/partition/outage during a shard migration"),
    "rotation-overlap-outage": (_rotation_overlap_outage, "a store outage or crash inside a key rotation overlap"),
    "clock-back-outage": (_clock_back_outage, "a store outage while a region's clock stepped back"),
    "wal-replayed": (lambda ev, d: any(e["type"] == "srv.replay" for e in ev), "a restart replayed WAL records"),
    "dup-replayed": (lambda ev, d: any(e["type"] == "client.recv" and e.get("replay") for e in ev),
                     "a duplicate got the stored answer"),
    "shed-429": (_status(429), "a request was shed (429)"),
    "unavailable-503": (_status(503), "a request was answered 503"),
    "conflict-409": (_status(409), "a same-region conflict was answered 409"),
    "segment-applied": (lambda ev, d: any(e["type"] == "crr.applied" for e in ev), "a peer's segment was applied"),
}

# the declared minimum: cells (fault kind, invariant, situation) the small tier must reach; "*": any
MINIMUM: tuple[tuple[str, str, str], ...] = (
    ("partition", "*", "partition-cut-replication"),
    ("partition", "*", "partition-cut-clients"),
    ("crash", "INV-IDEMPOTENT-REPLAY", "wal-replayed"),
    ("crash", "INV-NO-ACKED-LOSS", "crash-lost-unsynced"),
    ("store_down", "INV-NO-ACKED-LOSS", "unavailable-503"),
    ("store_down", "*", "breaker-open"),
    ("rotate_key", "*", "rotation-overlap-outage"),
    ("clock_skew", "*", "clock-back-outage"),
    ("migrate", "*", "failover-during-migration"),
    ("bitflip_shipped", "*", "quarantine"),
    ("*", "INV-FWW", "dup-replayed"),
    ("*", "INV-CONVERGENCE", "segment-applied"),
)


def of_run(events: list[dict], results: dict, data: dict) -> dict:
    """One run's coverage record: fault kinds fired, invariants exercised, situations reached."""
    ev = events if isinstance(events, list) else list(events)
    kinds = sorted({e["kind"] for e in ev if e["type"] == "fault.start" and "kind" in e}) or [NO_FAULT]
    invariants = sorted(c["id"] for c in results.get("invariants", [])
                        if c.get("kind") in ("always", "eventually") and c.get("exercised", c.get("checked", 0) > 0))
    reached = {name for name, (pred, _doc) in SITUATIONS.items() if pred(ev, data)}
    reached |= {c["id"] for c in results.get("invariants", []) if c.get("kind") == "sometimes" and c.get("ok")
                and c.get("checked", 0) > 0}
    return {"faults": kinds, "invariants": invariants, "situations": sorted(reached)}


def aggregate(records: Iterable[dict]) -> dict:
    """Runs per cell ``(fault, invariant, situation)`` over ``records`` (from :func:`of_run`)."""
    cells: Counter = Counter()
    runs = 0
    for r in records:
        runs += 1
        for f in r["faults"]:
            for i in r["invariants"] or ["-"]:
                for s in r["situations"] or ["-"]:
                    cells[(f, i, s)] += 1
    return {"runs": runs, "cells": cells}


def hit(cov: dict, cell: tuple[str, str, str]) -> int:
    """Runs that reached ``cell`` (``*`` matches anything)."""
    return max((n for c, n in cov["cells"].items()
                if all(w == "*" or w == v for w, v in zip(cell, c, strict=True))), default=0)


def gate(cov: dict, minimum: Iterable[tuple[str, str, str]] = MINIMUM) -> list[tuple[str, str, str]]:
    """The declared cells no run reached (empty: the gate passes)."""
    return [cell for cell in minimum if hit(cov, cell) == 0]


def matrix(cov: dict) -> tuple[list[str], list[str], list[list[int]]]:
    """Fault kind x situation: the most runs of any invariant in each (rows, columns, counts)."""
    faults = sorted({c[0] for c in cov["cells"]})
    situations = sorted({c[2] for c in cov["cells"]})
    best: dict[tuple[str, str], int] = {}
    for (f, _i, s), n in cov["cells"].items():
        best[(f, s)] = max(best.get((f, s), 0), n)
    return faults, situations, [[best.get((f, s), 0) for s in situations] for f in faults]


def heatmap(cov: dict, path: Path, title: str = "coverage") -> None:
    from matplotlib.figure import Figure

    rows, cols, counts = matrix(cov)
    fig = Figure(figsize=(max(6, 0.45 * len(cols) + 3), max(3, 0.35 * len(rows) + 2)))
    ax = fig.add_subplot()
    if rows and cols:
        im = ax.imshow(counts, aspect="auto", cmap="viridis")
        fig.colorbar(im, ax=ax, label="runs")
        ax.set_xticks(range(len(cols)), cols, rotation=70, ha="right", fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        for y, row in enumerate(counts):
            for x, n in enumerate(row):
                if n == 0:
                    ax.text(x, y, "x", ha="center", va="center", color="red", fontsize=6)
    ax.set_title(f"{title}: runs per (fault kind, situation), {cov['runs']} runs; x: never reached")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def write(cov: dict, out: Path, commit_root: Path | None = None, minimum=MINIMUM) -> dict:
    """``coverage.csv``, ``coverage.png``, ``coverage.json`` in ``out``; one row appended to
    ``commit_root/coverage-trend.csv``. Returns the summary that ``coverage.json`` holds."""
    from .artifacts import code_version

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "coverage.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["fault", "invariant", "situation", "runs"])
        for (fault, inv, sit), n in sorted(cov["cells"].items()):
            w.writerow([fault, inv, sit, n])
    heatmap(cov, out / "coverage.png")
    missing = gate(cov, minimum)
    version = code_version()
    summary = {"runs": cov["runs"], "cells_hit": len(cov["cells"]), "minimum": len(tuple(minimum)),
               "minimum_missing": [list(c) for c in missing], "git_commit": version.get("git_commit")}
    (out / "coverage.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if commit_root is not None:
        trend = Path(commit_root) / "coverage-trend.csv"
        new = not trend.exists()
        with open(trend, "a", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["git_commit", "folder", "runs", "cells_hit", "minimum_missing"])
            w.writerow([summary["git_commit"], out.name, cov["runs"], len(cov["cells"]), len(missing)])
    return summary


def _explored(path: Path) -> list[dict]:
    """The coverage records of an exploration's ``runs.jsonl`` (a line that is not a run record
    with a ``coverage`` table, or bytes that are not UTF-8: ValueError naming the line)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for number, record in textdata.json_lines(f, str(path)):
            if not isinstance(record, dict) or not isinstance(record.get("coverage"), dict):
                raise ValueError(f"{path}:{number}: not a run record with a coverage table")
            out.append(record["coverage"])
    return out


def records_from(paths: Iterable[Path]) -> list[dict]:
    """Coverage records of run folders (``results.json`` + history) and exploration folders
    (``runs.jsonl``), in the order given."""
    from .history import find_history, read_history
    from .shrink import read_run_dir

    out = []
    for p in map(Path, paths):
        if (p / "runs.jsonl").is_file():
            out.extend(_explored(p / "runs.jsonl"))
        elif (p / "results.json").is_file():
            run = read_run_dir(p)
            out.append(of_run(list(read_history(find_history(p))), run.results, run.data))
        else:
            raise FileNotFoundError(f"{p}: neither a run folder (results.json) nor an exploration folder (runs.jsonl)")
    return out
