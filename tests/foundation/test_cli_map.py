"""The CLI map: every subcommand has its module, its help, and exit codes 0/1/2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flk.impl.lab import cli

FLK = [sys.executable, "-m", "flk.impl"]


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_subcommand_runs_or_says_not_implemented(name, capsys):
    mod = cli._module(name)
    assert callable(mod.configure) and callable(mod.run)
    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"])
    assert exc.value.code == 0
    assert cli.COMMANDS[name] in capsys.readouterr().out


def test_issue_command_list_is_in_the_map():
    for name in ["demo", "serve", "agent", "sim", "prove", "conformance", "bench", "wal", "audit",
                 "dedup-migrate", "vectors"]:
        assert name in cli.COMMANDS


def test_help_lists_every_command():
    out = subprocess.run([*FLK, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for name in cli.COMMANDS:
        assert name in out.stdout


def test_unknown_command_and_no_command_exit_2():
    out = subprocess.run([*FLK, "frobnicate"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "invalid choice" in out.stderr and "Traceback" not in out.stderr
    assert cli.main([]) == 2


def test_bad_input_is_exit_2_without_traceback():
    out = subprocess.run([*FLK, "bench", "canon", "--repeat", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--repeat must be >= 1" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([*FLK, "vectors", "regenerate"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_bench_canon_json_reports_both_figures_and_their_ratio():
    out = subprocess.run([*FLK, "bench", "canon", "--json", "--quick", "--repeat", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    fig = json.loads(out.stdout)
    assert fig["benchmark"] == "canon"
    assert fig["canon_hmac_per_s"] > 0 and fig["bare_hmac_digest_per_s"] > 0
    assert fig["ratio_canon_to_bare"] == pytest.approx(fig["canon_hmac_per_s"] / fig["bare_hmac_digest_per_s"], rel=1e-3)
    assert fig["payload_bytes"] == 271
    assert fig["canon_hmac_per_cpu_s"] > 0 and fig["bare_hmac_digest_per_cpu_s"] > 0


def test_vectors_check_exit_codes(tmp_path):
    out = subprocess.run([*FLK, "vectors", "check"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([*FLK, "vectors", "generate", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "17 changed" in out.stdout
    p = tmp_path / "regime.v1.json"
    p.write_text(p.read_text().replace('"sticky"', '"mixed"', 1))
    out = subprocess.run([*FLK, "vectors", "check", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "regime.v1.json: differs" in out.stderr
