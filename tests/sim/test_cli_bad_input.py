"""``flk sim`` bad input gets one accurate line and exit 2: the option that gave a bad override
(``--param``, not ``--set``), a latency that is not finite, a causality of a valid run, a
``--at`` before the start, seeds listed twice or empty, an unreachable Dask scheduler; and
``flk sim validate`` gives every file its verdict."""

from __future__ import annotations

import socket

import pytest

from flk.impl.lab import cli
from flk.sim import api
from flk.sim.scenario import ScenarioError, load

TINY = ["scenario.duration_s=1", "scenario.quiescence_s=1", "workload.agents=2", "workload.rate_per_s=20"]


def _cli(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("params", [["nosuch.key=1"], ["workload.agents=2,-1"]])
def test_a_bad_sweep_parameter_is_named_as_the_param_it_came_from(tmp_path, capsys, params):
    argv = ["sim", "sweep", "crr-normal", "--seeds", "1", "--workers", "1", "--quiet", "--out", tmp_path]
    rc, _, err = _cli(capsys, *argv, *(a for p in params for a in ("--param", p)))
    assert rc == 2 and err.count("\n") == 1 and "--param '" in err and "--set" not in err, err
    assert not any(tmp_path.iterdir())  # refused before any run


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_latency_that_is_not_finite_is_called_so(value):
    with pytest.raises(ScenarioError, match="must be a finite number or a distribution table") as err:
        load("crr-normal", [f"network.latency_ms={value}"])
    assert "non-integer" not in str(err.value)
    with pytest.raises(ScenarioError, match="must be a finite number >= 0"):
        load("crr-normal", [f'network.latency_ms={{dist = "uniform", lo = {value}, hi = 2.0}}'])
    assert load("crr-normal", ["network.latency_ms=2.5"]).data["network"]["latency_ms"] == 2.5


def test_causality_of_a_valid_run_says_what_causality_needs(tmp_path, capsys):
    run = api.run("duplicate-storm", seed=1, overrides=TINY, out=tmp_path / "runs", plots=False)
    assert run.valid
    rc, _, err = _cli(capsys, "sim", "causality", run.out_dir, "--out", tmp_path / "c")
    assert rc == 2 and err.count("\n") == 1 and "the run is valid" in err and "causality" in err, err
    assert "shrink" not in err


@pytest.mark.parametrize("at", ["-5", "nan", "inf", "-0.001"])
def test_topology_at_must_be_a_second_of_the_run(tmp_path, capsys, at):
    rc, _, err = _cli(capsys, "sim", "topology", "crr-normal", f"--at={at}", "--out", tmp_path / "t.png")
    assert rc == 2 and err.count("\n") == 1 and "--at" in err, err
    assert not (tmp_path / "t.png").exists()


@pytest.mark.parametrize("seeds,message", [("1,1", "seed 1 given twice"), ("1,,2", "an empty item"),
                                           ("1-3,2", "seed 2 given twice")])
def test_sweep_seeds_listed_twice_or_empty_are_refused(tmp_path, capsys, seeds, message):
    rc, _, err = _cli(capsys, "sim", "sweep", "crr-normal", "--seeds", seeds, "--quiet", "--out", tmp_path)
    assert rc == 2 and err.count("\n") == 1 and message in err, err


def test_an_unreachable_scheduler_is_one_line_naming_it(tmp_path, capsys):
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        rc, _, err = _cli(capsys, "sim", "sweep", "duplicate-storm", "--seeds", "1", "--scheduler", address,
                          "--quiet", "--out", tmp_path)
    assert rc == 2 and err.count("\n") == 1 and f"could not reach the Dask scheduler at {address!r}" in err, err


def test_validate_gives_every_file_its_verdict(tmp_path, capsys):
    files = {"a.toml": "[workload]\nagents = -1\n", "b.toml": "[workload]\nagents = 2\n",
             "c.toml": "[scenario]\nnope = 1\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    rc, out, err = _cli(capsys, "sim", "validate", *(tmp_path / name for name in files))
    assert rc == 2 and "b.toml: valid" in out, (out, err)
    assert "a.toml" in err and "workload.agents" in err and "c.toml" in err and "scenario.nope" in err, err
    assert "2 of 3 files invalid" in err
    rc, out, _ = _cli(capsys, "sim", "validate", tmp_path / "b.toml", "crr-normal")
    assert rc == 0 and out.count(": valid") == 2
