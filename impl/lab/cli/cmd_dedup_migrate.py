"""``flk dedup-migrate``: zero-downtime dedup shard migration (SPEC 13.4).

    flk dedup-migrate plan --state S --old NAME=URL... --new NAME=URL... [--vnodes 150] [--probes 4] [--dry-run]
    flk dedup-migrate dual-write --state S
    flk dedup-migrate copy --state S [--batch-size 500] [--qps 0] [--max-batches N] [--restart] [--dry-run]
    flk dedup-migrate verify --state S [--batch-size 500] [--qps 0]
    flk dedup-migrate cutover --state S
    flk dedup-migrate catchup --state S [--batch-size 500] [--qps 0] [--settle-s 2.0]
    flk dedup-migrate cleanup --state S
    flk dedup-migrate prune --state S [--batch-size 500] [--qps 0] [--settle-s 2.0] [--restart]
    flk dedup-migrate status --state S
    flk dedup-migrate rollback --state S [--settle-s 2.0]

Every step checkpoints into the state file (atomic rewrite) after each batch,
so an interrupted ``copy``/``verify`` resumes where it stopped. ``--qps`` caps
the entries read per second (0 = unthrottled). Output is one JSON object on
stdout. Exit 0 done, 1 verify found missing/different keys or copy conflicts,
2 bad input or a refused step (message on stderr). ``rollback`` from cut_over
goes through verified (the old ring decides again, both rings still mirrored),
waits ``--settle-s`` for every server to re-read the state file, and only then
stops mirroring (rolled_back), as the operator does. ``cleanup`` is refused until
``catchup`` (phase cut_over, begun ``--settle-s`` after the cutover) has copied every
old-ring key the new ring lacks and found none with a different outcome (SPEC 13.4).
``prune`` (phase cleaned, begun ``--settle-s`` after the cleanup) deletes the copies the
migration left in shards that no longer own their keys (each once its owner holds the same
outcome), so each shard's count is its own keys again; exit 1 when a copy's owner lacks the
key or holds another outcome (such copies are kept).
"""

from __future__ import annotations

import json
import time

from ...core import textdata
from . import UsageError, finite_number, seconds


def _shards(items: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        for part in item.split(","):
            name, sep, url = part.partition("=")
            if not sep or not name or not url:
                raise UsageError(f"{flag} takes NAME=URL (e.g. s0=sqlite:///s0.db), got {part!r}")
            if name in out:
                raise UsageError(f"{flag}: shard {name!r} given twice")
            if not url.startswith(("sqlite://", "redis://", "rediss://", "unix://", "postgresql://", "postgres://")):
                raise UsageError(f"{flag} {name}: a shard URL must be sqlite:///..., redis://... or postgresql://... "
                                 "(shared by every process; memory stores are per process)")
            out[name] = url
    if not out:
        raise UsageError(f"{flag} NAME=URL is required (one per shard)")
    return out


def configure(p) -> None:
    sub = p.add_subparsers(dest="step", metavar="STEP", required=True)
    for name, help_text in (("plan", "write a new migration state: old ring -> new ring"),
                            ("dual-write", "start mirroring every write to the new ring"),
                            ("copy", "copy the keys that change owner into the new ring (resumable)"),
                            ("verify", "check every old-ring key is in the new ring with the same outcome"),
                            ("cutover", "make the new ring decide and serve (old ring mirrored)"),
                            ("catchup", "copy old-ring keys the new ring lacks (after cutover, before cleanup)"),
                            ("cleanup", "stop writing the old ring (after a clean catchup)"),
                            ("prune", "delete the copies moved keys left in their old shards (after cleanup)"),
                            ("status", "print the migration state"),
                            ("rollback", "go back to the old ring (nothing is lost)")):
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.add_argument("--state", required=True, help="migration state file (JSON)")
        if name == "plan":
            sp.add_argument("--old", action="append", help="old ring shard NAME=URL (repeat or comma-separate)")
            sp.add_argument("--new", action="append", help="new ring shard NAME=URL (repeat or comma-separate)")
            sp.add_argument("--vnodes", type=int, default=150)
            sp.add_argument("--probes", type=int, default=4)
            sp.add_argument("--force", action="store_true", help="overwrite an existing state file")
        if name in ("copy", "verify", "catchup", "prune"):
            sp.add_argument("--batch-size", type=int, default=500)
            sp.add_argument("--qps", type=finite_number(0), default=0.0, help="max entries per second (0: no limit)")
            sp.add_argument("--max-batches", type=int, default=0, help="stop after N batches (0: until done)")
        if name == "verify":
            sp.add_argument("--settle-s", type=seconds(0), default=1.0,
                            help="wait this long before re-checking keys missing from the new ring (writes in flight)")
        if name in ("catchup", "prune"):
            sp.add_argument("--settle-s", type=seconds(0), default=None,
                            help=f"time after the {'cutover' if name == 'catchup' else 'cleanup'} before the scan "
                                 "starts, s (default the servers' state-file refresh margin, 2.0)")
        if name == "rollback":
            sp.add_argument("--settle-s", type=seconds(0), default=None,
                            help="from cut_over: time in verified before rolled_back, s (default "
                                 "the servers' state-file refresh margin, 2.0)")
        if name == "copy":
            sp.add_argument("--restart", action="store_true", help="copy again from the start")
        if name == "prune":
            sp.add_argument("--restart", action="store_true",
                            help="walk every shard again from the start (after a prune that kept copies)")
        if name in ("plan", "copy", "dual-write", "cutover", "cleanup", "rollback"):
            sp.add_argument("--dry-run", action="store_true", help="show what would happen; change nothing")


def _emit(doc: dict) -> None:
    print(json.dumps(doc, sort_keys=True))


def run(args) -> int:
    from ...dedup import StoreUnavailable
    from ...dedup import migrate as m

    try:
        return _run(args, m)
    except m.MigrationError as exc:
        raise UsageError(str(exc)) from None
    except StoreUnavailable as exc:
        raise UsageError(f"a shard is unavailable: {exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        if exc.filename != args.state:
            raise
        raise UsageError(f"cannot write migration state {args.state}: {exc.strerror or type(exc).__name__}") from None


def _run(args, m) -> int:
    import os

    now = time.time()
    step = args.step
    if getattr(args, "batch_size", 1) < 1:
        raise UsageError("--batch-size must be >= 1")
    if step == "plan":
        if os.path.exists(args.state) and not args.force:
            raise UsageError(f"{args.state} exists (an ongoing migration?); use --force to overwrite")
        old = m.RingSpec(_shards(args.old, "--old"), args.vnodes, args.probes)
        new = m.RingSpec(_shards(args.new, "--new"), args.vnodes, args.probes)
        state = m.new_state(old, new, now)
        summary = m.plan_summary(state)
        if not args.dry_run:
            m.save_state(args.state, state)
        _emit({"step": "plan", "dry_run": args.dry_run, "phase": state["phase"], **summary})
        return 0
    state = m.load_state(args.state)
    if step == "status":
        _emit({"step": "status", **{k: state[k] for k in ("phase", "old", "new", "copy", "verify", "catchup",
                                                          "prune", "history")}})
        return 0
    if step == "rollback":
        return _rollback(args, m, state, now)
    simple = {"dual-write": "dual_write", "cutover": "cut_over", "cleanup": "cleaned"}
    if step in simple:
        before = state["phase"]
        m.transition(state, simple[step], now)
        if not args.dry_run:
            m.save_state(args.state, state)
        _emit({"step": step, "dry_run": args.dry_run, "from": before, "phase": state["phase"]})
        return 0
    old, new = m.open_rings(state)
    try:
        if step == "copy":
            return _copy(args, m, state, old, new)
        if step == "catchup":
            return _catchup(args, m, state, old, new)
        if step == "prune":
            return _prune(args, m, state, new)
        return _verify(args, m, state, old, new)
    finally:
        seen: set[int] = set()
        for ring in (old, new):
            for s in ring.shards.values():
                if id(s) not in seen:
                    seen.add(id(s))
                    s.close()


def _rollback(args, m, state, now: float) -> int:
    """cut_over -> verified, settle, -> rolled_back (one server never decides on the new ring
    while another has stopped mirroring to it); from an earlier phase straight to rolled_back."""
    settle = m.ROLLBACK_SETTLE_S if args.settle_s is None else args.settle_s
    before = state["phase"]
    path = m.rollback_path(before)
    for i, to in enumerate(path):
        if i and not args.dry_run:
            time.sleep(settle)
            now = time.time()
        m.transition(state, to, now)
        if not args.dry_run:
            m.save_state(args.state, state)
    _emit({"step": "rollback", "dry_run": args.dry_run, "from": before, "via": path[:-1], "phase": state["phase"],
           "settle_s": settle if len(path) > 1 else 0.0})
    return 0


def _throttle(qps: float, done: int, t0: float) -> None:
    if qps > 0:
        ahead = done / qps - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)


def _batches(args, work: dict, phase: str, totals: dict, step, save) -> float:
    """Run ``step`` until ``work[phase]["done"]`` (or ``--max-batches``), saving the state
    after each batch (``save`` None: a dry run), adding each batch's counts to ``totals`` and
    holding ``--qps`` over the keys scanned. A step that answers ``settling`` is waited out.
    Returns the monotonic start time."""
    batches, t0 = 0, time.monotonic()
    while not work[phase]["done"]:
        out = step()
        if out.get("settling"):
            time.sleep(out["wait_s"])
            continue
        if save is not None:
            save()
        for k in totals:
            totals[k] += out[k]
        batches += 1
        _throttle(args.qps, totals["scanned"], t0)
        if args.max_batches and batches >= args.max_batches:
            break
    return t0


def _copy(args, m, state, old, new) -> int:
    if args.restart:
        state["copy"] = m.new_state(m.RingSpec.from_json(state["old"]), m.RingSpec.from_json(state["new"]),
                                    0.0)["copy"]
    totals = {"scanned": 0, "copied": 0, "present": 0, "conflicts": 0, "moving": 0}
    work = textdata.json_loads(json.dumps(state)) if args.dry_run else state  # a dry run walks a scratch copy
    t0 = _batches(args, work, "copy", totals,
                  lambda: m.copy_step(work, old, new, time.time(), args.batch_size, dry_run=args.dry_run),
                  None if args.dry_run else (lambda: m.save_state(args.state, work)))
    done = work["copy"]["done"]
    if done and not args.dry_run and state["phase"] == "dual_write":
        m.transition(state, "copied", time.time())
        m.reset_verify(state)
        m.save_state(args.state, state)
    _emit({"step": "copy", "dry_run": args.dry_run, "done": done, "phase": state["phase"], "batch": totals,
           "total": work["copy"], "elapsed_s": round(time.monotonic() - t0, 3)})
    return 1 if work["copy"]["conflicts"] else 0


def _catchup(args, m, state, old, new) -> int:
    """Scan the old ring after the cutover, copying what the new ring lacks (waits for the settle
    time first); exit 1 when an entry differs between the rings (cleanup stays refused)."""
    settle = m.CATCHUP_SETTLE_S if args.settle_s is None else args.settle_s
    totals = {"scanned": 0, "copied": 0, "present": 0, "different": 0}
    t0 = _batches(args, state, "catchup", totals,
                  lambda: m.catchup_step(state, old, new, time.time(), args.batch_size, settle_s=settle),
                  lambda: m.save_state(args.state, state))
    c = state["catchup"]
    _emit({"step": "catchup", "done": c["done"], "clean": c["done"] and not c["different"], "phase": state["phase"],
           "batch": totals, "catchup": c, "elapsed_s": round(time.monotonic() - t0, 3)})
    return 1 if c["different"] else 0


def _prune(args, m, state, new) -> int:
    """Delete the moved keys' old copies (phase cleaned; waits for the settle time first); exit 1
    when a copy's owner lacks the key or holds another outcome (kept, and counted)."""
    settle = m.CATCHUP_SETTLE_S if args.settle_s is None else args.settle_s
    if args.restart and state["phase"] == "cleaned":
        state["prune"] = m.new_prune(state["prune"]["after"])
    totals = {"scanned": 0, "deleted": 0, "missing": 0, "different": 0}
    t0 = _batches(args, state, "prune", totals,
                  lambda: m.prune_step(state, new, time.time(), args.batch_size, settle_s=settle),
                  lambda: m.save_state(args.state, state))
    pr = state["prune"]
    kept = bool(pr["missing"] or pr["different"])
    _emit({"step": "prune", "done": pr["done"], "clean": pr["done"] and not kept, "phase": state["phase"],
           "batch": totals, "prune": pr, "elapsed_s": round(time.monotonic() - t0, 3)})
    return 1 if kept else 0


def _verify(args, m, state, old, new) -> int:
    if state["verify"]["done"]:
        m.reset_verify(state)
    batches, t0 = 0, time.monotonic()
    while not state["verify"]["done"]:
        m.verify_step(state, old, new, time.time(), args.batch_size)
        m.save_state(args.state, state)
        batches += 1
        _throttle(args.qps, state["verify"]["checked"], t0)
        if args.max_batches and batches >= args.max_batches:
            break
    v = state["verify"]
    if v["done"] and v.get("suspects"):
        time.sleep(max(0.0, args.settle_s))
        m.settle_suspects(state, old, new, time.time())
        m.save_state(args.state, state)
    clean = v["done"] and v["missing"] == 0 and v["different"] == 0
    if clean:
        m.transition(state, "verified", time.time())
        m.save_state(args.state, state)
    _emit({"step": "verify", "done": v["done"], "clean": clean, "phase": state["phase"], "verify": v,
           "elapsed_s": round(time.monotonic() - t0, 3)})
    return 0 if clean or not v["done"] else 1
