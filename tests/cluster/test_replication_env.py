"""The cluster's servers run a scenario's replication settings (``replication_env``): every
replicating catalog scenario's reader period, divergence period and reconciliation mode are
settings ``flk serve`` accepts, and its configuration holds them as the simulator's regions do."""

from __future__ import annotations

import pytest

from flk.impl.lab.cluster.runner import replication_env
from flk.impl.server.config import load_config
from flk.sim.scenario import list_scenarios, load

REPLICATING = [n for n in list_scenarios() if load(n).data["replication"]["enabled"]]


@pytest.mark.parametrize("name", REPLICATING)
def test_a_scenarios_replication_settings_are_what_its_servers_run(name, tmp_path):
    rep = load(name).data["replication"]
    env = {"REGION_ID": "eu", "CRR_STORE_DIR": str(tmp_path / "shared"), "CRR_PEERS": "us",
           "DATA_DIR": str(tmp_path / "data"), "PCS_HMAC_KEY": "0123456789abcdef0123456789abcdef",
           "CRR_SHIP_INTERVAL_S": str(float(rep["ship_interval_s"])), **replication_env(rep)}
    crr = load_config(env).crr
    assert (crr.read_interval_s, crr.divergence_interval_s, crr.mode) == (
        float(rep["read_interval_s"]), float(rep["divergence_interval_s"]), rep["mode"])


def test_replicating_scenarios_exist():
    assert {"split-brain", "region-failover", "crr-normal"} <= set(REPLICATING)
