"""The simulated regions take flk serve's WAL checkpoints (flk.impl.storage.checkpoint.Checkpointer,
the server's own schedule): a checkpoint at start and right after a restart's replay, a running one
every ``wal_checkpoint_s``; a restart replays from the checkpoint, not the whole log (a simulated
region once replayed everything since the run began, so a restart late in an hour-long study took
as long as the hour's records took to replay, where flk serve replays at most two checkpoint
periods); retention takes shipped segments below the checkpoint out of the log and never an
unshipped one. The invariants hold either way."""

from __future__ import annotations

from flk.impl.storage.checkpoint import Checkpointer, read_checkpoint
from flk.sim import api
from flk.sim.scenario import load
from flk.sim.world import World


def _events(world: World, typ: str, region: str = "r1") -> list[dict]:
    return [e for e in world.history.events if e["type"] == typ and e.get("region") == region]


def _starts_from_the_last_checkpoint(world: World, region: str = "r1") -> list[dict]:
    """Each start's replay begins at the last checkpoint the region wrote before it (or at the
    log's first record when none skips any); returns the starts."""
    last, starts = 0, []
    for e in world.history.events:
        if e.get("region") != region:
            continue
        if e["type"] == "srv.checkpoint":
            last = e["index"]
        elif e["type"] == "srv.recovered":
            assert e.get("from_index", 0) == last, (e, last)
            starts.append(e)
    return starts


def test_a_restart_replays_from_the_checkpoint_the_running_ticks_wrote():
    every = World(load("crash-restart"), seed=1)
    every.run()
    often = World(load("crash-restart", ["region_defaults.wal_checkpoint_s=2"]), seed=1)
    often.run()
    assert isinstance(often.regions["r1"].checkpointer, Checkpointer)
    # the server's default period (60 s) writes no running checkpoint in 35 s: the first start
    # replays every record since the beginning, the second from the checkpoint the first start
    # wrote right after its replay (as flk serve does)
    first, second = _starts_from_the_last_checkpoint(every)
    assert "from_index" not in first and second["from_index"] > 0
    # running checkpoints every 2 s (each one period behind its mark): the first start skips what
    # the checkpoint of 4 s covers
    ran = [e for e in _events(often, "srv.checkpoint") if e["t_us"] < 5_000_000]
    assert ran and ran[-1]["index"] > 0
    first2, _ = _starts_from_the_last_checkpoint(often)
    assert first2["from_index"] == ran[-1]["index"] and first2["replayed"] < first["replayed"]
    result = api.run("crash-restart", seed=1, overrides=["region_defaults.wal_checkpoint_s=2"], plots=False)
    assert result.valid, [c for c in result.results["invariants"] if not c["ok"]]


def test_retention_takes_only_shipped_segments_out_of_the_log():
    overrides = ["region_defaults.wal_checkpoint_s=2", "region_defaults.wal_retention=delete",
                 "region_defaults.segment_bytes=4096"]
    world = World(load("crr-ship-stopped", overrides), seed=1)
    seen: list[tuple[float, int, int]] = []  # (t, eu's first live WAL index, eu's persisted shipped watermark)

    def probe(env):
        while True:
            yield env.timeout(0.25)
            eu = world.regions["eu"]
            seen.append((env.now, eu.wal.first_index, world.repl["eu"].shipper.persisted_watermark()))

    world.env.process(probe(world.env))
    world.run()
    retired = [e for e in world.history.events if e["type"] == "srv.checkpoint" and e["retired"]]
    assert {e["region"] for e in retired} == {"eu", "us"}
    # no segment left eu's log before it shipped, also while its shipper was held (4-24 s) ...
    assert all(first <= shipped for _, first, shipped in seen)
    held = [(first, shipped) for t, first, shipped in seen if 4.5 <= t <= 24.0]
    assert len({shipped for _, shipped in held}) == 1  # the watermark stood still
    # ... and what had shipped before the stop did leave it (the log does not keep the whole run)
    assert max(first for first, _ in held) > 0 and seen[-1][1] > held[-1][0]
    assert read_checkpoint(world.regions["eu"].wal)["index"] >= world.regions["eu"].wal.first_index
    result = api.run("crr-ship-stopped", seed=1, overrides=overrides, plots=False)
    assert result.valid, [c for c in result.results["invariants"] if not c["ok"]]


def test_no_checkpoint_skips_records_of_a_store_flk_serve_does_not_trust():
    """A sharded store: flk serve replays everything at every start, and so does the simulated region."""
    world = World(load("crash-restart", ["region_defaults.wal_checkpoint_s=2", "region_defaults.dedup=sharded"]),
                  seed=1)
    world.run()
    assert all("from_index" not in e for e in _events(world, "srv.recovered"))
    assert not _events(world, "srv.checkpoint")


STEP_BACK = """
[scenario]
name = "checkpoint-clock-step"
description = "one region whose wall clock steps back two minutes while it serves"
duration_s = 9.0
quiescence_s = 2.0

[[regions]]
id = "r1"

[region_defaults]
wal_checkpoint_s = 1.0

[workload]
agents = 4
rate_per_s = 100.0

[[faults]]
kind = "clock_skew"
at_s = 3.0
target = "r1"
skew_s = -120.0
duration_s = 60.0
"""


def test_a_wall_clock_step_back_holds_no_running_checkpoint_back(tmp_path):
    """SPEC 11.9 rule 8: the region schedules its checkpoints on simulated time (its monotonic
    clock), as flk serve does on time.monotonic(). On its wall clock, the step back of two
    minutes at 3 s held every running checkpoint back for the rest of the run."""
    path = tmp_path / "checkpoint-clock-step.toml"
    path.write_text(STEP_BACK)
    world = World(load(path), seed=1)
    world.run()
    after = [e for e in _events(world, "srv.checkpoint") if e["t_us"] > 3_000_000]
    before = [e for e in _events(world, "srv.checkpoint") if 0 < e["t_us"] <= 3_000_000]
    assert before and len(after) >= 5, (len(before), len(after))
    assert [e["index"] for e in after] == sorted({e["index"] for e in after})  # each one further on
