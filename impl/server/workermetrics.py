"""``/metrics`` of a server with several workers: every worker's series in every answer.

Why this module exists: with ``WORKERS=N`` the kernel hands each connection -- a Prometheus
scrape too -- to one worker, and each worker counts only its own requests. Answered by
whichever worker took the scrape, every counter jumped between the workers' values from one
scrape to the next (``rate()`` read each drop as a counter reset) and the other workers' gauges
were missing (a breaker open in one worker showed only when that worker answered).

Now each answer carries every worker's series, each labelled ``worker="<i>"`` (a series that
has a ``worker`` label already keeps it: ``flk_worker_info``, the ``flk_crr_*`` families). The
answering worker asks the others for a fresh snapshot through ``DATA_DIR/metrics``: it writes a
request token to ``scrape``; every worker's poller thread reads that file every ``POLL_S`` and,
on a new token, writes ``worker-<i>.prom`` (the token on its first line, then its exposition).
The answering worker waits up to ``WAIT_S`` for every other worker's answer to the token and
merges what it has: a worker that did not answer in time contributes its previous snapshot, one
whose snapshot is older than ``STALE_S`` (stopped, or never started) contributes nothing. The
alert rules aggregate ``by (job, instance)``, so they read the sum or the worst of the workers.
With one worker none of this runs and the answer is unchanged.

:func:`merge` is pure (texts in, text out); :class:`WorkerScrape` is the file protocol.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Mapping

from ..storage.threads import NamedThread

POLL_S = 0.05  # how often a worker looks for a scrape request
WAIT_S = 0.5  # how long the answering worker waits for the others' snapshots
STALE_S = 60.0  # a snapshot older than this is a worker that is gone
TOKEN = "# flk-scrape "


_OWN_WORKER = re.compile(r'[{,]worker="')  # a label value's quotes are escaped: only a label matches


def _labelled(line: str, label: str) -> str:
    """A sample line with ``label`` added, unless it has a ``worker`` label of its own."""
    brace, space = line.find("{"), line.find(" ")
    if brace < 0 or 0 <= space < brace:  # no labels: ``name value``
        return f"{line[:space]}{{{label}}}{line[space:]}" if space > 0 else line
    if _OWN_WORKER.search(line, brace) is not None:
        return line
    sep = "" if line.startswith("}", brace + 1) else ","
    return f"{line[:brace + 1]}{label}{sep}{line[brace + 1:]}"


def merge(texts: Mapping[int, str]) -> bytes:
    """The workers' expositions (Prometheus text format 0.0.4, as ``prometheus_client`` writes
    it: each family's HELP and TYPE lines, then its samples) as one: a family's samples of every
    worker under one HELP/TYPE, each sample labelled with its worker unless it has a ``worker``
    label of its own. Text in, text out, no objects: the answering worker holds the GIL while it
    runs (2 workers at 100 tenants: parsed and rendered again by ``prometheus_client``, 80 ms)."""
    heads: dict[str, list[str]] = {}  # family -> its HELP/TYPE lines (the first worker's)
    samples: dict[str, list[str]] = {"": []}  # "": samples before any HELP/TYPE line
    for worker in sorted(texts):
        label, family, keep_head = f'worker="{worker}"', "", False
        for line in texts[worker].splitlines():
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
                    continue  # a comment
                if parts[2] != family:
                    family = parts[2]
                    keep_head = family not in heads
                    if keep_head:
                        heads[family], samples[family] = [], []
                if keep_head:
                    heads[family].append(line)
                continue
            samples[family].append(_labelled(line, label))
    out = samples[""][:]
    for family, head in heads.items():
        out += head
        out += samples[family]
    return ("\n".join(out) + "\n").encode()


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


class WorkerScrape:
    """Worker ``worker`` of ``workers``: answers a scrape with every worker's series
    (:meth:`answer`) and, on its poller thread, writes its own snapshot when another worker
    asks (:meth:`start` / :meth:`stop`). ``render()`` is the worker's own exposition (bytes);
    it runs under one lock, on the poller thread or the answering one."""

    def __init__(self, data_dir: str, worker: int, workers: int, render: Callable[[], bytes],
                 clock: Callable[[], float] = time.time) -> None:
        self.dir = os.path.join(data_dir, "metrics")
        self.worker, self.workers, self.render, self.clock = worker, workers, render, clock
        self.request = os.path.join(self.dir, "scrape")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: str | None = None

    def path(self, worker: int) -> str:
        return os.path.join(self.dir, f"worker-{worker}.prom")

    def own(self) -> bytes:
        with self._lock:
            return self.render()

    def start(self) -> WorkerScrape:
        os.makedirs(self.dir, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path(self.worker))  # an earlier process's snapshot is not this one's
        self._seen = self._token()  # a request from before this start is not answered
        self._thread = NamedThread(target=self._poll, name=f"metrics-w{self.worker}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path(self.worker))

    def _token(self) -> str | None:
        try:
            with open(self.request, encoding="ascii", errors="replace") as f:
                return f.read(200)
        except OSError:
            return None

    def _poll(self) -> None:
        while not self._stop.wait(POLL_S):
            token = self._token()
            if token is None or token == self._seen:
                continue
            self._seen = token
            if token.split("-")[1:2] == [str(self.worker)]:
                continue  # this worker's own request: it answers with its own render
            try:
                _write_atomic(self.path(self.worker), f"{TOKEN}{token}\n".encode() + self.own())
            except Exception:  # noqa: BLE001 -- a snapshot is best effort; the next request retries
                continue

    def _snapshot(self, worker: int, token: str) -> tuple[bool, str | None]:
        """(answered this token, its text or None if missing or stale)."""
        path = self.path(worker)
        try:
            if self.clock() - os.stat(path).st_mtime > STALE_S:
                return False, None
            with open(path, encoding="utf-8", errors="replace") as f:
                first, _, rest = f.read().partition("\n")
        except OSError:
            return False, None
        return first == TOKEN + token, rest

    def answer(self) -> bytes:
        """This worker's series and the others' (fresh where they answered within ``WAIT_S``)."""
        token = f"{time.time_ns()}-{self.worker}-{os.getpid()}"
        asked = True
        try:
            os.makedirs(self.dir, exist_ok=True)
            _write_atomic(self.request, token.encode())
        except OSError:  # no room to ask (a full disk): the snapshots there are, without waiting
            asked = False
        texts = {self.worker: self.own().decode()}
        pending = [w for w in range(self.workers) if w != self.worker]
        got: dict[int, str | None] = {}
        deadline = time.monotonic() + WAIT_S
        while True:
            for w in list(pending):
                fresh, got[w] = self._snapshot(w, token)
                if fresh or not asked:
                    pending.remove(w)
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(POLL_S / 5)
        texts.update({w: t for w, t in got.items() if t is not None})
        return merge(texts)
