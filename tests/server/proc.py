"""A real ``flk serve`` process for tests: start, wait until ready, signal, restart."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import httpx

from flk.impl.server.config import ENV_NAMES

ROOT = pathlib.Path(__file__).resolve().parents[2]
FLK = str(pathlib.Path(sys.executable).parent / "flk")

CONFIG_VARS = ENV_NAMES  # every setting of the settings table (and its older aliases)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    env.update({k: str(v) for k, v in extra.items()})
    return env


class ServerProc:
    def __init__(self, cwd: pathlib.Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.cwd = pathlib.Path(cwd)
        # one worker unless a test asks for more (the server's default is the core count)
        self.env = clean_env(**{"WORKERS": "1", **(env or {})})
        self.args = args
        self.log_path = self.cwd / "server.log"
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServerProc:
        self.cwd.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [FLK, "serve", "--port", "0", *self.args], cwd=self.cwd, env=self.env,
            stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        self.port = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flk serve exited {self.proc.returncode}: {self.log_tail()}")
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            for line in text.splitlines():
                if line.startswith("{") and '"event":"listening"' in line:
                    self.port = json.loads(line)["port"]
            workers = int(self.env.get("WORKERS", "1"))
            if self.port is not None and text.count('"event":"worker_ready"') >= workers:
                try:
                    if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"flk serve not ready: {self.log_tail()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n: int = 3000) -> str:
        return self.log_text()[-n:]

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group (supervisor and workers)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def __enter__(self) -> ServerProc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.kill()
