"""The crashable in-memory disk: a test double of :class:`flk.impl.storage.fs.FileSystem`.

Why this module exists: the WAL, outbox and audit-log tests and the simulator
need a disk that knows which bytes and names are durable, so a crash can keep
exactly those (torn writes, partial directory operations, bit flips, failing
fsyncs). Production code never imports it (spec/ARCHITECTURE.md).
"""

from __future__ import annotations

import errno
import posixpath
import random
import threading
from collections.abc import Callable

# ---------------------------------------------------------------------------
# The crashable in-memory disk
# ---------------------------------------------------------------------------


class _Inode:
    __slots__ = ("data", "durable_len", "readonly")

    def __init__(self) -> None:
        self.data = bytearray()  # what a reader sees now
        # what survives a crash is ``data[:durable_len]`` (content as of the last fsync).
        # Between fsyncs a file only grows by appends (truncate syncs, a crash cuts back to
        # the durable prefix), so the durable content is always a prefix of ``data`` and is
        # kept as its length: every byte is held once, not twice.
        self.durable_len = 0
        self.readonly = False

    @property
    def durable(self) -> bytes:
        return bytes(self.data[: self.durable_len])

    def writable(self) -> bytearray:
        """``data`` as a bytearray to change in place (a read-only file keeps it as bytes)."""
        if not isinstance(self.data, bytearray):
            self.data = bytearray(self.data)
        return self.data


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
            self._inode.writable().extend(data)
            self._fs.write_count += 1

    def fsync(self) -> None:
        with self._fs._lock:
            self._check()
            self._fs._fsync_point(self.path)
            inode = self._inode
            inode.durable_len = len(inode.data)
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
                    self._apply(ops[:k])
            self._dir_ops = {}
            self._live = dict(sorted(self._durable.items()))
            seen: set[int] = set()
            for path, inode in self._live.items():
                if id(inode) in seen:
                    continue
                seen.add(id(inode))
                report["files"] += 1
                kept = inode.durable_len
                if torn and len(inode.data) > kept:  # the unsynced change is a pure append
                    extra = rng.randint(0, len(inode.data) - kept)
                    if extra:
                        kept += extra
                        report["torn"][path] = extra
                if len(inode.data) > kept:
                    del inode.writable()[kept:]
                inode.durable_len = kept
        return report

    def flip_bit(self, path: str, offset: int, bit: int = 0) -> None:
        """Flip one bit of a file, in its current and its durable content."""
        with self._lock:
            inode = self._get(path)
            if not 0 <= offset < len(inode.data):
                raise ValueError(f"offset {offset} outside {path!r} ({len(inode.data)} bytes)")
            inode.writable()[offset] ^= 1 << (bit & 7)  # in the durable prefix too when offset is inside it

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
                    n.data, n.durable_len, n.readonly = bytearray(inode.data), inode.durable_len, inode.readonly
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
            return {p: i.durable for p, i in sorted(self._durable.items())}

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

    def _apply(self, ops: list[tuple]) -> None:
        """Make directory operations durable, in order (the durable entries they change)."""
        durable = self._durable
        for op in ops:
            if op[0] == "link":
                durable[op[1]] = op[2]
            elif op[0] == "unlink":
                durable.pop(op[1], None)
            else:
                durable.pop(op[1], None)
                durable[op[2]] = op[3]

    def fsync_dir(self, path: str) -> None:
        """The directory's entries become durable as a reader sees them: its pending operations
        applied in order -- every change of a directory's entries is one (``_dir_op``: create,
        rename, remove; a crash starts every directory over with none), so the durable entries
        then equal the live ones without a look at the other files of the disk."""
        d = _norm(path)
        with self._lock:
            if d not in self._dirs:
                raise FileNotFoundError(errno.ENOENT, "no such directory", path)
            self._apply(self._dir_ops.pop(d, ()))
            self.dir_fsync_count += 1

    def truncate(self, path: str, size: int) -> None:
        with self._lock:
            inode = self._get(path)
            if size < 0:
                raise ValueError("negative size")
            if size <= len(inode.data):
                del inode.writable()[size:]
            else:
                inode.writable().extend(bytes(size - len(inode.data)))
            self._fsync_point(path)
            inode.durable_len = len(inode.data)
            self.fsync_count += 1

    def size(self, path: str) -> int:
        with self._lock:
            return len(self._get(path).data)

    def chmod_readonly(self, path: str) -> None:
        """Read-only (a sealed WAL segment): its bytes are kept as one immutable ``bytes``
        that every :meth:`read` hands out, so a copy uploaded from it holds no second copy."""
        with self._lock:
            inode = self._get(path)
            inode.readonly = True
            inode.data = bytes(inode.data)
