"""The simulator's hot-path shortcuts give exactly what the plain paths give.

* ``rng.sampler(dist)`` draws what ``rng.sample(dist, rng)`` draws (same stream, same floats);
* ``History.recorder(type, names)`` writes the lines (and digest) of ``History.record``;
* the network's per-route fast send keeps the draws of the general path (a lossy,
  duplicating, reordering link gives the same deliveries either way);
* ``PcsFactory.new`` makes ``factory.with_identity``'s document, and ``PcsFactory.prepared``
  (a new PCS's body from its template's skeleton) gives what the client's ``prepare`` gives.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.sim.history import History
from flk.sim.rng import sample, sampler

pos = st.floats(min_value=0.01, max_value=100.0, allow_nan=False)
dists = st.one_of(
    st.none(), st.integers(min_value=0, max_value=50), pos,
    st.builds(lambda v: {"dist": "constant", "value": v}, pos), st.builds(lambda v: {"value": v}, pos),
    st.builds(lambda lo, w: {"dist": "uniform", "lo": lo, "hi": lo + w}, pos, pos),
    st.builds(lambda m: {"dist": "exponential", "mean": m}, pos),
    st.builds(lambda m, s: {"dist": "lognormal", "median": m, "sigma": s}, pos, st.floats(0.0, 2.0)),
    st.builds(lambda m, s: {"dist": "normal", "mean": m, "sd": s}, pos, st.floats(0.0, 5.0)),
    st.builds(lambda sc, a: {"dist": "pareto", "scale": sc, "alpha": a}, pos, st.floats(0.5, 4.0)))


@settings(max_examples=200, derandomize=True, deadline=None)
@given(dists, st.integers(min_value=0, max_value=2**32), st.floats(0.0, 5.0))
def test_sampler_draws_what_sample_draws(dist, seed, default):
    a, b = random.Random(seed), random.Random(seed)
    draw = sampler(dist, default)
    assert [draw(a) for _ in range(5)] == [sample(dist, b, default) for _ in range(5)]
    assert a.random() == b.random()  # the streams moved alike


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=6))


@settings(max_examples=150, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e4), st.sampled_from([("a", "b"), ("x",), ("k", "d", "z")]),
                          st.lists(scalars, min_size=3, max_size=3)), max_size=10))
def test_recorder_writes_what_record_writes(events):
    for keep in (False, True):
        plain, fast = History(keep=keep), History(keep=keep)
        recorders = {}
        for t, names, values in events:
            fields = dict(zip(names, values, strict=False))
            plain.record(t, "ev", **fields)
            rec = recorders.get(names) or recorders.setdefault(names, fast.recorder("ev", names))
            rec(t, *values[: len(names)])
        assert fast.digest == plain.digest and fast.count == plain.count
        assert fast._lines == plain._lines and fast.events == plain.events


@settings(max_examples=100, derandomize=True, deadline=None)
@given(st.lists(st.tuples(dists.filter(lambda d: d is not None), st.floats(0.0, 0.5), st.floats(0.0, 0.5)),
                min_size=1, max_size=3), st.integers(0, 2**32))
def test_send_draws_what_the_general_path_draws(links, seed):
    """A route's precomputed loss / duplicate probabilities and latency samplers draw what the
    general path (``any(...)`` over the specs, :meth:`Network._delay`) draws."""
    import simpy

    from flk.sim.net import LinkSpec, Network

    specs = [LinkSpec(latency_ms=lat, loss=loss, duplicate=dup) for lat, loss, dup in links]
    net = Network(simpy.Environment(), History(keep=False), lambda _name: random.Random(seed))
    net.link = lambda u, v: specs[int(u[1:])]  # a chain of the given links
    net.hops = lambda gs, gd: [(f"h{i}", f"h{i + 1}") for i in range(len(specs))]
    hops, got_specs, fast, losses, duplicates, latencies = net._route("a", "b")
    assert got_specs == specs and latencies is not None
    slow = random.Random(seed)
    for _ in range(5):
        lost = False
        for p in losses:
            if fast.random() < p:
                lost = True
                break
        assert lost == any(spec.loss and slow.random() < spec.loss for spec in specs)
        dup = False
        for p in duplicates:
            if fast.random() < p:
                dup = True
                break
        assert dup == any(spec.duplicate and slow.random() < spec.duplicate for spec in specs)
        delay = 0.0
        for latency in latencies:
            delay += latency(fast) / 1000.0
        assert delay == net._delay(hops, specs, slow, 256)


_TEMPLATES: list = []


@settings(max_examples=150, derandomize=True, deadline=None)
@given(st.integers(0, 2**32), st.text(alphabet="ab\u00e9\"\\", min_size=1, max_size=4),
       st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True), st.integers(0, 2**40),
       st.sampled_from(["valid", "bad_sig", "conflict", "tampered", "resigned", "forged", "out_of_policy",
                        "other_containers", "extra_fields"]))
def test_prepared_from_the_skeleton_is_what_prepare_gives(seed, tenant, shard_id, epoch, kind):
    from flk.impl.agent.client import prepare
    from flk.sim.workload import PcsFactory, make_templates

    if not _TEMPLATES:
        _TEMPLATES.extend(make_templates(1))
    from flk.impl.agent import factory

    f = PcsFactory(_TEMPLATES, b"base")
    pcs = f.new(random.Random(seed), tenant, shard_id, epoch)
    rng = random.Random(seed)  # the reference document from the same draws
    template = _TEMPLATES[rng.randrange(len(_TEMPLATES))]
    ref = factory.with_identity(dict(template, sig_alg="hmac"), f.key_for(tenant), root=f"{rng.getrandbits(256):064x}",
                                shard_id=shard_id, epoch=epoch)
    assert pcs == ref and list(pcs) == list(ref)
    skeleton = f._last[1]  # its template's skeleton: the per-hole path and the %-format agree with prepare
    assert skeleton.prepared(pcs) == prepare(pcs) and (skeleton.fmt % pcs).encode() == prepare(pcs).head
    if kind != "valid":  # another document: made from the templates' containers, or not
        pcs = {"bad_sig": f.bad_sig, "tampered": f.tampered,
               "resigned": lambda p: f.resigned(p, "other-" + tenant), "forged": lambda p: f.forged(p, tenant),
               "out_of_policy": lambda p: f.out_of_policy(p, tenant),
               "other_containers": lambda p: dict(p, scales=[*p["scales"], 9], v_star=[0.5, "\u00e9"]),
               "extra_fields": lambda p: dict(p, attempt=3, sent_at="x", ft={"a": [1, None, True]}, z=-0.0),
               }.get(kind, lambda p: f.conflicting(p, tenant))(pcs)
    assert f.prepared(pcs) == prepare(pcs)
    assert f.prepared(pcs) == prepare(pcs)  # asked again: no longer the last new PCS, the plain path
