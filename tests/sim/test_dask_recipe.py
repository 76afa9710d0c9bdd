"""The README's Dask recipe is loopback only: start its scheduler and worker
commands exactly as written (on free ports) and list every socket their processes listen on."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytest.importorskip("distributed")


def _recipe() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [line for line in re.findall(r"^\.venv/bin/dask .*$", text, flags=re.M)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree(pid: int) -> set[int]:
    """``pid`` and every process descended from it (parents from /proc/*/stat)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, grew = {pid}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in out} - out
        out |= more
        grew = bool(more)
    return out


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket (v4 and v6) owned by ``pids``."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            addr_hex, port_hex = cols[1].split(":")
            if v6:
                raw = bytes.fromhex(addr_hex)
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                addr = socket.inet_ntop(socket.AF_INET6, words)
            else:
                addr = socket.inet_ntoa(bytes.fromhex(addr_hex)[::-1])
            found.append((addr, int(port_hex, 16)))
    return found


@pytest.mark.slow
def test_the_readme_dask_recipe_binds_every_port_to_loopback(tmp_path):
    scheduler_cmd, worker_cmd = _recipe()
    port, http = _free_port(), _free_port()

    def argv(line: str) -> list[str]:
        line = line.replace("8786", str(port)).replace("127.0.0.1:8787", f"127.0.0.1:{http}")
        return [str(BIN / "dask"), *line.split()[1:]]

    procs = []
    try:
        procs.append(subprocess.Popen(argv(scheduler_cmd), cwd=tmp_path, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (("127.0.0.1", port) not in _listening(_tree(procs[0].pid))):
            time.sleep(0.5)
        procs.append(subprocess.Popen(argv(worker_cmd), cwd=tmp_path, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT, start_new_session=True))
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            client.wait_for_workers(2, timeout=90)
        time.sleep(1)
        sockets = _listening(set().union(*(_tree(p.pid) for p in procs)))
        assert ("127.0.0.1", port) in sockets and ("127.0.0.1", http) in sockets, sockets
        assert len(sockets) >= 6, sockets  # scheduler 2, each of two nannies and two workers at least 1
        assert all(addr == "127.0.0.1" for addr, _ in sockets), sockets
    finally:
        for p in reversed(procs):
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
