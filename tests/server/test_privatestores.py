"""The tests' private stores remove their temp folder when their first start fails (the
caller's ``finally`` never held a started store); ``make test`` fails on such a leftover."""

from __future__ import annotations

import os
import subprocess

import pytest

from .privatestores import PrivatePostgres, PrivateRedis


@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_a_failed_first_start_leaves_no_folder(kind, monkeypatch):
    store = PrivatePostgres() if kind == "postgres" else PrivateRedis()
    folder = store.root if kind == "postgres" else store.dir
    assert os.path.isdir(folder)
    if kind == "postgres":
        store.bin = "/nonexistent/bin"  # initdb cannot run
        expected = (subprocess.CalledProcessError, FileNotFoundError)
    else:
        def refuse(*a, **k):
            raise OSError("redis-server refused (planted)")

        monkeypatch.setattr(subprocess, "Popen", refuse)
        expected = OSError
    with pytest.raises(expected):
        store.start()
    assert not os.path.exists(folder)
