"""The cluster's servers run a scenario's region settings that are ``flk serve``'s
(``server_settings_env``): the admission (AIMD ceiling and floor, latency target, breaker), the
group-commit window, the store timeout and the WAL checkpoint settings a simulated region runs are what the real server's
configuration holds. Before, a real region ran the server's defaults whatever the scenario said
(overload-backpressure lowers the ceiling to 24; its real region had 256)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.lab.cluster.runner import server_settings_env
from flk.impl.server.config import load_config
from flk.impl.verifier.admission import AdmissionSettings
from flk.sim.scenario import list_scenarios, load


def _server(region: dict, tmp_path) -> object:
    return load_config({"DATA_DIR": str(tmp_path / "data"), "PCS_HMAC_KEY": "0123456789abcdef0123456789abcdef",
                        **server_settings_env(region)})


def _same(region: dict, cfg) -> None:
    assert AdmissionSettings.from_config(cfg) == AdmissionSettings.from_mapping(region)
    assert cfg.wal_group_delay_ms == float(region["group_commit_ms"])
    assert cfg.store_timeout_s == float(region["store_timeout_s"])
    assert cfg.wal_checkpoint_s == float(region["wal_checkpoint_s"])
    assert cfg.wal_checkpoint_records == int(region["wal_checkpoint_records"])
    assert cfg.wal_retention == region["wal_retention"]


@pytest.mark.parametrize("name", list_scenarios())
def test_a_catalog_scenarios_region_settings_are_what_its_servers_run(name, tmp_path):
    _same(load(name).data["region_defaults"], _server(load(name).data["region_defaults"], tmp_path))


@settings(max_examples=60, deadline=None)
@given(max_inflight=st.integers(1, 100_000), group_commit_ms=st.floats(0.0, 1000.0),
       store_timeout_s=st.floats(0.05, 600.0), checkpoint_s=st.floats(0.1, 86_400.0),
       checkpoint_records=st.integers(1, 1_000_000_000), retention=st.sampled_from(("archive", "delete", "keep")))
def test_any_region_settings_reach_the_server(tmp_path_factory, max_inflight, group_commit_ms, store_timeout_s,
                                              checkpoint_s, checkpoint_records, retention):
    region = {**load("crr-normal").data["region_defaults"], "max_inflight": max_inflight,
              "group_commit_ms": group_commit_ms, "store_timeout_s": store_timeout_s,
              "wal_checkpoint_s": checkpoint_s, "wal_checkpoint_records": checkpoint_records,
              "wal_retention": retention}
    _same(region, _server(region, tmp_path_factory.mktemp("s")))


def test_overload_backpressures_ceiling_reaches_its_server(tmp_path):
    assert _server(load("overload-backpressure").data["region_defaults"], tmp_path).max_inflight == 24


def test_settings_a_server_refuses_stop_the_run_before_it_starts():
    from flk.impl.lab.cluster.runner import preflight

    data = load("crr-normal").data
    ok = preflight(data, "sqlite")
    data = {**data, "region_defaults": {**data["region_defaults"], "group_commit_ms": 5000.0}}
    reasons = [r for r in preflight(data, "sqlite") if r not in ok]
    assert len(reasons) == 1 and "WAL_GROUP_DELAY_MS" in reasons[0], reasons
