"""Shared helpers for the WAL tests: a FileSystem wrapper that counts and can
block fsyncs, and small builders."""

from __future__ import annotations

import threading
import time

from flk.impl.storage.walformat import encode_frame
from flk.impl.testing.crashfs import CrashableMemoryFileSystem


def frames(payloads: list[bytes]) -> bytes:
    return b"".join(encode_frame(p) for p in payloads)


def frame_ends(payloads: list[bytes]) -> list[int]:
    ends, o = [], 0
    for p in payloads:
        o += len(encode_frame(p))
        ends.append(o)
    return ends


class _CountingHandle:
    def __init__(self, fs: CountingFileSystem, inner, path: str) -> None:
        self._fs, self._inner, self.path = fs, inner, path

    def write(self, data: bytes) -> None:
        self._inner.write(data)

    def fsync(self) -> None:
        gate = self._fs.gate
        if gate is not None:
            self._fs.blocked.set()
            gate.wait()
        if self._fs.delay:
            time.sleep(self._fs.delay)  # a slow disk widens any too-early-release window
        self._inner.fsync()
        with self._fs.lock:
            self._fs.fsyncs += 1
            # what is durable in this file right after this fsync returned
            self._fs.durable_after_fsync.append((self.path, self._fs.inner.durable_view().get(self.path, b"")))

    def close(self) -> None:
        self._inner.close()


class CountingFileSystem:
    """Wraps a CrashableMemoryFileSystem; counts file fsyncs and can hold them
    at a gate (``gate = threading.Event()``; ``blocked`` is set when one waits)."""

    def __init__(self, inner: CrashableMemoryFileSystem | None = None) -> None:
        self.inner = inner if inner is not None else CrashableMemoryFileSystem()
        self.lock = threading.Lock()
        self.fsyncs = 0
        self.durable_after_fsync: list[tuple[str, bytes]] = []
        self.gate: threading.Event | None = None
        self.delay = 0.0
        self.blocked = threading.Event()

    def open_append(self, path: str):
        return _CountingHandle(self, self.inner.open_append(path), path)

    def __getattr__(self, name):
        return getattr(self.inner, name)
