"""``flk dedup-migrate rollback`` from cut_over takes the operator's path: cut_over ->
verified (the old ring decides again, both rings mirrored) -> settle -> rolled_back, so a
server that re-reads the state file never jumps from deciding on the new ring to a phase
that no longer mirrors to it (INV-OP-ONE-DECIDER); the direct step is refused."""

from __future__ import annotations

import json
import threading
import time

import pytest

from flk.impl.dedup.migrate import (
    DualWriteStore,
    MigrationError,
    load_state,
    rollback_path,
    transition,
)
from flk.impl.lab.cli import main

OLD = ["s0", "s1", "s2"]
NEW = ["s0", "s1", "s2", "s3"]


def _cli(capsys, *argv):
    capsys.readouterr()
    try:
        rc = main(["dedup-migrate", *argv])
    except SystemExit as exc:  # an option's argparse type refused it: a usage error, exit 2
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if out.strip() else None), err


def _to_cut_over(tmp_path, capsys) -> str:
    state = str(tmp_path / "mig.json")
    urls = lambda names: ",".join(f"{n}=sqlite:///{tmp_path}/{n}.db" for n in names)  # noqa: E731
    assert _cli(capsys, "plan", "--state", state, "--old", urls(OLD), "--new", urls(NEW))[0] == 0
    for step in ("dual-write", "copy", "verify", "cutover"):
        rc, doc, err = _cli(capsys, step, "--state", state)
        assert rc == 0, (step, doc, err)
    assert load_state(state)["phase"] == "cut_over"
    return state


def test_rollback_path_goes_through_verified_and_the_direct_step_is_refused(tmp_path, capsys):
    assert rollback_path("cut_over") == ["verified", "rolled_back"]
    assert rollback_path("copied") == ["rolled_back"]
    with pytest.raises(MigrationError, match="cleaned"):
        rollback_path("cleaned")
    state = load_state(_to_cut_over(tmp_path, capsys))
    with pytest.raises(MigrationError, match="through verified"):
        transition(state, "rolled_back", 1.0)


def test_manual_rollback_from_cut_over_settles_in_verified_while_servers_follow(tmp_path, capsys):
    state = _to_cut_over(tmp_path, capsys)
    servers = [DualWriteStore.from_state(state, time.time(), refresh_s=0.05) for _ in range(2)]
    seen: list[list[str]] = [[], []]
    stop = threading.Event()

    def follow(i: int) -> None:
        while not stop.is_set():
            servers[i].refresh(time.time())
            if not seen[i] or seen[i][-1] != servers[i].phase:
                seen[i].append(servers[i].phase)
            time.sleep(0.01)

    threads = [threading.Thread(target=follow, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    try:
        rc, doc, err = _cli(capsys, "rollback", "--state", state, "--settle-s", "0.5")
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert rc == 0, err
    assert doc["from"] == "cut_over" and doc["via"] == ["verified"] and doc["phase"] == "rolled_back"
    hist = load_state(state)["history"]
    assert [h["phase"] for h in hist[-3:]] == ["cut_over", "verified", "rolled_back"]
    assert hist[-1]["at"] - hist[-2]["at"] >= 0.5
    for s in seen:  # every server passed through verified: it never went cut_over -> rolled_back
        assert s == ["cut_over", "verified", "rolled_back"], seen
    for srv in servers:
        srv.close()


def test_manual_rollback_dry_run_changes_nothing(tmp_path, capsys):
    state = _to_cut_over(tmp_path, capsys)
    rc, doc, _ = _cli(capsys, "rollback", "--state", state, "--dry-run")
    assert rc == 0 and doc["dry_run"] and doc["via"] == ["verified"] and doc["phase"] == "rolled_back"
    assert load_state(state)["phase"] == "cut_over"
    rc, _, err = _cli(capsys, "rollback", "--state", state, "--settle-s", "-1")
    assert rc == 2 and "--settle-s" in err
