"""``make lab`` starts JupyterLab on the notebooks folder, on loopback, without a browser.

The test runs the Makefile target itself (``-o`` the install stamp, so make
does not reinstall the venv) on a free loopback port with a known token and
isolated Jupyter config/runtime folders, fetches the JupyterLab page and a
notebook listing from its contents API, and stops the whole process group.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
JUPYTER = pathlib.Path(sys.executable).parent / "jupyter-lab"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_lab(url: str, token: str, proc: subprocess.Popen, log: pathlib.Path) -> httpx.Response:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"make lab exited {proc.returncode}: {log.read_text(errors='replace')[-3000:]}")
        try:
            resp = httpx.get(f"{url}/lab?token={token}", timeout=5)
            if resp.status_code == 200:
                return resp
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"JupyterLab did not answer: {log.read_text(errors='replace')[-3000:]}")


def test_make_lab_serves_jupyterlab_on_the_notebooks_folder(tmp_path):
    if not JUPYTER.exists():
        msg = "jupyterlab is not installed in this venv (make setup installs it with the dev extras)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_TOKEN=token, JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               HOME=str(tmp_path))
    log = tmp_path / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["make", "-o", ".venv/.installed-stamp", "lab", f"LAB_PORT={port}"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        page = _wait_for_lab(url, token, proc, log)
        assert "JupyterLab" in page.text
        listing = httpx.get(f"{url}/api/contents?token={token}", timeout=10).json()
        names = {item["name"] for item in listing["content"]}
        assert "01-quickstart.ipynb" in names  # the root is the notebooks folder
        assert httpx.get(f"{url}/lab", timeout=10, follow_redirects=False).status_code in (302, 403)  # token needed
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
