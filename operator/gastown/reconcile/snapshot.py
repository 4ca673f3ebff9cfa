"""The input of a pass: one town and everything that belongs to it, plus derived indices.

The adapter fills only the five fields of `Snapshot`; the indices are computed lazily, once per
snapshot, in a single linear sweep each, so a pass over 10,000 beads stays cheap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from gastown.model import Agent, AgentRole, Bead, BeadPhase, BeadType, Convoy, Rig, Town


@dataclass(frozen=True)
class PodView:
    """What the core needs to know about one agent pod (built by the adapter from a Pod)."""

    name: str
    agent: str
    generation: int
    bead: str | None
    phase: str  # "Pending" | "Running" | "Succeeded" | "Failed" | "Unknown"
    reason: str | None  # e.g. "OOMKilled", "ErrImagePull", "ImagePullBackOff", "Error"
    exit_code: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deleting: bool

    @property
    def finished(self) -> bool:
        """The pod's containers have terminated."""
        return self.phase in ("Succeeded", "Failed")

    @property
    def live(self) -> bool:
        """The pod may still be running code (not terminated, not being deleted)."""
        return not self.finished and not self.deleting


@dataclass(frozen=True)
class Snapshot:
    """One town and all of its beads, convoys, agents and agent pods, as of one moment."""

    town: Town
    beads: Mapping[str, Bead]
    convoys: Mapping[str, Convoy]
    agents: Mapping[str, Agent]
    pods: Mapping[str, PodView]

    @cached_property
    def index(self) -> Index:
        """Derived lookups, built once per snapshot."""
        return Index(self)


class Index:
    """Reverse lookups and buckets over a snapshot, built in one sweep per kind.

    Rules iterate buckets (live beads, live merge requests, cancel requests, ...) instead of
    every bead, so a pass costs time in proportion to the work in flight, plus one sweep.
    """

    def __init__(self, snap: Snapshot) -> None:
        self.rigs: dict[str, Rig] = {rig.name: rig for rig in snap.town.spec.rigs}
        self.agent_names: list[str] = sorted(snap.agents)
        self.hooked: dict[str, list[str]] = defaultdict(list)
        self.refineries: dict[str, str] = {}
        self.polecats_by_rig: dict[str, list[str]] = defaultdict(list)
        for name in self.agent_names:
            agent = snap.agents[name]
            if agent.spec.hook is not None:
                self.hooked[agent.spec.hook].append(name)
            if agent.spec.role is AgentRole.POLECAT and agent.spec.rig is not None:
                self.polecats_by_rig[agent.spec.rig].append(name)
            elif agent.spec.role is AgentRole.REFINERY and agent.spec.rig is not None:
                # A rig has one refinery; if two exist (a race), the first name wins.
                self.refineries.setdefault(agent.spec.rig, name)
        self.pods_by_agent: dict[str, list[PodView]] = defaultdict(list)
        for pod in snap.pods.values():
            self.pods_by_agent[pod.agent].append(pod)
        self._sweep_beads(snap)
        for cname in sorted(snap.convoys):
            for bname in snap.convoys[cname].spec.beads:
                if bname not in self.convoy_of:
                    self.convoy_of[bname] = cname
                if bname in snap.beads and bname not in self.members[cname]:
                    self.members[cname].append(bname)

    def _sweep_beads(self, snap: Snapshot) -> None:
        self.merge_requests_by_source: dict[str, list[str]] = defaultdict(list)
        self.members: dict[str, list[str]] = defaultdict(list)
        self.convoy_of: dict[str, str] = {}
        self.live: list[str] = []  # beads that are not closed or failed
        self.live_mrs: list[str] = []  # merge requests that are not closed or failed
        self.cancels: list[str] = []  # live beads with spec.cancel
        self.open_work: list[str] = []  # open, unassigned issue/rework beads: candidates
        self.failures: list[datetime] = []  # lastFailureAt of every bead that has one
        self.graph: dict[str, list[str]] = {}  # bead -> beads it depends on
        self.active_work: list[str] = []  # issue/rework beads in progress, in review, or
        # open with a (possibly stale) assignee: what the repair rules look at
        closed, failed, open_ = BeadPhase.CLOSED, BeadPhase.FAILED, BeadPhase.OPEN
        issue, rework, mr_type = BeadType.ISSUE, BeadType.REWORK, BeadType.MERGE_REQUEST
        live, live_mrs, graph = self.live, self.live_mrs, self.graph
        for name, bead in snap.beads.items():
            spec = bead.spec
            status = bead.status
            phase = status.phase
            kind = spec.type
            if status.last_failure_at is not None:
                self.failures.append(status.last_failure_at)
            if spec.depends_on:
                graph[name] = spec.depends_on
            mr = spec.merge_request
            if kind is mr_type and mr is not None:
                self.merge_requests_by_source[mr.source_bead].append(name)
            elif spec.convoy is not None and kind is issue:
                self.members[spec.convoy].append(name)
                self.convoy_of[name] = spec.convoy
            if phase is closed or phase is failed:
                continue
            live.append(name)
            work = kind is issue or kind is rework
            if phase is open_ and status.assignee is None:
                if work and not spec.cancel and bead.metadata.deletion_timestamp is None:
                    self.open_work.append(name)
            elif work:
                self.active_work.append(name)
            if kind is mr_type and mr is not None:
                live_mrs.append(name)
            if spec.cancel:
                self.cancels.append(name)
        self.live.sort()
        self.active_work.sort()
        self.live_mrs.sort()
        self.cancels.sort()

    def pod(self, agent: str, generation: int) -> PodView | None:
        """The pod of one dispatch generation of an agent, if it exists."""
        for pod in self.pods_by_agent.get(agent, ()):
            if pod.generation == generation:
                return pod
        return None
