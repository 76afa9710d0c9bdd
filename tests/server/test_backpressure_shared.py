"""One admission policy for ``flk serve`` and the simulator's regions.

The server and every simulated region build their AIMD limit, dedup breaker and
token buckets through :func:`flk.impl.verifier.admission.build_admission`, with
the server configuration's defaults; a simulated region then sheds load the way
the server does: 429 + ``Retry-After`` from the AIMD limit as offered load grows,
503 at once from the open breaker when the store keeps failing.
"""

from __future__ import annotations

from collections import Counter

import pytest

from flk.impl.server import app as server_app
from flk.impl.server.config import SETTINGS, ServerConfig, load_config
from flk.impl.verifier import admission
from flk.impl.verifier.admission import AdmissionSettings, build_admission
from flk.sim import api
from flk.sim import region as sim_region
from flk.sim.region import Region

KEY = "0123456789abcdef0123456789abcdef"
SERVER_ENV = {"max_inflight": "MAX_INFLIGHT", "min_inflight": "MIN_INFLIGHT", "target_latency_ms": "TARGET_LATENCY_MS",
              "breaker_failures": "BREAKER_FAILURES", "breaker_open_s": "BREAKER_OPEN_S"}


def spy_regions() -> tuple[type, list]:
    made: list = []

    class Spy(Region):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    return Spy, made


def statuses(result) -> Counter:
    return Counter(e["status"] for e in result.history.events if e["type"] == "srv.respond")


def test_admission_defaults_are_the_server_configuration_defaults() -> None:
    defaults = {row.env: row.default for row in SETTINGS}
    assert {name: defaults[env] for name, env in SERVER_ENV.items()} == AdmissionSettings().__dict__
    assert AdmissionSettings.from_config(ServerConfig()) == AdmissionSettings()


def test_server_and_sim_region_build_admission_through_one_factory(tmp_path, monkeypatch) -> None:
    calls: list[AdmissionSettings] = []

    def counting(settings: AdmissionSettings = AdmissionSettings()):
        calls.append(settings)
        return build_admission(settings)

    monkeypatch.setattr(server_app, "build_admission", counting)
    monkeypatch.setattr(sim_region, "build_admission", counting)
    assert server_app.build_admission is sim_region.build_admission  # the same factory, patched once each
    cfg = load_config({"DATA_DIR": str(tmp_path), "PCS_HMAC_KEY": KEY, "MAX_INFLIGHT": "40",
                       "BREAKER_FAILURES": "3"})
    server = server_app.Server(cfg, 0)
    assert calls == [AdmissionSettings(max_inflight=40, breaker_failures=3)]
    assert server.limiter is server.admission.limiter and server.limiter.max_limit == 40
    assert server.breaker is server.admission.breaker and server.breaker.failure_threshold == 3
    from flk.impl.server.pipeline import build_pipeline

    assert build_pipeline(cfg, server).verifier.limiter is server.admission.buckets  # token buckets too

    spy, made = spy_regions()
    api.run("crash-restart", seed=1, region_cls=spy,
            overrides=["scenario.duration_s=7", "scenario.quiescence_s=8", "workload.rate_per_s=50"])
    region_calls = calls[1:]
    assert region_calls and all(settings == AdmissionSettings() for settings in region_calls)  # the server's defaults
    assert len(region_calls) > len(made)  # a crash forgets the admission state: the restart builds it again
    for region in made:
        assert type(region.admission) is admission.AdmissionControl
        assert region.verifier.limiter is region.admission.buckets  # the tenants' token buckets, too


def test_sim_region_lower_bound_follows_a_small_upper_bound() -> None:
    assert AdmissionSettings.from_mapping({"max_inflight": 8}) == AdmissionSettings(max_inflight=8, min_inflight=8)
    assert AdmissionSettings.from_mapping({"max_inflight": 24}).min_inflight == 16


SHORT = ["scenario.duration_s=5", "scenario.quiescence_s=8", "workload.burst_at_s=1.5", "workload.burst_s=2"]


def test_sim_region_sheds_load_with_the_aimd_limit_as_offered_load_grows() -> None:
    rejected_429 = []
    for factor in (1.0, 6.0, 12.0):
        spy, made = spy_regions()
        result = api.run("overload-backpressure", seed=1, region_cls=spy,
                         overrides=[*SHORT, f"workload.burst_factor={factor}"])
        # (the scenario's "some 429" SLO and its must-fire ALERT checks fail on purpose without the burst)
        broken = [c["id"] for c in result.results["invariants"] if not c["ok"] and not c["id"].startswith("ALERT-")]
        assert not broken, broken
        count = statuses(result)[429]
        assert count == sum(region.admission.limiter.rejected for region in made)  # every 429 is the limiter's
        rejected_429.append(count)
    assert rejected_429[0] == 0 < rejected_429[1] < rejected_429[2], rejected_429


def test_sim_region_limit_backs_off_when_latency_exceeds_the_servers_target() -> None:
    spy, made = spy_regions()
    api.run("overload-backpressure", seed=1, region_cls=spy,
            overrides=[*SHORT, "workload.burst_factor=1", "region_defaults.store_ms=400"])
    limiter = made[0].admission.limiter
    assert limiter.admitted > 0
    assert limiter.limit < limiter.max_limit  # slow completions (> 500 ms) lowered it multiplicatively


@pytest.mark.parametrize("rate", [100.0, 400.0])
def test_sim_region_breaker_answers_503_without_calling_a_failing_store(rate: float) -> None:
    spy, made = spy_regions()
    result = api.run("dedup-outage", seed=1, region_cls=spy,
                     overrides=["scenario.duration_s=8", "scenario.quiescence_s=10", f"workload.rate_per_s={rate}"])
    assert result.valid
    breaker = made[0].admission.breaker
    assert breaker.opens >= 1 and breaker.state == "closed"  # opened during the outage, closed after it
    events = result.history.events
    called = {e["d"] for e in events if e["type"] == "srv.dedup_get"}
    fast_503 = [e for e in events if e["type"] == "srv.respond" and e["status"] == 503 and e["d"] not in called]
    assert fast_503, "the open breaker should answer 503 without a store call"


def test_sim_region_503_count_grows_with_offered_load_during_an_outage() -> None:
    counts = {}
    for rate in (50.0, 300.0):
        result = api.run("dedup-outage", seed=1,
                         overrides=["scenario.duration_s=8", "scenario.quiescence_s=10", f"workload.rate_per_s={rate}"])
        counts[rate] = statuses(result)[503]
    assert 0 < counts[50.0] < counts[300.0], counts
