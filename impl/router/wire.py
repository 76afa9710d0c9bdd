"""HTTP/1.1 framing for the router's proxy, sans I/O: request heads, chunk sizes, problem answers.

Why this module exists: the router answers whatever bytes a client sends (a total function): a
head it cannot read is a ``400``, a head over :data:`MAX_HEAD` a ``431``, a body over
:data:`MAX_BODY` a ``413``, each as ``application/problem+json``; it never forwards what it could
not frame (a request with both ``content-length`` and ``transfer-encoding``, a non-numeric or
conflicting length, an unknown transfer coding, a folded header). The parsing is plain functions
over bytes that return a result or a :class:`Rejection`, so Hypothesis can feed them anything.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..verifier.problems import problem_dict

MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024
HOME_HEADER = b"x-flk-home"
REGION_HEADER = b"x-flk-region"
HOP_BY_HOP = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive", HOME_HEADER})

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_TARGET = re.compile(rb"^[\x21-\x7e]+$")
_VERSION = re.compile(rb"^HTTP/1\.[01]$")
_DIGITS = re.compile(rb"^[0-9]{1,16}$")
_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*)?$")
_HEX = re.compile(rb"^[0-9A-Fa-f]{1,16}$")
# the router's own answers, by status: slugs of the one problem catalog (flk.impl.verifier.problems)
SLUGS = {400: "bad-request", 413: "payload-too-large", 431: "headers-too-large", 501: "unsupported-transfer-coding",
         502: "region-unavailable"}
REASONS = {400: "Bad Request", 413: "Content Too Large", 431: "Request Header Fields Too Large",
           501: "Not Implemented", 502: "Bad Gateway"}


@dataclass(frozen=True)
class Rejection:
    """The router's answer to a request it will not forward."""

    status: int
    detail: str


@dataclass(frozen=True)
class RequestHead:
    """A request head the router can forward; ``length`` is None for a chunked body."""

    method: str
    target: str
    version: str
    headers: list[tuple[bytes, bytes]]
    length: int | None

    @property
    def first(self) -> str:
        return f"{self.method} {self.target} {self.version}"

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    @property
    def home(self) -> str | None:
        """The client's home region (``X-Flk-Home``), None when absent or empty."""
        value = self.header(HOME_HEADER)
        return value.decode("latin-1") if value else None


def parse_request_head(raw: bytes) -> RequestHead | Rejection:
    """A request head (the bytes before the blank line, without it) -> what to forward, or why not."""
    if len(raw) > MAX_HEAD:
        return Rejection(431, "the request head is larger than the router reads")
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not _TARGET.match(parts[1]) or not _VERSION.match(parts[2]):
        return Rejection(400, "the request line is not METHOD TARGET HTTP/1.x")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            return Rejection(400, "a header line is not NAME: VALUE")
        value = value.strip(b" \t")
        if any(c < 0x20 and c != 0x09 or c == 0x7F for c in value):
            return Rejection(400, "a header value holds a control character")
        headers.append((name.lower(), value))
    lengths = {v for k, v in headers if k == b"content-length"}
    codings = [v.lower() for k, v in headers if k == b"transfer-encoding"]
    if lengths and codings:
        return Rejection(400, "a request with both content-length and transfer-encoding")
    if codings:
        if codings != [b"chunked"]:
            return Rejection(501, "the only transfer coding the router forwards is chunked")
        length = None
    elif lengths:
        if len(lengths) != 1 or not _DIGITS.match(next(iter(lengths))):
            return Rejection(400, "content-length is not one decimal number")
        length = int(next(iter(lengths)))
        if length > MAX_BODY:
            return Rejection(413, "the request body is larger than the router forwards")
    else:
        length = 0
    return RequestHead(parts[0].decode("latin-1"), parts[1].decode("latin-1"), parts[2].decode("latin-1"),
                       headers, length)


def parse_response_head(raw: bytes) -> tuple[int, str, list[tuple[bytes, bytes]]] | Rejection:
    """A region's answer head (without the blank line) -> (status, status line, headers), or a ``502``
    when the router cannot relay it (a status line that is not ``HTTP/1.x NNN reason`` with a final
    status 200-599, a header line that is not ``NAME: VALUE``, an unframeable length)."""
    first, _, rest = raw.partition(b"\r\n")
    m = _STATUS_LINE.match(first)
    if not m or not 200 <= int(m.group(1)) <= 599:
        return Rejection(502, "the region's status line is not HTTP/1.x and a final status")
    headers: list[tuple[bytes, bytes]] = []
    for line in rest.split(b"\r\n") if rest else []:
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        if not colon or not _TOKEN.match(name) or any(c < 0x20 and c != 0x09 or c == 0x7F for c in value):
            return Rejection(502, "a header line of the region's answer is not NAME: VALUE")
        headers.append((name.lower(), value))
    lengths = {v for k, v in headers if k == b"content-length"}
    if len(lengths) > 1 or lengths and not _DIGITS.match(next(iter(lengths))):
        return Rejection(502, "the region's content-length is not one decimal number")
    reason = first[len(b"HTTP/1.x 200 "):].decode("latin-1")
    return int(m.group(1)), f"HTTP/1.1 {m.group(1).decode()} {reason}", headers  # the router speaks 1.1


def parse_chunk_size(line: bytes) -> int | Rejection:
    """A chunk-size line (without its CRLF; extensions allowed) -> the size, or why not."""
    size = line.split(b";", 1)[0].strip(b" \t")
    if not _HEX.match(size):
        return Rejection(400, "a chunk size is not a hexadecimal number")
    return int(size, 16)


def head_bytes(first: str, headers: list[tuple[bytes, bytes]], body: bytes,
               extra: list[tuple[bytes, bytes]] = ()) -> bytes:
    """A message head for ``body`` (framed by content-length), without the hop-by-hop headers."""
    lines = [first.encode("latin-1")] + [k + b": " + v for k, v in headers if k not in HOP_BY_HOP]
    lines += [k + b": " + v for k, v in extra] + [b"content-length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def problem(status: int, detail: str, region: str | None = None, close: bool = False) -> bytes:
    """A whole ``application/problem+json`` answer of the router itself."""
    title = REASONS.get(status, "Error")
    body = json.dumps(problem_dict(SLUGS.get(status, "bad-request"), detail)).encode()
    extra = [(REGION_HEADER, region.encode())] if region else []
    if close:
        extra.append((b"connection", b"close"))
    return head_bytes(f"HTTP/1.1 {status} {title}", [(b"content-type", b"application/problem+json")], body,
                      extra) + body
