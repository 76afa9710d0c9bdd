"""``flk.impl.lab.cli.finite_number`` / ``seconds``: the one argparse type of a float option (a
timeout, a wait, a rate). A value is accepted only if finite and in range; nan, inf, -inf, garbage
and an out-of-range value are a usage error naming the option (exit 2), never a traceback and never
a wait silently skipped (``nan < x`` is always false)."""

from __future__ import annotations

import argparse
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flk.impl.lab import cli

FLOAT_TEXT = st.one_of(st.floats().map(repr), st.floats().map(str), st.text(max_size=12),
                       st.sampled_from(["nan", "-nan", "inf", "-inf", "Infinity", "1e400", "0", "-0.0"]))


def _expected(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@given(FLOAT_TEXT, st.sampled_from([0.0, 1.0]), st.booleans())
def test_a_number_is_accepted_only_if_finite_and_in_range(text, minimum, strict):
    parse = cli.finite_number(minimum, strict=strict, maximum=1e6)
    x = _expected(text)
    if x is not None and math.isfinite(x) and (x > minimum if strict else x >= minimum) and x <= 1e6:
        assert parse(text) == x
        return
    with pytest.raises(argparse.ArgumentTypeError, match="must be a finite number|not a number"):
        parse(text)


@given(FLOAT_TEXT)
def test_seconds_are_capped_at_the_longest_wait(text):
    x = _expected(text)
    if x is not None and math.isfinite(x) and 0 < x <= cli.MAX_WAIT_S:
        assert cli.seconds(0, strict=True)(text) == x
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            cli.seconds(0, strict=True)(text)


def test_the_message_says_what_is_accepted():
    with pytest.raises(argparse.ArgumentTypeError) as info:
        cli.seconds(0, strict=True)("nan")
    assert str(info.value) == f"must be a finite number > 0 and <= {cli.MAX_WAIT_S:g}, got nan"


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()[-1]) < 200, err
    return err


VECTORS = ["conformance", "vectors", "--adapter", "cat", "--max-restarts", "0"]


@pytest.mark.parametrize("option", ["--timeout", "--start-timeout"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "1e400"])
def test_conformance_vectors_timeouts_must_be_finite_and_positive(option, value, capsys):
    err = _usage_error([*VECTORS, f"{option}={value}"], capsys)
    assert f"argument {option}: must be a finite number > 0" in err, err


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_conformance_server_timeout_must_be_finite_and_positive(value, capsys):
    argv = ["conformance", "server", "--url", "http://127.0.0.1:1", "--hmac-key", "k", f"--timeout={value}"]
    err = _usage_error(argv, capsys)
    assert "argument --timeout: must be a finite number > 0" in err, err


@pytest.mark.parametrize("step", ["prune", "verify", "catchup", "rollback"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_dedup_migrate_settle_must_be_finite_and_not_negative(step, value, tmp_path, capsys):
    argv = ["dedup-migrate", step, "--state", str(tmp_path / "s.json"), f"--settle-s={value}"]
    err = _usage_error(argv, capsys)
    assert "argument --settle-s: must be a finite number >= 0" in err, err


@pytest.mark.parametrize("step", ["copy", "verify", "catchup", "prune"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_dedup_migrate_qps_must_be_finite_and_not_negative(step, value, tmp_path, capsys):
    argv = ["dedup-migrate", step, "--state", str(tmp_path / "s.json"), f"--qps={value}"]
    err = _usage_error(argv, capsys)
    assert "argument --qps: must be a finite number >= 0" in err, err
