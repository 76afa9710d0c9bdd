"""The compact history (``history.jsonl.gz``): the same canonical lines as ``history.jsonl``,
gzip-compressed and streamed while the run goes; the digest is defined over the canonical
line stream, so the format never changes a run's digest.

* a run with ``history_format="jsonl.gz"`` has the digest of the plain run, and the file's
  uncompressed stream hashes to it (``file_digest``); its events read back the same;
* the file is byte-identical across runs (no name, mtime 0) and several times smaller;
* ``flk sim run --history-format jsonl.gz`` writes it; ``flk sim diff`` reads either format;
* a folder holds one history: a later run of the other format removes the earlier file.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flk.sim import api, diff
from flk.sim.history import COMPACT, PLAIN, History, file_digest, find_history, read_history

SCENARIO = "quota-exhaustion"  # the catalog's smallest run (about 11,000 events)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compact")
    plain = api.run(SCENARIO, seed=1, out=root / "plain", plots=False)
    compact = api.run(SCENARIO, seed=1, out=root / "compact", plots=False, history_format="jsonl.gz")
    again = api.run(SCENARIO, seed=1, out=root / "again", plots=False, history_format="jsonl.gz")
    return plain, compact, again


def test_compact_history_has_the_plain_digest_and_events(runs):
    plain, compact, _ = runs
    assert compact.digest == plain.digest
    gz, jl = compact.out_dir / COMPACT, plain.out_dir / PLAIN
    assert not (compact.out_dir / PLAIN).exists() and find_history(compact.out_dir) == gz
    assert file_digest(gz) == file_digest(jl) == plain.digest == json.loads(
        (compact.out_dir / "results.json").read_text())["digest"]
    assert read_history(gz) == read_history(jl) == plain.history.events
    assert compact.history.events == plain.history.events  # the checkers saw the same run
    assert compact.results["invariants"] == plain.results["invariants"]
    assert not compact.history._lines  # streamed: no line kept in memory


def test_compact_history_is_deterministic_and_smaller(runs):
    plain, compact, again = runs
    gz = (compact.out_dir / COMPACT).read_bytes()
    assert gz == (again.out_dir / COMPACT).read_bytes()
    assert len(gz) * 3 < (plain.out_dir / PLAIN).stat().st_size


def test_diff_reads_either_format(runs):
    plain, compact, _ = runs
    report = diff.diff(plain.out_dir, compact.out_dir)
    assert report["identical"] and report["first_divergence"] is None
    assert report["a"]["events"] == report["b"]["events"] == plain.results["events"]


def test_a_folder_holds_one_history(tmp_path):
    first = api.run(SCENARIO, seed=1, out=tmp_path, plots=False, history_format="jsonl.gz")
    assert (first.out_dir / COMPACT).exists()
    second = api.run(SCENARIO, seed=1, out=tmp_path, plots=False)
    assert second.out_dir == first.out_dir
    assert (second.out_dir / PLAIN).exists() and not (second.out_dir / COMPACT).exists()


def test_cli_writes_the_compact_history_and_refuses_an_unknown_format(tmp_path):
    cmd = [sys.executable, "-m", "flk.impl", "sim", "run", SCENARIO, "--seed", "1", "--out", str(tmp_path),
           "--quiet", "--no-plots", "--json", "--history-format", "jsonl.gz"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    results = json.loads(done.stdout)
    assert file_digest(tmp_path / SCENARIO / "1" / COMPACT) == results["digest"]
    bad = subprocess.run(cmd[:-1] + ["parquet"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_stream_to_comes_before_the_first_event(tmp_path):
    h = History(keep=False)
    h.record(0.0, "x", a=1)
    with pytest.raises(ValueError):
        h.stream_to(tmp_path / COMPACT)
