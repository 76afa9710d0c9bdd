"""``flk agent``: documented caps on the options that size a run (``--tenants`` 1 to 10,000,
``load --n`` up to 1,000,000 items, ``--concurrency`` 1 to 1,024: more is a usage error, exit 2,
before anything is allocated), float options through the shared finite-number type, a give-up log
that says whether the record is kept, and an accurate message for a file that is not ``.npy``."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
from agent_ports import dead_url
from hypothesis import given
from hypothesis import strategies as st

from flk.impl.agent import builder as agent
from flk.impl.agent import loadgen
from flk.impl.agent.client import RetryPolicy, SubmitClient, drain_outbox
from flk.impl.agent.outbox import Outbox
from flk.impl.core.errors import InvalidInput
from flk.impl.lab import cli

SIGNER = agent.Signer("hmac", b"limits-key")


def _exit_2(argv, capsys) -> str:
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv", [["tenants-env", "--tenants", "10001"],
                                  ["load", "--n", "1", "--seed", "1", "--tenants", "10001"]])
def test_more_tenants_than_the_cap_is_exit_2(argv, monkeypatch, capsys):
    monkeypatch.setenv("PCS_HMAC_KEY", "k")
    url = ["--url", dead_url()] if argv[0] == "load" else []
    err = _exit_2(["agent", *argv, *url], capsys)
    assert "tenants: must be an integer from 1 to 10,000" in err, err


def test_the_cap_itself_is_accepted():
    assert len(loadgen.tenant_ids(10_000)) == 10_000


def test_more_items_than_the_cap_is_refused_before_any_is_built():
    with pytest.raises(InvalidInput, match="from 0 to 1,000,000"):
        loadgen.PlanConfig(n=1_000_001, seed=1)


def test_load_concurrency_over_the_cap_is_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("PCS_HMAC_KEY", "k")
    argv = ["agent", "load", "--url", dead_url(), "--n", "1", "--seed", "1", "--concurrency", "1025",
            "--max-attempts", "1", "--no-progress"]
    err = _exit_2(argv, capsys)
    assert "concurrency: must be an integer from 1 to 1,024" in err, err


@pytest.mark.parametrize("option", ["--timeout", "--rate", "--backoff-cap", "--dup-rate"])
def test_load_float_options_refuse_nan(option, monkeypatch, capsys):
    monkeypatch.setenv("PCS_HMAC_KEY", "k")
    argv = ["agent", "load", "--url", dead_url(), "--n", "1", "--seed", "1", f"{option}=nan"]
    err = _exit_2(argv, capsys)
    assert f"argument {option}: must be a finite number" in err, err


def _pcs() -> dict:
    return agent.build_pcs([[0.1, 0.2], [0.5, 0.9], [0.3, 0.3]], b"s", "shard-l", 1, SIGNER)


ONE_TRY = RetryPolicy(base=0.001, cap=0.002, max_attempts=1, max_retry_after=0.01)


def test_a_give_up_without_an_outbox_does_not_claim_the_record_is_kept(caplog):
    client = SubmitClient([dead_url()], policy=ONE_TRY, sleep=lambda d: None)
    with caplog.at_level(logging.ERROR, logger="flk.agent.client"):
        assert client.submit(_pcs()).outcome == "gave_up"
    client.close()
    assert "not kept: no outbox" in caplog.text and "kept for the next run" not in caplog.text, caplog.text


def test_a_give_up_in_an_outbox_drain_says_the_record_is_kept(tmp_path, caplog):
    client = SubmitClient([dead_url()], policy=ONE_TRY, sleep=lambda d: None)
    with Outbox(str(tmp_path / "box")) as box, caplog.at_level(logging.ERROR, logger="flk.agent.client"):
        box.append(json.dumps(_pcs()).encode())
        assert drain_outbox(box, client).remaining == 1
    client.close()
    assert "gave up (kept for the next run)" in caplog.text, caplog.text


def test_submit_cli_without_outbox_says_not_kept(tmp_path, caplog, capsys):
    pcs = tmp_path / "one.json"
    pcs.write_text(json.dumps(_pcs()))
    argv = ["agent", "submit", "--url", dead_url(), "--pcs", str(pcs), "--max-attempts", "1",
            "--dlq", str(tmp_path / "dlq.jsonl")]
    with caplog.at_level(logging.ERROR, logger="flk.agent.client"):
        assert cli.main(argv) == 1
    assert "not kept: no outbox" in caplog.text and "kept for the next run" not in caplog.text, caplog.text


def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_a_garbage_npy_file_is_not_called_a_pickle(tmp_path, capsys):
    ev = tmp_path / "ev.npy"
    ev.write_bytes(b"\x00garbage, not an array" * 10)
    err = _exit_2(["agent", "build", "--input", str(ev), "--shard-id", "s", "--epoch", "1", "--unsigned"], capsys)
    assert "not a .npy array file" in err and "pickle" not in err, err


@given(st.one_of(st.binary(max_size=200), st.binary(max_size=200).map(lambda b: _npy(np.arange(4.0))[:10] + b)))
def test_any_bytes_as_npy_are_an_array_or_a_clean_refusal(raw):
    try:
        agent.parse_events(raw, "npy")
    except InvalidInput as exc:
        text = str(exc)
        assert "not a" in text or "must be" in text or "array" in text, text
        assert "pickle" not in text and "If you trust" not in text, text
