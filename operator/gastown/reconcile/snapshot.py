"""The input of a pass: one town and everything that belongs to it, plus derived indices.

The adapter fills only the five fields of `Snapshot`; the indices are computed lazily, once per
snapshot, in a single linear sweep each, so a pass over 10,000 beads stays cheap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from gastown.model import Agent, AgentPhase, AgentRole, Bead, BeadPhase, BeadType, Convoy, Rig, Town
from gastown.reconcile.finished import BeadMap, Chain, FinishedView

# What the rules need of a live merge request, read while the sweep has it in hand (so the
# rules do not walk the object again): (source bead, landing?, rig or "", creationTimestamp,
# PR URL, has rework beads?).
MRFacts = tuple[str, bool, str, datetime | None, str | None, bool]
# What lazy assignment needs of an open candidate: (name, rig, dependencies).
OpenFacts = tuple[str, str | None, list[str]]
# What the agent rules need to see that an agent needs nothing (the common case), read once:
# (role, hook, generation, phase, dispatchedAt, activity generation, last heartbeat, last event).
AgentFacts = tuple[
    AgentRole, str | None, int, AgentPhase, datetime | None, int, datetime | None, datetime | None
]


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
class Verdict:
    """The outcome of checking an agent's claim against the remote (or the provider)."""

    ok: bool
    message: str = ""


@dataclass(frozen=True)
class Fault:
    """Why the town must not dispatch now, found by the adapter outside the town's objects.

    E.g. the Town names a Secret that has not opted in to it. While any fault is present no new
    agent pod is started (running ones go on); the Town shows the fault as Degraded.
    """

    reason: str  # CamelCase, e.g. SecretNotOptedIn
    message: str


@dataclass(frozen=True)
class Snapshot:
    """One town and all of its beads, convoys, agents and agent pods, as of one moment."""

    town: Town
    beads: Mapping[str, Bead]
    convoys: Mapping[str, Convoy]
    agents: Mapping[str, Agent]
    pods: Mapping[str, PodView]
    verdicts: Mapping[str, Verdict | None] = field(default_factory=dict)
    """Checked claims by key (see `reconcile.claims`); None while a check is in flight."""
    faults: tuple[Fault, ...] = ()
    """Reasons the town must not dispatch (see `Fault`); empty when all is well."""

    @cached_property
    def index(self) -> Index:
        """Derived lookups, built once per snapshot."""
        return Index(self)


class Index:
    """Reverse lookups and buckets over a snapshot, built in one sweep per kind.

    Rules iterate buckets (live beads, live merge requests, cancel requests, working agents,
    ...) instead of every bead or agent, so a pass costs time in proportion to the work in
    flight, plus one sweep. The sweeps touch each object once and read only the fields the
    buckets need: in a large town they are memory-bound, so every attribute read counts.
    """

    def __init__(self, snap: Snapshot) -> None:
        self.rigs: dict[str, Rig] = {rig.name: rig for rig in snap.town.spec.rigs}
        self._sweep_agents(snap)
        self.pods_by_agent: dict[str, list[PodView]] = defaultdict(list)
        for pod in snap.pods.values():
            self.pods_by_agent[pod.agent].append(pod)
        beads = snap.beads
        # With a summary of finished beads (the adapter's snapshots), the sweep sees only live
        # beads and the summary answers for the rest; a plain mapping is swept whole.
        self.finished: FinishedView | None = None
        self.live: Mapping[str, Bead] = beads
        if isinstance(beads, BeadMap):
            self.finished = beads.finished
            self.live = beads.live
        self._sweep_beads(self.live)
        if self.finished is not None:
            self._merge_finished(self.finished)
        # Beads a convoy lists by name; the first convoy (by name) that lists a bead owns it,
        # unless the bead names its convoy itself (see `convoy_name`).
        self.listed_in: dict[str, str] = {}
        for cname in sorted(snap.convoys):
            listed = snap.convoys[cname].spec.beads
            if not listed:
                continue
            members = self.members[cname]
            seen = set(members)
            for bname in listed:
                self.listed_in.setdefault(bname, cname)
                if bname in beads and bname not in seen:
                    seen.add(bname)
                    members.append(bname)

    def _sweep_agents(self, snap: Snapshot) -> None:
        self.agent_names: list[str] = sorted(snap.agents)
        self.hooked: dict[str, list[str]] = defaultdict(list)
        self.refineries: dict[str, str] = {}
        self.polecats_by_rig: dict[str, list[str]] = defaultdict(list)
        # Buckets of workers (not the mayor), each in name order, on snapshot fields only:
        self.workers: list[str] = []
        self.hooked_workers: list[str] = []  # with a hook
        self.working: list[str] = []  # working, with a hook
        self.reporting: list[str] = []  # with a report newer than appliedReportSeq
        self.parked: list[str] = []  # hooked, not working, not being deleted
        self.unhooked_idle: list[str] = []  # idle, no hook, not being deleted
        self.unhooked_working: list[str] = []  # working, no hook: a release cut in two
        self.agent_facts: dict[str, AgentFacts] = {}  # of every agent, the mayor too
        facts = self.agent_facts
        polecat, refinery, mayor = AgentRole.POLECAT, AgentRole.REFINERY, AgentRole.MAYOR
        working_phase, idle_phase = AgentPhase.WORKING, AgentPhase.IDLE
        hooked, agents = self.hooked, snap.agents
        for name in self.agent_names:
            agent = agents[name]
            spec = agent.spec
            status = agent.status
            hook = spec.hook
            role = spec.role
            activity = status.activity
            phase = status.phase
            facts[name] = (
                role,
                hook,
                spec.generation,
                phase,
                status.dispatched_at,
                activity.generation,
                activity.last_heartbeat_at,
                activity.last_event_at,
            )
            if hook is not None:
                hooked[hook].append(name)
            if role is polecat and spec.rig is not None:
                self.polecats_by_rig[spec.rig].append(name)
            elif role is refinery and spec.rig is not None:
                # A rig has one refinery; if two exist (a race), the first name wins.
                self.refineries.setdefault(spec.rig, name)
            if role is mayor:
                continue
            self.workers.append(name)
            reports = status.reports
            if reports:
                applied = status.applied_report_seq
                if any(report.seq > applied for report in reports):
                    self.reporting.append(name)
            if hook is None:
                if phase is idle_phase and agent.metadata.deletion_timestamp is None:
                    self.unhooked_idle.append(name)
                elif phase is working_phase:
                    self.unhooked_working.append(name)
                continue
            self.hooked_workers.append(name)
            if phase is working_phase:
                self.working.append(name)
            elif agent.metadata.deletion_timestamp is None:
                self.parked.append(name)
        self.hooked = dict(hooked)  # a plain dict: a lookup never adds an empty entry

    def _sweep_beads(self, beads: Mapping[str, Bead]) -> None:
        self.merge_requests_by_source: Mapping[str, Sequence[str]] = defaultdict(list)
        self.members: dict[str, list[str]] = defaultdict(list)
        self.phases: Mapping[str, BeadPhase] = {}  # every bead's phase in the snapshot
        self.live_mrs: list[str] = []  # merge requests that are not closed or failed
        self.pr_mrs: list[str] = []  # live merge requests with a pull request URL
        self.cancels: list[str] = []  # live beads with spec.cancel
        self.open_work: list[OpenFacts] = []  # open, unassigned issue/rework beads: candidates
        self.mr_facts: dict[str, MRFacts] = {}  # of every live merge request
        self.failures: list[datetime] = []  # lastFailureAt of every bead that has one
        self.graph: dict[str, list[str]] = {}  # bead -> beads it depends on
        self.active_work: list[str] = []  # issue/rework beads in progress, in review, or
        # open with a (possibly stale) assignee: what the repair rules look at
        self.in_review: list[str] = []  # beads of any type in phase in_review
        self.holders: list[str] = []  # the assignee of every in_progress bead that has one
        self.assignees: Mapping[str, str] = {}  # bead -> assignee, for beads that have one
        self.finished_failures: tuple[datetime, ...] = ()  # of finished beads, if summarised
        self.rate_limited: list[str] = []  # live beads with status.rateLimited
        assignees: dict[str, str] = {}
        phases: dict[str, BeadPhase] = {}
        by_source: dict[str, list[str]] = defaultdict(list)
        self.assignees, self.phases, self.merge_requests_by_source = assignees, phases, by_source
        closed, failed, open_ = BeadPhase.CLOSED, BeadPhase.FAILED, BeadPhase.OPEN
        in_progress, in_review = BeadPhase.IN_PROGRESS, BeadPhase.IN_REVIEW
        issue, rework, mr_type = BeadType.ISSUE, BeadType.REWORK, BeadType.MERGE_REQUEST
        graph, failures, members = self.graph, self.failures, self.members
        open_work, active_work, live_mrs = self.open_work, self.active_work, self.live_mrs
        mr_facts = self.mr_facts
        for name, bead in beads.items():
            spec = bead.spec
            status = bead.status
            phase = status.phase
            phases[name] = phase
            assignee = status.assignee
            if assignee is not None:
                assignees[name] = assignee
            if status.last_failure_at is not None:
                failures.append(status.last_failure_at)
            deps = spec.depends_on
            if deps:
                graph[name] = deps
            kind = spec.type
            mr = None
            if kind is mr_type:
                mr = spec.merge_request
                if mr is not None:
                    by_source[mr.source_bead].append(name)
            elif kind is issue:
                convoy = spec.convoy
                if convoy is not None:
                    members[convoy].append(name)
            if phase is closed or phase is failed:
                continue
            if status.rate_limited is not None:
                self.rate_limited.append(name)
            work = kind is issue or kind is rework
            if phase is open_ and assignee is None:
                if work and not spec.cancel and bead.metadata.deletion_timestamp is None:
                    open_work.append((name, spec.rig, deps))
            elif work:
                active_work.append(name)
            if mr is not None:
                live_mrs.append(name)
                review = status.review
                pr = None if review is None else review.pr_url
                if pr is not None:
                    self.pr_mrs.append(name)
                mr_facts[name] = (
                    mr.source_bead,
                    mr.landing,
                    spec.rig or "",
                    bead.metadata.creation_timestamp,
                    pr,
                    review is not None and bool(review.rework),
                )
            if spec.cancel:
                self.cancels.append(name)
            if phase is in_progress:
                if assignee is not None:
                    self.holders.append(assignee)
            elif phase is in_review:
                self.in_review.append(name)
        self.rate_limited.sort()
        active_work.sort()
        live_mrs.sort()
        self.pr_mrs.sort()
        self.cancels.sort()
        self.in_review.sort()

    def _merge_finished(self, finished: FinishedView) -> None:
        """Answer for finished beads from the summary: lookups fall through to it, and the
        dependency graph gains the finished beads the live ones reach (all a readiness, cycle
        or doom question about a live bead can touch)."""
        records = finished.records
        self.phases = Chain(self.phases, records, "phase")
        self.assignees = Chain(self.assignees, records, "assignee")
        self.merge_requests_by_source = _Sources(self.merge_requests_by_source, finished.by_source)
        self.finished_failures = finished.failures
        graph = self.graph
        stack = [dep for deps in graph.values() for dep in deps if dep not in graph]
        while stack:
            name = stack.pop()
            if name in graph:
                continue
            record = records.get(name)
            if record is not None and record.deps:
                graph[name] = list(record.deps)
                stack.extend(dep for dep in record.deps if dep not in graph)

    def convoy_name(self, bead: Bead) -> str | None:
        """The convoy a snapshot bead belongs to: the one it names (issues), else the first
        convoy that lists it."""
        spec = bead.spec
        if spec.type is BeadType.ISSUE and spec.convoy is not None:
            return spec.convoy
        return self.listed_in.get(bead.metadata.name)

    def convoy_of_record(self, name: str, own: str | None) -> str | None:
        """`convoy_name` of a bead known by name and the convoy it names (issues only)."""
        return own if own is not None else self.listed_in.get(name)

    def pod(self, agent: str, generation: int) -> PodView | None:
        """The pod of one dispatch generation of an agent, if it exists."""
        for pod in self.pods_by_agent.get(agent, ()):
            if pod.generation == generation:
                return pod
        return None


class _Sources(Mapping[str, Sequence[str]]):
    """Merge requests by source bead: the live ones, then the finished ones."""

    __slots__ = ("finished", "live")

    def __init__(
        self, live: Mapping[str, Sequence[str]], finished: Mapping[str, Sequence[str]]
    ) -> None:
        self.live = live
        self.finished = finished

    def get(self, key: str, default: Any = None) -> Any:
        live = self.live.get(key)
        done = self.finished.get(key)
        if done is None:
            return default if live is None else live
        return done if live is None else [*live, *done]

    def __getitem__(self, key: str) -> Sequence[str]:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        yield from self.live
        yield from (k for k in self.finished if k not in self.live)

    def __len__(self) -> int:
        return sum(1 for _ in self)
