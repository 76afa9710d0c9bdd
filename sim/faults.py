"""Faults the simulator can inject: one small typed class per fault, in a registry.

Each class declares its parameters as :class:`flk.sim.schema.Field` rows (the
scenario loader validates them and ``sim/SCENARIOS.md`` documents them from the
same rows), and implements ``begin`` (the fault starts) and ``end`` (it heals).
Both are generators so a heal can take simulated time (a restart replays the
WAL). Paired names are aliases of one class: ``restart`` is ``crash`` inverted,
``store_up`` is ``store_down`` inverted, and so on; a fault with ``duration_s``
heals itself after that long, a one-shot fault (``rotate_key``, ``bitflip_wal``)
has nothing to heal.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from .region import body_sha
from .schema import MAX_LATENCY_MS, MAX_TIME, Context, Field, ScenarioError, check_table

# a disk_slow factor past this is a typo's exponent, not a disk (each fsync takes factor x the base)
MAX_SLOWDOWN = 1e6

COMMON = (
    Field("kind", "str", None, "which fault (see the list below)", required=True),
    Field("at_s", "number", None, "when it starts, seconds from the start of the run", minimum=0.0,
          maximum=MAX_TIME, required=True),
    Field("duration_s", "number", None, "how long until it heals by itself (unset: healed by the heal "
          "phase at the end of the workload, or never for one-shot faults)", minimum=0.0, maximum=MAX_TIME),
)
TARGET = Field("target", "regions", "*", "the region(s) hit: an id, a list of ids, or \"*\" for all")


def _nothing() -> Iterator:
    return iter(())


class Fault:
    """Base: parameters from the scenario table, defaults filled in, ``begin``/``end`` effects."""

    kinds: ClassVar[dict[str, bool]] = {}  # name -> inverted (the name begins what ``end`` does)
    params: ClassVar[tuple[Field, ...]] = ()
    one_shot: ClassVar[bool] = False
    doc: ClassVar[str] = ""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.kind = spec["kind"]
        for field in self.params:
            setattr(self, field.name, spec.get(field.name, field.default))

    @classmethod
    def check(cls, spec: dict, path: str, ctx: Context) -> None:
        """Cross-field checks beyond the per-key schema (none by default)."""

    def targets(self, world) -> list[str]:
        target = getattr(self, "target", "*")
        if target == "*":
            return list(world.region_ids)
        return [target] if isinstance(target, str) else list(target)

    def begin(self, world) -> Iterator:
        return _nothing()

    def end(self, world) -> Iterator:
        return _nothing()

    def apply(self, world, start: bool) -> Iterator:
        """Start (``start``) or heal this fault; an inverted alias swaps the two."""
        if start != self.kinds[self.kind]:
            yield from self.begin(world)
        else:
            yield from self.end(world)


REGISTRY: dict[str, type[Fault]] = {}


def register(cls: type[Fault]) -> type[Fault]:
    for name in cls.kinds:
        REGISTRY[name] = cls
    return cls


def create(spec: dict[str, Any]) -> Fault:
    return REGISTRY[spec["kind"]](spec)


def validate(spec: Any, path: str, ctx: Context) -> None:
    """Check one fault table: a known kind and exactly that kind's parameters."""
    if not isinstance(spec, dict):
        raise ScenarioError(path, "must be a table")
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in REGISTRY:
        raise ScenarioError(f"{path}.kind", f"must be one of {', '.join(sorted(REGISTRY))}, got {kind!r}")
    cls = REGISTRY[kind]
    check_table(spec, COMMON + cls.params, path, ctx)
    cls.check(spec, path, ctx)


def nemesis_steps(n: dict, rng, duration: float, region_ids: list[str]) -> Iterator[float | dict]:
    """The seeded nemesis (``[nemesis]`` table ``n``), one step at a time: a float is a wait (s),
    a dict a fault that starts after the waits so far (``at_s`` its time). Drawn from ``rng``
    lazily, wait by wait, so a stream reseeded meanwhile (``flk sim causality``) changes what
    follows. The one owner of the nemesis's choices: the simulator's world runs it under SimPy
    time, the cluster runner (:func:`nemesis_schedule`) as a schedule of real faults."""
    kinds = list(n["kinds"])
    dur, gap = float(n["duration_s"]), float(n["min_gap_s"])
    now = last_end = 0.0
    while True:
        wait = rng.expovariate(float(n["rate_per_min"]) / 60.0)
        yield wait
        now = now + wait  # a timeout's own sum: the simulated clock reads the same float
        if now + dur >= duration:
            return
        if now < last_end + gap:
            continue
        f = {"kind": kinds[rng.randrange(len(kinds))], "at_s": round(now, 6), "duration_s": dur,
             "target": region_ids[rng.randrange(len(region_ids))]}
        if f["kind"] == "partition":
            f["a"], f["b"] = [f["target"]], ["clients"]
        last_end = now + dur
        yield f


def nemesis_schedule(data: dict, seed: int, region_ids: list[str]) -> list[dict]:
    """Every fault the nemesis of scenario ``data`` starts at ``seed`` (empty when it is off):
    the simulator's choices, from its ``nemesis`` stream."""
    import random

    from .rng import derive_seed

    if not data["nemesis"]["enabled"]:
        return []
    steps = nemesis_steps(data["nemesis"], random.Random(derive_seed(seed, "nemesis")),
                          float(data["scenario"]["duration_s"]), region_ids)
    return [step for step in steps if step.__class__ is dict]


def _record(world, start: bool, kind: str, target: str, **fields) -> None:
    world.history.record(world.env.now, "fault.start" if start else "fault.end", kind=kind, target=target, **fields)


@register
class Crash(Fault):
    """A region's process dies (unfsynced writes lost, in-flight requests dropped); heal restarts it."""

    kinds = {"crash": False, "restart": True}
    params = (TARGET,)

    def begin(self, world):
        for target in self.targets(world):
            region = world.regions[target]
            if not region.up:
                continue
            rpo = world.rpo_at_loss(target)
            info = region.crash()
            _record(world, True, "crash", target, **info, **rpo)
        return _nothing()

    def end(self, world):
        for target in self.targets(world):
            region = world.regions[target]
            if not region.up and not region.restarting:
                _record(world, False, "crash", target)
                yield from region.restart()


@register
class Pause(Fault):
    """A region stops serving (a GC pause, a frozen VM); queued requests run on resume."""

    kinds = {"pause": False, "resume": True}
    params = (TARGET,)

    def begin(self, world):
        for target in self.targets(world):
            world.regions[target].paused = True
            _record(world, True, "pause", target)
        return _nothing()

    def end(self, world):
        for target in self.targets(world):
            world.regions[target].resume()
            _record(world, False, "pause", target)
        return _nothing()


@register
class Partition(Fault):
    """The network links between node sets ``a`` and ``b`` drop every message (the graph cut)."""

    kinds = {"partition": False}
    params = (
        Field("a", "nodes", None, "one side: topology nodes (region ids, \"clients\"); default the first region"),
        Field("b", "nodes", ["clients"], "the other side"),
        Field("symmetric", "bool", True, "false: only messages from a to b are cut"),
    )

    @classmethod
    def check(cls, spec, path, ctx):
        overlap = sorted(set(spec.get("a") or []) & set(spec.get("b") or ["clients"]))
        if overlap:
            raise ScenarioError(f"{path}.b", f"{overlap} on both sides of the partition")

    def sides(self, region_ids: list[str]) -> tuple[list[str], list[str]]:
        return list(self.a or [region_ids[0]]), list(self.b)

    def label(self, world) -> str:
        a, b = self.sides(world.region_ids)
        return f"{','.join(a)}|{','.join(b)}"

    def begin(self, world):
        a, b = self.sides(world.region_ids)
        world.net.partition(a, b, symmetric=bool(self.symmetric))
        _record(world, True, "partition", self.label(world), symmetric=bool(self.symmetric))
        return _nothing()

    def end(self, world):
        a, b = self.sides(world.region_ids)
        world.net.heal(a, b)
        _record(world, False, "partition", self.label(world))
        return _nothing()


@register
class HealNetwork(Fault):
    """Every partition heals at once."""

    kinds = {"heal": False}

    def begin(self, world):
        world.net.heal()
        _record(world, True, "heal", "")
        return _nothing()


@register
class BurstMarker(Fault):
    """Marks a load burst window in the history (the workload's ``shape = "burst"`` makes the load)."""

    kinds = {"burst": False}

    def begin(self, world):
        _record(world, True, "burst", "")
        return _nothing()

    def end(self, world):
        _record(world, False, "burst", "")
        return _nothing()


class _Switch(Fault):
    """A fault that is one switch: ``_switch(world, True)`` starts it, ``False`` heals it."""

    def _switch(self, world, on: bool):
        raise NotImplementedError

    def begin(self, world):
        return self._switch(world, True)

    def end(self, world):
        return self._switch(world, False)


class _RegionToggle(_Switch):
    """A per-region switch: ``set_state(world, target, on)`` and one history kind."""

    params = (TARGET,)
    label: ClassVar[str] = ""

    def set_state(self, world, target: str, on: bool) -> None:
        raise NotImplementedError

    def _switch(self, world, on: bool):
        for target in self.targets(world):
            self.set_state(world, target, on)
            _record(world, on, self.label, target)
        return _nothing()



@register
class StoreDown(_RegionToggle):
    """The region's dedup store is unreachable (fail closed: 503 after the WAL append). ``mode``:
    ``refuse`` -- its host refuses connections, each call fails at once (flk cluster: an nftables
    reject of the store's port); ``hang`` -- its process is frozen, each call (and a start's ping)
    waits the region's ``store_timeout_s`` and then fails, or is answered when the store comes back
    first (flk cluster: SIGSTOP of the store's processes)."""

    kinds = {"store_down": False, "store_up": True}
    label = "store_down"
    params = (TARGET, Field("mode", "str", "refuse", "refuse (each call fails at once) or hang (each call waits "
                                                     "the region's store_timeout_s, then fails)",
                            choices=("refuse", "hang")))

    def set_state(self, world, target, on):
        region = world.regions[target]
        region.store.available = not on
        region.store_hangs(on and self.mode == "hang")


@register
class StoreLatency(_RegionToggle):
    """Every dedup store call of the region takes ``ms`` longer (a batch makes one, its
    put-if-absent, or two where it looks its keys up). ``flk cluster run`` (``--backend redis``
    or ``postgres``): a delaying forwarder holds each round trip ``ms`` -- one round trip per
    Redis call, two per PostgreSQL call (its connection check and its pipelined transaction)."""

    kinds = {"store_latency": False}
    label = "store_latency"
    params = (TARGET, Field("ms", "number", 50.0, "extra latency per store call, ms", minimum=0.0,
                                    maximum=MAX_LATENCY_MS))

    def set_state(self, world, target, on):
        world.regions[target].store_extra_ms = float(self.ms) if on else 0.0


@register
class DiskSlow(_RegionToggle):
    """The region's fsyncs take ``factor`` times longer."""

    kinds = {"disk_slow": False}
    label = "disk_slow"
    params = (TARGET, Field("factor", "number", 20.0, "fsync latency multiplier", minimum=1.0,
                                    maximum=MAX_SLOWDOWN))

    def set_state(self, world, target, on):
        world.regions[target].disk_factor = float(self.factor) if on else 1.0


@register
class DiskFull(Fault):
    """The region's WAL disk is full (``disk_free`` heals): real clusters only -- ``flk cluster run``
    fills the small tmpfs the region's WAL lives on. The simulator has no disk-space model and
    refuses a scenario that names it (exit 2)."""

    kinds = {"disk_full": False, "disk_free": True}
    params = (TARGET,)
    simulator_refuses = "the simulator has no disk-space model; run the scenario on a real cluster (flk cluster run)"


@register
class ClockSkew(_RegionToggle):
    """The region's wall clock is ``skew_s`` off (``clock_jump``: the same, named as a jump)."""

    kinds = {"clock_skew": False, "clock_jump": False}
    params = (TARGET, Field("skew_s", "number", 30.0, "clock offset, seconds (may be negative)",
                                    minimum=-MAX_TIME, maximum=MAX_TIME))

    def _switch(self, world, on):
        for target in self.targets(world):
            world.set_clock_offset(target, float(self.skew_s) if on else 0.0)
            _record(world, on, self.kind, target)
        return _nothing()


@register
class ShardDown(_RegionToggle):
    """One dedup shard of the region is lost (its keys fail closed)."""

    kinds = {"shard_down": False, "shard_up": True}
    params = (TARGET, Field("shard", "str", "s0", "shard id (s0, s1, ...)"))

    def _switch(self, world, on):
        for target in self.targets(world):
            shards = world.regions[target].topology.shards
            if self.shard not in shards:
                raise ScenarioError("faults.shard", f"region {target!r} has no shard {self.shard!r} "
                                    f"(shards: {', '.join(sorted(shards))})")
            shards[self.shard].available = not on
            _record(world, on, "shard_down", f"{target}/{self.shard}")
        return _nothing()


@register
class ColdDown(_RegionToggle):
    """The cold tier (object store) of a tiered dedup store is down."""

    kinds = {"cold_down": False, "cold_up": True}
    label = "cold_down"

    def set_state(self, world, target, on):
        world.regions[target].topology.cold.available = not on


@register
class ShipStop(_Switch):
    """The region stops shipping WAL segments (its writes stay local; its reader and divergence
    check run on). flk cluster: the file ``DATA_DIR/crr.pause-ship`` of the region's server."""

    kinds = {"ship_stop": False, "ship_start": True}
    params = (TARGET,)

    def _switch(self, world, stop: bool):
        targets = self.targets(world)
        for target in targets:
            if target in world.repl:
                world.repl[target].ship_stopped = stop
                world.repl[target].shipper.paused = stop
        _record(world, stop, "ship_stop", ",".join(targets))
        return _nothing()



@register
class ObjectStoreDown(_Switch):
    """The replication object store is down (target "*") or unreachable from some regions. flk
    cluster: an nftables reset of the object-store port in each target region's namespace."""

    kinds = {"objstore_down": False, "objstore_up": True}
    params = (TARGET,)

    def _switch(self, world, down: bool):
        targets = self.targets(world)
        if self.target == "*":
            if world.repl:
                world.objects.available = not down
        else:
            for target in targets:
                if target in world.repl:
                    world.repl[target].view.available = not down
        _record(world, down, "objstore_down", ",".join(targets))
        return _nothing()



@register
class RotateKey(Fault):
    """Tenants switch to a new signing key (one-shot); the old one verifies for the overlap window.
    flk cluster: the servers' tenants file rewritten with the key windows, then SIGHUP (a reload)."""

    kinds = {"rotate_key": False}
    one_shot = True
    params = (Field("tenant", "str", None, "tenant id (t0, t1, ...); unset: every tenant"),)

    @classmethod
    def check(cls, spec, path, ctx):
        tenant = spec.get("tenant")
        if tenant is not None and tenant not in ctx.extra.get("tenants", ()):
            raise ScenarioError(f"{path}.tenant", f"unknown tenant {tenant!r} "
                                f"(known: {', '.join(ctx.extra.get('tenants', ()))})")

    def begin(self, world):
        tenants = [self.tenant] if self.tenant is not None else world.tenants.ids()
        for tenant in tenants:
            world.factory.key_generation[tenant] = world.factory.key_generation.get(tenant, 0) + 1
        _record(world, True, "rotate_key", ",".join(tenants))
        return _nothing()


@register
class Migrate(Fault):
    """A live 3 -> 4 shard migration of the region's dedup store runs in simulated time."""

    kinds = {"migrate": False}
    params = (TARGET, Field("step_s", "number", 0.05, "simulated time per copy/verify step, s", minimum=0.0,
                           maximum=MAX_TIME),
              Field("batch", "int", 200, "keys per copy step", minimum=1),
              Field("prune", "bool", True, "after cleanup, delete the copies moved keys left in their old shards "
                    "(false: they stay, and count, until they expire)"))

    def begin(self, world):
        for target in self.targets(world):
            _record(world, True, "migrate", target)
            world.env.process(world._migrate(world.regions[target], float(self.step_s), int(self.batch),
                                             bool(self.prune)))
        return _nothing()


@register
class AgentCrash(Fault):
    """Agents die (their outbox survives on disk); heal restarts them."""

    kinds = {"agent_crash": False}
    params = (Field("target", "agents", "*", "agent id(s) (a0, a1, ...) or \"*\" for all"),)

    def chosen(self, world):
        if self.target == "*":
            return world.agents
        wanted = [self.target] if isinstance(self.target, str) else list(self.target)
        return [agent for agent in world.agents if agent.id in wanted]

    def begin(self, world):
        for agent in self.chosen(world):
            if agent.up:
                _record(world, True, "agent_crash", agent.id, **agent.crash())
        return _nothing()

    def end(self, world):
        for agent in self.chosen(world):
            if not agent.up:
                _record(world, False, "agent_crash", agent.id)
                agent.restart()
        return _nothing()


@register
class ReaderRewind(Fault):
    """Replication readers forget their watermarks and re-read every shipped segment.
    flk cluster: the one-shot file ``DATA_DIR/crr.rewind`` of the region's running server."""

    kinds = {"reader_rewind": False}
    params = (TARGET,)

    def begin(self, world):
        for target in self.targets(world):
            if target not in world.repl:
                continue
            reader = world.repl[target].reader
            region = world.regions[target]
            world.rewind_snapshots[target] = {(tenant, pcs_id): body_sha(outcome.body)
                                              for tenant, pcs_id, outcome in region.final_entries()}
            reader.rewind()
            _record(world, True, "reader_rewind", target, applied_before=reader.applied_records)
        return _nothing()


@register
class BitflipShipped(Fault):
    """The next shipped segment of the region is corrupted in the object store; heal re-uploads it."""

    kinds = {"bitflip_shipped": False}
    params = (TARGET,)

    def begin(self, world):
        for target in self.targets(world):
            if target in world.repl:
                world.repl[target].view.corrupt_next_segment = True
                _record(world, True, "bitflip_shipped", target)
        return _nothing()

    def end(self, world):
        for target in self.targets(world):
            if target in world.repl:
                view = world.repl[target].view
                view.corrupt_next_segment = False
                _record(world, False, "bitflip_shipped", target, repaired=view.repair())
        return _nothing()


@register
class BitflipWal(Fault):
    """One durable bit of the region's WAL flips on disk (one-shot); recovery must detect it."""

    kinds = {"bitflip_wal": False}
    one_shot = True
    params = (TARGET,)

    def begin(self, world):
        for target in self.targets(world):
            region = world.regions[target]
            segments = [s for s in region.fs.listdir("/wal") if s.endswith(".log")]
            view = region.fs.durable_view()
            candidates = [s for s in segments if len(view.get(f"/wal/{s}", b"")) > 16]
            if candidates:
                segment = candidates[0]
                size = len(view[f"/wal/{segment}"])
                offset = 8 + world.streams.get(f"bitflip/{target}").randrange(size - 8)
                region.fs.flip_bit(f"/wal/{segment}", offset)
                _record(world, True, "bitflip_wal", target, segment=segment, offset=offset)
        return _nothing()


FAULT_KINDS = tuple(sorted(REGISTRY))
