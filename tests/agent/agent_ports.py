"""A loopback URL nothing listens on (a port bound, then let go): a dead server for the
agent's give-up, retry and outbox tests."""

from __future__ import annotations

import socket


def dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"
