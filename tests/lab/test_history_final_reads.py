"""``flk history final-reads``: what a dedup store holds, as the final reads ``flk history
check --final-reads`` judges INV-NO-ACKED-LOSS with.

What must hold: every stored outcome becomes one line that the checker reads back (the
region label reduced as the load generator's history names regions); an outcome deleted
from the store is then reported lost, with its key, where the same history and the full
store are valid; a store that is not there is exit 2 -- never an empty read (which would
say that nothing survived), and no empty SQLite file is left behind; an unreachable
Postgres is one line that says why, without its password.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from flk.impl.dedup import StoredOutcome, iter_entries, open_store
from flk.impl.lab import cli
from flk.impl.server.config import BY_ENV

NOW = time.time()  # the command reads what the store holds now: outcomes written now are live
REGION = "http://127.0.0.1:18080"


@pytest.fixture(autouse=True)
def _no_server_settings(monkeypatch):
    for name in BY_ENV:
        monkeypatch.delenv(name, raising=False)


def _outcome(i: int, status: int = 200) -> StoredOutcome:
    return StoredOutcome(f"{i:064x}", status, b'{"ok":true}', NOW, "r1", "v1")


def _fill(path, n: int) -> list:
    store = open_store(f"sqlite:///{path}")
    try:
        assert all(won for won, _ in store.put_many_if_absent(
            [("t", f"p{i:04d}", _outcome(i, 202 if i % 5 == 0 else 200)) for i in range(n)], NOW))
        return list(iter_entries(store, NOW))
    finally:
        store.close()


def _history(path, n: int) -> None:
    """A load history that acknowledged keys 0..n-1 at REGION with the stored digests."""
    lines = []
    for i in range(n):
        lines.append(json.dumps({"req_id": f"1-{i}-1", "tenant": "t", "pcs_id": f"p{i:04d}", "digest": f"{i:064x}",
                                 "url": REGION + "/v1/pcs/submit", "status": 202 if i % 5 == 0 else 200,
                                 "replay": False, "t_send": i, "t_recv": i + 0.5, "error": None}))
    path.write_text("\n".join(lines) + "\n")


def test_every_stored_outcome_is_one_final_read_line(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    entries = _fill(data / "dedup.sqlite3", 40)
    out = tmp_path / "final.jsonl"
    assert cli.main(["history", "final-reads", "--data-dir", str(data), "--region", REGION + "/v1/pcs/submit",
                     "--out", str(out)]) == 0
    assert "40 stored outcome(s) of region " + REGION in capsys.readouterr().err
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert got == [{"region": REGION, "tenant": t, "pcs_id": p, "digest": o.payload_digest, "status": o.status}
                   for t, p, o in entries]
    # --store names the same file; without --region the lines cover every region
    assert cli.main(["history", "final-reads", "--store", f"sqlite:///{data / 'dedup.sqlite3'}"]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line) for line in captured.out.splitlines()] == [
        {k: v for k, v in rec.items() if k != "region"} for rec in got]
    assert "(covering every region)" in captured.err


def test_an_outcome_missing_from_the_store_is_reported_lost_and_only_then(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    _fill(data / "dedup.sqlite3", 12)
    history = tmp_path / "history.jsonl"
    _history(history, 12)
    final = tmp_path / "final.jsonl"
    assert cli.main(["history", "final-reads", "--data-dir", str(data), "--region", REGION, "--out", str(final)]) == 0
    assert cli.main(["history", "check", str(history), "--final-reads", str(final), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["final_checked"] == 12
    store = open_store(f"sqlite:///{data / 'dedup.sqlite3'}")
    try:
        store._run(lambda c: c.execute(f"DELETE FROM {store.table} WHERE pcs_id = 'p0007'"))
    finally:
        store.close()
    assert cli.main(["history", "final-reads", "--data-dir", str(data), "--region", REGION, "--out", str(final)]) == 0
    assert cli.main(["history", "check", str(history), "--final-reads", str(final), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["anomalies_by_invariant"]["INV-NO-ACKED-LOSS"] == 1
    assert [a["key"] for a in report["anomalies"]] == [["t", "p0007"]]


def test_an_empty_store_of_a_region_is_a_read_that_says_nothing_survived(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    _fill(data / "dedup.sqlite3", 0)
    assert cli.main(["history", "final-reads", "--data-dir", str(data), "--region", REGION]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line) for line in captured.out.splitlines()] == [{"region": REGION}]
    assert "nothing survived" in captured.err
    final, history = tmp_path / "final.jsonl", tmp_path / "history.jsonl"
    final.write_text(captured.out)
    _history(history, 3)
    assert cli.main(["history", "check", str(history), "--final-reads", str(final), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["anomalies_by_invariant"]["INV-NO-ACKED-LOSS"] == 3


@pytest.mark.parametrize("args, env, message", [
    (["--data-dir", "{tmp}/nowhere"], {}, "no SQLite dedup store at {tmp}/nowhere/dedup.sqlite3 (is it the data dir"),
    (["--store", "sqlite:///{tmp}/none.db"], {}, "no SQLite dedup store at {tmp}/none.db"),
    (["--store", "memory"], {}, "an in-memory store lives in its server's process"),
    ([], {"DEDUP_BACKEND": "memory"}, "DEDUP_BACKEND=memory: the store lived in the server's process"),
    (["--store", "sqlite:///{tmp}/x.db", "--data-dir", "{tmp}"], {}, "give it without --config / --data-dir"),
    (["--data-dir", "{tmp}", "--region", "127.0.0.1:8080"], {}, "expected the URL the load generator sent to"),
    (["--store", "nosuch://x"], {}, "unknown dedup store 'nosuch'"),
    (["--data-dir", "{tmp}", "--out", "{tmp}"], {}, "is a directory (name a file)"),
    ([], {"DEDUP_BACKEND": "redis"}, "configuration: DEDUP_BACKEND=redis needs REDIS_ADDR"),
])
def test_a_store_that_is_not_there_is_exit_2_and_no_empty_read(tmp_path, capsys, monkeypatch, args, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    argv = ["history", "final-reads", *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert message.replace("{tmp}", str(tmp_path)) in captured.err, captured.err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no store, key or output file made


def test_an_unreachable_postgres_is_one_line_with_the_reason_and_no_password(tmp_path):
    # port 1 refuses at once: the pool's own warnings used to come first, several raw lines of them
    proc = subprocess.run([str(pathlib.Path(sys.executable).parent / "flk"), "history", "final-reads", "--store",
                           "postgresql://flk:s3cr3t-pw@127.0.0.1:1/flk"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "postgres store unreachable" in lines[0] and "Connection refused" in lines[0]
    assert "s3cr3t-pw" not in proc.stderr
    # flk serve's start-up check of the same store: one line too (its log is JSON lines)
    env = {k: v for k, v in os.environ.items() if k not in BY_ENV}
    proc = subprocess.run([str(pathlib.Path(sys.executable).parent / "flk"), "serve", "--check", "--data-dir",
                           str(tmp_path / "data")], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**env, "DEDUP_BACKEND": "postgres", "POSTGRES_CONN": "postgresql://flk:s3cr3t-pw@127.0.0.1:1/flk"})
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "Connection refused" in proc.stderr and "s3cr3t-pw" not in proc.stderr


def test_final_reads_of_a_real_redis_and_postgres_store(tmp_path, capsys, monkeypatch, redis_url, postgres_dsn):
    import uuid

    ns = "fr_" + uuid.uuid4().hex[:8]
    items = [("t", f"p{i:04d}", _outcome(i)) for i in range(30)]
    for backend, url, opts, env in (
            ("redis", redis_url, {"prefix": f"flk:dedup:{ns}:"}, {"REDIS_ADDR": redis_url}),
            ("postgres", postgres_dsn, {"table": f"flk_dedup_{ns}"}, {"POSTGRES_CONN": postgres_dsn})):
        store = open_store(url, **opts)
        try:
            store.put_many_if_absent(items, NOW)
            for name, value in {"DEDUP_BACKEND": backend, "DEDUP_NAMESPACE": ns, **env}.items():
                monkeypatch.setenv(name, value)
            assert cli.main(["history", "final-reads", "--data-dir", str(tmp_path / backend)]) == 0, backend
            got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
            assert got == [{"tenant": t, "pcs_id": p, "digest": o.payload_digest, "status": o.status}
                           for t, p, o in items], backend
        finally:
            if backend == "postgres":
                store.drop_table()
            store.close()
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"flk:dedup:{ns}:*"):
        client.delete(key)


def test_a_store_failing_mid_read_leaves_the_old_output_as_it_was(tmp_path, capsys, monkeypatch):
    import flk.impl.dedup as dedup

    data = tmp_path / "data"
    data.mkdir()
    _fill(data / "dedup.sqlite3", 5)
    out = tmp_path / "final.jsonl"
    out.write_text("the previous read\n")

    def failing(store, now, page=1000):
        yield from list(iter_entries(store, now))[:2]
        raise dedup.StoreUnavailable("connection reset")

    monkeypatch.setattr(dedup, "iter_entries", failing)
    assert cli.main(["history", "final-reads", "--data-dir", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "failed while being read (after 2 outcome(s);" in err and "left as it was" in err
    assert out.read_text() == "the previous read\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "final.jsonl"]  # no temporary file left


def test_a_sqlite_url_without_the_third_slash_names_the_same_file_open_store_opens(tmp_path, capsys, monkeypatch):
    """sqlite://rel.db is a relative path to open_store; the missing-file check read it as no path,
    so a mistyped store was created empty and read as 'nothing survived'."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["history", "final-reads", "--store", "sqlite://absent.db"]) == 2
    assert "no SQLite dedup store at absent.db" in capsys.readouterr().err
    assert not (tmp_path / "absent.db").exists()
    _fill(tmp_path / "there.db", 3)
    assert cli.main(["history", "final-reads", "--store", "sqlite://there.db"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
