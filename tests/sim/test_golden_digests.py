"""Every catalog scenario at seed 1 keeps its pinned history digest.

Why: the simulator's own driver code (agents, regions, network, history) is tuned
for speed, and a speed change must not change what a run does: the same events,
in the same order, with the same random draws. The digest (SHA-256 over the
canonical event stream, :mod:`flk.sim.history`) of each catalog scenario at seed 1
is pinned in ``golden_digests.json``; a run is digest-only (the digest equals the
kept history's, tests/sim/test_lean.py). A commit that means to change behaviour
updates the pin and says in its message which digests changed and why:

    python -c "import json; from flk.sim.scenario import list_scenarios, load; \
from flk.sim.world import World; print(json.dumps({n: World(load(n), 1, keep_history=False).run().digest \
for n in list_scenarios()}, indent=1, sort_keys=True))" > tests/sim/golden_digests.json
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flk.sim.scenario import list_scenarios, load
from flk.sim.world import World

GOLDEN = json.loads((Path(__file__).parent / "golden_digests.json").read_text())


def test_every_catalog_scenario_is_pinned():
    assert sorted(GOLDEN) == sorted(list_scenarios())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_scenario_digest_at_seed_1_is_the_pinned_one(name):
    world = World(load(name), seed=1, keep_history=False)
    digest = world.run().digest
    assert world.history.count > 0
    assert digest == GOLDEN[name], (
        f"{name} seed 1: history digest {digest} != pinned {GOLDEN[name]}; a behaviour change updates "
        f"tests/sim/golden_digests.json and says why (`flk sim run {name} --seed 1` and `flk sim diff`)")
