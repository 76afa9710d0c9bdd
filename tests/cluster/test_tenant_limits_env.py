"""The cluster's servers run a scenario's tenant limits (``TenantsFile``): the runner's tenants
file is one ``flk serve`` accepts, and the registry it loads gives every tenant the simulator's
token bucket and quota, with the keys the cluster's agents sign with."""

from __future__ import annotations

import stat

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.agent.factory import tenant_key
from flk.impl.lab.cluster.driver import BASE_KEY
from flk.impl.lab.cluster.tenantsfile import TenantsFile
from flk.impl.server.config import load_config
from flk.impl.verifier.tenants import load_toml


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), rate=st.sampled_from([0.0, 0.5, 50.0]), burst=st.sampled_from([0.0, 1.0, 20.0]),
       quota=st.sampled_from([0, 1, 1000]))
def test_the_tenants_file_holds_the_workloads_limits(tmp_path_factory, n, rate, burst, quota):
    path = tmp_path_factory.mktemp("t") / "tenants.toml"
    w = {"tenant_rate_per_s": rate, "tenant_burst": burst, "tenant_daily_quota": quota}
    tf = TenantsFile(path, n, w)
    got = tf.write() if tf.needed else None
    # the TENANTS setting the servers get without a file: the same first keys
    assert tf.setting() == ",".join(f"t{i}:hmac:{tenant_key(BASE_KEY, f't{i}', 0).decode()}" for i in range(n))
    if not (rate or burst or quota):
        assert got is None and not path.exists()  # no limits: the TENANTS setting, as before
        return
    if rate and burst < 1:
        return  # refused before the run (flk serve needs a bucket of at least one)
    assert got == path and stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds keys
    reg = load_toml(str(path))
    for i in range(n):
        t = reg.resolve(f"t{i}")
        assert (t.rate_per_s, t.daily_quota) == (rate, quota)
        assert t.burst == (burst or max(1.0, rate))
        assert [k.material for k in t.keys] == [tenant_key(BASE_KEY, f"t{i}", 0)]


def test_flk_serve_accepts_the_file(tmp_path):
    path = TenantsFile(tmp_path / "tenants.toml", 2, {"tenant_rate_per_s": 50.0, "tenant_burst": 20.0}).write()
    cfg = load_config({"DATA_DIR": str(tmp_path / "data"), "MULTI_TENANT": "true", "TENANTS_FILE": str(path)})
    assert cfg.tenants_file == str(path)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), times=st.lists(st.integers(0, 100).map(float), min_size=1, max_size=3, unique=True),
       overlap=st.sampled_from([0.0, 0.5, 5.0]), only=st.booleans())
def test_a_rotated_tenants_file_holds_the_simulators_keys_and_windows(tmp_path_factory, n, times, overlap, only):
    """What the runner's rotate_key writes is what the simulated regions verify with
    (:meth:`flk.sim.world.World._tenant_registry`): the same keys per generation, each valid from
    its rotation until the overlap after the next one (wall-clock times in place of the simulated)."""
    import types

    from flk.impl.lab.cluster.tenantsfile import TenantsFile
    from flk.sim.world import SIM_EPOCH, World

    times = sorted(times)
    target = "t0" if only else None
    rotations = [{"kind": "rotate_key", "at_s": t, **({"tenant": target} if target else {})} for t in times]
    w = {"tenants": n, "rotation_overlap_s": overlap}
    tf = TenantsFile(tmp_path_factory.mktemp("r") / "tenants.toml", n, w, rotating=True)
    for t in times:
        tf.rotate([target] if target else sorted(tf.keys), SIM_EPOCH + t, overlap)
    real = load_toml(str(tf.write()))
    sim = World._tenant_registry(types.SimpleNamespace(scenario=types.SimpleNamespace(data={"workload": w}),
                                                       rotations=rotations))
    assert real.ids() == sim.ids()
    for tid in sim.ids():
        got = [(k.material, k.not_before, k.not_after) for k in real.resolve(tid).keys]
        want = [(k.material, k.not_before, k.not_after) for k in sim.resolve(tid).keys]
        assert got == want
