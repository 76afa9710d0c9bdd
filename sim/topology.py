"""The simulated network's topology as data, held as a ``networkx`` graph.

Nodes: every region (``kind="region"``), the client population ``clients``
(``kind="clients"``) and, with replication, each region's object store
``<region>/objstore`` (``kind="objstore"``, ``region=<region>``). Edges carry a
:class:`flk.sim.net.LinkSpec`:

* clients -- region: ``network.latency_ms`` (+ loss, duplicate, reorder);
* region -- region (full mesh): ``network.region_latency_ms`` (+ the same loss ...);
* region -- its object store: ``replication.upload_ms``.

``[[network.links]]`` entries override single edges. Replication traffic (segment
copies between object stores) crosses region -- region edges, so a partition
between regions cuts it. :func:`draw` renders the graph, cut links in red.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from .net import LinkSpec

CLIENTS = "clients"


def objstore_node(region: str) -> str:
    return f"{region}/objstore"


def _spec(net: dict, latency) -> LinkSpec:
    return LinkSpec(latency_ms=latency, loss=net["loss"], duplicate=net["duplicate"], reorder=net["reorder"])


def build(data: dict) -> nx.Graph:
    """The topology graph of a (validated) scenario."""
    net = data["network"]
    regions = [r["id"] for r in data["regions"]]
    graph = nx.Graph()
    graph.add_node(CLIENTS, kind="clients")
    for region in regions:
        graph.add_node(region, kind="region")
        graph.add_edge(CLIENTS, region, spec=_spec(net, net["latency_ms"]), kind="client")
    for i, a in enumerate(regions):
        for b in regions[i + 1:]:
            graph.add_edge(a, b, spec=_spec(net, net["region_latency_ms"]), kind="inter-region")
    if data["replication"]["enabled"]:
        for region in regions:
            node = objstore_node(region)
            graph.add_node(node, kind="objstore", region=region)
            graph.add_edge(region, node, spec=LinkSpec(latency_ms=data["replication"]["upload_ms"]), kind="local")
    for link in net.get("links", []):
        u, v = link["from"], link["to"]
        base = graph.edges[u, v]["spec"].latency_ms if graph.has_edge(u, v) else net["latency_ms"]
        graph.add_edge(u, v, kind=graph.edges[u, v]["kind"] if graph.has_edge(u, v) else "custom", spec=LinkSpec(
            latency_ms=link.get("latency_ms", base), loss=link.get("loss", 0.0),
            duplicate=link.get("duplicate", 0.0), reorder=link.get("reorder", 0.0),
            bandwidth_bytes_per_s=link.get("bandwidth_bytes_per_s")))
    return graph


def node_names(data: dict) -> tuple[str, ...]:
    regions = tuple(r["id"] for r in data["regions"])
    stores = tuple(objstore_node(r) for r in regions) if data["replication"].get("enabled") else ()
    return (*regions, CLIENTS, *stores)


def _label(spec: LinkSpec) -> str:
    lat = spec.latency_ms
    if isinstance(lat, dict):
        kind = lat.get("dist", "constant")
        text = {"uniform": f"{lat.get('lo')}-{lat.get('hi')}", "lognormal": f"~{lat.get('median')}",
                "constant": f"{lat.get('value')}"}.get(kind, kind)
    else:
        text = f"{lat}"
    out = f"{text} ms"
    if spec.loss:
        out += f", loss {spec.loss:g}"
    if spec.bandwidth_bytes_per_s:
        out += f", {spec.bandwidth_bytes_per_s:g} B/s"
    return out


def _layout(graph: nx.Graph) -> dict[str, tuple[float, float]]:
    """Regions on a circle, each object store outside its region, the clients above them all."""
    import math

    regions = [n for n, d in graph.nodes(data=True) if d.get("kind") == "region"]
    pos: dict[str, tuple[float, float]] = {}
    for i, region in enumerate(regions):
        angle = -math.pi / 2 + 2 * math.pi * i / max(1, len(regions))
        pos[region] = (math.cos(angle), math.sin(angle))
    for node, data in graph.nodes(data=True):
        if data.get("kind") == "objstore":
            x, y = pos[data["region"]]
            pos[node] = (1.7 * x, 1.7 * y)
        elif node not in pos:
            pos[node] = (1.9, 1.6)
    return pos


def check_image_path(out: Path) -> None:
    """ValueError unless ``out``'s suffix names an image format matplotlib writes (.png, .svg,
    .pdf, ...): without one it would write ``out.png`` under another name than asked, and an
    unknown one fails only after the drawing."""
    from matplotlib.backend_bases import FigureCanvasBase

    known = FigureCanvasBase.get_supported_filetypes()
    if Path(out).suffix[1:].lower() not in known:
        raise ValueError(f"{out}: name an image file ending in .png, .svg or .pdf "
                         f"(known: {', '.join(sorted(known))})")


def draw(graph: nx.Graph, cut: set[tuple[str, str]], out: Path, title: str):
    """Write the graph as a PNG: regions, clients and object stores; links cut both ways dashed
    red, a link cut one way (an asymmetric partition) a red arrow in the direction whose messages
    are lost. Returns the figure."""
    from .artifacts import figure_for_file  # a file-only figure: no global backend switch

    pos = _layout(graph)
    colours = {"region": "#4c72b0", "clients": "#55a868", "objstore": "#c4a000"}
    fig, ax = figure_for_file(8, 6)
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_size=1400,
                           node_color=[colours.get(d.get("kind"), "#999999") for _, d in graph.nodes(data=True)])
    nx.draw_networkx_labels(graph, pos, ax=ax, font_size=8)
    both = [(u, v) for u, v in graph.edges if (u, v) in cut and (v, u) in cut]
    one_way = [(u, v) if (u, v) in cut else (v, u) for u, v in graph.edges
               if ((u, v) in cut) != ((v, u) in cut)]
    ok_edges = [(u, v) for u, v in graph.edges if (u, v) not in cut and (v, u) not in cut]
    nx.draw_networkx_edges(graph, pos, edgelist=ok_edges, ax=ax, edge_color="#555555")
    nx.draw_networkx_edges(graph, pos, edgelist=both, ax=ax, edge_color="red", style="dashed", width=2.5)
    if one_way:
        directed = nx.DiGraph(one_way)
        nx.draw_networkx_edges(directed, pos, edgelist=one_way, ax=ax, edge_color="red", style="dashed", width=2.5,
                               arrows=True, arrowstyle="-|>", arrowsize=22, node_size=1400)
    nx.draw_networkx_edge_labels(graph, pos, ax=ax, font_size=7,
                                 edge_labels={(u, v): _label(d["spec"]) for u, v, d in graph.edges(data=True)})
    ax.set_title(f"{title}: {len(both)} links cut both ways (red, dashed), {len(one_way)} cut one way "
                 "(red arrow: the direction whose messages are lost)")
    ax.axis("off")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    return fig
