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
    for res, name in ((compact, COMPACT), (plain, PLAIN)):  # streamed while the run went: no line kept
        assert res.history._sink_path == res.out_dir / name and res.history._sink is None


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


def test_a_streamed_history_is_written_elsewhere_in_either_format(tmp_path):
    """A history streamed to one file and written to another: the same format is a copy of the
    streamed file, the other one is written from the kept events; a digest-only history streamed
    in one format has nothing to write the other from."""
    kept, lean, unstreamed = History(keep=True), History(keep=False), History(keep=True)
    kept.stream_to(tmp_path / PLAIN)
    lean.stream_to(tmp_path / COMPACT)
    for h in (kept, lean, unstreamed):
        for k in range(700):  # more than one folded chunk (512 lines)
            h.record(k / 7, "x", k=k, s="é" * (k % 3), f=k / 3)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    kept.write(tmp_path / "a" / PLAIN)
    kept.write(tmp_path / "b" / COMPACT)
    lean.write(tmp_path / "a" / COMPACT)
    assert (tmp_path / "a" / PLAIN).read_bytes() == (tmp_path / PLAIN).read_bytes()
    assert (tmp_path / "a" / COMPACT).read_bytes() == (tmp_path / COMPACT).read_bytes()
    assert read_history(tmp_path / "b" / COMPACT) == read_history(tmp_path / PLAIN) == kept.events
    assert len({file_digest(tmp_path / f) for f in (PLAIN, COMPACT, f"a/{PLAIN}", f"a/{COMPACT}", f"b/{COMPACT}")}
               | {kept.digest, lean.digest}) == 1
    with pytest.raises(ValueError, match="not kept"):
        lean.write(tmp_path / "b" / PLAIN)
    (tmp_path / "c").mkdir()  # never streamed: written from its events, the streamed files' very bytes
    for name in (PLAIN, COMPACT):
        unstreamed.write(tmp_path / "c" / name)
        assert (tmp_path / "c" / name).read_bytes() == (tmp_path / name).read_bytes()


def test_a_run_saved_to_another_folder_keeps_its_history(tmp_path):
    for fmt, name in (("jsonl", PLAIN), ("jsonl.gz", COMPACT)):
        res = api.run(SCENARIO, seed=1, out=tmp_path / "first", plots=False, history_format=fmt)
        first = res.out_dir
        out_dir = api.save(res, tmp_path / f"again-{fmt}", plots=False)
        assert out_dir != first and find_history(out_dir).name == find_history(first).name == name
        assert file_digest(out_dir / name) == file_digest(first / name) == res.digest
