"""Clock faults on real regions: libfaketime moves a region's wall clock, nothing else.

A real host's clock skew or step moves ``CLOCK_REALTIME``; ``CLOCK_MONOTONIC`` never
jumps. So a region's ``flk serve`` runs under libfaketime with the offset in a timestamp
file (``FAKETIME_TIMESTAMP_FILE``, re-read within a second) and
``FAKETIME_DONT_FAKE_MONOTONIC=1``. libfaketime 0.9.10 (Debian's) gets two timed waits
wrong in that mode, and ``ftshim.c`` (this folder), preloaded before it, replaces them:
``clock_nanosleep`` answered EINVAL (Python's ``time.sleep``) and ``sem_clockwait``
never returned (Python's ``Event.wait``, ``Queue.get(timeout=)``: the replication
thread's waits). The shim is compiled with the machine's C compiler into the run's folder.

* :func:`library` -- libfaketime's path, or None; :func:`compiler` -- the C compiler, or None;
* :func:`build_shim` -- compile the shim; its path, or :class:`ShimUnavailable` saying why;
* :func:`preload_env` -- the environment a region's server runs with;
* :func:`offset_text` -- the timestamp file's line for an offset in seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["LIBS", "SHIM_SOURCE", "ShimUnavailable", "build_shim", "compiler", "library", "offset_text",
           "preload_env"]

LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1")
SHIM_SOURCE = Path(__file__).with_name("ftshim.c")


class ShimUnavailable(Exception):
    """The shim could not be built here (no C compiler, or it failed)."""


def library() -> str | None:
    return next((p for p in LIBS if os.path.exists(p)), None)


def compiler() -> str | None:
    return next((c for c in (os.environ.get("CC"), "cc", "gcc") if c and shutil.which(c)), None)


def build_shim(directory: Path) -> Path:
    """``directory/ftshim.so`` compiled from :data:`SHIM_SOURCE` (made again every run: a
    few hundred milliseconds)."""
    cc = compiler()
    if cc is None:
        raise ShimUnavailable("no C compiler (cc or gcc; Debian package gcc, `make setup` installs it)")
    out = Path(directory) / "ftshim.so"
    try:
        done = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(SHIM_SOURCE), "-ldl"],
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ShimUnavailable(f"{cc} could not run: {type(exc).__name__}") from None
    if done.returncode != 0:
        raise ShimUnavailable(f"{cc} failed on {SHIM_SOURCE.name}: {done.stderr.strip()[-300:]}")
    return out


def preload_env(shim: Path, timestamp_file: Path) -> dict[str, str]:
    """The variables a region's server runs with. The file is re-read at most once a second
    (``FAKETIME_NO_CACHE`` re-reads it on every clock call: a server making thousands of them
    a second stalled and answered nothing)."""
    return {"LD_PRELOAD": f"{shim}:{library() or ''}", "FAKETIME_TIMESTAMP_FILE": str(timestamp_file),
            "FAKETIME_CACHE_DURATION": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def offset_text(seconds: float) -> str:
    """The timestamp file's line: ``+30.000s``, ``-5.000s``, ``+0``."""
    return f"{seconds:+.3f}s\n" if seconds else "+0\n"
