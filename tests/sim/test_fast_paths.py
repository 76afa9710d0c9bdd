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
        assert "".join(fast._chunks()) == "".join(plain._chunks())  # the lines a saved history holds
        assert [list(e.items()) for e in fast.events] == [list(e.items()) for e in plain.events]  # key order too


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


@settings(max_examples=60, derandomize=True, deadline=None)
@given(st.integers(0, 2**32), st.lists(st.sampled_from(["new", "dup", "rotate", "forget", "other"]), min_size=1,
                                       max_size=12))
def test_fixed_and_resigned_give_what_the_plain_functions_give(seed, steps):
    """``PcsFactory.fixed`` is ``(prepare(pcs), payload_digest(pcs))`` whether or not it kept the
    PCS; ``resigned`` is ``factory.sign``'s document -- the same object only when nothing changed."""
    from flk.impl.agent import factory
    from flk.impl.agent.client import prepare
    from flk.sim.workload import PcsFactory, make_templates, payload_digest

    if not _TEMPLATES:
        _TEMPLATES.extend(make_templates(1))
    f = PcsFactory(_TEMPLATES, b"base")
    rng = random.Random(seed)
    pool: list[dict] = []
    for step in steps:
        if step == "new" or not pool:
            pcs = f.new(rng, "t0", "s1", 1)
            pool.append(pcs)
        elif step == "rotate":
            f.key_generation["t0"] = f.key_generation.get("t0", 0) + 1
            continue
        elif step == "forget":
            f.forget(pool.pop(rng.randrange(len(pool))))
            continue
        else:
            old = pool[rng.randrange(len(pool))]
            pcs = f.resigned(old, "t0") if step == "dup" else f.conflicting(old, "t0")
            if step == "dup":
                ref = factory.sign(old, f.key_for("t0"))
                assert pcs == ref and list(pcs) == list(ref)
                if pcs is old:  # only when the key that signed it is still the tenant's
                    assert old["sig"] == ref["sig"]
        assert f.fixed(pcs) == (prepare(pcs), payload_digest(pcs))
        assert f.fixed(pcs) == (prepare(pcs), payload_digest(pcs))  # asked again (kept, or not)


def test_a_duplicate_of_a_kept_pcs_is_that_pcs_until_the_key_rotates():
    """The case the simulator's duplicates take: a pool member sent before is resent as it is
    (no signature, no encoding) while its tenant's key is the one that signed it."""
    from flk.sim.workload import PcsFactory, make_templates

    if not _TEMPLATES:
        _TEMPLATES.extend(make_templates(1))
    f = PcsFactory(_TEMPLATES, b"base")
    pcs = f.new(random.Random(3), "t0", "s1", 1)
    first = f.fixed(pcs)
    assert f.resigned(pcs, "t0") is pcs and f.fixed(pcs)[0] is first[0]
    assert f.resigned(pcs, "t1") is not pcs  # another tenant's key: signed again
    f.key_generation["t0"] = 1
    rotated = f.resigned(pcs, "t0")
    assert rotated is not pcs and rotated["sig"] != pcs["sig"]
    f.key_generation["t0"] = 0
    f.forget(pcs)
    assert f.resigned(pcs, "t0") is not pcs  # no longer kept: factory.sign's copy


@settings(max_examples=60, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 0.4), st.floats(0.0, 0.4), st.floats(0.1, 30.0)), min_size=1, max_size=3),
       st.lists(st.tuples(st.sampled_from(["a", "b"]), st.floats(0.0, 5.0)), min_size=1, max_size=12),
       st.integers(0, 2**32))
def test_a_message_as_its_own_queue_entry_arrives_where_a_timer_would(links, sends, seed):
    """``Network.send`` queues the message itself (a duplicate: a timer of its own): the
    deliveries come at the times, in the order and with the event ids of one ``call_later``
    per copy (the reference below: the same draws, a timer per copy)."""
    from functools import partial

    import simpy

    from flk.sim.net import LinkSpec, Message, Network, call_later

    def run(reference: bool):
        env = simpy.Environment()
        net = Network(env, History(keep=False), lambda _name: random.Random(seed))
        specs = [LinkSpec(latency_ms={"dist": "exponential", "mean": m}, loss=loss, duplicate=dup)
                 for loss, dup, m in links]
        net.link = lambda u, v: specs[int(u[1:])]
        net.hops = lambda gs, gd: [(f"h{i}", f"h{i + 1}") for i in range(len(specs))]
        got = []
        for node in ("a", "b"):
            net.register(node, handler=lambda msg: got.append((env.now, msg.msg_id, msg.dst)))

        def ref_send(src, dst, kind, payload, size=256):  # the per-copy timer the send replaced
            net._next_id += 1
            msg = Message(src, dst, kind, payload, size, net._next_id)
            hops, sp, rng, losses, duplicates, latencies, _st = net._send_route(src, dst)
            if any(rng.random() < p for p in losses):
                return
            copies = 2 if any(rng.random() < p for p in duplicates) else 1
            for _ in range(copies):
                call_later(env, sum(latency(rng) / 1000.0 for latency in latencies), partial(net._arrive, msg))

        send = ref_send if reference else net.send

        def sender():
            for dst, gap in sends:
                yield env.timeout(gap / 1000.0)
                send("a" if dst == "b" else "b", dst, "m", None)

        env.process(sender())
        env.run()
        return got, next(env._eid)

    assert run(False) == run(True)
