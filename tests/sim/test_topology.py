"""The simulated network's topology graph: partitions are graph cuts (symmetric or not),
replication copies cross the inter-region links, and ``flk sim topology`` draws it."""

from __future__ import annotations

import subprocess
import sys

import simpy

from flk.sim import topology
from flk.sim.history import History
from flk.sim.net import Network
from flk.sim.scenario import load

FLK = [sys.executable, "-m", "flk.impl"]


def _net(name: str) -> Network:
    graph = topology.build(load(name).data)
    return Network(simpy.Environment(), History(keep=False), lambda _name: None, graph=graph)


def test_graph_holds_regions_clients_and_object_stores():
    graph = topology.build(load("split-brain").data)
    kinds = {n: d["kind"] for n, d in graph.nodes(data=True)}
    assert kinds["clients"] == "clients" and kinds["eu"] == "region" and kinds["eu/objstore"] == "objstore"
    assert graph.edges["eu", "us"]["kind"] == "inter-region" and graph.edges["eu", "eu/objstore"]["kind"] == "local"


def test_a_partition_is_the_edge_boundary_between_the_node_sets():
    net = _net("split-brain")
    assert sorted(net.cut(["eu"], ["us", "ap"])) == [("ap", "eu"), ("eu", "ap"), ("eu", "us"), ("us", "eu")]
    net.partition(["eu"], ["us"], symmetric=False)
    assert net.is_blocked("eu/objstore", "us/objstore")  # the copy path crosses eu -> us
    assert not net.is_blocked("us/objstore", "eu/objstore")  # asymmetric: the other way is open
    assert not net.is_blocked("eu/objstore", "ap/objstore")
    assert not net.is_blocked("eu", "eu/objstore")  # a region keeps its own object store
    net.heal(["eu"], ["us"])
    assert not net.blocked


def test_client_partition_of_a_single_region_cuts_only_the_client_link():
    net = _net("client-partition")
    net.partition(["r1"], ["clients"])
    assert net.blocked == {("r1", "clients"), ("clients", "r1")}


def test_cli_topology_draws_a_png_with_the_cut_links(tmp_path):
    out = tmp_path / "split.png"
    proc = subprocess.run([*FLK, "sim", "topology", "split-brain", "--out", str(out), "--at", "5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "6 links cut" in proc.stdout and "eu->us" in proc.stdout
    calm = subprocess.run([*FLK, "sim", "topology", "split-brain", "--out", str(out), "--at", "1"],
                          capture_output=True, text=True, timeout=120)
    assert calm.returncode == 0 and "0 links cut" in calm.stdout


def test_replication_over_the_network_is_deterministic_across_processes():
    """Same seed -> same digest even with different string hashing (set orders) per process."""
    import os

    code = ("from flk.sim import api; print(api.run('split-brain', seed=2, plots=False, overrides="
            "['scenario.duration_s=8', 'faults.0.at_s=2', 'faults.1.at_s=2', 'faults.0.duration_s=4', "
            "'faults.1.duration_s=4', 'scenario.quiescence_s=6']).digest)")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout.strip() for h in (1, 2)}
    assert len(digests) == 1 and len(next(iter(digests))) == 64, digests


def test_a_one_way_cut_is_drawn_as_an_arrow_in_its_direction(tmp_path):
    """Before: an asymmetric partition was drawn like a two-way cut, without a direction."""
    from matplotlib.patches import FancyArrowPatch

    from flk.sim import topology
    from flk.sim.scenario import load

    graph = topology.build(load("split-brain").data)
    fig = topology.draw(graph, {("eu", "us")}, tmp_path / "one.png", "one-way")
    arrows = [p for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == 1 and "1 cut one way" in fig.axes[0].get_title()
    (x0, y0), (x1, y1) = arrows[0]._posA_posB
    pos = topology._layout(graph)
    assert (x1 - x0) * (pos["us"][0] - pos["eu"][0]) + (y1 - y0) * (pos["us"][1] - pos["eu"][1]) > 0  # eu -> us
    fig = topology.draw(graph, {("eu", "us"), ("us", "eu")}, tmp_path / "two.png", "two-way")
    assert not [p for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch)]
    assert "1 links cut both ways" in fig.axes[0].get_title()


def test_topology_out_names_the_file_it_writes(tmp_path):
    """A name without a suffix was written as NAME.png while the command said "wrote NAME"; an unknown
    suffix failed after the drawing with a matplotlib traceback. Both are refused first (exit 2,
    nothing made); an image suffix picks the format."""
    import pytest

    from flk.sim import api

    for name in ("topo", "sub/topo", "topo.txt"):
        proc = subprocess.run([*FLK, "sim", "topology", "split-brain", "--out", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "name an image file ending in .png, .svg or .pdf" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="name an image file"):
        api.draw_topology("split-brain", tmp_path / "topo")
    svg = tmp_path / "t.svg"
    proc = subprocess.run([*FLK, "sim", "topology", "split-brain", "--out", str(svg)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and f"wrote {svg}" in proc.stdout and b"<svg" in svg.read_bytes()[:400]
