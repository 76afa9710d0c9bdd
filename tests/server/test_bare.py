"""The benchmark's bare handler: reads the body, parses the JSON, answers; nothing else."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.testing.bare import make_app


def _call(method: str, path: str, body: bytes = b"", *args: str) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(*args)), base_url="http://t") as c:
            return await c.request(method, path, content=body)

    return asyncio.run(go())


@pytest.mark.parametrize("variant", [(), ("starlette",)], ids=["raw-asgi", "starlette"])
def test_bare_handler_answers_like_a_minimal_json_endpoint(variant) -> None:
    ok = _call("POST", "/v1/pcs/submit", b'{"pcs_id":"x"}', *variant)
    assert ok.status_code == 200 and ok.content == b'{"ok":true}'
    assert ok.headers["content-length"] == "11" and ok.headers["content-type"] == "application/json"
    bad = _call("POST", "/v1/pcs/submit", b"{not json", *variant)
    assert bad.status_code == 400 and bad.content == b'{"ok":false}'
    assert _call("GET", "/elsewhere", b"", *variant).status_code == 404


def test_durable_variant_answers_like_bare_starlette_and_appends_what_it_accepted(tmp_path) -> None:
    ok = _call("POST", "/v1/pcs/submit", b'{"pcs_id":"x"}', "durable", str(tmp_path))
    assert ok.status_code == 200 and ok.content == b'{"ok":true}'
    bad = _call("POST", "/v1/pcs/submit", b"{not json", "durable", str(tmp_path))
    assert bad.status_code == 400 and bad.content == b'{"ok":false}'
    logs = list(tmp_path.iterdir())
    assert len(logs) == 1 and logs[0].read_bytes() == b'{"pcs_id":"x"}\n'


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.sampled_from([0.0, 0.0005, 0.002])), min_size=1, max_size=12),
       st.sampled_from([0.0, 0.001, 0.003]))
def test_group_sync_releases_an_append_only_after_a_sync_that_began_after_it(tmp_path_factory, appends,
                                                                              sync_s) -> None:
    """GroupSync (the WAL-first anchor's group commit): an append is released only after an
    fdatasync that began once its bytes were written (INV-WAL-FIRST's rule for the anchor);
    appends made while a sync runs share the next one."""
    import os
    import time

    from flk.impl.testing import bare

    path = str(tmp_path_factory.mktemp("gs") / "log")
    started: list[int] = []  # file size when each sync began
    ended: list[int] = []  # sizes of the syncs that have returned
    real = os.fdatasync

    def slow_sync(fd: int) -> None:
        size = os.fstat(fd).st_size
        started.append(size)
        time.sleep(sync_s)
        real(fd)
        ended.append(size)

    async def one(gs, n: int, pause: float) -> None:
        await asyncio.sleep(pause)
        before = os.stat(path).st_size if os.path.exists(path) else 0
        await gs.append(b"x" * n)
        assert any(size >= before + n for size in ended)  # a finished sync covered this append

    async def main():
        gs = bare.GroupSync(path)
        await asyncio.gather(*(one(gs, n, pause) for n, pause in appends))
        return gs

    bare.os.fdatasync = slow_sync
    try:
        gs = asyncio.run(main())
    finally:
        bare.os.fdatasync = real
    assert gs.appends == len(appends) and 1 <= gs.syncs == len(started) <= len(appends)
    assert os.path.getsize(path) == sum(n for n, _ in appends)
