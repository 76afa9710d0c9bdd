"""Bad input to ``flk vectors check``, ``flk history check`` and ``flk kpi``: a clear message that
names the file by its role, never a traceback or a misleading cause.

* ``vectors check``: a vector file that is not UTF-8 (damaged) is one more difference, exit 1
  naming the file (and ``generate`` rewrites it) -- never a UnicodeDecodeError.
* ``history check``: an unreadable ``--final-reads`` file is named as such, not as a history
  file; ``--show`` below 0 is a usage error (it printed "... 6 more" of one anomaly).
* ``kpi``: a dashboard the OS refuses to write is a write failure of ``--out``, not
  "cannot read the runs".
"""

from __future__ import annotations

import errno
import json
import pathlib
import shutil

import pytest

from flk.impl.lab import cli, vectors

TINY = ["scenario.duration_s=1", "scenario.quiescence_s=1", "workload.agents=2", "workload.rate_per_s=20"]


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_vectors_check_names_a_damaged_file_and_generate_repairs_it(tmp_path, capsys):
    d = tmp_path / "vectors"
    shutil.copytree(vectors.default_dir(), d)
    (d / "fmt9.v1.json").write_bytes(bytes(range(128, 256)) * 16)
    rc, out, err = _run(capsys, ["vectors", "--dir", str(d), "check"])
    assert rc == 1, (out, err)
    assert "fmt9.v1.json: not UTF-8 text" in err and "Traceback" not in err and err.count("\n") == 1, err
    rc, out, err = _run(capsys, ["vectors", "--dir", str(d), "generate"])
    assert rc == 0 and "wrote fmt9.v1.json" in out, (out, err)
    assert _run(capsys, ["vectors", "--dir", str(d), "check"])[0] == 0


def _line(req_id: str, digest: str, t: float) -> str:
    return json.dumps({"req_id": req_id, "item": 0, "attempt": 1, "final": True, "kind": "valid", "tenant": "t",
                       "pcs_id": "k", "digest": digest, "url": "http://127.0.0.1:1/v1/pcs/submit", "status": 200,
                       "error": None, "replay": False, "latency_s": 0.5, "t_send": t, "t_recv": t + 0.5,
                       "t_sched": None})


@pytest.fixture
def anomalous(tmp_path) -> pathlib.Path:
    path = tmp_path / "h.jsonl"
    path.write_text(_line("1-0-1", "aa" * 32, 0.0) + "\n" + _line("2-0-1", "bb" * 32, 5.0) + "\n")
    return path


def test_history_check_names_the_final_reads_file_by_its_role(anomalous, tmp_path, capsys):
    missing = tmp_path / "no-such-final-reads.jsonl"
    rc, out, err = _run(capsys, ["history", "check", str(anomalous), "--final-reads", str(missing)])
    assert rc == 2, (out, err)
    assert f"--final-reads {missing}: no such file" in err and "history file" not in err, err


def test_history_check_refuses_a_negative_show(anomalous, capsys):
    rc, out, _ = _run(capsys, ["history", "check", str(anomalous), "--show", "0"])
    assert rc == 1 and "... 1 more" in out, out
    with pytest.raises(SystemExit) as exc:
        cli.main(["history", "check", str(anomalous), "--show", "-5"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--show: must be 0 or more" in err and "Traceback" not in err, err


def test_kpi_says_a_refused_dashboard_is_a_write_failure(tmp_path, capsys, monkeypatch):
    from flk.sim import api

    run = str(api.run("crr-normal", seed=1, overrides=TINY, out=tmp_path / "runs", plots=False).out_dir)  # with its history
    out = tmp_path / "kpi.html"
    real_write = pathlib.Path.write_text

    def full_disk(self, *args, **kwargs):
        if self == out:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full_disk)
    rc, _, err = _run(capsys, ["kpi", run, "--out", str(out)])
    assert rc == 2
    assert f"--out {out}: cannot write it: No space left on device" in err, err
    assert "cannot read the runs" not in err and err.count("\n") == 1, err


@pytest.mark.parametrize("region", ["http://[::1", "http://127.0.0.1:99999"])
def test_history_final_reads_refuses_a_region_that_is_no_url(tmp_path, capsys, region):
    from flk.impl.dedup import open_store

    db = tmp_path / "dedup.db"
    open_store(f"sqlite:///{db}").close()
    out = tmp_path / "final.jsonl"
    rc, _, err = _run(capsys, ["history", "final-reads", "--store", f"sqlite:///{db}", "--region", region,
                               "--out", str(out)])
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert "--region" in err and "not an http(s) URL" in err, err
    assert not out.exists()
