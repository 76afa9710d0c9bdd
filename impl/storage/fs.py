"""The one door to the disk: a small ``FileSystem`` interface and two disks.

Why this module exists: the inbox WAL, the agent outbox and the audit log must
be correct on a *real* disk, where only fsynced bytes and fsynced directory
entries survive a power cut. Code that talks to ``os`` directly can only be
tested against the happy path. Everything that writes durable state goes
through a :class:`FileSystem`, so the same code runs on

* :class:`OsFileSystem` -- the real disk (``os.write``, ``fdatasync``, and an
  fsync of the directory after a create or a rename), and
* :class:`CrashableMemoryFileSystem` -- an in-memory disk that remembers what
  is *durable*. ``crash()`` throws away every byte written after a file's last
  fsync and every directory change (create, rename, remove) made after the
  directory's last fsync; optionally a prefix of the unsynced tail survives (a
  torn write), chosen by a seeded RNG passed in, and optionally a prefix of
  the directory operations made since the last directory fsync survives (as
  on a journaling file system). ``flip_bit`` models media corruption. The
  simulator drives it; tests use it to crash at any point.

By default the memory disk is *stricter* than Linux: it never makes a
directory entry durable implicitly, so code that is correct on it does not
depend on ext4's habits; with ``partial_dir_ops`` it also explores the
opposite case, where some of those entries did reach the disk. (Directories
themselves are durable as soon as they are made -- the logs create their
directory once, at start.)

Rules of the interface (both implementations keep them):

* ``open_append(path)`` creates the file if needed; the handle's ``write``
  appends, ``fsync`` makes the file's *content* durable (not its name).
* ``truncate(path, size)`` is durable on return (it fsyncs the file).
* ``write_atomic(path, data)`` = write a temp file, fsync it, rename over
  ``path``, fsync the directory: after it returns, ``path`` holds ``data``
  durably; after a crash during it, ``path`` holds the old or the new data.
* ``rename``/``remove``/creates are made durable by ``fsync_dir(dirname)``.
  ``OsFileSystem`` also does that itself after a create and a rename; callers
  that must be correct on any disk call ``fsync_dir`` explicitly anyway.
* ``listdir`` returns sorted names (never hash order).
"""

from __future__ import annotations

import errno
import os
import posixpath
import random
import threading
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "FileHandle",
    "FileSystem",
    "OsFileSystem",
    "CrashableMemoryFileSystem",
]


class FileHandle(Protocol):
    def write(self, data: bytes) -> None: ...

    def fsync(self) -> None: ...

    def close(self) -> None: ...


class FileSystem(Protocol):
    def open_append(self, path: str) -> FileHandle: ...

    def read(self, path: str) -> bytes: ...

    def write_atomic(self, path: str, data: bytes) -> None: ...

    def rename(self, src: str, dst: str) -> None: ...

    def remove(self, path: str) -> None: ...

    def listdir(self, path: str) -> list[str]: ...

    def exists(self, path: str) -> bool: ...

    def isdir(self, path: str) -> bool: ...

    def makedirs(self, path: str) -> None: ...

    def fsync_dir(self, path: str) -> None: ...

    def truncate(self, path: str, size: int) -> None: ...

    def size(self, path: str) -> int: ...

    def chmod_readonly(self, path: str) -> None: ...


# ---------------------------------------------------------------------------
# The real disk
# ---------------------------------------------------------------------------

_fdatasync = getattr(os, "fdatasync", os.fsync)


class _OsHandle:
    __slots__ = ("_fd", "path")

    def __init__(self, fd: int, path: str) -> None:
        self._fd = fd
        self.path = path

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def fsync(self) -> None:
        # fdatasync also persists the file size, which is all an append needs.
        _fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class OsFileSystem:
    """The real disk. Paths are used as given."""

    def open_append(self, path: str) -> _OsHandle:
        existed = os.path.exists(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if not existed:
            self.fsync_dir(os.path.dirname(path) or ".")
        return _OsHandle(fd, path)

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def write_atomic(self, path: str, data: bytes) -> None:
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _OsHandle(fd, tmp).write(data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self.fsync_dir(os.path.dirname(path) or ".")

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)
        d_src, d_dst = os.path.dirname(src) or ".", os.path.dirname(dst) or "."
        self.fsync_dir(d_dst)
        if d_src != d_dst:
            self.fsync_dir(d_src)

    def remove(self, path: str) -> None:
        os.remove(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def makedirs(self, path: str) -> None:
        if os.path.isdir(path):
            return
        new = []  # the directories this call creates, deepest first
        p = os.path.abspath(path)
        while not os.path.exists(p):
            new.append(p)
            p = os.path.dirname(p)
        os.makedirs(path, exist_ok=True)
        for d in reversed(new):  # make each new entry durable in its parent
            self.fsync_dir(os.path.dirname(d))

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def truncate(self, path: str, size: int) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def size(self, path: str) -> int:
        return os.path.getsize(path)

    def chmod_readonly(self, path: str) -> None:
        os.chmod(path, 0o444)


# ---------------------------------------------------------------------------
# The crashable in-memory disk
# ---------------------------------------------------------------------------


class _Inode:
    __slots__ = ("data", "durable", "readonly")

    def __init__(self) -> None:
        self.data = bytearray()  # what a reader sees now
        # what survives a crash (content as of the last fsync). Invariant: ``durable`` is a
        # prefix of ``data`` (between fsyncs a file only grows by appends), so fsync extends
        # it by the new tail instead of copying the whole file.
        self.durable = bytearray()
        self.readonly = False


def _norm(path: str) -> str:
    p = posixpath.normpath(path)
    return "" if p == "." else p


class _MemHandle:
    __slots__ = ("_fs", "_inode", "_epoch", "path", "_closed")

    def __init__(self, fs: CrashableMemoryFileSystem, inode: _Inode, path: str) -> None:
        self._fs = fs
        self._inode = inode
        self._epoch = fs._epoch
        self.path = path
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise ValueError(f"I/O on closed file {self.path!r}")
        if self._epoch != self._fs._epoch:
            raise OSError(errno.EIO, f"stale handle after crash: {self.path!r}")

    def write(self, data: bytes) -> None:
        with self._fs._lock:
            self._check()
            self._inode.data += data
            self._fs.write_count += 1

    def fsync(self) -> None:
        with self._fs._lock:
            self._check()
            self._fs._fsync_point(self.path)
            inode = self._inode
            inode.durable += inode.data[len(inode.durable):]
            self._fs.fsync_count += 1
        if self._fs.fsync_hook is not None:
            self._fs.fsync_hook(self.path)

    def close(self) -> None:
        self._closed = True


class CrashableMemoryFileSystem:
    """An in-memory disk that knows which bytes and names are durable.

    ``rng`` (a seeded :class:`random.Random`, never the global one) decides how
    much of an unsynced tail survives a crash when ``torn_writes`` is on.
    ``fsync_hook(path)`` is called after every file fsync (the simulator uses
    it to charge fsync latency). ``fail_fsyncs(n)`` makes the next ``n`` file
    fsyncs raise ``OSError(EIO)`` without making anything durable.
    Thread-safe (one lock), so a group-commit thread can use it.
    """

    def __init__(
        self,
        rng: random.Random | None = None,
        torn_writes: bool = False,
        fsync_hook: Callable[[str], None] | None = None,
        partial_dir_ops: bool = False,
    ) -> None:
        self._lock = threading.RLock()
        self._rng = rng
        self.torn_writes = torn_writes
        self.partial_dir_ops = partial_dir_ops
        # directory operations not yet made durable by fsync_dir, per directory, in order:
        # ("link", path, inode) | ("unlink", path) | ("rename", src, dst, inode)
        self._dir_ops: dict[str, list[tuple]] = {}
        self.fsync_hook = fsync_hook
        self._dirs: set[str] = {""}
        self._live: dict[str, _Inode] = {}  # path -> inode, as a reader sees it
        self._durable: dict[str, _Inode] = {}  # path -> inode, as of each dir's last fsync
        self._epoch = 0
        self._fail_fsyncs = 0
        self.fsync_count = 0
        self.dir_fsync_count = 0
        self.write_count = 0
        self.crash_count = 0

    # -- fault injection -------------------------------------------------
    def fail_fsyncs(self, n: int = 1) -> None:
        with self._lock:
            self._fail_fsyncs = n

    def _fsync_point(self, path: str) -> None:
        if self._fail_fsyncs > 0:
            self._fail_fsyncs -= 1
            raise OSError(errno.EIO, f"injected fsync failure: {path!r}")

    def crash(self, rng: random.Random | None = None, torn_writes: bool | None = None,
              partial_dir_ops: bool | None = None) -> dict:
        """Lose everything that is not durable; invalidate every open handle.

        With torn writes, each file whose unsynced change was a pure append
        keeps a random-length prefix of that unsynced tail (0..all of it).
        With partial directory operations, each directory keeps a random
        *prefix* of the creates/renames/removes made since its last fsync
        (journaling file systems persist metadata in order, sometimes before
        the fsync). Returns ``{"files": n, "torn": {path: kept_bytes},
        "dir_ops_kept": {dir: (kept, pending)}}``.
        """
        rng = rng if rng is not None else self._rng
        torn = self.torn_writes if torn_writes is None else torn_writes
        partial = self.partial_dir_ops if partial_dir_ops is None else partial_dir_ops
        if (torn or partial) and rng is None:
            raise ValueError("torn writes / partial directory operations need a seeded rng")
        report: dict = {"files": 0, "torn": {}, "dir_ops_kept": {}}
        with self._lock:
            self._epoch += 1
            self.crash_count += 1
            if partial:
                for d in sorted(self._dir_ops):
                    ops = self._dir_ops[d]
                    k = rng.randint(0, len(ops))
                    report["dir_ops_kept"][d] = (k, len(ops))
                    for op in ops[:k]:
                        if op[0] == "link":
                            self._durable[op[1]] = op[2]
                        elif op[0] == "unlink":
                            self._durable.pop(op[1], None)
                        else:
                            self._durable.pop(op[1], None)
                            self._durable[op[2]] = op[3]
            self._dir_ops = {}
            self._live = dict(sorted(self._durable.items()))
            seen: set[int] = set()
            for path, inode in self._live.items():
                if id(inode) in seen:
                    continue
                seen.add(id(inode))
                report["files"] += 1
                kept = inode.durable
                cur = bytes(inode.data)
                if torn and len(cur) > len(kept) and cur.startswith(kept):
                    extra = rng.randint(0, len(cur) - len(kept))
                    if extra:
                        kept = cur[: len(kept) + extra]
                        report["torn"][path] = extra
                inode.data = bytearray(kept)
                inode.durable = bytearray(kept)
        return report

    def flip_bit(self, path: str, offset: int, bit: int = 0) -> None:
        """Flip one bit of a file, in its current and its durable content."""
        with self._lock:
            inode = self._get(path)
            if not 0 <= offset < len(inode.data):
                raise ValueError(f"offset {offset} outside {path!r} ({len(inode.data)} bytes)")
            inode.data[offset] ^= 1 << (bit & 7)
            if offset < len(inode.durable):
                inode.durable[offset] ^= 1 << (bit & 7)

    def clone(self, rng: random.Random | None = None) -> CrashableMemoryFileSystem:
        """An independent copy of this disk (current and durable state, pending
        directory operations); no open handle carries over. For forking a
        scenario, e.g. trying every crash point from one state."""
        with self._lock:
            other = CrashableMemoryFileSystem(rng=rng, torn_writes=self.torn_writes,
                                              fsync_hook=self.fsync_hook,
                                              partial_dir_ops=self.partial_dir_ops)
            copies: dict[int, _Inode] = {}

            def cp(inode: _Inode) -> _Inode:
                if id(inode) not in copies:
                    n = _Inode()
                    n.data, n.durable, n.readonly = bytearray(inode.data), inode.durable, inode.readonly
                    copies[id(inode)] = n
                return copies[id(inode)]

            other._dirs = set(self._dirs)
            other._live = {p: cp(i) for p, i in self._live.items()}
            other._durable = {p: cp(i) for p, i in self._durable.items()}
            other._dir_ops = {d: [tuple(cp(x) if isinstance(x, _Inode) else x for x in op) for op in ops]
                              for d, ops in self._dir_ops.items()}
            other._epoch = self._epoch + 1
            return other

    def durable_view(self) -> dict[str, bytes]:
        """What a crash right now would leave (without torn writes): path -> bytes."""
        with self._lock:
            return {p: bytes(i.durable) for p, i in sorted(self._durable.items())}

    # -- the FileSystem interface -----------------------------------------
    def _get(self, path: str) -> _Inode:
        p = _norm(path)
        inode = self._live.get(p)
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        return inode

    def _check_parent(self, p: str) -> None:
        parent = posixpath.dirname(p)
        if parent not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "no such directory", parent)

    def open_append(self, path: str) -> _MemHandle:
        p = _norm(path)
        with self._lock:
            inode = self._live.get(p)
            if inode is None:
                if p in self._dirs:
                    raise IsADirectoryError(errno.EISDIR, "is a directory", path)
                self._check_parent(p)
                inode = _Inode()
                self._live[p] = inode
                self._dir_op(p, ("link", p, inode))
            elif inode.readonly:
                raise PermissionError(errno.EACCES, "read-only file", path)
            return _MemHandle(self, inode, p)

    def read(self, path: str) -> bytes:
        with self._lock:
            return bytes(self._get(path).data)

    def write_atomic(self, path: str, data: bytes) -> None:
        p = _norm(path)
        tmp = p + ".tmp"
        with self._lock:
            if tmp in self._live:
                self._live[tmp].readonly = False
                self.remove(tmp)
            h = self.open_append(tmp)
            h.write(data)
            h.fsync()
            h.close()
            self.rename(tmp, p)
            self.fsync_dir(posixpath.dirname(p))

    def rename(self, src: str, dst: str) -> None:
        s, d = _norm(src), _norm(dst)
        with self._lock:
            inode = self._get(s)
            self._check_parent(d)
            del self._live[s]
            self._live[d] = inode
            if posixpath.dirname(s) == posixpath.dirname(d):
                self._dir_op(d, ("rename", s, d, inode))
            else:
                self._dir_op(s, ("unlink", s))
                self._dir_op(d, ("link", d, inode))

    def _dir_op(self, path: str, op: tuple) -> None:
        self._dir_ops.setdefault(posixpath.dirname(path), []).append(op)

    def remove(self, path: str) -> None:
        with self._lock:
            self._get(path)
            p = _norm(path)
            del self._live[p]
            self._dir_op(p, ("unlink", p))

    def listdir(self, path: str) -> list[str]:
        d = _norm(path)
        with self._lock:
            if d not in self._dirs:
                raise FileNotFoundError(errno.ENOENT, "no such directory", path)
            names = {posixpath.basename(p) for p in self._live if posixpath.dirname(p) == d}
            names |= {posixpath.basename(x) for x in self._dirs if x and posixpath.dirname(x) == d}
            return sorted(names)

    def exists(self, path: str) -> bool:
        p = _norm(path)
        with self._lock:
            return p in self._live or p in self._dirs

    def isdir(self, path: str) -> bool:
        with self._lock:
            return _norm(path) in self._dirs

    def makedirs(self, path: str) -> None:
        p = _norm(path)
        with self._lock:
            parts = [x for x in p.split("/") if x]
            cur = "/" if p.startswith("/") else ""
            if cur:
                self._dirs.add("/")
            for part in parts:
                cur = posixpath.join(cur, part) if cur else part
                if cur in self._live:
                    raise FileExistsError(errno.EEXIST, "a file is in the way", cur)
                self._dirs.add(cur)

    def fsync_dir(self, path: str) -> None:
        d = _norm(path)
        with self._lock:
            if d not in self._dirs:
                raise FileNotFoundError(errno.ENOENT, "no such directory", path)
            for p in [p for p in self._durable if posixpath.dirname(p) == d]:
                del self._durable[p]
            for p, inode in self._live.items():
                if posixpath.dirname(p) == d:
                    self._durable[p] = inode
            self._dir_ops.pop(d, None)
            self.dir_fsync_count += 1

    def truncate(self, path: str, size: int) -> None:
        with self._lock:
            inode = self._get(path)
            if size < 0:
                raise ValueError("negative size")
            if size <= len(inode.data):
                del inode.data[size:]
            else:
                inode.data += bytes(size - len(inode.data))
            self._fsync_point(path)
            inode.durable = bytearray(inode.data)
            self.fsync_count += 1

    def size(self, path: str) -> int:
        with self._lock:
            return len(self._get(path).data)

    def chmod_readonly(self, path: str) -> None:
        with self._lock:
            self._get(path).readonly = True
