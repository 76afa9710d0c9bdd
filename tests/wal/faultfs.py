"""A fault-injecting FileSystem for disk-full and I/O-error tests.

Wraps any :class:`flk.impl.storage.fs.FileSystem` (the OS disk or the
crashable memory disk). While ``full`` is set every write that would add bytes
fails with ENOSPC -- after writing half of them, as a real short write before
ENOSPC can -- and so does ``write_atomic``; ``fail_fsyncs(n)`` makes the next
``n`` fsyncs fail with EIO. ``writes`` counts write attempts (to show that
requests are turned away before the WAL while it is known broken).
"""

from __future__ import annotations

import errno
import threading


class _Handle:
    def __init__(self, fs: FaultFileSystem, inner, path: str) -> None:
        self.fs, self.inner, self.path = fs, inner, path

    def write(self, data: bytes) -> None:
        self.fs.count_write()
        if self.fs.full and data:
            self.inner.write(bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device (injected)", self.path)
        self.inner.write(data)

    def fsync(self) -> None:
        self.fs.fsync_point(self.path)
        self.inner.fsync()

    def close(self) -> None:
        self.inner.close()


class FaultFileSystem:
    def __init__(self, inner) -> None:
        self.inner = inner
        self.full = False
        self.writes = 0
        self._eio = 0
        self._lock = threading.Lock()

    def count_write(self) -> None:
        with self._lock:
            self.writes += 1

    def fail_fsyncs(self, n: int = 1) -> None:
        with self._lock:
            self._eio = n

    def fsync_point(self, path: str) -> None:
        with self._lock:
            if self._eio > 0:
                self._eio -= 1
                raise OSError(errno.EIO, "Input/output error (injected fsync failure)", path)

    def open_append(self, path: str) -> _Handle:
        return _Handle(self, self.inner.open_append(path), path)

    def open_preallocated(self, path: str, size: int, chunk: int) -> _Handle:
        """(Only where the wrapped disk has it: ``hasattr`` tells.) Its writes fail like appends."""
        return _Handle(self, self.inner.open_preallocated(path, size, chunk), path)

    def write_atomic(self, path: str, data: bytes) -> None:
        self.count_write()
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device (injected)", path)
        self.inner.write_atomic(path, data)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __getattribute__(self, name: str):
        if name == "open_preallocated" and not hasattr(object.__getattribute__(self, "inner"), name):
            raise AttributeError(name)  # the memory disk appends: so does its wrapper
        return object.__getattribute__(self, name)
