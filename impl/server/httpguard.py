"""HTTP limits below the application: request line, headers, slow clients, connections.

Why this module exists: uvicorn's httptools protocol buffers a request line and
headers of any size and waits for them, and for a body, forever (it has only
a keep-alive timeout between requests and ``limit_concurrency``, which answers
503 only once a request's headers are complete). A 100 MB header or a
thousand trickling connections therefore cost memory and sockets without
bound. :class:`GuardedHttpToolsProtocol` is uvicorn's protocol with the limits
of SPEC.md 9.4 (settings ``MAX_REQUEST_LINE_BYTES``, ``MAX_HEADER_BYTES``,
``MAX_HEADERS``, ``HEADER_TIMEOUT_S``, ``BODY_TIMEOUT_S``, ``MAX_CONNECTIONS``):

==========================  ==========================================  ==============
limit                       when                                        answer
==========================  ==========================================  ==============
request line                URL longer than the limit                   414 uri-too-long
header bytes                bytes received before the headers end, or   431 headers-too-large
                            the request target and header fields (each
                            name + value + 4) however the bytes arrive
header count                more header fields than the limit           431 headers-too-large
header timeout              headers not complete in time (also an idle  408 request-timeout
                            new connection)
body timeout                body not complete in time after headers     408 request-timeout
connections                 more open connections than the limit (a     503 too-many-connections
                            /health or /ready request still answered;
                            at accept beyond twice the limit)
transfer coding             Transfer-Encoding other than chunked alone  501 unsupported-transfer-coding
malformed HTTP              the parser rejects the bytes, or a version  400 bad-request
                            other than HTTP/1.0 and HTTP/1.1
half-closed request         the client shuts its sending side down      400 bad-request
                            inside a request (head or body incomplete)
==========================  ==========================================  ==============

A client that shuts its sending side down (``shutdown(SHUT_WR)``) after whole requests
gets their answers, in order, and then the close: the transport stays open for writing
(:meth:`GuardedHttpToolsProtocol.eof_received`) until the last answer is written.

Every answer is problem+json from the catalog and closes the connection; the
bytes already buffered stay bounded by the limit plus one read (at most 256
KiB). The h11 fallback (when httptools is missing) gets only
``h11_max_incomplete_event_size`` (see :mod:`.supervisor`).

One write per response: uvicorn writes the status line and headers to the
socket when the application sends ``http.response.start`` and the body when it
sends ``http.response.body`` -- two ``send`` system calls, and on loopback two
wake-ups of the client, per answer. :class:`CoalescingWrites` holds the head
until the first body write and sends both in one ``write`` (nothing else
changes: a ``HEAD`` answer, which has no body write, is not held; a close sends
what is held first).

The direct submit path: a ``POST`` to the application's ``direct_submit`` hook path
(:class:`flk.impl.server.app.DirectSubmit`) with one ``Content-Length`` of at most its
``max_body`` (64 KiB), no ``Transfer-Encoding`` and no ``Expect: 100-continue`` gets no
ASGI task: once its body is complete (from the event loop, never inside the parser's
callback) the hook answers through a callback, and the protocol writes the answer in one
write -- the bytes uvicorn's ``send`` writes, its access log line, ``connection: close``
and the close when the connection ends, then uvicorn's next-request bookkeeping
(pipelining, keep-alive). Every other request, and an application wrapped by a
middleware (no hook visible), takes the ASGI route. ``protocol_class(limits,
direct=False)`` is the all-ASGI reference (tests/server/test_direct_submit.py: the same
bytes for the same requests). What it saves: the task, the coroutines and message dicts of
receive/send -- about a quarter of the event loop's CPU per submission.

The lean head: a submission to the hook's exact target (no query) that the direct path takes,
arriving while no earlier request of the connection is unanswered, is parsed without
uvicorn's per-request objects -- its ASGI scope (with the application state's copy), its
``RequestResponseCycle`` and ``asyncio.Event`` -- into a :class:`_DirectCycle` with the
attributes the protocol and uvicorn's connection handling use. Every other request gets
uvicorn's scope and cycle at the end of its head, as before. The protocol alone (a request
fed to ``data_received``, an answer written at once, no sockets): 12.6 -> 8.4 us CPU per
submission.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from uvicorn.protocols import utils as uvicorn_utils
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..verifier.problems import CONTENT_TYPE, problem_body, problem_type

# What the direct submit path uses of uvicorn's protocol (not a public API): the hook where it
# starts a request's task, its status lines and access-log helpers, and the attributes of the
# protocol and of its request cycle. With a uvicorn that lacks any of them every request takes
# the ASGI route (tests/server/test_direct_submit.py checks the installed uvicorn has them all,
# so CI sees the path switch off).
_CYCLE_ATTRIBUTES = frozenset({
    "access_log", "access_logger", "body", "default_headers", "disconnected", "keep_alive", "message_event",
    "more_body", "on_response", "response_complete", "response_started", "scope", "transport",
    "waiting_for_100_continue"})
_PROTOCOL_ATTRIBUTES = frozenset({"app", "cycle", "flow", "loop", "tasks", "transport"})


def _set_in_init(cls: Any) -> set[str]:
    """The attribute names ``cls.__init__`` mentions (those it sets among them)."""
    code = getattr(getattr(cls, "__init__", None), "__code__", None)
    return set(code.co_names) if code is not None else set()


def direct_path_supported() -> bool:
    """True when the installed uvicorn has what the direct submit path relies on."""
    return (callable(getattr(HttpToolsProtocol, "_start_asgi_task", None))
            and isinstance(getattr(httptools_impl, "STATUS_LINE", None), dict)
            and callable(getattr(uvicorn_utils, "get_client_addr", None))
            and callable(getattr(uvicorn_utils, "get_path_with_query_string", None))
            and _CYCLE_ATTRIBUTES <= _set_in_init(getattr(httptools_impl, "RequestResponseCycle", None))
            and _PROTOCOL_ATTRIBUTES <= _set_in_init(HttpToolsProtocol))


STATUS_LINE: dict = getattr(httptools_impl, "STATUS_LINE", {})
DIRECT_SUPPORTED = direct_path_supported()


@dataclass(frozen=True)
class HttpLimits:
    max_request_line_bytes: int = 8192
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 1024

    @classmethod
    def from_config(cls, cfg: Any) -> HttpLimits:
        return cls(cfg.max_request_line_bytes, cfg.max_header_bytes, cfg.max_headers, cfg.header_timeout_s,
                   cfg.body_timeout_s, cfg.max_connections)


def raw_problem(slug: str, detail: str) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 problem+json response."""
    status = problem_type(slug).status
    body = problem_body(slug, detail)
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: {CONTENT_TYPE}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


class CoalescingWrites:
    """A request cycle's transport that sends the response head together with the
    first body write (one ``write`` per response instead of two)."""

    __slots__ = ("_transport", "_cycle", "_held", "_armed")

    def __init__(self, transport: Any, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._held: bytes | None = None
        self._armed = True  # the first write after the response started is the head

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif self._armed and self._cycle.response_started:
            self._armed = False
            self._held = data
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._held is not None:
            data, self._held = self._held, None
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


PROBE_PATHS = (b"/health", b"/ready")
OVER_CAP_HEAD_TIMEOUT_S = 1.0  # an over-cap connection's request line and headers must come this soon


def transfer_coding_problem(headers: list[tuple[bytes, bytes]]) -> str | None:
    """None unless a ``Transfer-Encoding`` is given that is not ``chunked`` alone: the
    parser decodes only chunked, so ``gzip, chunked`` would be read as plain chunked and
    the application handed compressed bytes (RFC 9112 6.1: 501)."""
    codings = [t.strip().lower() for k, v in headers if k == b"transfer-encoding" for t in v.split(b",")]
    if not codings or codings == [b"chunked"]:
        return None
    shown = b", ".join(codings).decode("latin-1")[:80]
    return f"Transfer-Encoding {shown!r} not implemented: only 'chunked' (or Content-Length)"


def _direct_length(headers: list, max_body: int) -> bool:
    """The direct path's body rule: exactly one ``Content-Length`` (1-9 digits) of at most
    ``max_body`` bytes, and no ``Transfer-Encoding``."""
    length = None
    for name, value in headers:
        if name == b"content-length":
            if length is not None:
                return False
            length = value
        elif name == b"transfer-encoding":
            return False
    return length is not None and 0 < len(length) <= 9 and length.isdigit() and int(length) <= max_body


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing (the refusal is kept on the protocol)."""


_BLOCKS: dict = {}  # header list (as a tuple) -> its wire bytes: the few distinct ones a server answers
_BLOCKS_MAX = 256


def _header_block(headers: Any) -> bytes:
    """``name: value\\r\\n`` of every ``(name, value)`` of ``headers`` (names lower-cased), as
    uvicorn's ``send`` writes them. The server answers a handful of distinct header lists
    (uvicorn's defaults change once a second, with the date; a submission's answer headers
    differ by status and length): their bytes are kept, up to :data:`_BLOCKS_MAX` (then
    the cache starts again)."""
    try:
        key = tuple(headers)
        block = _BLOCKS.get(key)
    except TypeError:  # an unhashable value (a bytearray): written, not kept
        return b"".join(b"%s: %s\r\n" % (name.lower(), value) for name, value in headers)
    if block is None:
        block = b"".join(b"%s: %s\r\n" % (name.lower(), value) for name, value in key)
        if len(_BLOCKS) >= _BLOCKS_MAX:
            _BLOCKS.clear()
        _BLOCKS[key] = block
    return block


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of :class:`HttpLimits` (``limits``
    is set on a subclass by :func:`protocol_class`)."""

    limits = HttpLimits()
    direct = True  # the application's direct submit path is used when it offers one

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the application's direct path (flk.impl.server.app.DirectSubmit) or None
        self._direct_hook = getattr(self.app, "direct_submit", None) if self.direct and DIRECT_SUPPORTED else None
        self._direct_cycle: Any = None  # a direct request whose body is still arriving
        self._ready: list | None = None  # inside data_received: the direct requests its bytes completed
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._big_read = False  # this read may hold a head over the limit that ends in it
        self._in_message = False  # the parser is inside a request (its head or body incomplete)
        self._eof = False  # the client shut its sending side down: close after the answers owed
        # one deadline at a time ("head", "body", "idle": uvicorn's keep-alive; None: none) and
        # ONE loop timer per connection, armed at most ``_horizon`` (the shortest of the three
        # timeouts) ahead: a timer that fires before the current deadline re-arms itself for
        # it, so a request moves a float instead of creating and cancelling timers
        self._watching: str | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        limits = self.limits
        self._horizon = min(limits.header_timeout_s, limits.body_timeout_s, self.timeout_keep_alive)
        self._refusal: tuple[str, str] | None = None
        self._closed_by_guard = False
        self._pending_refusal: bytes | None = None  # written once every earlier request is answered
        self._over_cap = False  # accepted over MAX_CONNECTIONS: health probes only
        # the lean head (see _DirectCycle): the exact request target of the hook, when this
        # protocol may parse a submission's head without uvicorn's scope and cycle
        hook = self._direct_hook
        self._lean_url = (hook.path.encode("ascii") if hook is not None and not self.root_path
                          and self.limit_concurrency is None and hook.path.isascii() else None)
        self._scope_begun = False  # uvicorn's on_message_begin ran for the request being parsed

    # -- connection ---------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        open_now = len(self.connections)
        if open_now > 2 * self.limits.max_connections:  # beyond the probes' headroom: at accept
            self._refuse("too-many-connections", f"more than {self.limits.max_connections} open connections; "
                         "retry later")
            return
        # over the cap: only a liveness/readiness probe is answered (the request line decides,
        # within the head timeout); anything else is refused as soon as its headers end
        self._over_cap = open_now > self.limits.max_connections
        if self._over_cap:  # a probe sends its request at once: a short head deadline frees the slot
            self._watch("head", min(self.limits.header_timeout_s, OVER_CAP_HEAD_TIMEOUT_S))
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:
        """The client shut its sending side down. A request it left incomplete is answered 400
        (after the answers owed before it); whole requests still in flight are answered, and
        the connection closes after the last one (True keeps the transport open to write them:
        uvicorn's None closed it, and their answers were lost). Nothing owed: closed now."""
        self._eof = True
        if self._in_message and not self._closed_by_guard:
            self._refuse("bad-request", "the client ended its side of the connection inside a request")
        if self.transport is None or self.transport.is_closing():
            return None
        if self._pending_refusal is not None or self._owes_answers():
            self._cancel_timers()  # no more bytes come: no head, body or idle deadline applies
            return True
        return None

    def data_received(self, data: bytes) -> None:
        if self._closed_by_guard:
            return
        if self._watching == "idle":  # any bytes end the keep-alive wait (as uvicorn's)
            self._watching = None
        # a head that ends inside this read is at most what came of it before plus this read:
        # within the limit, on_headers_complete need not measure it
        if self._in_head:
            self._head_bytes += len(data)
            self._big_read = self._head_bytes > self.limits.max_header_bytes
        else:
            self._big_read = len(data) > self.limits.max_header_bytes
        ready = self._ready = []  # direct requests completed by these bytes (run once the parser returned)
        try:
            super().data_received(data)
        except BaseException:  # what the parser completed before it is still run, as before
            for cycle in ready:
                self.loop.call_soon(self._run_direct, cycle)
            raise
        finally:
            self._ready = None
        if not self._closed_by_guard and self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse("headers-too-large", f"request line and headers exceed {self.limits.max_header_bytes} bytes")
        for cycle in ready:
            self._run_direct(cycle)

    def _dispatch_direct(self, cycle: Any) -> None:
        """A direct request is complete: it runs once the parser returned -- at the end of
        :meth:`data_received` when these bytes completed it, else in the loop's next turn --
        never inside the parser's callback."""
        if self._ready is not None:
            self._ready.append(cycle)
        else:
            self.loop.call_soon(self._run_direct, cycle)

    def send_400_response(self, msg: str) -> None:
        """The parser stopped: a limit hit inside a callback, or malformed HTTP."""
        slug, detail = self._refusal or ("bad-request", "malformed HTTP request")
        self._refuse(slug, detail)

    # -- parser callbacks -----------------------------------------------------------
    def on_message_begin(self) -> None:
        # uvicorn's per-request state: the URL, the headers, expect; its scope is made at the
        # end of the head (_begin_scope), unless the lean head takes the request (_lean_head)
        self.url, self.expect_100_continue, self.headers = b"", False, []
        self._scope_begun = False
        self._in_head, self._header_count, self._in_message = True, 0, True
        if self._watching != "head":  # _arm_head_timer: a head deadline already running is kept
            self._watch("head", self.limits.header_timeout_s)

    def _begin_scope(self) -> None:
        """uvicorn's ``on_message_begin`` (the request's ASGI scope), run at the end of the
        head with the URL and headers parsed meanwhile kept."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers
        self._scope_begun = True

    def on_url(self, url: bytes) -> None:
        self.url += url  # (uvicorn's on_url)
        if len(self.url) > self.limits.max_request_line_bytes:
            self._refusal = ("uri-too-long", f"request target longer than {self.limits.max_request_line_bytes} bytes")
            raise _Refused

    def _head_over_limit(self) -> bool:
        """(At the end of a head that a big read ended.) The request target and header fields
        (each name + value + 4) over the header-bytes limit: data_received looks only between
        reads, and a head that ended inside one was never checked there."""
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        return size > self.limits.max_header_bytes

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refusal = ("headers-too-large", f"more than {self.limits.max_headers} header fields")
            raise _Refused
        name = name.lower()  # (uvicorn's on_header)
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        if self._big_read and self._head_over_limit():
            self._refusal = ("headers-too-large", f"request line and headers exceed {self.limits.max_header_bytes} bytes")
            raise _Refused
        version = self.parser.get_http_version()
        if version not in ("1.1", "1.0"):  # llhttp passes HTTP/0.9 (no version) and 2.0 on
            self._refusal = ("bad-request", f"HTTP/{version[:8]} is not served: HTTP/1.1 or HTTP/1.0")
            raise _Refused
        if self._over_cap and self.url.split(b"?", 1)[0] not in PROBE_PATHS:
            self._refusal = ("too-many-connections", f"more than {self.limits.max_connections} open connections; "
                             "retry later")
            raise _Refused
        if self.url == self._lean_url and self._lean_head(version):
            return
        coding = transfer_coding_problem(self.headers)
        if coding is not None:
            self._refusal = ("unsupported-transfer-coding", coding)
            raise _Refused
        self._begin_scope()
        super().on_headers_complete()
        if self._over_cap and self.cycle is not None:
            self.cycle.keep_alive = False  # the probe's answer closes: the slot is given back
        cycle = self.cycle
        if (cycle is not None and cycle.scope is self.scope and self.scope.get("method") != "HEAD"
                and cycle is not self._direct_cycle):  # (a direct answer is one write anyway)
            cycle.transport = CoalescingWrites(cycle.transport, cycle)  # its task has not run yet
        self._watch("body", self.limits.body_timeout_s)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self._watching == "body":
            self._watching = None
        cycle = self.cycle
        if type(cycle) is not _DirectCycle:
            super().on_message_complete()
        elif not cycle.response_complete:
            cycle.more_body = False
        cycle = self._direct_cycle
        if cycle is not None and not cycle.more_body:
            self._direct_cycle = None
            self._dispatch_direct(cycle)

    def _lean_head(self, version: str) -> bool:
        """(The head of a request to the hook's exact path ended.) A submission the direct path
        takes, arriving when no earlier request of the connection is unanswered, gets a
        :class:`_DirectCycle` -- none of uvicorn's scope, cycle and event -- and True; any other
        request (a method, a length or a coding the direct path does not take, a pipelined one,
        an upgrade) False: the ASGI route's head as before."""
        cycle, parser = self.cycle, self.parser
        if (cycle is not None and not cycle.response_complete) or self.expect_100_continue \
                or parser.get_method() != b"POST" or parser.should_upgrade():
            return False
        if not _direct_length(self.headers, self._direct_hook.max_body):
            return False
        keep_alive = version != "1.0" and parser.should_keep_alive()
        self.cycle = self._direct_cycle = _DirectCycle(self, version, keep_alive)
        self._watch("body", self.limits.body_timeout_s)
        return True

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is not _DirectCycle:
            super().on_body(body)
        elif not cycle.response_complete:  # (uvicorn's on_body, without an ASGI receive to wake)
            cycle.body += body
            if len(cycle.body) > HIGH_WATER_LIMIT:
                self.flow.pause_reading()

    # -- the direct submit path ------------------------------------------------------------
    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        """uvicorn starts a request's ASGI task here (at its headers, or when the request
        before it in a pipeline was answered); a submission the application's direct path
        takes runs without one once its body is complete (:meth:`_run_direct`)."""
        if self._direct_hook is not None and self._takes_direct(cycle, app):
            if cycle.more_body:
                self._direct_cycle = cycle  # on_message_complete dispatches it
            else:
                self._dispatch_direct(cycle)
            return
        super()._start_asgi_task(cycle, app)

    def _takes_direct(self, cycle: Any, app: Any) -> bool:
        """``POST`` to the hook's path with one ``Content-Length`` of at most its
        ``max_body`` bytes, no ``Transfer-Encoding``, no ``Expect: 100-continue``,
        the application itself (not uvicorn's concurrency-limit answer)."""
        hook, scope = self._direct_hook, cycle.scope
        if (app is not self.app or scope["method"] != "POST" or scope["path"] != hook.path
                or cycle.waiting_for_100_continue):
            return False
        return _direct_length(scope["headers"], hook.max_body)

    def _run_direct(self, cycle: Any) -> None:
        """(Event loop.) Hand a complete direct request to the application's direct path."""
        if cycle.disconnected or cycle.response_complete:
            return  # the connection ended (or the guard dropped the request) meanwhile
        self._direct_hook(cycle.headers if type(cycle) is _DirectCycle else cycle.scope["headers"], bytes(cycle.body),
                          lambda status, headers, body: self._direct_answer(cycle, status, headers, body))

    async def _answer_when_drained(self, cycle: Any, status: int, headers: list, body: bytes) -> None:
        await self.flow.drain()
        self._direct_answer(cycle, status, headers, body)

    def _direct_answer(self, cycle: Any, status: int, headers: list, body: bytes) -> None:
        """Write a direct request's answer as uvicorn's ``send`` would (the same bytes: the
        default headers, the application's ``headers``, ``content-length`` of ``body``,
        ``connection: close`` when the connection ends),
        in one write, then what uvicorn does after a complete response (close, or start the
        next pipelined request)."""
        if cycle.disconnected or cycle.response_complete:
            return  # nobody listens (as uvicorn's send after a disconnect)
        if self.flow.write_paused:  # as uvicorn's send: the client reads first (nothing queues up)
            task = self.loop.create_task(self._answer_when_drained(cycle, status, headers, body))
            task.add_done_callback(self.tasks.discard)  # uvicorn's shutdown waits for its tasks
            self.tasks.add(task)
            return
        cycle.response_started = True
        if cycle.access_log:  # uvicorn's access log line (its logger's level decides)
            scope = cycle.scope
            cycle.access_logger.info('%s - "%s %s HTTP/%s" %d', uvicorn_utils.get_client_addr(scope),
                                     scope["method"], uvicorn_utils.get_path_with_query_string(scope),
                                     scope["http_version"], status)
        data = b"".join((STATUS_LINE[status], _header_block(cycle.default_headers), _header_block(headers),
                         b"content-length: %d\r\n" % len(body),
                         b"\r\n" if cycle.keep_alive else b"connection: close\r\n\r\n", body))
        transport = self.transport
        if not transport.is_closing():
            transport.write(data)
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            transport.close()
        cycle.on_response()

    # -- timers and refusals -----------------------------------------------------------
    def _arm_head_timer(self) -> None:
        if self._watching != "head":  # a head deadline already running is kept (not extended)
            self._watch("head", self.limits.header_timeout_s)

    def _watch(self, what: str, timeout_s: float) -> None:
        """Deadline ``what`` in ``timeout_s``; the one timer is armed only when it would
        fire after it (or is not armed), and then at most ``_horizon`` ahead -- so the next
        request's deadlines, none shorter than the horizon, fall after it and move a float."""
        now = self.loop.time()
        deadline = self._deadline = now + timeout_s
        self._watching = what
        timer = self._timer
        if timer is None or self._timer_at > deadline:
            if timer is not None:
                timer.cancel()
            at = self._timer_at = min(deadline, now + self._horizon)
            self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        what = self._watching
        if what is None:
            return
        now = self.loop.time()
        if now < self._deadline:  # the deadline moved on since the timer was armed
            at = self._timer_at = min(self._deadline, now + self._horizon)
            self._timer = self.loop.call_at(at, self._on_timer)
            return
        self._watching = None
        if what == "head":
            self._head_timeout()
        elif what == "body":
            self._body_timeout()
        elif not self.transport.is_closing():  # "idle": uvicorn's keep-alive timeout ends the connection
            self.transport.close()

    def _cancel_timers(self) -> None:
        self._watching = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timeout(self) -> None:
        if self._over_cap:
            self._refuse("too-many-connections", f"more than {self.limits.max_connections} open connections; "
                         "retry later")
            return
        # (a pipelined request's head late while earlier answers run: they are answered first)
        self._refuse("request-timeout", f"request line and headers not received within "
                     f"{self.limits.header_timeout_s:g} s")

    def _body_timeout(self) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.more_body:
            return
        if cycle.response_started:  # the application answers without its body: end the connection
            cycle.disconnected = True
            cycle.message_event.set()
            self._close()
        else:  # the late request is dropped (its receive() returns http.disconnect) by _refuse
            self._refuse("request-timeout", f"request body not received within {self.limits.body_timeout_s:g} s")

    def _refuse(self, slug: str, detail: str) -> None:
        """Answer ``slug`` and close -- after every earlier pipelined request is answered.

        Requests parsed before the refused bytes were complete: they are answered one by
        one, in order, and only then the refusal is written and the connection closed
        (a valid PCS pipelined before a malformed request was stored but only
        the 400 was answered). A request whose body is incomplete when the refusal
        comes is dropped unprocessed (its application sees ``http.disconnect``); nothing
        after the refused bytes is parsed."""
        if self._closed_by_guard or self.transport is None or self.transport.is_closing():
            return
        self._closed_by_guard = True  # no more parsing: data_received ignores what follows
        self._cancel_timers()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            if self.pipeline and self.pipeline[0][0] is cycle:  # queued, never started: drop it
                self.pipeline.popleft()
            else:  # running and waiting for its body: it processes nothing
                cycle.disconnected = True
                cycle.message_event.set()
        if self._owes_answers():
            self._pending_refusal = raw_problem(slug, detail)
            self.flow.pause_reading()
            return
        self.transport.write(raw_problem(slug, detail))
        self._close()

    def _owes_answers(self) -> bool:
        """True while a request parsed earlier has not been answered yet."""
        if self.pipeline:
            return True
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete and not cycle.disconnected

    def on_response_complete(self) -> None:
        """uvicorn's (count the request, read again, start the next pipelined request), with
        its keep-alive timeout on the connection's one timer ("idle", when no head or body
        deadline runs) instead of a loop timer made per answer and cancelled at the next
        request's bytes; then a refusal that waited for this answer is written."""
        self.server_state.total_requests += 1
        if not self.transport.is_closing():
            self._unset_keepalive_if_required()
            self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
            elif self._watching is None:
                self._watch("idle", self.timeout_keep_alive)
        if self._pending_refusal is not None and not self._owes_answers():
            data, self._pending_refusal = self._pending_refusal, None
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(data)
                self.transport.close()
        elif self._eof and not self._owes_answers() and not self.transport.is_closing():
            self.transport.close()  # the client's side ended: its last answer is written

    def _close(self) -> None:
        self._closed_by_guard = True
        self._cancel_timers()
        if self.transport is not None:
            self.transport.close()


class _NoWaiter:
    """A :class:`_DirectCycle`'s ``message_event``: no ASGI ``receive`` waits on it."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_WAITER = _NoWaiter()


class _DirectCycle:
    """The request cycle of a submission whose head the protocol parsed lean (``POST`` to the
    direct path's exact target, one ``Content-Length`` within its limit, nothing else in
    flight on the connection: :meth:`GuardedHttpToolsProtocol._lean_head`): the attributes of
    uvicorn's ``RequestResponseCycle`` that the protocol, uvicorn's connection handling and
    the direct path read and write, without its ASGI scope (built only for an access log
    line: :attr:`scope`), ``asyncio.Event`` and ``receive``/``send``. It never runs an ASGI
    application."""

    __slots__ = ("protocol", "headers", "http_version", "keep_alive", "body", "more_body", "response_started",
                 "response_complete", "disconnected", "on_response", "access_log", "access_logger",
                 "default_headers", "transport")
    message_event = _NO_WAITER
    waiting_for_100_continue = False

    def __init__(self, protocol: GuardedHttpToolsProtocol, http_version: str, keep_alive: bool) -> None:
        self.protocol = protocol
        self.headers = protocol.headers
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.body = bytearray()
        self.more_body = True
        self.response_started = self.response_complete = self.disconnected = False
        self.on_response = protocol.on_response_complete
        self.access_log = protocol.access_log
        self.access_logger = protocol.access_logger
        self.default_headers = protocol.server_state.default_headers
        self.transport = protocol.transport

    @property
    def scope(self) -> dict:
        """The request's ASGI scope as uvicorn would have made it (for the access log)."""
        p = self.protocol
        hook_path = p._lean_url.decode("ascii")
        return {"type": "http", "http_version": self.http_version, "server": p.server, "client": p.client,
                "scheme": p.scheme, "method": "POST", "root_path": p.root_path, "path": hook_path,
                "raw_path": p._lean_url, "query_string": b"", "headers": self.headers}


def protocol_class(limits: HttpLimits, direct: bool = True) -> type[GuardedHttpToolsProtocol]:
    """A :class:`GuardedHttpToolsProtocol` subclass bound to ``limits`` (uvicorn's ``http=``);
    ``direct=False``: every request through the ASGI application (the reference the direct
    submit path is compared with)."""
    return type("FlkHttpProtocol", (GuardedHttpToolsProtocol,), {"limits": limits, "direct": direct})
