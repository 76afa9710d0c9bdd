"""``flk serve`` with the replication hooks of ``flk.impl.crr_service`` attached,
for as long as the server does not call them itself (ARCHITECTURE.md
"Requests"). Runs exactly ``flk serve`` (``flk.impl.cli.main(["serve", ...])``)
with WORKERS=1 (in-process worker). When ``flk.impl.server.app`` already calls
``crr_service.start_for_server`` this module adds nothing."""

from __future__ import annotations

import inspect
import sys

from flk.impl import crr_service
from flk.impl.cli import main
from flk.impl.server import app as app_mod


def server_is_wired() -> bool:
    return "crr_service" in inspect.getsource(app_mod)


def install() -> None:
    srv_cls = app_mod.Server
    orig_start, orig_stop, orig_create = srv_cls.start, srv_cls.stop, app_mod.create_app
    servers: list = []

    async def start(self):
        await orig_start(self)
        self.crr = crr_service.start_for_server(self)
        servers.append(self)

    async def stop(self):
        crr_service.stop_for_server(getattr(self, "crr", None))
        self.crr = None
        await orig_stop(self)

    def create_app(cfg, worker=0):
        inner = orig_create(cfg, worker)
        sub = crr_service.mount_app(lambda: getattr(servers[0], "crr", None) if servers else None)

        async def asgi(scope, receive, send):
            if scope["type"] == "http" and crr_service.handles(scope["path"]):
                return await sub(scope, receive, send)
            return await inner(scope, receive, send)

        return asgi

    srv_cls.start, srv_cls.stop, app_mod.create_app = start, stop, create_app


if __name__ == "__main__":
    if not server_is_wired():
        install()
    sys.exit(main(["serve", *sys.argv[1:]]))
