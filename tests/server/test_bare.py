"""The benchmark's bare handler: reads the body, parses the JSON, answers; nothing else."""

from __future__ import annotations

import asyncio

import httpx
import pytest

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
