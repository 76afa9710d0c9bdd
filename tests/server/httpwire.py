"""Reading HTTP/1.1 answers off a raw socket, for the tests that send bytes themselves
(pipelining, the direct submit path): each answer's head and body by its Content-Length."""

from __future__ import annotations

import re
import socket

_LENGTH = re.compile(rb"(?im)^content-length: *(\d+)")


def read_raw_answers(sock: socket.socket, expected: int, timeout: float = 20.0) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The ``(head, body)`` of each answer on ``sock`` until ``expected`` came or the server
    closed (a close inside an answer fails the test), and whether it closed after them."""
    sock.settimeout(timeout)
    buf, answers = b"", []
    while len(answers) < expected:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return answers, True
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        found = _LENGTH.search(head)
        length = int(found.group(1)) if found else 0
        while len(buf) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed inside an answer: {head!r}")
            buf += chunk
        answers.append((head, buf[:length]))
        buf = buf[length:]
    try:
        sock.settimeout(0.3)
        closed = sock.recv(1) == b""
    except TimeoutError:
        closed = False
    return answers, closed
