"""``flk bench sim --wall-share``: py-spy's samples of a run by whose code ran (flk.impl.lab.bench.wallshare).

The attribution is checked on its own (any stack, any roots), then on a real py-spy attached
to this process: a busy loop in a module of one root must be counted to that root, a callee
in the standard library to its caller. Without py-spy the figures are None with the reason --
under CI=true py-spy (the dev extra) must be there.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.lab.bench import wallshare as ws

IN_CI = os.environ.get("CI", "").lower() == "true"
NAME = st.text("abcdefgh_", min_size=1, max_size=6)
DIRS = st.lists(NAME, min_size=1, max_size=3)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.dictionaries(DIRS.map(tuple), NAME, max_size=5), DIRS, NAME)
def test_owner_is_the_longest_root_that_holds_the_file(roots, where, leaf):
    base = os.path.abspath("/tmp/wallshare-roots")
    paths = {os.path.join(base, *parts): owner for parts, owner in roots.items()}
    owners = ws.Owners(paths)
    filename = os.path.join(base, *where, leaf + ".py")
    holding = [p for p in paths if filename.startswith(p.rstrip(os.sep) + os.sep)]
    expected = paths[max(holding, key=len)] if holding else None
    assert owners.of(filename) == expected
    assert owners.of(filename) == expected  # cached: the same answer
    assert owners.of("<string>") is None and owners.of("<frozen_record Item>") is None


FRAME = st.tuples(st.sampled_from(["f", "World.run", "Batch.verify", "<listcomp>", "a.b.c"]),
                  st.sampled_from(["/x/impl/core.py", "/x/sim/region.py", "/usr/lib/python3/random.py", "<string>"]),
                  st.integers(1, 9999))


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.lists(FRAME, min_size=1, max_size=8), st.integers(1, 500)), max_size=10))
def test_raw_lines_read_back_as_written(stacks):
    text = "\n".join(";".join(f"{func} ({path}:{line})" for func, path, line in frames) + f" {n}"
                     for frames, n in stacks)
    got = ws.parse_raw(text + "\nSampling process 100 times a second\n\n")
    assert got == [([(func, path) for func, path, _ in frames], n) for frames, n in stacks]


def test_samples_count_to_the_innermost_owned_frame_from_the_selected_call():
    owners = ws.Owners({"/x/impl": "shipping", "/x/sim": "simulator"})
    raw = "\n".join([
        "main (/x/lab/bench.py:1);World.run (/x/sim/world.py:2);verify (/x/impl/core.py:3) 7",
        # the standard library counts to its caller; generated code too
        "main (/x/lab/bench.py:1);World.run (/x/sim/world.py:2);choose (/x/sim/workload.py:4);"
        "random (/usr/lib/python3.11/random.py:5) 3",
        "main (/x/lab/bench.py:1);World.run (/x/sim/world.py:2);admit (/x/impl/core.py:6);__eq__ (<string>:2) 2",
        # outside the selected call: not counted (set-up, the bench's own loop)
        "main (/x/lab/bench.py:1);load (/x/sim/scenario.py:9) 50",
        # inside it but in no root at all
        "main (/x/lab/bench.py:1);World.run (/usr/lib/python3.11/threading.py:2) 1",
    ])
    by_file = ws.attribute(ws.parse_raw(raw), owners, "World.run")
    assert ws.by_owner(by_file) == {"shipping": 9, "simulator": 3, ws.OTHER: 1}
    assert by_file == {("shipping", "core.py"): 9, ("simulator", "workload.py"): 3, (ws.OTHER, ""): 1}


def _module(tmp_path, pkg: str, body: str):
    d = tmp_path / pkg
    d.mkdir()
    path = d / "busy.py"
    path.write_text(textwrap.dedent(body))
    spec = importlib.util.spec_from_file_location(f"{pkg}_busy", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _measured(hot, cold) -> None:
    hot.spin(1.2)
    cold.spin(0.4)


def _need_py_spy() -> None:
    if ws.py_spy() is None:
        if IN_CI:
            pytest.fail("py-spy missing: it is in the dev extra (make setup)")
        pytest.skip("py-spy not installed (pip install 'flk-lab[profile]')")


def test_py_spy_attached_to_this_process_counts_the_loop_to_its_owner(tmp_path):
    _need_py_spy()
    hot = _module(tmp_path, "hot", """
        import json, time
        def spin(seconds):
            end = time.perf_counter() + seconds
            n = 0
            while time.perf_counter() < end:
                n += len(json.dumps({"k": n}))  # the standard library: counted to this loop
            return n
    """)
    cold = _module(tmp_path, "cold", """
        import time
        def spin(seconds):
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass
    """)

    owners = ws.Owners({str(tmp_path / "hot"): "hot", str(tmp_path / "cold"): "cold"})
    with ws.WallShare(owners, select="_measured") as share:
        _measured(hot, cold)
    assert share.missing is None, share.missing
    assert share.samples >= 50, share.counts  # 1.6 s at 100 a second
    shares = share.shares(("hot", "cold"))
    assert shares["hot"] > 0.6 and shares["cold"] > 0.1, shares  # 3:1 by time
    assert abs(sum(shares.values()) - 1.0) < 1e-9


def test_without_py_spy_the_figures_say_why(monkeypatch):
    from flk.impl.lab.bench import sim as bench

    monkeypatch.setattr(ws, "py_spy", lambda: None)
    out = bench.run(repeat=1, n=200, wall_share=True)
    assert out["wall_share"] is None and out["speedup_bound_if_simulator_free"] is None
    assert out["wall_share_top_files"] is None
    assert "py-spy is not installed" in out["wall_share_missing"]
    assert out["wall_share_same_history"] is True  # the extra run still ran the same work


def test_a_py_spy_that_cannot_run_or_attach_is_a_reason_not_a_traceback(tmp_path, monkeypatch):
    owners = ws.Owners({str(tmp_path): "here"})
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where WallShare keeps py-spy's files
    not_exe = tmp_path / "py-spy"
    not_exe.write_text("not a program")  # not executable: the start fails
    monkeypatch.setattr(ws, "py_spy", lambda: str(not_exe))
    with ws.WallShare(owners, select="_measured") as share:
        pass
    assert share.samples == 0 and share.shares() == {}
    assert share.missing.startswith("py-spy could not start"), share.missing
    refusing = tmp_path / "refusing"
    refusing.write_text("#!/bin/sh\necho 'Error: Permission denied (os error 1)' >&2\nexit 1\n")
    refusing.chmod(0o755)
    monkeypatch.setattr(ws, "py_spy", lambda: str(refusing))
    with ws.WallShare(owners, select="_measured") as share:
        pass
    assert share.missing == "py-spy took no sample of the run: Error: Permission denied (os error 1)", share.missing
    assert not list(scratch.iterdir())  # py-spy's files are gone either way


def test_bench_sim_wall_share_splits_the_run_between_shipping_code_and_simulator():
    _need_py_spy()
    from flk.impl.lab.bench import sim as bench

    out = bench.run(repeat=1, n=6000, wall_share=True)
    assert out["wall_share_missing"] is None, out["wall_share_missing"]
    assert out["wall_share_same_history"] is True
    share = out["wall_share"]
    assert set(share) == {"shipping", "simulator", "simpy", "lab", "other"}
    assert abs(sum(share.values()) - 1.0) < 0.01
    # both halves do real work in every run: the verify core, the WAL and replication ship;
    # the workload, the network and the stores are the simulator's
    assert share["shipping"] > 0.15 and share["simulator"] > 0.15, share
    assert out["speedup_bound_if_simulator_free"] == pytest.approx(1 / share["shipping"], rel=0.01)
    top = out["wall_share_top_files"]  # [name, share] pairs, the largest first (JSON keeps the order)
    shares = [k for _, k in top]
    assert 0 < len(top) <= 12 and shares == sorted(shares, reverse=True)
    assert any(name.startswith("shipping:verifier/") for name, _ in top), top  # the verify core ships
    assert sum(shares) <= 1.0 + 1e-9


def test_wall_share_is_a_sim_only_flag(capsys):
    from flk.impl.lab import cli

    rc = cli.main(["bench", "canon", "--wall-share", "--quick"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "--wall-share applies to the sim benchmark only" in err and "Traceback" not in err
