"""The cluster's tenants file: the workload's tenant limits and every tenant's keys, rotated live.

Why this module exists: a real ``flk serve`` takes per-tenant limits and key validity
windows only from a tenants TOML file (``TENANTS_FILE``), and reads it again at SIGHUP
(:mod:`flk.impl.server.reload`). The simulator's regions get the same tenants from
:meth:`flk.sim.world.World._tenant_registry`: tenants ``t0..tN-1``, keys derived from
:data:`flk.sim.world.BASE_KEY` per generation, and at a ``rotate_key`` fault the new
generation valid from the rotation and the old one until ``workload.rotation_overlap_s``
after it. :class:`TenantsFile` writes that registry for the regions (one file shared by
all, 0600: it holds keys) and, at a rotation, the next one with the windows in wall-clock
seconds; the runner then signals the servers and switches its agents' keys.
"""

from __future__ import annotations

import os
from pathlib import Path

from flk.impl.agent.factory import tenant_key
from flk.sim.world import BASE_KEY


def tenant_defaults(w: dict) -> dict:
    """Every tenant's limits from the workload (empty: it sets none): the simulator's regions'
    token buckets (:class:`flk.impl.verifier.tenants.Tenant`)."""
    rate, burst = float(w.get("tenant_rate_per_s", 0.0)), float(w.get("tenant_burst", 0.0))
    quota = int(w.get("tenant_daily_quota", 0))
    if not (rate or burst or quota):
        return {}
    defaults: dict = {"rate_per_s": rate, "daily_quota": quota}
    if burst:
        defaults["burst"] = burst
    return defaults


def secret(tid: str, generation: int) -> str:
    """Tenant ``tid``'s HMAC key of ``generation`` (the simulator's)."""
    return tenant_key(BASE_KEY, tid, generation).decode()


class TenantsFile:
    """Tenants ``t0..t{n-1}`` at ``path``: ``needed`` when the workload sets limits or the
    scenario rotates keys (otherwise the ``TENANTS`` setting carries the keys)."""

    def __init__(self, path: Path, n: int, w: dict, rotating: bool = False) -> None:
        self.path = Path(path)
        self.defaults = tenant_defaults(w)
        self.needed = bool(self.defaults) or rotating
        self.keys: dict[str, list[dict]] = {f"t{i}": [{"id": "k0", "secret": secret(f"t{i}", 0)}] for i in range(n)}

    def setting(self) -> str:
        """The ``TENANTS`` setting of the tenants' first keys (``tenant:hmac:key,...``): what the
        servers get when no file is :attr:`needed`."""
        return ",".join(f"{tid}:hmac:{keys[0]['secret']}" for tid, keys in self.keys.items())

    def generation(self, tid: str) -> int:
        return len(self.keys[tid]) - 1

    def write(self) -> Path:
        """The file as it stands, replacing the old one at once (a reader sees one or the other)."""
        import tomli_w

        doc: dict = {"tenants": {tid: {"alg": "hmac", "keys": keys} for tid, keys in self.keys.items()}}
        if self.defaults:
            doc["defaults"] = self.defaults
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(tomli_w.dumps(doc))
        os.replace(tmp, self.path)
        return self.path

    def rotate(self, tenants: list[str], at: float, overlap_s: float) -> None:
        """Each of ``tenants`` gets its next key, valid from ``at`` (seconds since the epoch); its
        current key stays valid until ``at + overlap_s`` (the simulator's windows). Call
        :meth:`write` after."""
        for tid in tenants:
            keys = self.keys[tid]
            keys[-1]["not_after"] = at + overlap_s
            keys.append({"id": f"k{len(keys)}", "secret": secret(tid, len(keys)), "not_before": at})
