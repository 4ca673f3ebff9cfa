"""`kubectl gastown tree`: town -> convoys -> beads -> agents and pods (pure).

Merge requests and rework beads hang under the bead whose work they carry
(`spec.mergeRequest.sourceBead`, `spec.rework.sourceBead`); a convoy's landing merge request
hangs under the convoy. Beads of no convoy are listed after the convoys, then agents that hold
no bead.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from gastown.model import Agent, Bead, BeadType, Convoy
from gastown.plugin.state import TownState
from gastown.plugin.style import Style
from gastown.reconcile import names

Node = dict[str, Any]


def _children_by_source(state: TownState) -> dict[str, list[Bead]]:
    """Merge request and rework beads keyed by the bead (or convoy) they belong to."""
    children: dict[str, list[Bead]] = defaultdict(list)
    for bead in state.beads.values():
        source = _source(bead)
        if source is not None:
            children[source].append(bead)
    for beads in children.values():
        beads.sort(key=lambda b: b.name)
    return children


def _source(bead: Bead) -> str | None:
    """The bead (or convoy, for a landing MR) an operator-made bead belongs to."""
    if bead.spec.type is BeadType.MERGE_REQUEST and bead.spec.merge_request is not None:
        return bead.spec.merge_request.source_bead
    if bead.spec.type is BeadType.REWORK and bead.spec.rework is not None:
        return bead.spec.rework.source_bead
    return None


def _pods_of(state: TownState, agent: Agent) -> list[Node]:
    pods = sorted(
        (p for p in state.pods.values() if p.agent == agent.name), key=lambda p: p.generation
    )
    return [
        {"name": p.name, "phase": p.phase, "generation": p.generation, "reason": p.reason}
        for p in pods
    ]


def agent_node(state: TownState, agent: Agent) -> Node:
    """One agent with its pods."""
    return {
        "name": agent.name,
        "role": agent.spec.role.value,
        "rig": agent.spec.rig,
        "phase": agent.status.phase.value,
        "generation": agent.spec.generation,
        "hook": agent.spec.hook,
        "pods": _pods_of(state, agent),
    }


class _Builder:
    """Builds bead nodes once each (a bead appears in one place of the tree)."""

    def __init__(self, state: TownState) -> None:
        self.state = state
        self.children = _children_by_source(state)
        self.hooked: dict[str, list[Agent]] = defaultdict(list)
        for agent in sorted(state.agents.values(), key=lambda a: a.name):
            if agent.spec.hook is not None:
                self.hooked[agent.spec.hook].append(agent)
        self.placed: set[str] = set()

    def bead(self, bead: Bead) -> Node:
        """A bead with its agents, merge requests and rework beads (recursively)."""
        self.placed.add(bead.name)
        kids = [c for c in self.children.get(bead.name, []) if c.name not in self.placed]
        return {
            "name": bead.name,
            "type": bead.spec.type.value,
            "title": bead.spec.title,
            "rig": bead.spec.rig,
            "phase": bead.status.phase.value,
            "assignee": bead.status.assignee,
            "reason": bead.status.reason,
            "attempts": bead.status.attempts,
            "cancel": bead.spec.cancel,
            "agents": [agent_node(self.state, a) for a in self.hooked.get(bead.name, [])],
            "mergeRequests": [self.bead(c) for c in kids if c.spec.type is BeadType.MERGE_REQUEST],
            "rework": [self.bead(c) for c in kids if c.spec.type is BeadType.REWORK],
        }

    def convoy(self, convoy: Convoy) -> Node:
        """A convoy with its member beads (tasks not materialised yet are marked missing)."""
        members: list[Node] = []
        for name in member_names(self.state, convoy):
            bead = self.state.beads.get(name)
            if bead is None:
                members.append({"name": name, "missing": True})
            elif name not in self.placed:
                members.append(self.bead(bead))
        landing = [
            self.bead(c) for c in self.children.get(convoy.name, []) if c.name not in self.placed
        ]
        status = convoy.status
        return {
            "name": convoy.name,
            "phase": status.phase.value if status.phase is not None else None,
            "progress": status.progress or f"{status.closed}/{status.total}",
            "mergeMode": convoy.spec.merge_mode.value,
            "staged": convoy.spec.staged,
            "reason": status.reason,
            "beads": members,
            "landing": landing,
        }


def member_names(state: TownState, convoy: Convoy) -> list[str]:
    """A convoy's beads: its tasks (as the operator names them), listed beads, and members."""
    result = [names.task_bead_name(convoy.name, t.key) for t in convoy.spec.tasks]
    extra = [
        b.name
        for b in sorted(state.beads.values(), key=lambda b: b.name)
        if b.spec.convoy == convoy.name and b.spec.type is BeadType.ISSUE
    ]
    for name in [*convoy.spec.beads, *extra]:
        if name not in result:
            result.append(name)
    return result


def build_tree(state: TownState) -> Node:
    """The whole tree as a JSON-able dict (stable keys; `-o json` prints it)."""
    builder = _Builder(state)
    town = state.town
    convoys = [builder.convoy(c) for c in sorted(state.convoys.values(), key=lambda c: c.name)]
    # Roots: beads that belong to no convoy and to no other bead (orphaned MRs/rework included).
    loose = [
        builder.bead(b)
        for b in sorted(state.beads.values(), key=lambda b: b.name)
        if b.name not in builder.placed
        and _source(b) not in state.beads
        and _source(b) not in state.convoys
    ]
    leftovers = [
        builder.bead(b)
        for b in sorted(state.beads.values(), key=lambda b: b.name)
        if b.name not in builder.placed
    ]
    idle = [
        agent_node(state, a)
        for a in sorted(state.agents.values(), key=lambda a: a.name)
        if a.spec.hook is None or a.spec.hook not in state.beads
    ]
    return {
        "town": {"name": town.name, "mode": town.spec.mode.value, "ready": _ready(state)},
        "convoys": convoys,
        "beads": loose + leftovers,
        "agents": idle,
    }


def _ready(state: TownState) -> str | None:
    for condition in state.town.status.conditions:
        if condition.type == "Ready":
            return condition.status.value
    return None


# --- rendering ---------------------------------------------------------------------------------


def render_tree(tree: Node, style: Style) -> str:
    """The tree as indented text with box-drawing branches."""
    town = tree["town"]
    ready = f"  Ready={style.phase(town['ready'])}" if town["ready"] else ""
    lines = [f"{style.bold('Town ' + town['name'])}  mode={style.phase(town['mode'])}{ready}"]
    sections: list[tuple[str, Node]] = [("convoy", c) for c in tree["convoys"]]
    sections += [("bead", b) for b in tree["beads"]]
    sections += [("agent", a) for a in tree["agents"]]
    for index, (kind, node) in enumerate(sections):
        last = index == len(sections) - 1
        lines += _render(kind, node, "", last, style)
    if not sections:
        lines.append(style.dim("  (no convoys, beads or agents)"))
    return "\n".join(lines)


def _render(kind: str, node: Node, prefix: str, last: bool, style: Style) -> list[str]:
    branch = "└── " if last else "├── "
    line = {"convoy": _convoy_line, "bead": _bead_line, "agent": _agent_line, "pod": _pod_line}[
        kind
    ](node, style)
    lines = [prefix + branch + line]
    children = _children(kind, node)
    inner = prefix + ("    " if last else "│   ")
    for index, (child_kind, child) in enumerate(children):
        lines += _render(child_kind, child, inner, index == len(children) - 1, style)
    return lines


def _children(kind: str, node: Node) -> list[tuple[str, Node]]:
    if kind == "convoy":
        return [("bead", b) for b in node["beads"]] + [("bead", b) for b in node["landing"]]
    if kind == "bead":
        return (
            [("agent", a) for a in node.get("agents", [])]
            + [("bead", m) for m in node.get("mergeRequests", [])]
            + [("bead", r) for r in node.get("rework", [])]
        )
    if kind == "agent":
        return [("pod", p) for p in node["pods"]]
    return []


def _convoy_line(node: Node, style: Style) -> str:
    staged = " staged" if node["staged"] else ""
    return (
        f"{style.bold('Convoy ' + node['name'])}  {style.phase(node['phase'])} "
        f"{node['progress']}  ({node['mergeMode']}{staged})"
    )


def _bead_line(node: Node, style: Style) -> str:
    if node.get("missing"):
        return f"Bead {node['name']}  {style.dim('(not created yet)')}"
    label = {"merge_request": "MR", "rework": "Rework", "escalation": "Escalation"}.get(
        node["type"], "Bead"
    )
    parts = [f"{label} {node['name']}", style.phase(node["phase"])]
    if node["assignee"]:
        parts.append(f"@{node['assignee']}")
    if node["reason"]:
        parts.append(style.dim(f"({node['reason']})"))
    if node["cancel"]:
        parts.append(style.paint("cancel requested", "red"))
    return "  ".join(parts) + f"  {style.dim(node['title'])}"


def _agent_line(node: Node, style: Style) -> str:
    return (
        f"Agent {node['name']}  {node['role']}  {style.phase(node['phase'])}  "
        f"gen {node['generation']}"
    )


def _pod_line(node: Node, style: Style) -> str:
    reason = f"  ({node['reason']})" if node["reason"] else ""
    return f"Pod {node['name']}  {style.phase(node['phase'])}  gen {node['generation']}{reason}"
