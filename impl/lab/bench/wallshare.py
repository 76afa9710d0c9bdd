"""Where a run's wall time went, by whose code was running: py-spy attached to this process.

While entered, :class:`WallShare` runs ``py-spy record`` on this very process and afterwards
counts every sample of the stacks that pass through ``select`` (a function as py-spy names
it: the measured call) to the *owner* of the innermost frame whose file lies under one of the
given roots (the longest root wins). A standard-library or third-party function counts to
the code that called it (``random.py`` called by the simulator's workload is the simulator's
time, ``json`` called by the verifier is the verifier's); C code is not in py-spy's Python
stacks, so its time counts to its Python caller (the compiled core called by the shipping
code is the shipping code's time).

Why py-spy, pausing the process for each sample (its default; some 4 % slower): the
samplers that do without it land late or drop samples, and not at random. A sampler thread
inside the process (``sys._current_frames``) or a ``SIGPROF`` handler runs only when the
measured thread lets go of the GIL, at its next check of the eval breaker -- a call or a
loop's jump back, usually in the caller after a C call returned -- so its samples land on
the code *after* the time was spent: on ``flk bench sim`` (50,000 submissions) it put 21 %
of the time in the shipping code where py-spy puts 43 %. py-spy ``--nonblocking`` kept 208
of 550 samples (the others' stacks changed while read) and put 38 % there.
``faulthandler``'s watchdog (no GIL) crashed the run.

py-spy is the ``profile`` extra (in ``dev``); without it, or where the kernel refuses the
attach, :attr:`WallShare.missing` says why and there are no shares (never a guess).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter

OTHER = "other"
PR_SET_PTRACER = 0x59616D61  # Yama: who may attach to this process (prctl(2))
PR_SET_PTRACER_ANY = -1 & 0xFFFFFFFFFFFFFFFF
ATTACH_S = 0.5  # py-spy's attach to a running process took 0.1-0.3 s here


def _norm(path: str) -> str:
    path = os.path.normpath(os.path.abspath(path))
    return path if path.endswith(os.sep) else path + os.sep


class Owners:
    """File path -> owner: the owner of the longest root that contains the file, else None.
    Roots are directories (a file anywhere under one belongs to it); answers are cached."""

    def __init__(self, roots: dict[str, str]) -> None:
        self.roots = sorted(((_norm(p), owner) for p, owner in roots.items()), key=lambda r: -len(r[0]))
        self._cache: dict[str, tuple[str, str] | None] = {}

    def where(self, filename: str) -> tuple[str, str] | None:
        """``(owner, path under its root)`` of ``filename``, or None (under no root)."""
        if filename in self._cache:
            return self._cache[filename]
        found = None
        if filename and not filename.startswith("<"):  # "<string>", "<frozen ...>": generated code
            path = os.path.normpath(os.path.abspath(filename))
            for root, name in self.roots:
                if path.startswith(root):
                    found = (name, path[len(root):])
                    break
        self._cache[filename] = found
        return found

    def of(self, filename: str) -> str | None:
        found = self.where(filename)
        return found[0] if found is not None else None

    def of_stack(self, files: list[str]) -> tuple[str, str]:
        """``(owner, path under its root)`` of the innermost file (``files`` outermost first)
        that has an owner, else ``(other, "")``."""
        for filename in reversed(files):
            found = self.where(filename)
            if found is not None:
                return found
        return OTHER, ""


def flk_owners() -> Owners:
    """The owners of ``flk bench sim``: ``shipping`` (``flk.impl``), ``simulator`` (``flk.sim``
    and ``flk.impl.testing``: the simulated disk), ``lab`` (``flk.impl.lab``: the bench itself),
    ``simpy``."""
    import simpy

    import flk.sim

    impl = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # impl/lab/bench/..
    return Owners({impl: "shipping", os.path.join(impl, "lab"): "lab", os.path.join(impl, "testing"): "simulator",
                   os.path.dirname(flk.sim.__file__): "simulator", os.path.dirname(simpy.__file__): "simpy"})


def parse_raw(text: str) -> list[tuple[list[tuple[str, str]], int]]:
    """py-spy's ``--format raw`` lines (``func (file:line);...;func (file:line) count``,
    outermost frame first) -> ``[([(func, file), ...], count), ...]``. A line that does not
    read so is skipped (py-spy's own notes)."""
    out = []
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            func, sep, where = frame.partition(" (")
            if not sep or not where.endswith(")"):
                frames.append((frame, ""))
                continue
            filename, _, line_no = where[:-1].rpartition(":")
            frames.append((func, filename if line_no.isdigit() else where[:-1]))
        out.append((frames, int(count)))
    return out


def attribute(stacks: list[tuple[list[tuple[str, str]], int]], owners: Owners, select: str) -> Counter[tuple[str, str]]:
    """Samples by ``(owner, file under its root)`` of the stacks that pass through a function
    py-spy names ``select`` (``World.run``, ``main``: a qualified name) -- its frames inward
    from there: the measured call, not what ran before or beside it."""
    counts: Counter[tuple[str, str]] = Counter()
    for frames, n in stacks:
        names = [func for func, _ in frames]
        if select not in names:
            continue
        inner = frames[names.index(select):]
        counts[owners.of_stack([f for _, f in inner])] += n
    return counts


def by_owner(by_file: Counter[tuple[str, str]]) -> Counter[str]:
    """:func:`attribute`'s samples summed by owner."""
    counts: Counter[str] = Counter()
    for (owner, _), n in by_file.items():
        counts[owner] += n
    return counts


def py_spy() -> str | None:
    """The py-spy executable: on PATH, or beside this Python (a virtualenv's bin)."""
    found = shutil.which("py-spy")
    if found:
        return found
    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return here if os.access(here, os.X_OK) else None


def _allow_tracer(on: bool) -> None:
    """Let any process attach to this one (Yama ptrace_scope 1 allows only ancestors): py-spy
    is this process's child. A kernel without Yama ignores it; not Linux: nothing to do."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(ctypes.c_int(PR_SET_PTRACER), ctypes.c_ulong(PR_SET_PTRACER_ANY if on else 0), 0, 0, 0)


class WallShare:
    """``with WallShare(owners, select="World.run"): world.run()``. Afterwards
    :attr:`counts` (samples by owner; empty when not measured), :attr:`by_file` (by owner and
    file), :attr:`missing` (why not: None when measured) and :meth:`shares`."""

    def __init__(self, owners: Owners, select: str, rate: int = 100) -> None:
        if rate < 1:
            raise ValueError("rate must be >= 1")
        self.owners = owners
        self.select = select
        self.rate = rate
        self.counts: Counter[str] = Counter()
        self.by_file: Counter[tuple[str, str]] = Counter()  # (owner, file under its root)
        self.missing: str | None = None
        self._proc: subprocess.Popen | None = None
        self._dir: str | None = None

    def __enter__(self) -> WallShare:
        exe = py_spy()
        if exe is None:
            self.missing = "py-spy is not installed (pip install 'flk-lab[profile]')"
            return self
        self._dir = tempfile.mkdtemp(prefix="flk-wallshare-")
        _allow_tracer(True)
        try:
            with open(os.path.join(self._dir, "err.txt"), "wb") as err:
                self._proc = subprocess.Popen(
                    [exe, "record", "--pid", str(os.getpid()), "--rate", str(self.rate), "--format", "raw",
                     "--full-filenames", "--output", os.path.join(self._dir, "raw.txt")],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        except OSError as exc:  # not executable, no memory for a process: measured nothing
            self.missing = f"py-spy could not start: {exc.strerror or exc}"
            self._done()
            return self
        try:  # py-spy says nothing when it samples (no terminal): give it the time to attach
            self._proc.wait(timeout=ATTACH_S)  # or to fail (refused, no Python found)
        except subprocess.TimeoutExpired:
            pass
        return self

    def _read(self, name: str) -> bytes:
        try:
            with open(os.path.join(self._dir or "", name), "rb") as fh:
                return fh.read()
        except OSError:
            return b""

    def __exit__(self, *exc) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes its file and ends
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            raw = self._read("raw.txt").decode("utf-8", "replace")
            self.by_file = attribute(parse_raw(raw), self.owners, self.select)
            self.counts = by_owner(self.by_file)
            if not self.counts:
                err = self._read("err.txt").decode("utf-8", "replace").strip().splitlines()
                said = next((line for line in err if "rror" in line or "ermission" in line), "")
                self.missing = f"py-spy took no sample of the run{': ' + said[:200] if said else ''}"
        finally:
            self._done()

    def _done(self) -> None:
        _allow_tracer(False)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @property
    def samples(self) -> int:
        return sum(self.counts.values())

    def shares(self, names: tuple[str, ...] = ()) -> dict[str, float]:
        """Each owner's fraction of the samples (``names`` listed even when never sampled);
        empty when nothing was sampled."""
        total = self.samples
        if total == 0:
            return {}
        return {name: self.counts.get(name, 0) / total for name in sorted({*names, *self.counts})}
