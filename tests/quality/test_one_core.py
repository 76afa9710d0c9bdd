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


def _spy_wal_appends(monkeypatch) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every ``SegmentedLog.append_framed`` / ``append_many`` call: the method and its callers
    (module, function), innermost first."""
    import sys

    calls: list[tuple[str, list[tuple[str, str]]]] = []
    for method in ("append_framed", "append_many"):
        original = getattr(SegmentedLog, method)

        def spying(self, *args, _original=original, _method=method, **kwargs):
            chain, frame = [], sys._getframe(1)
            while frame is not None and len(chain) < 12:
                chain.append((frame.f_globals.get("__name__", "?"), frame.f_code.co_name))
                frame = frame.f_back
            calls.append((_method, chain))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(SegmentedLog, method, spying)
    return calls


def test_the_sim_region_and_the_server_append_the_inbox_wal_with_one_call(monkeypatch):
    """The simulator's regions and the server's batch driver (through its ``LoggedWal``) append a
    batch's inbox records with the one call of the core, ``append_inbox``: on the compiled path the
    batch's frames come from ``frame_records`` in one call and reach the log's ``append_framed``."""
    from flk.impl.core import accel
    from flk.impl.server.batchdriver import LoggedWal
    from flk.impl.verifier import pipeline

    compiled = accel.active("frame_records") is not None
    calls = _spy_wal_appends(monkeypatch)
    appender = (pipeline.__name__, "append_inbox")
    with accel.counting() as counts:
        result = api.run("crr-normal", seed=1, overrides=SHORT, plots=False)
    assert result.valid
    sim_calls = [(method, chain) for method, chain in calls if (sim_region.__name__, "_run_batch") in chain]
    assert sim_calls, "the regions appended no inbox record"
    assert all(appender in chain for _, chain in sim_calls), sim_calls[:3]
    assert sim_region.append_inbox is core.append_inbox is pipeline.append_inbox
    if compiled:
        assert counts["frame_records"] > 0
        assert {method for method, _ in sim_calls} == {"append_framed"}
        assert not any((pipeline.__name__, "append_many") in chain for _, chain in sim_calls)
    calls.clear()

    from verifier.pcsgen import HMAC_A, body, make_pcs, registry, sign

    log = SegmentedLog("/wal", fs=CrashableMemoryFileSystem())
    errors: list = []
    wal = LoggedWal(lambda: log, lambda event, **fields: errors.append((event, fields)))
    driver = BatchDriver(Verifier(registry(), region="eu"), wal, GuardedStore(MemoryStore(), CircuitBreaker()),
                         Metrics())

    async def two():
        return await asyncio.gather(*(driver.submit(body(sign(make_pcs(seed=s), HMAC_A)), "ta") for s in (3, 4)))

    with accel.counting() as counts:
        try:
            assert [r.status for r in asyncio.run(two())] == [200, 200]
        finally:
            driver.close()
    server_calls = [(method, chain) for method, chain in calls if ("flk.impl.server.batchdriver", "_append") in chain]
    assert server_calls and all(appender in chain for _, chain in server_calls), calls
    assert not errors
    assert log.next_index == 2 and log.durable_index == 2  # answered only after the covering sync
    if compiled:
        assert counts["frame_records"] == len(server_calls) >= 1
        assert {method for method, _ in server_calls} == {"append_framed"}


def test_the_sim_router_and_the_real_proxy_drive_the_one_rotation_table(monkeypatch, tmp_path):
    """The health-checked router's rules have one owner (flk.impl.router.health.HealthTable): the
    simulator's router and the real proxy hold that class, and every rotation change either of
    them reports is one the table returned (spec/ARCHITECTURE.md, ``impl/router``)."""
    import json
    import sys

    from flk.impl.lab.cluster import router as cluster_router
    from flk.impl.router import health, proxy
    from flk.sim import routing

    calls: list[tuple[str, str, object]] = []
    record, resolve = health.HealthTable.record, health.HealthTable.resolve

    def spying_record(self, region, passed):
        change = record(self, region, passed)
        calls.append((sys._getframe(1).f_globals.get("__name__", "?"), "record", change))
        return change

    def spying_resolve(self, home):
        calls.append((sys._getframe(1).f_globals.get("__name__", "?"), "resolve", home))
        return resolve(self, home)

    monkeypatch.setattr(health.HealthTable, "record", spying_record)
    monkeypatch.setattr(health.HealthTable, "resolve", spying_resolve)
    assert routing.HealthTable is proxy.HealthTable is health.HealthTable
    assert cluster_router.main is proxy.main  # the cluster runs the shipped proxy, not a lab copy

    # the simulator: region-failover's route.down / route.up are the table's own answers
    result = api.run("region-failover", seed=1, plots=False)
    events = [(e["type"], e["region"]) for e in result.history.events if e["type"] in ("route.down", "route.up")]
    sim_changes = [c for module, what, c in calls if module == routing.__name__ and what == "record" and c]
    assert events == [("route.down", "eu"), ("route.up", "eu")], events
    assert [t.split(".")[1] for t, _ in events] == sim_changes
    assert any(m == routing.__name__ and what == "resolve" for m, what, _ in calls)
    assert {m for m, _, _ in calls} == {routing.__name__}
    calls.clear()

    # the real proxy: a region answering /ready with 503 leaves rotation, with 200 returns, through the same table
    events_file = tmp_path / "events.jsonl"
    table = health.HealthTable(["eu", "us"], down_after=2, up_after=1)
    ready = {"eu": False}

    async def region(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n" if ready["eu"] else b"HTTP/1.1 503 Unavailable\r\n\r\n")
        await writer.drain()
        writer.close()

    async def checks():
        server = await asyncio.start_server(region, "127.0.0.1", 0)  # a kernel-chosen free port
        addr = server.sockets[0].getsockname()[:2]
        router = proxy.Router({"eu": addr, "us": addr}, table, interval=0.01, timeout=0.5, upstream_timeout=1.0,
                              events=str(events_file))
        task = asyncio.create_task(router.checker("eu"))
        while table.healthy["eu"]:
            await asyncio.sleep(0.01)
        ready["eu"] = True
        while not table.healthy["eu"]:
            await asyncio.sleep(0.01)
        task.cancel()
        router.events.close()
        server.close()

    asyncio.run(asyncio.wait_for(checks(), 20))
    logged = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [(e["event"], e["region"]) for e in logged] == [("down", "eu"), ("up", "eu")]
    assert [c for m, what, c in calls if what == "record" and c] == ["down", "up"]
    assert {m for m, _, _ in calls} == {proxy.__name__}


def test_the_sim_replication_reads_the_store_an_outage_takes_down():
    """``flk serve``'s CrrService hands its one dedup store to the replay applier and the
    divergence detector: when the store is out, the detector cannot sample it and counts every
    peer unseen. The simulator's regions do the same (their detector once read the store
    beneath the outage switch and compared through every outage)."""
    from flk.sim.scenario import load
    from flk.sim.world import World

    world = World(load("crr-normal", SHORT), seed=1)
    for rid, repl in world.repl.items():
        region = world.regions[rid]
        assert repl.detector.store is region.store and repl.sharing.store is region.store
    repl = world.repl["eu"]
    repl.detector.publish(0.0)
    assert repl.detector.failures == 0 and set(repl.detector.unseen.values()) == {0}
    world.regions["eu"].store.available = False
    repl.detector.publish(repl.detector.interval_s)
    assert repl.detector.failures == 1 and set(repl.detector.unseen.values()) == {1}


def test_the_sim_controllers_observe_what_the_deployed_controller_reads(monkeypatch):
    """``flk operator run`` sees a server only through ``/metrics``: its health sample is
    :func:`flk.impl.operator.observe.sample` over two parsed scrapes (a p95 that is a bucket
    bound of ``flk_http_latency_seconds``, an error rate from the status counters, a dedup hit
    ratio from ``flk_dedup_hits`` / ``flk_ingest``, the replication lag gauge). The simulated
    controllers take theirs the same way from their regions' scrapes (they once computed an
    exact p95 from every answer, which no deployed controller can)."""
    from flk.impl.operator import observe
    from flk.impl.verifier.metrics import HTTP_LATENCY_BUCKETS

    samples: list[dict] = []
    original = observe.sample

    def spying(before, after, now):
        out = original(before, after, now)
        samples.append(out)
        return out

    monkeypatch.setattr(observe, "sample", spying)
    result = api.run("operator-migration", seed=1, plots=False)
    assert result.valid
    bounds = {round(le * 1000.0, 6) for le in HTTP_LATENCY_BUCKETS}
    p95s = [s["latency_p95_ms"] for s in samples if s.get("latency_p95_ms") is not None]
    ratios = [s["dedup_hit_ratio"] for s in samples if s.get("dedup_hit_ratio") is not None]
    assert p95s and set(map(lambda v: round(v, 6), p95s)) <= bounds, sorted(set(p95s))[:5]
    assert ratios and all(0.0 <= r <= 1.0 for r in ratios)
    samples.clear()
    result = api.run("operator-crr-selective", seed=1, plots=False)
    assert result.valid and any(s.get("replication_lag_s") is not None for s in samples)


def test_an_operator_scenario_runs_the_same_whether_its_history_is_kept_or_not():
    """The controllers read their regions' own counters, not the history: a digest-only run
    (``flk bench``, exploration, the golden digests) must not leave them blind (it once did:
    every gate 'unknown', another run)."""
    from flk.sim.scenario import load
    from flk.sim.world import World

    for name in ("operator-migration-rollback", "operator-crr-selective"):
        kept = World(load(name), seed=1).run().digest
        assert World(load(name), seed=1, keep_history=False).run().digest == kept, name


def test_the_sim_regions_count_their_metrics_with_the_servers_sink(monkeypatch):
    """A scraped region's verifier counters are the shipped ``Metrics``, handed to the core as
    its sink as the server's batch driver hands it (they were once derived from the history by
    a mapping of answers to counters, which drifted from what flk serve counts). Each answer of
    a verdict is counted once, a restarted region's process counts from zero, and its start-up
    replay counts nothing (as flk serve's, tests/server/test_restart_counters.py)."""
    from flk.sim import alerts
    from flk.sim.scenario import load
    from flk.sim.world import World

    world = World(load("crash-restart"), seed=1)
    scraper = alerts.Scraper(world)
    sinks = []
    original = core.VerifyBatch.__init__

    def spying(self, verifier, now, *, sink=None, **kwargs):
        sinks.append(sink)
        original(self, verifier, now, sink=sink, **kwargs)

    monkeypatch.setattr(core.VerifyBatch, "__init__", spying)
    world.run()
    region = next(r for r in world.regions.values() if r.incarnation > 0)
    assert type(region.exported.pipeline) is Metrics
    assert {type(s) for s in sinks} == {Metrics, type(None)}  # the regions' batches / the start-up replays
    events = world.history.events
    restarted = max(e["t_us"] for e in events if e["type"] == "srv.recovered" and e["region"] == region.id)
    replayed = [e for e in events if e["type"] == "srv.replay" and e["region"] == region.id]
    answered = [e for e in events if e["type"] == "srv.respond" and e["region"] == region.id
                and e["t_us"] >= restarted and not e.get("before_wal")]
    assert replayed and answered
    assert any(sample[("up", ())] == 0.0 for _, rid, sample in scraper.samples if rid == region.id)  # it was down
    last = scraper.view.scrape(region.id)  # its /metrics at the end of the run
    assert last[("up", ())] == 1.0

    def total(name: str) -> float:
        return sum(v for (n, _), v in last.items() if n == name)

    fresh = sum(1 for e in answered if e["status"] == 200 and not e["replay"])
    hits = sum(1 for e in answered if e["replay"])
    assert total("flk_accepted_total") == fresh > 0
    assert total("flk_dedup_hits_total") == hits
    assert total("flk_signature_errors_total") == sum(1 for e in answered if e["status"] == 401)
    assert total("flk_http_requests_total") == len(answered) + sum(
        1 for e in events if e["type"] == "srv.respond" and e["region"] == region.id and e["t_us"] >= restarted
        and e.get("before_wal"))


class _CallLog(MemoryStore):
    """A memory store that records its batch calls' names."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def get_many(self, keys, now):
        self.calls.append("get_many")
        return super().get_many(keys, now)

    def put_many_if_absent(self, items, now, ttl_s=None):
        self.calls.append("put_many_if_absent")
        return super().put_many_if_absent(items, now, ttl_s)


def test_the_sim_region_and_the_server_make_the_same_store_calls_per_batch():
    """A batch looks its keys up only where the core says it needs to (a verifier with hooks,
    ``VerifyBatch.needs_lookup``), on both sides: without hooks the server's batch makes one
    store call (put-if-absent answers a held key as the lookup would) and so does a simulated
    region, whose batches made two before -- a slow store then cost a simulated batch twice
    what it cost the server (the dedup-slow study on a real cluster found it)."""
    from verifier.pcsgen import HMAC_A, body, make_pcs, registry, sign

    from flk.impl.testing.memwal import MemoryWal
    from flk.sim.scenario import load
    from flk.sim.world import World

    bodies = [body(sign(make_pcs(seed=k), HMAC_A)) for k in range(4)]
    server_calls = {}
    for hooks in ((), (lambda doc, tenant: [],)):
        store = _CallLog()
        verifier = Verifier(registry(), region="eu", hooks=hooks)
        got = core.run_requests(verifier, [core.Request(b, "ta") for b in bodies], 1000.0, MemoryWal(), store)
        assert {r.status for r in got} == {200}
        server_calls[bool(hooks)] = store.calls
    assert server_calls == {False: ["put_many_if_absent"], True: ["get_many", "put_many_if_absent"]}

    for hooked in (False, True):
        world = World(load("crash-restart", ["scenario.duration_s=2", "scenario.quiescence_s=2", "faults=[]"]), seed=1)
        for r in world.regions.values():
            r.store = _CallLog()
            r.guarded.store = r.store
            if hooked:
                r.verifier = Verifier(r.verifier.tenants, r.verifier.policy, r.verifier.region, r.verifier.limits,
                                      (lambda doc, tenant: [],), r.verifier.limiter, r.verifier.reject_status)
        world.run()
        calls = [c for r in world.regions.values() for c in r.store.calls]
        if hooked:  # every write after its batch's lookup (a batch of replays alone writes nothing)
            assert all(k > 0 and calls[k - 1] == "get_many" for k, c in enumerate(calls) if c == "put_many_if_absent")
            assert calls.count("put_many_if_absent") > 10, calls[:6]
        else:
            assert set(calls) == {"put_many_if_absent"} and len(calls) > 10, calls[:6]
        assert any(e["type"] == "srv.dedup_get" for e in world.history.events) is hooked


def test_the_sim_regions_export_the_ship_lag_gauge_their_shipper_computes():
    """``flk_crr_replication_lag_seconds`` (FlkCrrReplicationLag, the controllers' lag gate) is
    what the region's own shipper computes, on its wall clock and its monotonic clock (the
    simulated time): the simulator once exported the true-time age of the oldest unshipped
    record's stamp, which no deployed region can know. A +30 s step of eu's clock while its
    shipper is held moves neither that gauge nor the true age (SPEC 11.9 rule 7)."""
    from flk.sim.alerts import RegionSeries
    from flk.sim.scenario import load
    from flk.sim.world import World

    world = World(load("crr-ship-stopped", ["scenario.duration_s=14", "scenario.quiescence_s=2"]), seed=1)
    seen: list[tuple[float, float, float]] = []

    def probe(env):
        yield env.timeout(10.0)
        world.set_clock_offset("eu", 30.0)
        yield env.timeout(2.0)
        rep = world.repl["eu"]
        gauge = RegionSeries(world).scrape("eu")[("flk_crr_replication_lag_seconds", (("worker", "0"),))]
        seen.append((gauge, rep.shipper.lag_s(world.regions["eu"].now(), env.now), rep.ship_lag_s()))
        world.set_clock_offset("eu", 0.0)

    world.env.process(probe(world.env))
    world.run()
    [(gauge, own, true_age)] = seen
    assert gauge == own  # the shipper's own figure, on the region's two clocks
    assert 7.0 < true_age < 10.0 and abs(gauge - true_age) < 1e-6  # held since 4 s: ~9 s old, not ~39
