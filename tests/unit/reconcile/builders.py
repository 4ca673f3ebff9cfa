"""Builders of snapshots and a small simulated world that executes the core's writes.

`World` plays the adapter: it applies writes with the contract's semantics (deterministic
creates, compare-and-set patches as JSON merge patches, side effects only for actions without a
conflict), plays the kubelet for pods, and lets tests act as agents (reports, heartbeats) and as
the PR poller. Every test of the core drives it through `World.step`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from gastown.model import Agent, AgentRole, Bead, Convoy, Town
from gastown.model.resources import Resource
from gastown.reconcile import Action, PodView, Snapshot, check_invariants, names, reconcile
from gastown.reconcile.actions import VerifyAgentClaim
from gastown.reconcile.beads import expected_branch
from gastown.reconcile.convoys import listed_names
from gastown.reconcile.finished import BeadMap, FinishedBeads, is_finished
from gastown.reconcile.names import pod_name
from gastown.reconcile.snapshot import Fault, Verdict
from gastown.reconcile.writes import (
    BranchClaim,
    Claim,
    CreateObject,
    DeleteObject,
    Emit,
    Kind,
    PatchSpec,
    PatchStatus,
    PollPR,
    StartPod,
    StopPod,
    VerifyClaim,
    expect_holds,
    iso,
    merge_patch,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOWN = "t"
RIG = "rig-1"
_MODELS: dict[Kind, type[Resource[Any, Any]]] = {
    Kind.TOWN: Town,
    Kind.BEAD: Bead,
    Kind.CONVOY: Convoy,
    Kind.AGENT: Agent,
}


def minutes(n: float) -> timedelta:
    """A duration in minutes."""
    return timedelta(minutes=n)


def seconds(n: float) -> timedelta:
    """A duration in seconds."""
    return timedelta(seconds=n)


def town(
    name: str = TOWN,
    rigs: Iterable[str] = (RIG,),
    *,
    mode: str = "active",
    per_rig: int = 3,
    total: int = 10,
    strategy: str = "direct",
    policy: Mapping[str, Any] | None = None,
    status: Mapping[str, Any] | None = None,
) -> Town:
    """A town with the given rigs."""
    rig_list: list[dict[str, Any]] = []
    for rig in rigs:
        entry: dict[str, Any] = {
            "name": rig,
            "gitUrl": f"/repos/{rig}.git",
            "mergeStrategy": strategy,
        }
        if strategy == "pr":
            entry["pullRequests"] = {
                "kind": "github",
                "apiUrl": "https://api.example.test",
                "repository": f"o/{rig}",
                "tokenSecret": {"name": "gh", "key": "token"},
            }
        rig_list.append(entry)
    return Town.from_api(
        {
            "metadata": {"name": name, "uid": "town-uid", "creationTimestamp": iso(T0)},
            "spec": {
                "rigs": rig_list,
                "agent": {"image": "agent:latest"},
                "limits": {"maxPolecatsPerRig": per_rig, "maxPolecats": total},
                "mode": mode,
                "policy": dict(policy or {}),
            },
            "status": dict(status or {}),
        }
    )


def _meta(name: str, created: datetime, uid: str | None = None) -> dict[str, Any]:
    return {"name": name, "uid": uid or f"uid-{name}", "creationTimestamp": iso(created)}


def bead(
    name: str,
    *,
    rig: str | None = RIG,
    type: str = "issue",
    title: str | None = None,
    priority: str = "medium",
    depends_on: Iterable[str] = (),
    convoy: str | None = None,
    cancel: bool = False,
    created: datetime = T0,
    spec: Mapping[str, Any] | None = None,
    **status: Any,
) -> Bead:
    """A bead; status fields are given in camelCase (phase="open", assignee=...)."""
    body: dict[str, Any] = {
        "town": TOWN,
        "type": type,
        "title": title or name,
        "priority": priority,
        "dependsOn": list(depends_on),
        "cancel": cancel,
    }
    if rig is not None:
        body["rig"] = rig
    if convoy is not None:
        body["convoy"] = convoy
    body.update(spec or {})
    return Bead.from_api(
        {"metadata": _meta(name, created), "spec": body, "status": _jsonable(status)}
    )


def merge_request(
    name: str,
    source: str,
    *,
    branch: str = "gt/work",
    target: str = "main",
    landing: bool = False,
    rig: str = RIG,
    created: datetime = T0,
    **status: Any,
) -> Bead:
    """A merge_request bead reviewing `source`."""
    spec = {
        "mergeRequest": {
            "sourceBead": source,
            "branch": branch,
            "targetBranch": target,
            "landing": landing,
        }
    }
    return bead(name, rig=rig, type="merge_request", spec=spec, created=created, **status)


def agent(
    name: str,
    *,
    role: str = "polecat",
    rig: str | None = RIG,
    hook: str | None = None,
    generation: int = 0,
    created: datetime = T0,
    **status: Any,
) -> Agent:
    """An agent; status fields in camelCase (phase="working", dispatchedAt=...)."""
    spec: dict[str, Any] = {"town": TOWN, "role": role, "generation": generation}
    if rig is not None:
        spec["rig"] = rig
    if hook is not None:
        spec["hook"] = hook
    return Agent.from_api(
        {"metadata": _meta(name, created), "spec": spec, "status": _jsonable(status)}
    )


def convoy(
    name: str,
    tasks: Iterable[Mapping[str, Any]] = (),
    *,
    beads: Iterable[str] = (),
    mode: str = "review-then-land",
    staged: bool = False,
    rig: str = RIG,
    created: datetime = T0,
    uid: str | None = None,
    **status: Any,
) -> Convoy:
    """A convoy; tasks as dicts {key, title, dependsOn}."""
    spec = {
        "town": TOWN,
        "rig": rig,
        "mergeMode": mode,
        "staged": staged,
        "tasks": [{"title": t["key"], **t} for t in tasks],
        "beads": list(beads),
    }
    return Convoy.from_api(
        {"metadata": _meta(name, created, uid), "spec": spec, "status": _jsonable(status)}
    )


def task(key: str, *deps: str, **extra: Any) -> dict[str, Any]:
    """An inline convoy task."""
    return {"key": key, "dependsOn": list(deps), **extra}


def pod(
    agent_name: str,
    generation: int,
    *,
    phase: str = "Running",
    bead_name: str | None = None,
    created: datetime = T0,
    reason: str | None = None,
    exit_code: int | None = None,
    finished: datetime | None = None,
    deleting: bool = False,
) -> PodView:
    """A pod view of one dispatch generation."""
    return PodView(
        name=pod_name(agent_name, generation),
        agent=agent_name,
        generation=generation,
        bead=bead_name,
        phase=phase,
        reason=reason,
        exit_code=exit_code,
        created_at=created,
        started_at=created if phase != "Pending" else None,
        finished_at=finished,
        deleting=deleting,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def snapshot(
    the_town: Town | None = None,
    objects: Iterable[Bead | Agent | Convoy] = (),
    pods: Iterable[PodView] = (),
) -> Snapshot:
    """A snapshot of a town and its objects."""
    beads: dict[str, Bead] = {}
    agents: dict[str, Agent] = {}
    convoys: dict[str, Convoy] = {}
    for obj in objects:
        if isinstance(obj, Bead):
            beads[obj.name] = obj
        elif isinstance(obj, Agent):
            agents[obj.name] = obj
        else:
            convoys[obj.name] = obj
    return Snapshot(
        town=the_town or town(),
        beads=beads,
        convoys=convoys,
        agents=agents,
        pods={p.name: p for p in pods},
    )


@dataclass
class FakeRemote:
    """The rig's remote as the operator's claim checker sees it (branches and merges)."""

    branches: dict[str, str] = field(default_factory=dict)
    merges: dict[str, set[str]] = field(default_factory=dict)
    """Merge commits on each target; an honest merge contains whatever it must."""

    def check(self, claim: Claim) -> Verdict:
        """What `gastown.kube.verify.check_claim` would say about this remote."""
        if isinstance(claim, BranchClaim):
            at = self.branches.get(claim.branch)
            ok = at == claim.sha
            return Verdict(ok, "" if ok else f"{claim.branch} is at {at}, not {claim.sha}")
        ok = claim.merge_commit in self.merges.get(claim.target, set())
        return Verdict(
            ok, "" if ok else f"merge commit {claim.merge_commit} is not on {claim.target}"
        )


@dataclass
class World:
    """A simulated adapter + kubelet around the pure core."""

    town: Town
    beads: dict[str, Bead] = field(default_factory=dict)
    convoys: dict[str, Convoy] = field(default_factory=dict)
    agents: dict[str, Agent] = field(default_factory=dict)
    pods: dict[str, PodView] = field(default_factory=dict)
    now: datetime = T0
    pod_start: str = "Running"  # what StartPod produces: "Running", "Pending", "none" or
    # "rejected" (the API server refuses the pod: the adapter records `podRejection`)
    rejection: str = "pods is forbidden: maximum cpu usage per Container is 100m, but limit is 1"
    faults: tuple[Fault, ...] = ()  # what the adapter's reference check found (see kube.deputy)
    polls: list[PollPR] = field(default_factory=list)
    events: list[Emit] = field(default_factory=list)
    conflicts: int = 0
    history: list[list[Action]] = field(default_factory=list)
    started: list[StartPod] = field(default_factory=list)
    stopped: list[StopPod] = field(default_factory=list)
    remote: FakeRemote = field(default_factory=FakeRemote)
    verdicts: dict[str, Verdict | None] = field(default_factory=dict)
    verifications: list[VerifyClaim] = field(default_factory=list)
    verify_inline: bool = True
    """Claim checks answer before the next pass (False: they stay in flight until `verify_all`)."""
    summarise: bool = True
    """Snapshots carry finished beads as a summary maintained incrementally (as the adapter's
    do); False hands over a plain mapping of every bead (the index then sweeps them all)."""
    finished: FinishedBeads = field(default_factory=FinishedBeads)
    _seen: dict[tuple[str, str], object] = field(default_factory=dict)
    runtimes_exit_on_release: bool = True
    """A released agent's runtime ends its session and exits (its pod Succeeds) before the next
    pass, as a real one does within seconds (False: the pod keeps running, see
    `capacity.session_ending`)."""

    @classmethod
    def of(cls, the_town: Town | None = None, *objects: Bead | Agent | Convoy) -> World:
        """A world with a town and some objects."""
        world = cls(town=the_town or town())
        for obj in objects:
            world.put(obj)
        return world

    # --- state -------------------------------------------------------------------------------

    def put(self, obj: Bead | Agent | Convoy) -> None:
        """Add or replace an object."""
        if isinstance(obj, Bead):
            self.beads[obj.name] = obj
        elif isinstance(obj, Agent):
            self.agents[obj.name] = obj
        else:
            self.convoys[obj.name] = obj

    def snapshot(self) -> Snapshot:
        """The current state as the adapter would hand it over: live beads plus the summary of
        finished ones, kept up to date incrementally (unless `summarise` is off)."""
        beads: Mapping[str, Bead] = dict(self.beads)
        if self.summarise:
            beads = self.sync_summary()
        return Snapshot(
            town=self.town,
            beads=beads,
            convoys=dict(self.convoys),
            agents=dict(self.agents),
            pods=dict(self.pods),
            verdicts=dict(self.verdicts),
            faults=self.faults,
        )

    def sync_summary(self) -> BeadMap:
        """Feed the changes since the last snapshot to the finished-bead summary, as the
        adapter's store does with watch events, and join it to the live beads."""
        summary, seen = self.finished, self._seen
        for kind, name in list(seen):
            if kind == "Bead" and name not in self.beads:
                del seen[(kind, name)]
                summary.discard(name)
            elif kind == "Convoy" and name not in self.convoys:
                del seen[(kind, name)]
                summary.forget_convoy(name)
        for name, convoy_obj in self.convoys.items():
            if seen.get(("Convoy", name)) is not convoy_obj:
                seen[("Convoy", name)] = convoy_obj
                summary.observe_convoy(name, listed_names(convoy_obj))
        for name, bead_obj in self.beads.items():
            if seen.get(("Bead", name)) is not bead_obj:
                seen[("Bead", name)] = bead_obj
                if is_finished(bead_obj):
                    summary.add(bead_obj)
                else:
                    summary.discard(name)
        live = {n: b for n, b in self.beads.items() if not is_finished(b)}
        return BeadMap(live, summary.view())

    def verify_all(self) -> None:
        """Answer every claim check in flight."""
        for effect in self.verifications:
            if self.verdicts.get(effect.key) is None:
                self.verdicts[effect.key] = self.remote.check(effect.claim)

    def _store(self, kind: Kind) -> dict[str, Any]:
        return {
            Kind.BEAD: self.beads,
            Kind.CONVOY: self.convoys,
            Kind.AGENT: self.agents,
        }[kind]

    def _get(self, kind: Kind, name: str) -> Any:
        if kind is Kind.TOWN:
            return self.town if self.town.name == name else None
        return self._store(kind).get(name)

    def _set(self, kind: Kind, obj: Any) -> None:
        if kind is Kind.TOWN:
            self.town = obj
        else:
            self._store(kind)[obj.name] = obj

    # --- the pass ----------------------------------------------------------------------------

    def step(self, advance: timedelta = timedelta(0)) -> list[Action]:
        """Advance the clock, run one pass and apply its actions."""
        self.now += advance
        actions = reconcile(self.snapshot(), self.now)
        self.apply(actions)
        self.history.append(actions)
        if self.verify_inline and any(isinstance(a, VerifyAgentClaim) for a in actions):
            # The real loop passes again at once after a pass that acted; the claim checks
            # have answered by then (inline here), so their reports apply in that pass.
            again = reconcile(self.snapshot(), self.now)
            self.apply(again)
            self.history.append(again)
            actions = [*actions, *again]
        return actions

    def settle(self, limit: int = 20, advance: timedelta = timedelta(0)) -> int:
        """Run passes until one decides nothing; return how many passes ran."""
        for count in range(1, limit + 1):
            if not self.step(advance):
                return count
        raise AssertionError(f"no fixed point after {limit} passes: {self.history[-1]}")

    def apply(self, actions: Iterable[Action]) -> None:
        """Execute actions with the adapter's semantics."""
        deferred: list[StartPod | StopPod | PollPR | VerifyClaim] = []
        for action in actions:
            ok = True
            effects: list[StartPod | StopPod | PollPR | VerifyClaim] = []
            for write in action.writes():
                if isinstance(write, StartPod | StopPod | PollPR | VerifyClaim):
                    effects.append(write)
                elif isinstance(write, Emit):
                    self.events.append(write)
                elif not self._write(write):
                    ok = False
                    self.conflicts += 1
            if ok:
                deferred.extend(effects)
        for effect in deferred:
            self._side_effect(effect)
        if self.runtimes_exit_on_release:
            self._exit_released_runtimes()

    def _exit_released_runtimes(self) -> None:
        """Pods of released agents (no hook, same generation) end their session and exit."""
        for name, view in list(self.pods.items()):
            agent = self.agents.get(view.agent)
            if (
                agent is not None
                and agent.spec.hook is None
                and view.generation == agent.spec.generation
                and view.live
            ):
                self.pods[name] = dataclasses.replace(
                    view, phase="Succeeded", exit_code=0, finished_at=self.now
                )

    def _write(self, write: CreateObject | PatchStatus | PatchSpec | DeleteObject) -> bool:
        if isinstance(write, CreateObject):
            if self._get(write.kind, write.name) is not None:
                return True  # AlreadyExists: deterministic names make this success
            model = _MODELS[write.kind]
            obj = model.from_api(
                {
                    "metadata": {
                        **_meta(write.name, self.now),
                        "labels": dict(write.labels),
                    },
                    "spec": dict(write.spec),
                    "status": dict(write.status or {}),
                }
            )
            self._set(write.kind, obj)
            return True
        if isinstance(write, DeleteObject):
            self._store(write.kind).pop(write.name, None)
            return True
        current = self._get(write.kind, write.name)
        if current is None:
            return False
        part = current.status if isinstance(write, PatchStatus) else current.spec
        if not expect_holds(part, write.expect):
            return False
        key = "status" if isinstance(write, PatchStatus) else "spec"
        body = current.model_dump(mode="json", by_alias=True, exclude_none=True)
        body[key] = merge_patch(body.get(key, {}), write.patch)
        self._set(write.kind, type(current).model_validate(body))
        return True

    def _side_effect(self, effect: StartPod | StopPod | PollPR | VerifyClaim) -> None:
        if isinstance(effect, VerifyClaim):
            self.verifications.append(effect)
            self.verdicts.setdefault(effect.key, None)
            if self.verify_inline:
                self.verify_all()
        elif isinstance(effect, StartPod):
            self.started.append(effect)
            if self.pod_start == "none":
                return
            if self.pod_start == "rejected":
                rejection = {
                    "generation": effect.generation,
                    "message": self.rejection,
                    "at": iso(self.now),
                }
                self._patch_status(Kind.AGENT, effect.agent, {"podRejection": rejection})
                return
            view = pod(
                effect.agent,
                effect.generation,
                phase=self.pod_start,
                bead_name=effect.bead,
                created=self.now,
            )
            self.pods.setdefault(view.name, view)
        elif isinstance(effect, StopPod):
            self.stopped.append(effect)
            self.pods.pop(effect.pod, None)
        else:
            self.polls.append(effect)

    # --- acting as the outside world ---------------------------------------------------------

    def bead(self, name: str) -> Bead:
        """A bead that must exist."""
        return self.beads[name]

    def agent_on(self, bead_name: str) -> Agent:
        """The one agent hooked to a bead."""
        hooked = [a for a in self.agents.values() if a.spec.hook == bead_name]
        assert len(hooked) == 1, f"{bead_name}: hooked {[a.name for a in hooked]}"
        return hooked[0]

    def report(
        self,
        agent_name: str,
        type: str,
        *,
        generation: int | None = None,
        forge: bool = False,
        **fields: Any,
    ) -> None:
        """The agent's runtime appends a report to its own status.

        An honest agent's `done` names its work branch and the commit it pushed there, and a
        `merged` names a merge it really pushed: unless `forge`, the fake remote is updated to
        match what the report claims (and defaults are filled in as the runtime would).
        """
        current = self.agents[agent_name]
        seq = max((r.seq for r in current.status.reports), default=0)
        seq = max(seq, current.status.applied_report_seq) + 1
        if not forge:
            self._make_true(current, type, seq, fields)
        report = {
            "seq": seq,
            "generation": current.spec.generation if generation is None else generation,
            "type": type,
            "at": iso(self.now),
            **_jsonable(fields),
        }
        reports = [r.to_api() for r in current.status.reports] + [report]
        self._patch_status(Kind.AGENT, agent_name, {"reports": reports})

    def _make_true(self, agent: Agent, type: str, seq: int, fields: dict[str, Any]) -> None:
        hooked = self.beads.get(agent.spec.hook or "")
        if hooked is None:
            return
        if type == "done" and agent.spec.role is AgentRole.POLECAT:
            fields.setdefault("branch", expected_branch(agent, hooked))
            fields.setdefault("headSha", names.short_hash(f"{agent.name}/{seq}", 40))
            self.remote.branches[fields["branch"]] = fields["headSha"]
        elif fields.get("mergeCommit") and hooked.spec.merge_request is not None:
            target = hooked.spec.merge_request.target_branch
            self.remote.merges.setdefault(target, set()).add(fields["mergeCommit"])

    def heartbeat(self, agent_name: str, *, event: bool = True, tools: Iterable[str] = ()) -> None:
        """The runtime's heartbeat (and optionally a progress event) for the current generation."""
        current = self.agents[agent_name]
        activity: dict[str, Any] = {
            "generation": current.spec.generation,
            "lastHeartbeatAt": iso(self.now),
            "activeTools": list(tools),
        }
        if event:
            activity["lastEventAt"] = iso(self.now)
            activity["lastEventType"] = "message"
        self._patch_status(Kind.AGENT, agent_name, {"activity": activity})

    def pr_result(self, bead_name: str, state: str, merge_commit: str | None = None) -> None:
        """The PR poller writes its result."""
        review: dict[str, Any] = {"prState": state}
        if merge_commit:
            review["mergeCommit"] = merge_commit
        self._patch_status(Kind.BEAD, bead_name, {"review": review})

    def patch_spec(self, kind: Kind, name: str, patch: Mapping[str, Any]) -> None:
        """A user edits a spec."""
        assert self._write(PatchSpec(kind=kind, name=name, patch=patch, expect={}))

    def _patch_status(self, kind: Kind, name: str, patch: Mapping[str, Any]) -> None:
        assert self._write(PatchStatus(kind=kind, name=name, patch=patch, expect={}))

    def end_pod(
        self,
        agent_name: str,
        *,
        phase: str = "Succeeded",
        exit_code: int = 0,
        reason: str | None = None,
    ) -> None:
        """The current pod of an agent terminates."""
        current = self.agents[agent_name]
        name = pod_name(agent_name, current.spec.generation)
        self.pods[name] = replace(
            self.pods[name], phase=phase, exit_code=exit_code, reason=reason, finished_at=self.now
        )

    def violations(self) -> list[str]:
        """Invariant codes currently violated."""
        return [v.code for v in check_invariants(self.snapshot(), self.now)]
