"""The one server-URL check (``flk.impl.agent.client.check_url``) and every command that takes ``--url``.

Every string is either a valid http(s) URL -- a host, a port 1 to 65535, one that httpx and
the load generator's own request line can use -- or an :class:`InvalidInput`; from the CLI
(``agent submit``, ``agent load``, ``conformance server``, ``operator run``) the second is one
line on stderr and exit 2, before any work.
"""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.agent.client import SUBMIT_PATH, base_url, check_url, submit_url
from flk.impl.core.errors import InvalidInput
from flk.impl.lab.cli import main as flk_main

BAD = ["notaurl", "http://[::1", "http://127.0.0.1:99999", "http://h:+80", "http://h:0", "ftp://h",
       "http://u:p@h", "http://a b", "http://[v1.x]", "http:// h", "http://h\nx/"]

_PIECES = st.sampled_from(["http", "https", "ftp", "://", ":", "/", "[", "]", "::1", "127.0.0.1", "h", "a-b",
                           "a_b", "..", "@", "%25", "?", "#", "0", "80", "99999", "+1", " ", "\t", "\u00e9", "v1.x"])
URLISH = st.lists(_PIECES, max_size=10).map("".join)


def _check_accepted(url: str) -> None:
    parts = check_url(url)
    assert parts.scheme in ("http", "https") and parts.hostname
    assert parts.port is None or 1 <= parts.port <= 65535
    parsed = httpx.URL(url.strip())  # the conformance suite's client takes it as is
    assert parsed.host
    assert submit_url(url).startswith(parts.scheme + "://")
    assert url.strip().isascii()  # the load generator writes it into an ASCII request line


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=60), URLISH, URLISH.map(lambda s: "http://" + s)))
def test_every_string_is_a_valid_url_or_invalid_input(url):
    try:
        check_url(url)
    except InvalidInput as exc:
        assert exc.field == "url"
        return
    _check_accepted(url)


@settings(max_examples=200, deadline=None)
@given(URLISH.map(lambda s: "http://" + s))
def test_base_url_is_check_url_without_query_or_trailing_slash(url):
    try:
        base = base_url(url, "--url")
    except InvalidInput as exc:
        assert exc.field == "--url"
        return
    assert not base.endswith("/") and "?" not in base and "#" not in base
    assert check_url(base).hostname == check_url(url).hostname


@pytest.mark.parametrize("url", BAD)
def test_bad_urls_are_invalid_input(url):
    with pytest.raises(InvalidInput):
        check_url(url)


def test_good_urls_are_kept():
    assert submit_url("http://[::1]:8080") == "http://[::1]:8080" + SUBMIT_PATH
    assert base_url("https://Example.org:443/") == "https://Example.org:443"
    assert base_url("http://127.0.0.1:8080/prefix/") == "http://127.0.0.1:8080/prefix"


@pytest.fixture
def pcs_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PCS_HMAC_KEY", "test-hmac-key-not-a-secret")
    events = tmp_path / "ev.csv"
    events.write_text("".join(f"{(i * 37 % 101) / 101},{(i * 53 % 97) / 97}\n" for i in range(40)))
    assert flk_main(["agent", "build", "--input", str(events), "--shard-id", "s1", "--epoch", "1",
                     "--compact"]) == 0
    path = tmp_path / "pcs.json"
    path.write_text(capsys.readouterr().out)
    return path


@pytest.fixture
def policies(tmp_path):
    d = tmp_path / "policies"
    d.mkdir()
    db = (tmp_path / "s0.db").as_uri().replace("file:", "sqlite:")
    (d / "grow.toml").write_text(f'kind = "ShardMigration"\nname = "grow"\n[spec]\nold = {{ s0 = "{db}" }}\n'
                                 f'new = {{ s0 = "{db}", s1 = "{db}1" }}\n')
    assert flk_main(["operator", "validate", str(d)]) == 0
    return d


def _one_line_exit_2(argv, capsys) -> str:
    code = flk_main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "--url" in err and "not an http(s) URL" in err, err
    return err


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999", "notaurl"])
def test_agent_submit_and_load_refuse_a_bad_url(url, pcs_file, tmp_path, capsys):
    dlq = tmp_path / "dlq.jsonl"
    _one_line_exit_2(["agent", "submit", "--url", url, "--pcs", str(pcs_file), "--dlq", str(dlq),
                      "--max-attempts", "1"], capsys)
    assert not dlq.exists()
    _one_line_exit_2(["agent", "load", "--url", url, "--n", "2", "--seed", "1", "--no-progress",
                      "--max-attempts", "1", "--timeout", "0.5"], capsys)


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999", "notaurl"])
def test_conformance_server_refuses_a_bad_url(url, capsys):
    _one_line_exit_2(["conformance", "server", "--url", url, "--hmac-key", "k", "--cases", "srv-valid",
                      "--timeout", "0.5"], capsys)


@pytest.mark.parametrize("url", ["notaurl", "http://[::1", "http://127.0.0.1:99999"])
def test_operator_run_refuses_a_bad_url_before_any_work(url, policies, tmp_path, capsys):
    state = tmp_path / "state"
    _one_line_exit_2(["operator", "run", "--policies", str(policies), "--url", url, "--state-dir", str(state),
                      "--max-seconds", "0.5", "--interval", "0.1", "--timeout", "0.2"], capsys)
    assert not state.exists()
