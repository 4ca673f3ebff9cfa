"""Dependency graphs: cycle detection (Kahn) and readiness of beads.

A bead is *ready* when every bead it depends on is closed (merged). A failed dependency does not
unblock its dependents (a weakness of the original, which treated failed as resolved): they are
*held*, and so is everything downstream of them, and the hold is surfaced with a reason.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum

from gastown.model import Bead, BeadPhase


def cyclic_nodes(graph: Mapping[str, Sequence[str]]) -> set[str]:
    """Nodes on a cycle or downstream of one (what Kahn's algorithm cannot order).

    `graph` maps a node to the nodes it depends on; edges to unknown nodes are ignored.
    """
    # Fast path, linear and cheap: most dependencies point at beads that depend on nothing
    # (so are not keys of `graph`); without an edge between two keys there is no cycle.
    if not any(dep in graph for deps in graph.values() for dep in deps):
        return set()
    indegree = {node: 0 for node in graph}
    dependents: dict[str, list[str]] = {node: [] for node in graph}
    for node, deps in graph.items():
        for dep in set(deps):
            if dep in graph and dep != node:
                indegree[node] += 1
                dependents[dep].append(node)
            elif dep == node:
                indegree[node] += 1
    queue = deque(node for node, degree in indegree.items() if degree == 0)
    ordered = 0
    while queue:
        node = queue.popleft()
        ordered += 1
        for dependent in dependents[node]:
            indegree[dependent] -= 1
            if indegree[dependent] == 0:
                queue.append(dependent)
    if ordered == len(graph):
        return set()
    return {node for node, degree in indegree.items() if degree > 0}


class Hold(StrEnum):
    """Why a bead's dependencies keep it from being ready."""

    WAITING = "WaitingForDependencies"  # a dependency is still in flight: normal
    MISSING = "MissingDependency"  # a dependency does not exist (yet)
    FAILED = "DependencyFailed"  # a dependency failed: held until a human intervenes
    CYCLE = "DependencyCycle"  # the bead is on (or behind) a dependency cycle


def dependency_hold(
    deps: Iterable[str],
    phase_of: Callable[[str], BeadPhase | None],
    doomed: Callable[[str], bool],
) -> Hold | None:
    """None if every dependency is closed, else the most important reason it is held."""
    worst: Hold | None = None
    for dep in deps:
        phase = phase_of(dep)
        if phase is BeadPhase.CLOSED:
            continue
        if phase is None:
            hold = Hold.MISSING
        elif phase is BeadPhase.FAILED or doomed(dep):
            hold = Hold.FAILED
        else:
            hold = Hold.WAITING
        if worst is None or _RANK[hold] > _RANK[worst]:
            worst = hold
    return worst


_RANK = {Hold.WAITING: 0, Hold.MISSING: 1, Hold.FAILED: 2, Hold.CYCLE: 3}


class Doom:
    """Which beads can never close: failed ones, cyclic ones and everything behind them."""

    def __init__(
        self,
        graph: Mapping[str, Sequence[str]],
        phase_of: Callable[[str], BeadPhase | None],
        cyclic: set[str],
    ) -> None:
        self._graph = graph
        self._phase_of = phase_of
        self._cyclic = cyclic
        self._memo: dict[str, bool] = {}

    def __call__(self, node: str) -> bool:
        """True if `node` will never close without human intervention."""
        memo = self._memo
        known = memo.get(node)
        if known is not None:
            return known
        if node not in self._graph and node not in self._cyclic:
            # A leaf (it depends on nothing): doomed exactly when it failed.
            memo[node] = result = self._phase_of(node) is BeadPhase.FAILED
            return result
        # Iterative DFS: graphs are acyclic apart from `cyclic`, which is doomed outright.
        stack = [node]
        while stack:
            current = stack[-1]
            if current in self._memo:
                stack.pop()
                continue
            phase = self._phase_of(current)
            if current in self._cyclic or phase is BeadPhase.FAILED:
                self._memo[current] = True
                stack.pop()
                continue
            if phase is BeadPhase.CLOSED or phase is None:
                self._memo[current] = False
                stack.pop()
                continue
            pending = [d for d in self._graph.get(current, ()) if d not in self._memo]
            if pending:
                stack.extend(pending)
                continue
            self._memo[current] = any(self._memo[d] for d in self._graph.get(current, ()))
            stack.pop()
        return self._memo[node]


class Readiness:
    """Dependency readiness of a set of beads (cycles and doom computed once per pass)."""

    def __init__(
        self,
        graph: Mapping[str, Sequence[str]],
        phase_of: Callable[[str], BeadPhase | None],
    ) -> None:
        self.graph = graph
        self.cyclic = cyclic_nodes(self.graph) if self.graph else set()
        self.doomed = Doom(self.graph, phase_of, self.cyclic)
        self._phase_of = phase_of

    def hold(self, bead: Bead) -> Hold | None:
        """Why the bead's dependencies keep it from being ready (None: they do not)."""
        return self.hold_deps(bead.metadata.name, bead.spec.depends_on)

    def hold_deps(self, name: str, deps: Sequence[str]) -> Hold | None:
        """`hold` of the bead `name` whose dependencies are `deps`."""
        if self.cyclic and name in self.cyclic:
            return Hold.CYCLE
        if not deps:
            return None
        if len(deps) == 1:  # the common case, `dependency_hold` inlined
            dep = deps[0]
            phase = self._phase_of(dep)
            if phase is BeadPhase.CLOSED:
                return None
            if phase is None:
                return Hold.MISSING
            if phase is BeadPhase.FAILED or self.doomed(dep):
                return Hold.FAILED
            return Hold.WAITING
        return dependency_hold(deps, self._phase_of, self.doomed)
