"""``flk serve`` on a data directory whose inbox WAL is damaged refuses to start (SPEC 12.3: the
log does not open with corruption in it) with its reason as one JSON line naming the WAL
directory and ``flk wal verify`` -- no traceback (uvicorn printed the lifespan's whole stack)."""

from __future__ import annotations

import json
import subprocess

import pytest

from flk.impl.storage.wal import SegmentedLog

from .proc import FLK, clean_env

pytestmark = pytest.mark.server

DAMAGE = {
    "manifest-not-json": lambda d: (d / "seg-00000000000000000000.manifest.json").write_text("garbage"),
    "manifest-deep": lambda d: (d / "seg-00000000000000000000.manifest.json").write_text("[" * 100_000),
    "sealed-segment-cut": lambda d: (d / "seg-00000000000000000000.log").write_bytes(
        (d / "seg-00000000000000000000.log").read_bytes()[:40]),
}


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_inbox_wal_is_one_line_naming_it(tmp_path, damage, workers):
    data = tmp_path / "data"
    wal_dir = data / "wal" / "worker-0"
    log = SegmentedLog(str(wal_dir))
    for i in range(3):
        log.append(b'{"r": %d}' % i)
    log.sync()
    log.seal()
    log.close()
    (wal_dir / "seg-00000000000000000000.log").chmod(0o644)  # sealed segments are read-only
    DAMAGE[damage](wal_dir)
    out = subprocess.run([FLK, "serve"], cwd=tmp_path, capture_output=True, timeout=120,
                         env=clean_env(PORT="0", WORKERS=workers, DATA_DIR=str(data), PCS_HMAC_KEY="k" * 32))
    err = out.stderr.decode()
    assert out.returncode != 0 and "Traceback" not in err, err
    [failed] = [json.loads(line) for line in err.splitlines() if '"event":"startup_failed"' in line]
    assert failed["reason"].startswith("WalCorruption: WAL corruption in seg-00000000000000000000"), failed
    assert failed["wal_dir"] == str(wal_dir) and "flk wal verify" in failed["note"], failed
    verify = subprocess.run([FLK, "wal", "verify", failed["wal_dir"]], capture_output=True, timeout=60)
    assert verify.returncode == 1 and b"seg-00000000000000000000" in verify.stdout + verify.stderr


def test_a_wal_error_that_is_not_damage_gets_no_damage_note(tmp_path):
    """A WAL directory that is a file is a WalError but no corruption: the reason says so, and
    the line does not send the operator to look for damage."""
    wal_dir = tmp_path / "data" / "wal" / "worker-0"
    wal_dir.parent.mkdir(parents=True)
    wal_dir.write_text("")
    out = subprocess.run([FLK, "serve"], cwd=tmp_path, capture_output=True, timeout=120,
                         env=clean_env(PORT="0", WORKERS="1", DATA_DIR=str(tmp_path / "data"), PCS_HMAC_KEY="k" * 32))
    err = out.stderr.decode()
    assert out.returncode != 0 and "Traceback" not in err, err
    [failed] = [json.loads(line) for line in err.splitlines() if '"event":"startup_failed"' in line]
    assert failed["reason"].startswith("WalError: ") and "is not a directory" in failed["reason"], failed
    assert "note" not in failed and "wal_dir" not in failed, failed
