"""``flk wal inspect|verify``: exit 0 intact, 1 corruption (segment + offset), 2 bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from flk.impl.lab.cli import main
from flk.impl.storage.wal import SegmentedLog
from flk.impl.storage.walformat import encode_frame, manifest_name, segment_name


def make_log(d: str, n: int = 30, seal: bool = True) -> list[str]:
    with SegmentedLog(d, segment_bytes=150) as log:
        for i in range(n):
            log.append(b"record-%02d" % i)
        if seal:
            log.seal()
        return [s.name for s in log.segments()]


def tree_digest(d: str) -> str:
    h = hashlib.sha256()
    for name in sorted(os.listdir(d)):
        h.update(name.encode())
        with open(os.path.join(d, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def flip(path: str, offset: int) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x10]))


def test_verify_ok_and_inspect_json(tmp_path, capsys):
    d = str(tmp_path / "wal")
    names = make_log(d)
    assert main(["wal", "verify", d]) == 0
    assert capsys.readouterr().out.startswith("ok: 30 record(s)")
    assert main(["wal", "inspect", d, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] and rep["records"] == 30 and rep["first_index"] == 0 and rep["next_index"] == 30
    assert [s["name"] for s in rep["segments"]] == names
    assert all(s["sealed"] and s["manifest"] == "ok" for s in rep["segments"][:-1])
    assert main(["wal", "inspect", d]) == 0
    out = capsys.readouterr().out
    assert names[0] in out and "yes" in out


def test_verify_reports_a_bit_flip_with_segment_and_offset_and_changes_nothing(tmp_path, capsys):
    d = str(tmp_path / "wal")
    make_log(d, seal=False)
    frame = len(encode_frame(b"record-00"))
    seg = os.path.join(d, segment_name(0))
    flip(seg, 2 * frame + 15)
    before = tree_digest(d)
    assert main(["wal", "verify", d]) == 1
    out = capsys.readouterr().out
    assert f"{segment_name(0)} at byte {2 * frame}" in out and "checksum" in out
    assert main(["wal", "inspect", d, "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["problems"][0]["segment"] == segment_name(0) and rep["problems"][0]["offset"] == 2 * frame
    assert tree_digest(d) == before  # read-only


def test_verify_detects_manifest_tampering(tmp_path, capsys):
    d = str(tmp_path / "wal")
    make_log(d)
    m = os.path.join(d, manifest_name(segment_name(0)))
    os.chmod(m, 0o644)
    doc = json.loads(open(m).read())
    doc["sha256"] = "0" * 64
    with open(m, "w") as f:
        json.dump(doc, f)
    assert main(["wal", "verify", d]) == 1
    out = capsys.readouterr().out
    assert segment_name(0) in out and "sha256" in out


def test_verify_passes_a_torn_tail_with_a_warning(tmp_path, capsys):
    d = str(tmp_path / "wal")
    names = make_log(d, n=5, seal=False)
    with open(os.path.join(d, names[-1]), "ab") as f:
        f.write(encode_frame(b"partial")[:7])
    assert main(["wal", "verify", d]) == 0
    assert "torn tail" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing", "file", "empty"])
def test_bad_input_exits_2_without_traceback(tmp_path, capsys, case):
    target = tmp_path / "x"
    if case == "file":
        target.write_text("hi")
    elif case == "empty":
        target.mkdir()
    assert main(["wal", "verify", str(target)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_console_entry_point_exit_codes(tmp_path):
    d = str(tmp_path / "wal")
    make_log(d)
    ok = subprocess.run([sys.executable, "-m", "flk.impl", "wal", "verify", d], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "flk.impl", "wal", "verify", d + "-nope"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no such directory" in bad.stderr


def test_verify_and_inspect_an_outbox_after_compaction(tmp_path, capsys):
    from flk.impl.agent.outbox import Outbox

    d = str(tmp_path / "outbox")
    with Outbox(d, segment_bytes=200, auto_compact_after=None) as ob:
        for i in range(30):
            seq = ob.append(b"pcs-%d" % i)
            if i % 3:
                ob.ack(seq)
        assert ob.compact()["compacted"]
        ob.append(b"after")
    assert main(["wal", "verify", d]) == 0
    capsys.readouterr()
    assert main(["wal", "inspect", d, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["segments"][0]["kind"] == "compact" and rep["segments"][0]["manifest"] == "ok"
    assert rep["segments"][0]["count"] == 11  # 10 pending + MARK


def test_inspect_tells_record_bytes_from_zeros_written_ahead(tmp_path, capsys):
    """A live log preallocated by WAL_PREALLOCATE ends in zeros: the table's bytes are the records'
    (it showed the file's size, 1 MB for 300 small records), the zeros have their own column."""
    d = str(tmp_path / "wal")
    log = SegmentedLog(d, preallocate=64 * 1024)
    try:
        for i in range(40):
            log.append(b"record-%02d" % i)
        log.sync()
        (active,) = log.segments()
        size = os.path.getsize(os.path.join(d, active.name))
        assert size > active.bytes  # zeros written ahead
        assert main(["wal", "inspect", d]) == 0
        row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(active.name))
        assert row.split()[4:6] == [str(active.bytes), str(size - active.bytes)], row
    finally:
        log.close()


def test_a_servers_wal_root_or_data_dir_is_every_workers_log(tmp_path, capsys):
    """flk serve keeps DATA_DIR/wal/worker-N: given the root or the data dir, each worker's log
    is verified (a corrupt one fails the whole, named); a folder with neither is still exit 2."""
    data = tmp_path / "data"
    names = {w: make_log(str(data / "wal" / f"worker-{w}"), n=10 + w) for w in (0, 1, 10)}
    (data / "wal" / "worker-2").mkdir()  # a worker that never wrote: no log to report
    for target in (data, data / "wal"):
        assert main(["wal", "verify", str(target)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0::2] == [f"== {data / 'wal' / f'worker-{w}'}" for w in (0, 1, 10)]
        assert [line.split(" segment(s)")[0] for line in out[1::2]] == [
            f"ok: {10 + w} record(s) in {len(names[w])}" for w in (0, 1, 10)]
    assert main(["wal", "inspect", str(data), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and [r["records"] for r in doc["logs"]] == [10, 11, 20]
    flip(str(data / "wal" / "worker-1" / names[1][0]), 12)
    assert main(["wal", "verify", str(data)]) == 1
    out = capsys.readouterr().out
    assert f"== {data / 'wal' / 'worker-1'}" in out and f"CORRUPT: {names[1][0]}" in out
    assert main(["wal", "verify", str(tmp_path / "data" / "wal" / "worker-2")]) == 2
    assert "no WAL segments" in capsys.readouterr().err
