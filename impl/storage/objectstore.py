"""Object stores: immutable blobs (bytes + a small metadata dict) under string keys.

Why this module exists: cross-region replication (``flk.impl.replication.shipping``) ships
sealed inbox WAL segments to a store every region can read, and the cold tier
(``flk.impl.dedup.tiered``) parks old dedup entries there. Both need only a tiny
contract, so the same logic runs on a shared directory (the default), on S3
(boto3; tested against moto's real HTTP server) and in memory (tests and the
simulator, which can make the store unreachable).

Contract (:class:`ObjectStore`):

* ``put(key, data, metadata=None) -> bool`` -- write-once: ``False`` (and no
  write) if the key already exists, ``True`` if this call stored it. A reader
  never sees a partial object.
* ``get(key) -> bytes``; ``get_metadata(key) -> dict[str, str]``; both raise
  :class:`ObjectNotFound` for a missing key.
* ``exists(key)``, ``list(prefix) -> sorted keys`` (byte order of the UTF-8
  key), ``delete(key)`` (no error if absent).
* An unreachable store raises :class:`ObjectStoreUnavailable` from every call;
  callers back off and retry.

Keys are ``/``-separated relative paths: non-empty components of
``[A-Za-z0-9._-]`` that do not start with ``.``. Metadata keys and values are
short ASCII strings (S3 user metadata rules).
"""

from __future__ import annotations

import json
import posixpath
import re
import threading
from collections.abc import Mapping
from typing import Protocol

from ..core import textdata
from ..core.errors import InvalidInput
from .fs import FileSystem, OsFileSystem

_COMPONENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")
_META_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
META_DIR = ".meta"


class ObjectStoreUnavailable(Exception):
    """The store cannot be reached (network, service down, simulated outage)."""


class ObjectNotFound(KeyError):
    """``get``/``get_metadata`` of a key that does not exist."""


def check_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidInput("key", "must be a non-empty string")
    for part in key.split("/"):
        if not _COMPONENT.match(part) or part.endswith(".tmp"):
            raise InvalidInput("key", f"bad component {part[:40]!r}: [A-Za-z0-9._-], not starting with '.'")
    return key


def check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str):
        raise InvalidInput("prefix", "must be a string")
    if prefix and ".." in prefix.split("/"):
        raise InvalidInput("prefix", "must not contain '..'")
    return prefix


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in sorted((metadata or {}).items()):
        if not isinstance(k, str) or not _META_KEY.match(k):
            raise InvalidInput("metadata", f"bad key {str(k)[:40]!r}: lowercase [a-z0-9-], at most 64")
        if not isinstance(v, str) or not v.isascii() or len(v) > 1024:
            raise InvalidInput("metadata", f"value of {k!r} must be ASCII text of at most 1024 characters")
        out[k] = v
    return out


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> bool: ...

    def get(self, key: str) -> bytes: ...

    def get_metadata(self, key: str) -> dict[str, str]: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def delete(self, key: str) -> None: ...


class MemoryObjectStore:
    """Dict-backed store. ``available = False`` makes every call raise
    :class:`ObjectStoreUnavailable` (the simulator's store outage); ``ops``
    counts calls. Thread-safe."""

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self.available = True
        self.ops = 0

    def _check(self) -> None:
        self.ops += 1
        if not self.available:
            raise ObjectStoreUnavailable("memory object store is unavailable")

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> bool:
        check_key(key)
        meta = check_metadata(metadata)
        with self._lock:
            self._check()
            if key in self._objects:
                return False
            self._objects[key] = (bytes(data), meta)
            return True

    def get(self, key: str) -> bytes:
        with self._lock:
            self._check()
            try:
                return self._objects[key][0]
            except KeyError:
                raise ObjectNotFound(key) from None

    def get_metadata(self, key: str) -> dict[str, str]:
        with self._lock:
            self._check()
            try:
                return dict(self._objects[key][1])
            except KeyError:
                raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        with self._lock:
            self._check()
            return key in self._objects

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        with self._lock:
            self._check()
            return sorted((k for k in self._objects if k.startswith(prefix)), key=lambda k: k.encode())

    def delete(self, key: str) -> None:
        with self._lock:
            self._check()
            self._objects.pop(key, None)

    # test / simulator helpers
    def corrupt(self, key: str, offset: int, bit: int = 0) -> None:
        """Flip one bit of a stored object (a bit rot / tampering fault)."""
        with self._lock:
            data, meta = self._objects[key]
            b = bytearray(data)
            b[offset] ^= 1 << bit
            self._objects[key] = (bytes(b), meta)


class DirectoryObjectStore:
    """A directory tree: object ``a/b`` is the file ``root/a/b``, its metadata
    ``root/.meta/a/b.json``. Writes go through the :class:`FileSystem`
    interface: the metadata first, then the data by ``write_atomic`` (temp +
    fsync + rename + fsync dir), so an object exists exactly when its data file
    does and is never seen partially written. Several processes may share the
    directory (write-once keys; a racing second writer of the same key writes
    the same bytes in the replication protocol)."""

    def __init__(self, root: str, fs: FileSystem | None = None) -> None:
        self.root = root
        self.fs = fs or OsFileSystem()
        try:
            self.fs.makedirs(root)
        except OSError as exc:
            raise ObjectStoreUnavailable(f"cannot create {root}: {exc.strerror or exc}") from None

    def _path(self, key: str) -> str:
        return posixpath.join(self.root, check_key(key))

    def _meta_path(self, key: str) -> str:
        return posixpath.join(self.root, META_DIR, key + ".json")

    def _ensure_dir(self, path: str) -> None:
        d = posixpath.dirname(path)
        if not self.fs.isdir(d):
            self.fs.makedirs(d)

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> bool:
        path = self._path(key)
        meta = check_metadata(metadata)
        try:
            if self.fs.exists(path):
                return False
            if meta:
                mpath = self._meta_path(key)
                self._ensure_dir(mpath)
                self.fs.write_atomic(mpath, json.dumps(meta, sort_keys=True).encode())
            self._ensure_dir(path)
            self.fs.write_atomic(path, bytes(data))
            return True
        except OSError as exc:
            raise ObjectStoreUnavailable(f"put {key}: {exc.strerror or exc}") from None

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return self.fs.read(path)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise ObjectStoreUnavailable(f"get {key}: {exc.strerror or exc}") from None

    def get_metadata(self, key: str) -> dict[str, str]:
        if not self.exists(key):
            raise ObjectNotFound(key)
        try:
            return textdata.json_loads(self.fs.read(self._meta_path(key)))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ObjectStoreUnavailable(f"metadata of {key}: {exc}") from None

    def exists(self, key: str) -> bool:
        try:
            return self.fs.exists(self._path(key))
        except OSError as exc:
            raise ObjectStoreUnavailable(f"exists {key}: {exc.strerror or exc}") from None

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        # descend only into directories that can hold keys with this prefix
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        out: list[str] = []
        try:
            start = posixpath.join(self.root, base) if base else self.root
            if not self.fs.isdir(start):
                return []
            stack = [base]
            while stack:
                rel = stack.pop()
                d = posixpath.join(self.root, rel) if rel else self.root
                for name in self.fs.listdir(d):
                    if name.startswith(".") or name.endswith(".tmp"):  # metadata dir, temp files
                        continue
                    k = f"{rel}/{name}" if rel else name
                    if self.fs.isdir(posixpath.join(d, name)):
                        if (k + "/").startswith(prefix) or prefix.startswith(k + "/"):
                            stack.append(k)
                    elif k.startswith(prefix):
                        out.append(k)
        except OSError as exc:
            raise ObjectStoreUnavailable(f"list {prefix}: {exc.strerror or exc}") from None
        return sorted(out, key=lambda k: k.encode())

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            if self.fs.exists(path):
                self.fs.remove(path)
            mpath = self._meta_path(key)
            if self.fs.exists(mpath):
                self.fs.remove(mpath)
        except OSError as exc:
            raise ObjectStoreUnavailable(f"delete {key}: {exc.strerror or exc}") from None


class S3ObjectStore:
    """An S3 bucket (or any S3-compatible API) through boto3. ``prefix`` puts
    every key under ``prefix/``. ``put`` checks existence first and then writes
    with ``If-None-Match: *`` where the service supports it. Connection and
    5xx errors raise :class:`ObjectStoreUnavailable`."""

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None,
                 region_name: str = "us-east-1", client=None, create_bucket: bool = False,
                 connect_timeout: float = 2.0, read_timeout: float = 10.0, max_attempts: int = 2,
                 **client_kwargs) -> None:
        from ..core.optional import require

        boto3 = require("boto3")
        botocore = require("botocore")
        require("botocore.config")

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if client is None:
            cfg = botocore.config.Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                                         retries={"max_attempts": max_attempts, "mode": "standard"})
            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region_name, config=cfg,
                                  **client_kwargs)
        self.client = client
        if create_bucket:
            self._call(lambda: self._create_bucket())

    def _create_bucket(self) -> None:
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except self.client.exceptions.BucketAlreadyOwnedByYou:
            pass

    def _k(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, fn):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
            if code in ("NoSuchKey", "404", "NotFound"):
                raise
            if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "RequestTimeout"):
                raise ObjectStoreUnavailable(f"S3 {code or status}") from None
            raise
        except BotoCoreError as exc:
            raise ObjectStoreUnavailable(f"S3 unreachable: {type(exc).__name__}") from None

    @staticmethod
    def _not_found(exc: Exception) -> bool:
        resp = getattr(exc, "response", None) or {}
        return str(resp.get("Error", {}).get("Code", "")) in ("NoSuchKey", "404", "NotFound")

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> bool:
        from botocore.exceptions import ClientError

        k, meta = self._k(key), check_metadata(metadata)
        if self.exists(key):
            return False
        try:
            self._call(lambda: self.client.put_object(Bucket=self.bucket, Key=k, Body=bytes(data), Metadata=meta,
                                                      IfNoneMatch="*"))
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        k = self._k(key)
        try:
            return self._call(lambda: self.client.get_object(Bucket=self.bucket, Key=k)["Body"].read())
        except ClientError as exc:
            if self._not_found(exc):
                raise ObjectNotFound(key) from None
            raise

    def get_metadata(self, key: str) -> dict[str, str]:
        from botocore.exceptions import ClientError

        k = self._k(key)
        try:
            return dict(self._call(lambda: self.client.head_object(Bucket=self.bucket, Key=k)).get("Metadata", {}))
        except ClientError as exc:
            if self._not_found(exc):
                raise ObjectNotFound(key) from None
            raise

    def exists(self, key: str) -> bool:
        try:
            self.get_metadata(key)
            return True
        except ObjectNotFound:
            return False

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        full = (f"{self.prefix}/{prefix}" if self.prefix else prefix)
        cut = len(self.prefix) + 1 if self.prefix else 0

        def run() -> list[str]:
            out = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                out += [o["Key"][cut:] for o in page.get("Contents", [])]
            return out

        return sorted(self._call(run), key=lambda k: k.encode())

    def delete(self, key: str) -> None:
        k = self._k(key)
        self._call(lambda: self.client.delete_object(Bucket=self.bucket, Key=k))


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def check_object_store_url(url: str) -> None:
    """:class:`InvalidInput` unless :func:`open_object_store` opens ``url``: ``memory://``,
    ``file://`` and a path, ``s3://`` and a bucket, or a plain path (no scheme). A typo'd scheme
    (``s4://b``, ``ftp://h``) is refused, not taken for a local directory of that name. The
    message never quotes the URL (it may carry credentials), only its scheme."""
    if url in ("memory", "memory://"):
        return
    scheme = _SCHEME.match(url)
    if scheme is not None and scheme.group(0).lower() not in ("file://", "s3://"):
        raise InvalidInput("object_store", f"unknown scheme {scheme.group(0)!r} (use file://PATH, "
                                           "s3://BUCKET/PREFIX, memory:// or a directory)")
    if url.lower().startswith("s3://") and not url[len("s3://"):].partition("/")[0].partition("?")[0]:
        raise InvalidInput("object_store", "s3:// needs a bucket (s3://BUCKET/PREFIX)")
    if not (url[len("file://"):] if url.lower().startswith("file://") else url):
        raise InvalidInput("object_store", "empty object store URL (file:// needs a path)")


def open_object_store(url: str, fs: FileSystem | None = None) -> ObjectStore:
    """``memory://``, ``file:///abs/dir`` or a plain path, ``s3://bucket/prefix``
    (endpoint from ``endpoint=`` query or the usual AWS environment); anything else is
    :class:`InvalidInput` (:func:`check_object_store_url`)."""
    check_object_store_url(url)
    if url in ("memory", "memory://"):
        return MemoryObjectStore()
    if url.lower().startswith("s3://"):
        from urllib.parse import parse_qs, urlsplit

        u = urlsplit(url)
        q = parse_qs(u.query)
        return S3ObjectStore(u.netloc, prefix=u.path.strip("/"), endpoint_url=(q.get("endpoint") or [None])[0])
    if url.lower().startswith("file://"):
        url = url[len("file://"):]
    return DirectoryObjectStore(url, fs=fs)
