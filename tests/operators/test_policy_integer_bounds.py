"""Every integer setting of the operator's policies has an upper bound in the schema (and so in
spec/OPERATOR.md, which ``flk operator docs`` renders from it): a value past it is a PolicyError
naming the key path, exit 2 from ``flk operator validate`` -- ``season_bins =
99999999999999999999`` passed validation. The ring's bounds are the ones
flk.impl.dedup.sharded.Ring builds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.dedup.sharded import Ring
from flk.impl.lab.cli import main
from flk.impl.operator import policy
from flk.impl.operator.policy import PolicyError, check_policy

SPECS = {"ShardMigration": {"old": {"s0": "sqlite:///a.db"}, "new": {"s0": "sqlite:///a.db", "s1": "sqlite:///b.db"}},
         "CRRPolicy": {}, "TieringPolicy": {}}
# (kind, path below spec, field) of every integer setting
INTS = [(kind, (f.name,), f) for kind, fields in policy.SPEC_FIELDS.items() for f in fields if f.kind == "int"]
INTS += [(kind, (f.name, g.name), g) for kind, fields in policy.SPEC_FIELDS.items() for f in fields
         for g in f.fields if g.kind == "int"]


def test_every_integer_setting_has_a_bound_on_both_sides():
    assert {(k, p) for k, p, _f in INTS} >= {("TieringPolicy", ("season_bins",)), ("ShardMigration", ("vnodes",)),
                                               ("ShardMigration", ("gates", "min_samples"))}
    for kind, path, f in INTS:
        assert f.minimum is not None and f.maximum is not None, (kind, path)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.sampled_from(INTS), st.one_of(st.integers(-10, 10**7), st.integers(-10**25, 10**25)))
def test_an_integer_setting_is_accepted_iff_it_is_within_its_bounds(case, value):
    kind, path, f = case
    spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in SPECS[kind].items()}
    (spec.setdefault(path[0], {}) if len(path) == 2 else spec)[path[-1]] = value
    try:
        pol = check_policy({"kind": kind, "name": "p", "spec": spec})
    except PolicyError as exc:
        assert not f.minimum <= value <= f.maximum, (kind, path, value, str(exc))
        assert exc.key == "spec." + ".".join(path) and "must be" in exc.reason
        return
    assert f.minimum <= value <= f.maximum, (kind, path, value)
    got = pol.spec[path[0]][path[1]] if len(path) == 2 else pol.spec[path[0]]
    assert got == value


def test_the_ring_settings_are_bounded_where_the_ring_is():
    Ring(["s0", "s1"], vnodes=policy.RING_MAX_VNODES, probes=policy.RING_MAX_PROBES)
    for kwargs in ({"vnodes": policy.RING_MAX_VNODES + 1}, {"probes": policy.RING_MAX_PROBES + 1}):
        with pytest.raises(ValueError):
            Ring(["s0", "s1"], **kwargs)


def test_validate_refuses_a_season_of_twenty_digits(tmp_path, capsys):
    f = tmp_path / "t.toml"
    f.write_text('kind = "TieringPolicy"\nname = "t"\n[spec]\nseason_bins = 99999999999999999999\n')
    assert main(["operator", "validate", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"{f}: spec.season_bins: must be <= {policy.MAX_SEASON_BINS}" in err and err.count("\n") == 1, err
