"""A convoy as a graph: its beads, their dependencies and the landing MR, laid out in layers.

Pure functions, used by `kubectl gastown dashboard`: `convoy_graph` reads a town's state,
`layout` places the nodes (layered by longest dependency path, ordered within a layer by the
mean position of their dependencies, which keeps edges short without a layout library), and
`render_svg` draws it as inline SVG (nodes coloured by phase, each a link to its bead).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

from gastown.model import Convoy
from gastown.plugin.state import TownState
from gastown.reconcile import names
from gastown.reconcile.convoys import member_names

_ANY_TIME = datetime(2000, 1, 1, tzinfo=UTC)  # membership does not depend on the clock

PENDING = "pending"
"""Phase of a task the operator has not materialised as a Bead yet."""

LANDING = "landing"
"""Kind of the convoy's landing merge request node."""

NODE_WIDTH, NODE_HEIGHT = 180, 44
GAP_X, GAP_Y, MARGIN = 70, 24, 16

PHASE_COLOURS: Mapping[str, str] = {
    PENDING: "#e5e7eb",
    "open": "#dbeafe",
    "in_progress": "#fde68a",
    "in_review": "#c4b5fd",
    "closed": "#86efac",
    "failed": "#fca5a5",
}


@dataclass(frozen=True)
class Node:
    """One bead of the convoy (or its landing MR)."""

    name: str
    label: str
    phase: str
    kind: str = "bead"
    assignee: str | None = None


@dataclass(frozen=True)
class Graph:
    """Nodes and dependency edges (from the dependency to the bead that needs it)."""

    convoy: str
    nodes: Sequence[Node]
    edges: Sequence[tuple[str, str]]
    phase: str = ""
    progress: str = ""


@dataclass(frozen=True)
class Placed:
    """A graph with a position for every node (top-left corner) and the canvas size."""

    graph: Graph
    positions: Mapping[str, tuple[int, int]]
    width: int
    height: int
    layers: Mapping[str, int] = field(default_factory=dict)


def convoy_graph(state: TownState, convoy: Convoy) -> Graph:
    """The convoy's beads (tasks not yet materialised included) and the landing MR."""
    keys = {names.task_bead_name(convoy.name, t.key): t for t in convoy.spec.tasks}
    # The reconciler's own notion of membership (tasks, listed beads, beads naming the convoy).
    members = member_names(state.evaluate(_ANY_TIME), convoy)
    nodes: list[Node] = []
    edges: list[tuple[str, str]] = []
    member_set = set(members)
    for name in members:
        bead = state.beads.get(name)
        task = keys.get(name)
        if bead is None:
            label = task.title if task is not None else name
            deps = [names.task_bead_name(convoy.name, d) for d in task.depends_on] if task else []
            nodes.append(Node(name, label, PENDING))
        else:
            nodes.append(
                Node(name, bead.spec.title, bead.status.phase.value, assignee=bead.status.assignee)
            )
            deps = list(bead.spec.depends_on)
        edges += [(dep, name) for dep in deps if dep in member_set]
    landing = convoy.status.landing.merge_request
    if landing:
        mr = state.beads.get(landing)
        phase = mr.status.phase.value if mr is not None else PENDING
        nodes.append(Node(landing, f"landing of {convoy.name}", phase, kind=LANDING))
        needed = {source for source, _ in edges}
        edges += [(name, landing) for name in members if name not in needed]
    status = convoy.status
    return Graph(
        convoy.name,
        nodes,
        edges,
        status.phase.value if status.phase is not None else "",
        status.progress,
    )


def layers(graph: Graph) -> dict[str, int]:
    """Each node's layer: the length of the longest dependency path leading to it.

    A cycle (the operator refuses them, but the input is whatever the API holds) is cut where
    the walk meets a node already on its path, so the function always terminates.
    """
    needs: dict[str, list[str]] = {n.name: [] for n in graph.nodes}
    for source, target in graph.edges:
        if source in needs and target in needs:
            needs[target].append(source)
    depth: dict[str, int] = {}

    def visit(name: str, path: frozenset[str]) -> int:
        if name in depth:
            return depth[name]
        deeper = [visit(d, path | {name}) + 1 for d in needs[name] if d not in path]
        depth[name] = max(deeper, default=0)
        return depth[name]

    for node in graph.nodes:
        visit(node.name, frozenset())
    return depth


def layout(graph: Graph) -> Placed:
    """Place nodes left to right by layer; within a layer, by the mean row of their needs."""
    depth = layers(graph)
    by_layer: dict[int, list[str]] = {}
    for node in graph.nodes:
        by_layer.setdefault(depth[node.name], []).append(node.name)
    needs: dict[str, list[str]] = {}
    for source, target in graph.edges:
        needs.setdefault(target, []).append(source)
    row: dict[str, float] = {}
    for layer in sorted(by_layer):
        members = by_layer[layer]

        def key(name: str) -> tuple[float, str]:
            above = [row[d] for d in needs.get(name, ()) if d in row]
            return (sum(above) / len(above) if above else float("inf"), name)

        members.sort(key=key)
        for index, name in enumerate(members):
            row[name] = index
    positions = {
        name: (
            MARGIN + layer * (NODE_WIDTH + GAP_X),
            MARGIN + int(row[name]) * (NODE_HEIGHT + GAP_Y),
        )
        for layer, members in by_layer.items()
        for name in members
    }
    columns = max(by_layer, default=-1) + 1
    rows = max((len(m) for m in by_layer.values()), default=0)
    width = 2 * MARGIN + max(columns * NODE_WIDTH + (columns - 1) * GAP_X, 0)
    height = 2 * MARGIN + max(rows * NODE_HEIGHT + (rows - 1) * GAP_Y, 0)
    return Placed(graph, positions, width, height, depth)


def render_svg(placed: Placed, link: str = "/bead/{name}") -> str:
    """The graph as an inline SVG document; `link` formats each node's href."""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" width="{placed.width}" '
        f'height="{placed.height}" viewBox="0 0 {placed.width} {placed.height}" '
        f'data-convoy="{escape(placed.graph.convoy)}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#6b7280"/></marker></defs>',
    ]
    for source, target in placed.graph.edges:
        if source in placed.positions and target in placed.positions:
            parts.append(_edge(placed, source, target))
    for node in placed.graph.nodes:
        parts.append(_node(node, placed.positions[node.name], link))
    parts.append("</svg>")
    return "".join(parts)


def _edge(placed: Placed, source: str, target: str) -> str:
    (sx, sy), (tx, ty) = placed.positions[source], placed.positions[target]
    x1, y1 = sx + NODE_WIDTH, sy + NODE_HEIGHT // 2
    x2, y2 = tx, ty + NODE_HEIGHT // 2
    bend = (x2 - x1) // 2
    return (
        f'<path class="edge" data-from="{escape(source)}" data-to="{escape(target)}" '
        f'd="M {x1} {y1} C {x1 + bend} {y1}, {x2 - bend} {y2}, {x2} {y2}" fill="none" '
        'stroke="#6b7280" stroke-width="1.5" marker-end="url(#arrow)"/>'
    )


def _node(node: Node, at: tuple[int, int], link: str) -> str:
    x, y = at
    colour = PHASE_COLOURS.get(node.phase, "#f3f4f6")
    label = node.label if len(node.label) <= 24 else node.label[:23] + "…"
    sub = node.phase.replace("_", " ") + (f" · {node.assignee}" if node.assignee else "")
    if len(sub) > 30:
        sub = sub[:29] + "…"
    href = escape(link.format(name=node.name))
    return (
        f'<a href="{href}" class="node" data-node="{escape(node.name)}" '
        f'data-phase="{escape(node.phase)}" data-kind="{escape(node.kind)}">'
        f"<title>{escape(node.name)}: {escape(node.label)}</title>"
        f'<rect x="{x}" y="{y}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="6" '
        f'fill="{colour}" stroke="{"#111827" if node.kind == LANDING else "#9ca3af"}"/>'
        f'<text x="{x + 8}" y="{y + 18}" font-size="13">{escape(label)}</text>'
        f'<text x="{x + 8}" y="{y + 35}" font-size="11" fill="#374151">{escape(sub)}</text>'
        "</a>"
    )
