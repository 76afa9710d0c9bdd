"""Audit streaming to a SIEM: RFC 5424 syslog over TLS (RFC 5425), at least once, in order.

Why this module exists: security teams watch their SIEM, not our WORM log. Every
audit event (a WORM append, an anchor, a reconciliation decision, a divergence,
a quarantine, an authentication failure, an operator action) must reach it within
a second, survive a SIEM outage, and arrive in order with an id that makes a
re-delivery recognisable. The payload format is specified in spec/GOVERNANCE.md
("Audit streaming"); the payload carries metadata only, never PCS bodies,
signatures or keys (the same rule as the WORM log).

Theory of operation::

    offer(kind, fields, now) --> spool (append-only JSON lines, fsynced per flush)
                                   |  seq 1, 2, 3 ... per stream; id = "<stream>:<seq>"
    due(now)?  (batch_size pending, or the oldest waited flush_interval_s)
    batch() --> frames (octet-counted RFC 5424 messages) --> the driver sends them
    sent(last_seq, now): the batch is *in flight*; confirm(now) after confirm_s
        with the connection still open acks it: the watermark (acked.json,
        written atomically) moves and fully acked spool files are deleted
    broken(now): nothing in flight is acked; the next batch starts again at
        watermark + 1 (re-sent in order: at-least-once, duplicates share their id)

TCP has no application acknowledgement (RFC 5425 has none): bytes a receiver
never read are lost when it dies. The stream therefore acks a batch only after
``confirm_s`` with no error and no EOF from the receiver (a stopping rsyslog closes
its connections first), and re-sends everything after the watermark on any
failure. A receiver that crashes without closing may still lose the last
``confirm_s`` of data: that window is the documented limit.

:class:`SiemStream` and :class:`Spool` are sans-I/O apart from the ``FileSystem``
(time passed in). :class:`SiemForwarder` is the driver: one thread, a TLS socket
(``ssl`` with the SIEM's CA; the server's certificate must match ``server_name``,
else the handshake is refused and nothing is sent).
"""

from __future__ import annotations

import collections
import json
import posixpath
import re
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..core import textdata
from ..core.backoff import Backoff
from ..storage.fs import FileSystem, OsFileSystem
from ..storage.threads import NamedThread

FORMAT = 1
KINDS = ("worm_append", "anchor", "reconciliation", "divergence", "quarantine", "auth_failure", "operator_action",
         "rejection")
SEVERITY = {"worm_append": 6, "anchor": 6, "reconciliation": 5, "divergence": 4, "quarantine": 4,
            "auth_failure": 4, "operator_action": 5, "rejection": 5}  # RFC 5424 severities: 4 warning, 5 notice, 6 info
FACILITY = 13  # log audit
SD_ID = "flk@32473"  # 32473: the private enterprise number RFC 5612 reserves for documentation
FORBIDDEN_FIELDS = ("body", "payload", "signature", "sig", "key", "secret", "password")
RESERVED = ("v", "id", "stream", "seq", "ts", "kind")  # the payload's envelope fields
_SPOOL_RE = re.compile(r"^spool-(\d{12})\.jsonl$")
_NAME_RE = re.compile(r"^[!-~]{1,48}$")  # RFC 5424 PRINTUSASCII names


def _check_fields(fields: Mapping) -> dict:
    out = {}
    for k, v in fields.items():
        if k in RESERVED:
            raise ValueError(f"audit stream field {k!r} is reserved for the envelope")
        if any(bad == k.lower() or k.lower().endswith("_" + bad) for bad in FORBIDDEN_FIELDS):
            raise ValueError(f"audit stream field {k!r} may carry secrets or payloads")
        if not isinstance(v, (str, int, float, bool)) and v is not None:
            v = json.dumps(v, sort_keys=True, default=str)
        out[str(k)] = v
    return out


def event_json(stream: str, seq: int, ts: float, kind: str, fields: Mapping) -> bytes:
    """The documented JSON payload (canonical: sorted keys, no spaces)."""
    doc = {"v": FORMAT, "id": f"{stream}:{seq}", "stream": stream, "seq": seq, "ts": round(float(ts), 6),
           "kind": kind, **{k: v for k, v in fields.items() if k not in RESERVED}}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def rfc5424(event: Mapping, hostname: str, app: str = "flk") -> bytes:
    """One RFC 5424 message: PRI VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG (the JSON)."""
    pri = FACILITY * 8 + SEVERITY.get(event["kind"], 6)
    ts = datetime.fromtimestamp(event["ts"], UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sd = f'[{SD_ID} id="{event["id"]}" seq="{event["seq"]}"]'
    body = json.dumps(dict(event), sort_keys=True, separators=(",", ":"))
    return f"<{pri}>1 {ts} {hostname} {app} - {event['kind']} {sd} {body}".encode()


def octet_frame(message: bytes) -> bytes:
    """RFC 5425 section 4.3 (octet counting): ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode() + b" " + message


class Spool:
    """The durable, append-only event spool of one stream on a ``FileSystem``."""

    def __init__(self, directory: str, fs: FileSystem | None = None, file_events: int = 10_000) -> None:
        self.dir, self.fs, self.file_events = directory, fs or OsFileSystem(), file_events
        self.fs.makedirs(directory)
        self.acked = 0
        acked = posixpath.join(directory, "acked.json")
        if self.fs.exists(acked):
            self.acked = int(textdata.json_loads(self.fs.read(acked))["seq"])
        self.events: list[dict] = []  # not yet acked, in seq order
        self.last = self.acked
        self._handle: Any = None
        self._file_first = 0
        self.dirty = False  # appended since the last sync
        self._load()

    def _files(self) -> list[tuple[int, str]]:
        return sorted((int(m.group(1)), n) for n in self.fs.listdir(self.dir) if (m := _SPOOL_RE.match(n)))

    def _load(self) -> None:
        for _first, name in self._files():
            for line in self.fs.read(posixpath.join(self.dir, name)).split(b"\n"):
                try:
                    ev = textdata.json_loads(line)
                except ValueError:
                    continue  # a torn last line: never fsynced, never offered to the receiver
                if ev["seq"] > self.last:
                    self.last = ev["seq"]
                if ev["seq"] > self.acked:
                    self.events.append(ev)

    def append(self, event_bytes: bytes, seq: int) -> None:
        if self._handle is None or seq - self._file_first >= self.file_events:
            if self._handle is not None:
                self._handle.close()
            self._file_first = seq
            self._handle = self.fs.open_append(posixpath.join(self.dir, f"spool-{seq:012d}.jsonl"))
        self._handle.write(event_bytes + b"\n")
        self.events.append(textdata.json_loads(event_bytes))
        self.last = seq
        self.dirty = True

    def sync(self) -> None:
        if self._handle is not None and self.dirty:
            self._handle.fsync()
        self.dirty = False

    def ack(self, seq: int) -> None:
        if seq <= self.acked:
            return
        self.acked = seq
        self.fs.write_atomic(posixpath.join(self.dir, "acked.json"), json.dumps({"seq": seq}).encode())
        self.events = [e for e in self.events if e["seq"] > seq]
        files = self._files()
        for i, (_first, name) in enumerate(files[:-1]):  # a file is done when the next one starts past the ack
            if files[i + 1][0] <= seq + 1:
                self.fs.remove(posixpath.join(self.dir, name))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


@dataclass
class InFlight:
    last_seq: int
    sent_at: float


class SiemStream:
    """Batching, ordering and acknowledgement of one stream (sans-I/O; see the module docstring)."""

    def __init__(self, spool: Spool, stream: str, hostname: str, batch_size: int = 200,
                 flush_interval_s: float = 0.1, confirm_s: float = 0.2,
                 backoff: Backoff = Backoff(0.2, 5.0)) -> None:
        if not _NAME_RE.match(stream) or ":" in stream or not _NAME_RE.match(hostname):
            raise ValueError("stream and hostname must be 1-48 printable ASCII characters without spaces")
        self.spool, self.stream, self.hostname = spool, stream, hostname
        self.batch_size, self.flush_interval_s, self.confirm_s = batch_size, flush_interval_s, confirm_s
        self.backoff = backoff
        self.next_send = spool.acked + 1  # the first seq not yet handed to the driver
        self.in_flight: list[InFlight] = []
        self.failures = 0
        self.retry_at = 0.0
        self.offered_at: dict[int, float] = {}

    def offer(self, kind: str, fields: Mapping, now: float) -> str:
        """Spool one event (not yet fsynced: :meth:`batch` syncs before anything is sent); its id."""
        if kind not in KINDS:
            raise ValueError(f"unknown audit event kind {kind!r} (known: {', '.join(KINDS)})")
        seq = self.spool.last + 1
        self.spool.append(event_json(self.stream, seq, now, kind, _check_fields(fields)), seq)
        self.offered_at[seq] = now
        return f"{self.stream}:{seq}"

    def pending(self) -> list[dict]:
        return [e for e in self.spool.events if e["seq"] >= self.next_send]

    def due(self, now: float) -> bool:
        if now < self.retry_at:
            return False
        waiting = self.pending()
        if not waiting:
            return False
        first = self.offered_at.get(waiting[0]["seq"], 0.0)  # re-sends after a restart are due at once
        return len(waiting) >= self.batch_size or now - first >= self.flush_interval_s

    def next_due(self, now: float) -> float:
        """When :meth:`due` or :meth:`confirm` next has something to do (``now + 1`` if idle)."""
        times = [now + 1.0]
        waiting = self.pending()
        if waiting:
            times.append(max(self.retry_at, self.offered_at.get(waiting[0]["seq"], 0.0) + self.flush_interval_s))
        if self.in_flight:
            times.append(self.in_flight[0].sent_at + self.confirm_s)
        return max(now, min(times))

    def batch(self) -> tuple[int, bytes]:
        """The next batch: (its last seq, the octet-framed messages). Syncs the spool first."""
        self.spool.sync()
        events = self.pending()[: self.batch_size]
        data = b"".join(octet_frame(rfc5424(e, self.hostname)) for e in events)
        return (events[-1]["seq"] if events else self.next_send - 1), data

    def sent(self, last_seq: int, now: float) -> None:
        self.next_send = last_seq + 1
        self.in_flight.append(InFlight(last_seq, now))
        self.failures = 0

    def confirm(self, now: float) -> int:
        """Ack the in-flight batches older than ``confirm_s`` (the connection is still open); the watermark."""
        done = [f for f in self.in_flight if now - f.sent_at >= self.confirm_s]
        if done:
            self.in_flight = self.in_flight[len(done):]
            self.spool.ack(done[-1].last_seq)
            for seq in [s for s in self.offered_at if s <= done[-1].last_seq]:
                del self.offered_at[seq]
        return self.spool.acked

    def broken(self, now: float) -> None:
        """The connection failed: forget what is in flight, re-send from the watermark after a backoff."""
        self.in_flight = []
        self.next_send = self.spool.acked + 1
        self.failures += 1
        self.retry_at = now + self.backoff.delay(self.failures)


def tls_context(ca_file: str, cert_file: str | None = None, key_file: str | None = None) -> ssl.SSLContext:
    """A client context that trusts only ``ca_file`` and checks the server's name (TLS 1.2+)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


class SiemForwarder:
    """The thread driver of a :class:`SiemStream` over syslog-over-TLS (see the module docstring).
    ``errors`` keeps the last connection errors (a refused certificate shows there).

    Two ways in. :meth:`offer` spools at once (the caller waits for the forwarder's lock,
    which the thread holds while it connects or sends: for tools and tests).
    :meth:`submit` never waits and never does I/O: it appends ``(kind, fields, now)`` to
    a bounded in-memory inbox and wakes the thread, which moves the inbox to the spool
    and fsyncs the spool at most every ``sync_interval_s`` (and before every batch).
    That is what a request path uses (``flk serve``'s batch thread). The durability
    window of :meth:`submit`: events still in the inbox or written but not yet fsynced
    -- at most ``sync_interval_s`` plus one connect or send timeout -- are lost if the
    process crashes. Bounds: an inbox of ``max_inbox`` events and a spool of
    ``max_spool`` unacknowledged events; an event past either is dropped and counted in
    ``dropped`` (``on_drop`` is called with the count at the first drop of each run of
    drops) -- a submission never waits for, or fails because of, the SIEM."""

    def __init__(self, stream: SiemStream, host: str, port: int, context: ssl.SSLContext,
                 server_name: str | None = None, connect_timeout_s: float = 2.0, *,
                 max_inbox: int = 100_000, max_spool: int = 1_000_000, sync_interval_s: float = 0.05,
                 on_drop: Any = None) -> None:
        self.stream, self.host, self.port, self.context = stream, host, port, context
        self.server_name = server_name or host
        self.connect_timeout_s = connect_timeout_s
        self.max_inbox, self.max_spool, self.sync_interval_s = max_inbox, max_spool, sync_interval_s
        self.on_drop = on_drop
        self.errors: list[str] = []
        self.connects = 0
        self.dropped = 0
        self._dropping = False
        self._inbox: collections.deque = collections.deque()
        self._last_sync = 0.0
        self._sock: ssl.SSLSocket | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread = NamedThread(target=self._run, name="siem-forwarder", daemon=True)

    def start(self) -> SiemForwarder:
        self._thread.start()
        return self

    def offer(self, kind: str, fields: Mapping) -> str:
        with self._lock:
            event_id = self.stream.offer(kind, fields, time.time())
        self._wake.set()
        return event_id

    def submit(self, kind: str, fields: Mapping) -> bool:
        """Queue one event without waiting (see the class docstring); False: dropped (full)."""
        inbox = self._inbox
        if len(inbox) >= self.max_inbox:
            self._drop(1)
            return False
        inbox.append((kind, fields, time.time()))
        if len(inbox) == 1:
            self._wake.set()
        return True

    def _drop(self, n: int) -> None:
        self.dropped += n
        if not self._dropping:
            self._dropping = True
            if self.on_drop is not None:
                self.on_drop(self.dropped)

    def pending(self) -> int:
        """Events not yet acknowledged by the SIEM (inbox + spool)."""
        return len(self._inbox) + self.stream.spool.last - self.stream.spool.acked

    def acked(self) -> int:
        with self._lock:
            return self.stream.spool.acked

    def close(self, drain_s: float = 5.0) -> None:
        """Wait up to ``drain_s`` for everything to be acked -- not at all while the SIEM is
        unreachable (the last connection attempt failed): the spool keeps it -- then stop."""
        deadline = time.monotonic() + drain_s
        self._wake.set()
        while time.monotonic() < deadline and (self._inbox or self.acked() < self.stream.spool.last):
            if self.stream.failures and self._sock is None and not self._inbox:
                break
            time.sleep(0.02)
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=5 + self.connect_timeout_s)
        with self._lock:
            self._take_inbox(time.time())  # whatever is left is spooled for the next start
            self.stream.spool.sync()
            self._disconnect()
            self.stream.spool.close()

    def _take_inbox(self, now: float) -> None:
        """(Under the lock.) Inbox -> spool; the spool is fsynced every ``sync_interval_s``."""
        s, inbox = self.stream, self._inbox
        while inbox:
            kind, fields, ts = inbox.popleft()
            if s.spool.last - s.spool.acked >= self.max_spool:
                self._drop(1)
                continue
            try:
                s.offer(kind, fields, ts)
            except ValueError as exc:  # a malformed event is a bug of its producer: say so, keep going
                self.errors = [*self.errors[-9:], f"refused event: {exc}"[:200]]
            else:
                self._dropping = False
        if s.spool.dirty and now - self._last_sync >= self.sync_interval_s:
            s.spool.sync()
            self._last_sync = now

    def _connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        try:
            self._sock = self.context.wrap_socket(raw, server_hostname=self.server_name)
        except BaseException:
            raw.close()
            raise
        self._sock.settimeout(self.connect_timeout_s)
        self.connects += 1

    def _disconnect(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def _peer_closed(self) -> bool:
        """Did the receiver close (EOF or reset)? A SIEM never writes to us."""
        sock = self._sock
        if sock is None:
            return True
        sock.setblocking(False)
        try:
            return sock.recv(1) == b""
        except (ssl.SSLWantReadError, BlockingIOError):
            return False
        except OSError:
            return True
        finally:
            sock.settimeout(self.connect_timeout_s)

    def _step(self, now: float) -> None:
        s = self.stream
        if self._sock is not None and (s.in_flight or s.due(now)) and self._peer_closed():
            raise ConnectionError("the receiver closed the connection")
        s.confirm(now)
        if s.due(now):
            if self._sock is None:
                self._connect()
            last, data = s.batch()
            self._sock.sendall(data)
            s.sent(last, now)

    def _run(self) -> None:
        while not self._stop:
            self._wake.clear()
            with self._lock:
                now = time.time()
                self._take_inbox(now)
                try:
                    self._step(now)
                except (OSError, ssl.SSLError, ConnectionError) as exc:
                    self.errors = [*self.errors[-9:], f"{type(exc).__name__}: {exc}"[:200]]
                    self._disconnect()
                    self.stream.broken(now)
                wake_at = self.stream.next_due(time.time())
                if self.stream.spool.dirty:
                    wake_at = min(wake_at, self._last_sync + self.sync_interval_s)
            self._wake.wait(timeout=max(0.005, wake_at - time.time()))


# pipeline Emit event kind -> audit stream kind (flk.impl.verifier.pipeline events; metadata only)
PIPELINE_KINDS = {"accepted": "worm_append", "escalated": "worm_append", "dedup_conflict": "worm_append",
                  "signature_error": "auth_failure", "rejected": "rejection"}
PIPELINE_FIELDS = ("tenant", "tenant_label", "pcs_id", "payload_digest", "status", "policy_version", "first_seen")


def pipeline_sink(offer: Any, region: str | None = None) -> Any:
    """An ``Emit`` sink (like :func:`flk.impl.governance.audit.pipeline_sink`) that streams the
    audited outcomes, the rejections and the authentication failures: ``offer(kind, fields)`` is
    :meth:`SiemForwarder.submit` on a request path (never waits), :meth:`SiemForwarder.offer`
    or a :class:`SiemStream`'s ``offer`` with a clock bound."""

    def sink(event: Mapping) -> None:
        kind = PIPELINE_KINDS.get(str(event.get("kind")))
        if kind is None:
            return
        fields = {k: event[k] for k in PIPELINE_FIELDS if k in event and event[k] is not None}
        fields["outcome"] = str(event["kind"])
        if region is not None:
            fields["region"] = region
        offer(kind, fields)

    return sink
