"""The simulator runs what ships: the simulator's regions and the server's submit batches
form batches with the same state machine, decide answers with the same core class and
call the store through the same breaker wrapping (spec/ARCHITECTURE.md, "Verification core").
"""

from __future__ import annotations

import asyncio

from flk.impl.dedup.memory import MemoryStore
from flk.impl.server.batchdriver import BatchDriver, GuardedStore
from flk.impl.storage.wal import SegmentedLog
from flk.impl.testing.crashfs import CrashableMemoryFileSystem
from flk.impl.verifier import admission, batching, core
from flk.impl.verifier.admission import CircuitBreaker
from flk.impl.verifier.metrics import Metrics
from flk.impl.verifier.pipeline import Verifier
from flk.sim import api
from flk.sim import region as sim_region

SHORT = ["scenario.duration_s=1", "scenario.quiescence_s=2"]


def _spy(monkeypatch) -> list[tuple[str, type]]:
    """Every VerifyBatch made, with the module of the frame that made it."""
    import sys

    made: list[tuple[str, type]] = []
    init = core.VerifyBatch.__init__

    def spying(self, *args, **kwargs):
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__") == core.__name__:
            frame = frame.f_back  # from_records / serve_batch / run_requests: their caller counts
        made.append((frame.f_globals.get("__name__", "?") if frame is not None else "?", type(self)))
        init(self, *args, **kwargs)

    monkeypatch.setattr(core.VerifyBatch, "__init__", spying)
    return made


def test_the_sim_region_and_the_server_batch_driver_run_the_same_core_and_batch_formation(monkeypatch):
    made = _spy(monkeypatch)
    result = api.run("crr-normal", seed=1, overrides=SHORT, plots=False)
    assert result.valid
    sim_made = {cls for module, cls in made if module == sim_region.__name__}
    assert sim_made == {core.VerifyBatch}, made[:5]
    made.clear()

    from verifier.pcsgen import HMAC_A, body, make_pcs, registry, sign

    verifier = Verifier(registry(), region="eu")
    log = SegmentedLog("/wal", fs=CrashableMemoryFileSystem())
    guarded = GuardedStore(MemoryStore(), CircuitBreaker())
    driver = BatchDriver(verifier, log, guarded, Metrics())

    async def one():
        return await driver.submit(body(sign(make_pcs(seed=3), HMAC_A)), "ta")

    try:
        assert asyncio.run(one()).status == 200
    finally:
        driver.close()
    server_made = {cls for module, cls in made if module == "flk.impl.server.batchdriver"}
    assert server_made == {core.VerifyBatch}, made
    # the same batch formation class and the same breaker wrapping on both sides
    assert type(driver.formation) is batching.BatchFormation
    from flk.sim.scenario import load
    from flk.sim.world import World

    world = World(load("crr-normal", SHORT), seed=1)
    for r in world.regions.values():
        assert type(r.formation) is batching.BatchFormation and type(r.guarded) is admission.GuardedStore
        assert world.core_cls is core.VerifyBatch
    # the same pipelining depth: what the server runs by default is what the regions model
    from flk.impl.server.config import ServerConfig

    depths = {r.formation.depth for r in world.regions.values()}
    assert depths == {driver.formation.depth} == {ServerConfig().wal_pipeline_depth}, depths
    assert sim_region.BatchFormation is batching.BatchFormation
    assert sim_region.GuardedStore is admission.GuardedStore
    assert issubclass(GuardedStore, admission.GuardedStore)
    # the batch's home answers reached the WAL for its segment's manifest
    sealed = log.seal()
    assert sealed is not None
    import json

    manifest = json.loads(log.fs.read("/wal/" + sealed.name.replace(".log", ".manifest.json")))
    assert manifest["answers"] == {"codes": "S", "held": {}}
