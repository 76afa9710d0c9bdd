"""Strict scenario files: one schema, a generated reference, exit 2 with file + key path +
reason for every broken input (before anything runs), never a traceback."""

from __future__ import annotations

import copy
import math
import pathlib
import random
import subprocess
import sys
import tomllib

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.sim import faults
from flk.sim.rng import sample, sampler
from flk.sim.scenario import ScenarioError, list_scenarios, load, reference_markdown, scenario_dir
from flk.sim.schema import DIST_PARAMS, check_dist

FLK = [sys.executable, "-m", "flk.impl"]
ROOT = pathlib.Path(__file__).resolve().parents[2]
CATALOG = sorted(scenario_dir().glob("*.toml"))


def test_reference_document_is_generated_from_the_schema():
    text = (ROOT / "sim" / "SCENARIOS.md").read_text(encoding="utf-8")
    assert text.strip() == reference_markdown().strip(), "run `flk sim reference > sim/SCENARIOS.md`"
    for kind in faults.FAULT_KINDS:
        assert f"`{kind}`" in text


def test_metrics_reference_is_generated_and_covers_every_series_column():
    from flk.sim import metrics

    text = (ROOT / "sim" / "METRICS.md").read_text(encoding="utf-8")
    assert text == metrics.reference_markdown(), "run `flk sim reference --metrics > sim/METRICS.md`"
    rows = metrics.timeseries([{"t_us": 0, "type": "client.send", "req": 1, "attempt": 1},
                               {"t_us": 5, "type": "client.recv", "req": 1, "attempt": 1, "status": 503}])
    assert set(rows[0]) <= set(metrics.SERIES) and rows[0]["attempt_errors"] == 1


def test_every_fault_kind_is_a_registered_class_with_begin_and_end():
    assert len(faults.REGISTRY) >= 27
    for kind, cls in faults.REGISTRY.items():
        assert kind in cls.kinds and issubclass(cls, faults.Fault), kind
        assert cls.__doc__, kind


def _write(tmp_path, text: str) -> pathlib.Path:
    p = tmp_path / "case.toml"
    p.write_text(text, encoding="utf-8")
    return p


BASE = """[scenario]
name = "x"
duration_s = 2.0
[[regions]]
id = "eu"
[[regions]]
id = "ap"
"""
BROKEN = [
    (BASE + '[[faults]]\nkind = "crash"\nat_s = 1.0\ntargett = "ap"\n', "faults.0.targett", "unknown key"),
    (BASE + '[[faults]]\nkind = "crash"\nat_s = 1.0\ntarget = "mars"\n', "faults.0.target", "unknown region 'mars'"),
    (BASE + "[workload]\nagents = 2.5\n", "workload.agents", "must be an integer"),
    (BASE + '[[faults]]\nkind = "crash"\nat_s = 1.0\nduration_s = -3.0\n', "faults.0.duration_s", ">= 0"),
    (BASE + '[network]\nlatency_ms = { dist = "uniform", lo = -5.0, hi = 2.0 }\n', "network.latency_ms.lo",
     ">= 0"),
    (BASE + '[[faults]]\nkind = "partition"\nat_s = 1.0\na = ["eu"]\nb = ["us"]\n', "faults.0.b",
     "unknown node 'us'"),
    (BASE + '[[slo]]\nmetric = "latency_p97_ms"\nop = "<="\nvalue = 1.0\n', "slo.0.metric", "must be one of"),
    (BASE + "[workload]\nflavour = 1\n", "workload.flavour", "unknown key"),
    (BASE + "[extras]\nx = 1\n", "extras", "unknown section"),
    (BASE + '[scenario.seed]\n', "scenario.seed", "must be an integer"),
    (BASE + '[[slo]]\nmetric = "conflicts"\nop = ">"\nvalue = 0\n', "slo.0.metric", "needs replication"),
    ("[scenario\n", "toml", "not valid TOML"),
    # parameters a draw divides by, or that overflow a double (a traceback from the run before)
    (BASE + '[network]\nlatency_ms = { dist = "exponential", mean = 0.0 }\n', "network.latency_ms.mean", "> 0"),
    (BASE + '[network]\nlatency_ms = { dist = "pareto", scale = 1.0, alpha = 0 }\n', "network.latency_ms.alpha",
     "must be >= 0.1"),
    (BASE + '[region_defaults]\nfsync_ms = { dist = "lognormal", median = 1.0, sigma = 1e9 }\n',
     "region_defaults.fsync_ms.sigma", "must be <= 10"),
    # a typo's zeros: refused before 10^9 agents fill the memory (validate itself built their names)
    (BASE + "[workload]\nagents = 1000000000\n", "workload.agents", "must be <= 100000"),
    (BASE + "[workload]\ntenants = 1000000000\n", "workload.tenants", "must be <= 100000"),
    (BASE + "[workload]\nrate_per_s = 1e308\n", "workload.rate_per_s", "must be <= 1e+06"),
    (BASE + '[workload]\nshape = "burst"\nrate_per_s = 1000.0\nburst_factor = 1e9\n', "workload.burst_factor",
     "(rate_per_s x burst_factor) must be <= 1e+06"),
    (BASE + "[region_defaults]\nshards = 1000000000\n", "region_defaults.shards", "must be <= 1024"),
    # fault parameters past a day of latency, a million-fold slow disk or MAX_TIME (a typo's exponent)
    (BASE + '[[faults]]\nkind = "store_latency"\nat_s = 1.0\nms = 1e308\n', "faults.0.ms", "must be <="),
    (BASE + '[[faults]]\nkind = "disk_slow"\nat_s = 1.0\nfactor = 1e9\n', "faults.0.factor", "must be <="),
    (BASE + '[[faults]]\nkind = "clock_skew"\nat_s = 1.0\nskew_s = -1e308\n', "faults.0.skew_s", "must be >="),
    # the tiered store and the agents' client refused these only when the run began, by their own names
    (BASE + "[region_defaults]\nhot_s = 0.0\n", "region_defaults.hot_s", "must be > 0"),
    (BASE.replace('id = "ap"', 'id = "ap"\nhot_s = 0.0'), "regions.1.hot_s", "must be > 0"),
    (BASE + "[workload]\nbackoff_base_ms = 500.0\nbackoff_cap_ms = 100.0\n", "workload.backoff_cap_ms",
     "must be >= workload.backoff_base_ms"),
    # times past what the history's microsecond stamps resolve (1e308 overflowed the stamp at the end)
    (BASE.replace("[scenario]", "[scenario]\nquiescence_s = 1e308"), "scenario.quiescence_s", "must be <= 1e+09"),
    (BASE + '[[faults]]\nkind = "crash"\nat_s = 1e12\n', "faults.0.at_s", "must be <= 1e+09"),
    # a latency past a day: every request timed out, an INVALID run instead of a refused file
    (BASE + "[network]\nlatency_ms = 1e308\n", "network.latency_ms", "must be <= 8.64e+07"),
    (BASE + '[network]\nregion_latency_ms = { dist = "uniform", lo = 1.0, hi = 1e10 }\n',
     "network.region_latency_ms.hi", "must be <= 8.64e+07"),
    (BASE + '[region_defaults]\nfsync_ms = { dist = "lognormal", median = 1e9, sigma = 0.3 }\n',
     "region_defaults.fsync_ms.median", "must be <= 8.64e+07"),
    (BASE + '[[network.links]]\nfrom = "eu"\nto = "ap"\nlatency_ms = { dist = "pareto", scale = 1e300, alpha = 2.0 }\n',
     "network.links.0.latency_ms.scale", "must be <= 8.64e+07"),
]


@pytest.mark.parametrize(("text", "key", "reason"), BROKEN, ids=[b[1] for b in BROKEN])
def test_broken_scenario_names_file_key_and_reason(tmp_path, text, key, reason):
    p = _write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load(str(p))
    assert info.value.key == key and reason in info.value.reason, str(info.value)
    assert str(p) in str(info.value)


PARAM = st.one_of(st.just(0), st.just(0.0), st.floats(0, 1e308), st.integers(0, 2**70), st.sampled_from([1e-300, 5e-324]))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.sampled_from(sorted(DIST_PARAMS)), st.data())
def test_a_distribution_the_schema_accepts_is_drawn_from_without_an_error(kind, data):
    """Whatever the parameters, either the schema names the one it refuses or every draw is a
    number >= 0 (inf at most: a latency nothing waits out), never an exception from the run."""
    dist = {"dist": kind, **{k: data.draw(PARAM, label=k) for k in DIST_PARAMS[kind]}}
    try:
        check_dist(dist, "x")
    except ScenarioError as exc:
        assert exc.key.startswith("x") and exc.reason
        return
    draw = sampler(dist)
    for seed in range(20):
        value = draw(random.Random(seed))
        assert value >= 0 and not math.isnan(value), (dist, value)
        assert sample(dist, random.Random(seed)) == value  # the hot path's sampler and the plain one agree


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.sampled_from(sorted(DIST_PARAMS)), st.data())
def test_a_latency_past_a_day_is_refused_by_its_key_and_one_within_it_is_not(kind, data):
    """Every parameter in ms (all but lognormal's sigma and pareto's alpha), and a plain number,
    is at most MAX_LATENCY_MS: past it the schema names that key; the bound alone refuses nothing
    else (network.latency_ms = 1e308 ran, every request timing out)."""
    from flk.sim.schema import MAX_LATENCY_MS

    plain = data.draw(st.floats(0, 1e308), label="number")
    assert _refused(plain) == ("x" if plain > MAX_LATENCY_MS else None)
    fine = {"constant": {"value": 5.0}, "uniform": {"lo": 1.0, "hi": 3.0}, "exponential": {"mean": 2.0},
            "lognormal": {"median": 1.0, "sigma": 0.3}, "normal": {"mean": 5.0, "sd": 1.0},
            "pareto": {"scale": 1.0, "alpha": 2.0}}[kind]
    key = data.draw(st.sampled_from([k for k in DIST_PARAMS[kind] if k not in ("sigma", "alpha")]), label="key")
    big = data.draw(st.floats(MAX_LATENCY_MS, 1e308, exclude_min=True), label="big")
    assert _refused({"dist": kind, **fine, key: big, **({"hi": big} if key == "lo" else {})}) == f"x.{key}"
    assert _refused({"dist": kind, **fine, key: MAX_LATENCY_MS, **({"hi": MAX_LATENCY_MS} if key == "lo" else {})}) \
        is None


def _refused(dist) -> str | None:
    try:
        check_dist(dist, "x")
    except ScenarioError as exc:
        return exc.key
    return None


def test_the_longest_run_the_schema_allows_still_stamps_whole_microseconds():
    """duration_s and quiescence_s each at most MAX_TIME: at their sum a float second still
    resolves the history's microseconds, so events 1 us apart keep their order."""
    from flk.sim.history import History
    from flk.sim.schema import MAX_TIME

    h = History(keep=True)
    end = 2 * MAX_TIME
    for k in range(3):
        h.record(end + k * 1e-6, "phase", name=str(k))
    assert [e["t_us"] for e in h.events] == [int(end * 1_000_000) + k for k in range(3)]


def test_a_distribution_of_another_kind_replaces_the_default_whole(tmp_path):
    """``fsync_ms = { dist = "exponential", mean = 5.0 }`` in a file means that distribution (it was
    refused: the default lognormal's median and sigma were merged into it); a table of the
    default's kind still takes the keys it leaves out from the default."""
    p = _write(tmp_path, BASE + '[region_defaults]\nfsync_ms = { dist = "exponential", mean = 5.0 }\n'
               'store_ms = { median = 2.0 }\n[network]\nlatency_ms = { dist = "pareto", scale = 1.0, alpha = 2.0 }\n')
    data = load(str(p)).data
    assert data["region_defaults"]["fsync_ms"] == {"dist": "exponential", "mean": 5.0}
    assert data["network"]["latency_ms"] == {"dist": "pareto", "scale": 1.0, "alpha": 2.0}
    assert data["region_defaults"]["store_ms"] == {"dist": "lognormal", "median": 2.0, "sigma": 0.3}


def test_cli_validate_and_run_exit_2_before_running(tmp_path):
    p = _write(tmp_path, BROKEN[0][0])
    for args in (["validate", str(p)], ["run", str(p), "--quiet"], ["run", "crash-restart", "--seed", "-1"]):
        proc = subprocess.run([*FLK, "sim", *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.strip(), proc.stderr
    assert "faults.0.targett" in proc.stderr or "--seed" in proc.stderr
    ok = subprocess.run([*FLK, "sim", "validate", *map(str, CATALOG)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.count("valid") == len(CATALOG), ok.stdout + ok.stderr


def test_a_latency_override_past_a_day_is_exit_2_before_running(tmp_path, capsys):
    from flk.impl.lab import cli

    rc = cli.main(["sim", "run", "crr-normal", "--seed", "1", "--quiet", "--no-plots", "--out", str(tmp_path),
                   "--set", "network.latency_ms=1e308"])
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and "network.latency_ms: must be <= 8.64e+07" in err, (out, err)
    assert not any(tmp_path.iterdir())  # nothing ran


def test_regression_files_run_through_the_cli_loader():
    sc = load(str(scenario_dir() / "regressions" / "double-restart.toml"))
    assert sc.data["scenario"]["name"] == "crash-restart" and sc.seed == 3 and sc.expect
    assert sc.name == "crash-restart--double-restart"  # its runs get a folder of their own


def _mutations(data: dict):
    """Paths to every key of a scenario table (section, list item, leaf)."""
    for section, value in data.items():
        yield (section,)
        if isinstance(value, dict):
            for key in value:
                yield (section, key)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    for key in item:
                        yield (section, i, key)


JUNK = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                 st.text(max_size=8), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CATALOG), st.data())
def test_mutated_catalog_files_never_raise_a_traceback(tmp_path_factory, path, data):
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    paths = list(_mutations(raw))
    target = data.draw(st.sampled_from(paths))
    action = data.draw(st.sampled_from(["drop", "rename", "retype"]))
    mutated = copy.deepcopy(raw)
    node = mutated
    for key in target[:-1]:
        node = node[key]
    last = target[-1]
    if action == "drop":
        del node[last]
    elif action == "rename" and isinstance(node, dict):
        node[last + data.draw(st.sampled_from(["t", "_x", "s"]))] = node.pop(last)
    else:
        value = data.draw(JUNK)
        if value is None:
            del node[last]
        else:
            node[last] = value
    out = tmp_path_factory.mktemp("mut") / path.name
    try:
        out.write_text(tomli_w.dumps(mutated), encoding="utf-8")
    except (TypeError, ValueError):
        return  # not expressible as TOML (e.g. NaN inside a list): nothing to load
    try:
        load(str(out))
    except ScenarioError as exc:
        assert exc.key and exc.reason and str(out) in str(exc)


def test_catalog_names_all_load():
    for name in list_scenarios():
        assert load(name).data["scenario"]["description"]
