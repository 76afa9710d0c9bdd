"""The pipeline is sans-I/O: no sockets, threads or event loops, and the clock only in the drivers."""

from __future__ import annotations

import ast
import inspect

import flk.impl.verifier.core as core
import flk.impl.verifier.pipeline as verifier
import flk.impl.verifier.tenants as tenants

FORBIDDEN = {"asyncio", "socket", "threading", "simpy", "subprocess", "os", "random"}


def _imports(mod) -> set[str]:
    tree = ast.parse(inspect.getsource(mod))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_io_modules_in_the_pipeline_or_tenant_logic():
    assert not (_imports(verifier) & FORBIDDEN)
    assert not (_imports(core) & FORBIDDEN)
    assert not (_imports(tenants) & FORBIDDEN)


def _clock_readers(mod) -> set[str]:
    tree = ast.parse(inspect.getsource(mod))
    readers = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "time":
                    readers.add(fn.name)
    return readers


def test_clock_read_only_by_the_drivers():
    """The reference drivers, and the core only where a driver asked for latencies."""
    assert _clock_readers(verifier) == {"run_sync", "run_batch"}
    assert _clock_readers(core) == {"__init__", "_finish", "recorded_fresh", "admit"}
