"""Work items: polecat reports, lazy assignment of ready beads, re-dispatch and repairs.

Ready means: an issue or rework bead, open, unassigned, not cancelled, every dependency closed
(merged), not in a staged convoy, its rig known, its backoff over. Ready beads are served by
aged priority (priority rank plus one rank per hour of waiting, so nothing starves), then age.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from gastown.model import (
    Agent,
    AgentPhase,
    AgentRole,
    Bead,
    BeadPhase,
    BeadType,
    Report,
    ReportType,
)
from gastown.reconcile import names
from gastown.reconcile.actions import (
    WARNING,
    AnnotateBead,
    CreateMergeRequest,
    DispatchAgent,
    labels_for,
    merge_request_spec,
)
from gastown.reconcile.budgets import BUDGET_EXCEEDED, over_budget_convoy
from gastown.reconcile.capacity import measure, next_polecat
from gastown.reconcile.claims import refuse, verdict
from gastown.reconcile.context import Pass, aware
from gastown.reconcile.convoys import in_staged_convoy, target_branch
from gastown.reconcile.dag import Hold, Readiness
from gastown.reconcile.ops import (
    MAX_ATTEMPTS,
    agent_escalation_tag,
    escalate,
    mark_applied,
    release_agent,
    retry_or_fail,
    transition,
)
from gastown.reconcile.ratelimits import apply_rate_limited, held
from gastown.reconcile.repairs import ASSIGNEE_WITHOUT_HOOK, record_repair
from gastown.reconcile.retries import attempts_exhausted, backoff_over
from gastown.reconcile.writes import BranchClaim, Kind

DISPATCHABLE = (BeadType.ISSUE, BeadType.REWORK)
AGING_SECONDS = 3600  # one priority rank gained per hour of waiting: no starvation


# --- facts: polecat reports --------------------------------------------------------------------


def apply_polecat_report(ctx: Pass, agent: Agent, report: Report) -> None:
    """Apply one current-generation report of a polecat (done, failed, exited, rate-limited,
    escalate); a `usage` report only carries usage (counted by `accounting`)."""
    hook = agent.spec.hook
    bead = ctx.snap.beads.get(hook) if hook is not None else None
    relevant = (
        bead is not None
        and (report.bead is None or report.bead == hook)
        and ctx.phase(bead) is BeadPhase.IN_PROGRESS
        and bead.status.assignee == agent.name
        and ctx.free(Kind.BEAD, bead.name)
    )
    if report.type is ReportType.ESCALATE:
        escalate(
            ctx,
            agent.name,
            agent_escalation_tag(agent),
            f"{agent.name} asks for help" + (f" on {hook}" if hook else ""),
            report.message or report.summary or "The agent escalated without details.",
        )
    elif not relevant or bead is None:
        pass  # a report about work the agent no longer holds: dropped, but marked applied
    elif report.type is ReportType.DONE:
        if not _done(ctx, agent, bead, report):
            return  # the claim is being verified: the report stays unapplied until then
    elif report.type is ReportType.RATE_LIMITED:
        apply_rate_limited(ctx, agent, bead, report)
    elif report.type in (ReportType.FAILED, ReportType.EXITED):
        reason = "AgentFailed" if report.type is ReportType.FAILED else "AgentExited"
        release_agent(ctx, agent, reason, report.message or "", event=WARNING)
        retry_or_fail(ctx, bead, reason, report.message or "")
    mark_applied(ctx, agent, report.seq)


def expected_branch(agent: Agent, bead: Bead) -> str | None:
    """The branch the operator assigned for this work: never the agent's choice.

    An issue is worked on `gt/<agent>/<bead-id>`; a rework continues the branch under review.
    """
    if bead.spec.type is BeadType.REWORK:
        return bead.spec.rework.branch if bead.spec.rework else None
    return names.work_branch(agent.name, bead.name, bead.metadata.uid)


def _done(ctx: Pass, agent: Agent, bead: Bead, report: Report) -> bool:
    """Apply a verified `done`, or refuse it; False while its claim is being checked."""
    branch = expected_branch(agent, bead)
    if branch is None or report.branch != branch:
        refuse(
            ctx,
            agent,
            bead,
            report,
            "ForeignBranch" if report.branch else "DoneWithoutBranch",
            f"done names branch {report.branch or '(none)'}; this work's branch is {branch}",
        )
        return True
    if not report.head_sha:
        refuse(ctx, agent, bead, report, "DoneWithoutCommit", "done names no pushed commit")
        return True
    claim = BranchClaim(rig=bead.spec.rig or "", branch=branch, sha=report.head_sha)
    checked = verdict(ctx, agent, bead, report, claim)
    if checked is None:
        return False
    if not checked.ok:
        refuse(ctx, agent, bead, report, "PushUnverified", checked.message)
        return True
    verified = {"branch": branch, "headSha": report.head_sha, "refusedClaim": None}
    if bead.spec.type is BeadType.REWORK:
        # Rework continues the branch under review: no new merge request; closing it unblocks
        # the merge request, which the refinery then re-reviews at the verified new head.
        release_agent(ctx, agent, "WorkDone")
        transition(
            ctx,
            bead,
            BeadPhase.CLOSED,
            "ReworkDone",
            report.summary or "",
            set={"assignee": None, "summary": report.summary, **verified},
        )
        return True
    _submit_for_review(ctx, agent, bead, branch, report.head_sha, report.summary)
    return True


def _submit_for_review(
    ctx: Pass, agent: Agent, bead: Bead, branch: str, head_sha: str, summary: str | None
) -> None:
    """Create the merge request of this attempt and move the bead to in_review."""
    rig = bead.spec.rig or ""
    mr_name = names.merge_request_name(bead.name, max(bead.status.attempts, 1))
    target = target_branch(ctx, bead)
    spec = merge_request_spec(
        town=ctx.town.name,
        rig=rig,
        source=bead.name,
        branch=branch,
        target=target,
        title=f"Review: {bead.spec.title}",
        description=summary or "",
        priority=bead.spec.priority.value,
        source_sha=head_sha,
    )
    if mr_name not in ctx.snap.beads:
        ctx.add(
            CreateMergeRequest(
                town=ctx.town.name,
                bead=mr_name,
                spec=spec,
                owner=(Kind.BEAD, bead.name),
                labels=labels_for(ctx.town.name, source=bead.name),
                reason="ReviewRequested",
                message=f"{branch} -> {target}",
                # The source's ReviewRequested Event below names this merge request.
                event=False,
            ),
            (Kind.BEAD, mr_name),
        )
    release_agent(ctx, agent, "WorkDone")
    transition(
        ctx,
        bead,
        BeadPhase.IN_REVIEW,
        "ReviewRequested",
        f"{mr_name}: {branch} -> {target}",
        set={
            "assignee": None,
            "branch": branch,
            "headSha": head_sha,
            "summary": summary,
            "mergeRequest": mr_name,
            "refusedClaim": None,
        },
    )


# --- rules -------------------------------------------------------------------------------------


def repair_beads(ctx: Pass) -> None:
    """Stale assignees, lost agents, and the in_review safety net."""
    lost_after = ctx.policy.agents.lost_agent_timeout_seconds
    beads, claimed = ctx.snap.beads, ctx.claimed
    # ctx.phase_of, inlined (phases are non-empty strings, so `or` falls through on None).
    planned, phases = ctx.planned_phases, ctx.index.phases
    for name in ctx.index.active_work:
        if (Kind.BEAD, name) in claimed:
            continue
        phase = planned.get(name) or phases[name]
        if phase is BeadPhase.IN_REVIEW:
            _review_safety_net(ctx, name, lost_after)
            continue
        bead = beads[name]
        if phase is BeadPhase.OPEN and bead.status.assignee is not None:
            if not ctx.is_hooked(name):
                ctx.add(
                    AnnotateBead(
                        bead=name,
                        set={"assignee": None},
                        expect={"phase": "open", "assignee": bead.status.assignee},
                        reason="StaleAssignee",
                    ),
                    (Kind.BEAD, name),
                )
                if phases[name] is BeadPhase.OPEN:  # found so, not made so by this pass
                    record_repair(
                        ctx,
                        ASSIGNEE_WITHOUT_HOOK,
                        name,
                        f"open bead {name} named {bead.status.assignee} as assignee "
                        "with no agent hooked",
                    )
        elif (
            phase is BeadPhase.IN_PROGRESS
            and not ctx.is_hooked(name)
            and ctx.older_than(bead.status.phase_since, lost_after)
        ):
            retry_or_fail(ctx, bead, "AgentLost", "no agent holds this bead")


def _review_safety_net(ctx: Pass, name: str, lost_after: int) -> None:
    mrs = ctx.index.merge_requests_by_source.get(name, ())
    if not mrs:
        bead = ctx.snap.beads[name]
        if ctx.older_than(bead.status.phase_since, lost_after):
            retry_or_fail(ctx, bead, "MergeRequestMissing", "in review without a merge request")
        return
    planned, snapshot_phases = ctx.planned_phases, ctx.index.phases
    closed, failed = BeadPhase.CLOSED, BeadPhase.FAILED
    phases = []
    for mr in mrs:
        phase = planned.get(mr) or snapshot_phases[mr]
        if phase is not closed and phase is not failed:
            return  # a merge request is still open or under review: nothing to repair
        phases.append(phase)
    bead = ctx.snap.beads[name]
    if closed in phases:
        transition(
            ctx, bead, BeadPhase.CLOSED, "Merged", "merged (safety net)", set={"assignee": None}
        )
    else:
        retry_or_fail(ctx, bead, "ReviewFailed", "every merge request failed")


def redispatch_polecats(ctx: Pass) -> None:
    """Re-dispatch idle or stalled polecats still hooked to an in_progress bead."""
    cooldown = ctx.policy.agents.redispatch_cooldown_seconds
    for name in ctx.index.parked:  # hooked workers that are not working
        agent = ctx.snap.agents[name]
        if agent.spec.role is not AgentRole.POLECAT:
            continue
        bead = hooked_in_progress(ctx, agent)
        if bead is None:
            continue
        redispatch_or_give_up(ctx, agent, bead, "polecat", cooldown, retry_or_fail)


def redispatch_or_give_up(
    ctx: Pass,
    agent: Agent,
    bead: Bead,
    role: str,
    cooldown: int,
    give_up: Callable[[Pass, Bead, str], None],
    allowed: bool | None = None,
) -> None:
    """A parked agent's hooked bead: give up after the last attempt, else dispatch it again once
    dispatch is allowed (`allowed`, else `ctx.dispatch_allowed`), the bead's backoff is over and
    the agent has cooled down."""
    if attempts_exhausted(ctx, bead):
        release_agent(ctx, agent, MAX_ATTEMPTS, stop_pod=True, event=WARNING)
        give_up(ctx, bead, MAX_ATTEMPTS)
        return
    if (
        (ctx.dispatch_allowed if allowed is None else allowed)
        and backoff_over(ctx, bead)
        and ctx.older_than(agent.status.phase_since, cooldown)
    ):
        dispatch(ctx, agent.name, agent, bead, rig=agent.spec.rig or "", role=role)


def hooked_in_progress(ctx: Pass, agent: Agent) -> Bead | None:
    """The bead of an idle/stalled agent that still holds an in_progress bead, else None."""
    if (
        agent.status.phase is AgentPhase.WORKING
        or agent.spec.hook is None
        or agent.metadata.deletion_timestamp is not None
        or not ctx.free(Kind.AGENT, agent.name)
    ):
        return None
    bead = ctx.snap.beads.get(agent.spec.hook)
    if (
        bead is None
        or bead.spec.cancel
        or ctx.phase(bead) is not BeadPhase.IN_PROGRESS
        or bead.status.assignee != agent.name
        or not ctx.free(Kind.BEAD, bead.name)
    ):
        return None
    return bead


def dispatch(
    ctx: Pass, agent_name: str, agent: Agent | None, bead: Bead, *, rig: str, role: str
) -> None:
    """Dispatch `bead` to an existing agent (new generation) or to a new agent.

    If this pass released the agent (its last bead is done), the dispatch replaces that release:
    the agent goes from its old hook straight to the new one, in the same two writes a dispatch
    needs anyway, placed after everything the release's report moved.
    """
    generation = (agent.spec.generation if agent is not None else 0) + 1
    release = ctx.releases.pop(agent_name, None)
    action = DispatchAgent(
        town=ctx.town.name,
        agent=agent_name,
        role=role,
        rig=rig,
        create=agent is None,
        generation=generation,
        old_hook=agent.spec.hook if agent is not None else None,
        old_phase=agent.status.phase if agent is not None else AgentPhase.IDLE,
        bead=bead.name,
        bead_phase=bead.status.phase,
        bead_assignee=bead.status.assignee,
        attempts=bead.status.attempts,
        review=bead.spec.type is BeadType.MERGE_REQUEST,
        now=ctx.now,
        reason="Dispatched",
        applied_seq=release.applied_seq if release is not None else None,
        applied_seq_before=release.applied_seq_before if release is not None else 0,
    )
    if release is not None:
        ctx.actions.remove(release)
    ctx.plan_hook(agent_name, bead.name)
    ctx.plan_phase(bead.name, BeadPhase.IN_PROGRESS)
    ctx.plan_assignee(bead.name, agent_name)
    ctx.add(action, (Kind.AGENT, agent_name), (Kind.BEAD, bead.name))


# --- lazy assignment ---------------------------------------------------------------------------


def _candidates(ctx: Pass) -> Iterator[Bead]:
    beads, claimed, planned = ctx.snap.beads, ctx.claimed, ctx.planned_phases
    open_ = BeadPhase.OPEN
    for name, _, _ in ctx.index.open_work:  # open in the snapshot: only a plan can differ
        if (Kind.BEAD, name) not in claimed and planned.get(name, open_) is open_:
            yield beads[name]


def surface_hold(ctx: Pass, bead: Bead, reason: str, message: str) -> None:
    """Say once, on the bead, why it is held (a write only when the reason changes)."""
    if bead.status.reason == reason:
        return
    ctx.add(
        AnnotateBead(
            bead=bead.name,
            set={"reason": reason, "message": message},
            expect={"phase": "open"},
            reason=reason,
            message=message,
            event=WARNING,
        ),
        (Kind.BEAD, bead.name),
    )


def ready_beads(ctx: Pass, readiness: Readiness) -> list[Bead]:
    """Beads that may be dispatched now, most urgent first; surfaces holds as a side job."""
    ready: list[Bead] = []
    rigs, hold_of, waiting = ctx.index.rigs, readiness.hold_deps, Hold.WAITING
    beads, claimed, planned = ctx.snap.beads, ctx.claimed, ctx.planned_phases
    open_ = BeadPhase.OPEN
    # `_candidates`, inlined, on the facts the index read: a held bead is not walked again.
    for name, rig, deps in ctx.index.open_work:
        if (Kind.BEAD, name) in claimed or planned.get(name, open_) is not open_:
            continue
        if rig is None or rig not in rigs:
            surface_hold(ctx, beads[name], "UnknownRig", f"rig {rig!r} is not in the town")
            continue
        hold = hold_of(name, deps)
        if hold is not None:
            if hold is not waiting:
                bead = beads[name]
                surface_hold(ctx, bead, hold.value, _hold_message(hold, bead))
            continue
        bead = beads[name]
        if in_staged_convoy(ctx, bead):
            continue
        if attempts_exhausted(ctx, bead):
            retry_or_fail(ctx, bead, MAX_ATTEMPTS)
            continue
        if not backoff_over(ctx, bead) or held(ctx, bead):
            continue
        convoy = over_budget_convoy(ctx, bead)
        if convoy is not None:
            state = ctx.convoy_budgets[convoy]
            spent = f"${state.spent_usd:.2f} of ${state.budget_usd:.2f}"
            surface_hold(ctx, bead, BUDGET_EXCEEDED, f"convoy {convoy} is at its budget: {spent}")
            continue
        ready.append(bead)
    ready.sort(key=lambda b: _urgency(ctx, b))
    return ready


def _hold_message(hold: Hold, bead: Bead) -> str:
    deps = ", ".join(bead.spec.depends_on)[:900]
    return {
        Hold.MISSING: f"a dependency does not exist: {deps}",
        Hold.FAILED: f"a dependency failed; held until it is resolved: {deps}",
        Hold.CYCLE: f"the dependencies form a cycle: {deps}",
    }.get(hold, deps)


def _urgency(ctx: Pass, bead: Bead) -> tuple[float, datetime, str]:
    created = aware(bead.metadata.creation_timestamp or ctx.now)
    waited = max(0.0, (ctx.now - created).total_seconds())
    rank = bead.spec.priority.rank + waited / AGING_SECONDS
    return (-rank, created, bead.name)


def assign_ready_beads(ctx: Pass) -> None:
    """Lazy assignment: give ready beads a polecat, within the per-rig and town caps."""
    readiness = ctx.readiness
    ready = ready_beads(ctx, readiness)
    if not ready or not ctx.dispatch_allowed:
        return
    cap = measure(ctx)
    for bead in ready:
        rig = bead.spec.rig or ""
        if not cap.available(rig):
            continue
        name, create = next_polecat(ctx, cap, rig)
        cap.take(rig)
        dispatch(
            ctx, name, None if create else ctx.snap.agents[name], bead, rig=rig, role="polecat"
        )


def readiness_summary(ctx: Pass) -> dict[str, Any]:
    """Counts of held beads by reason (for the Town summary)."""
    readiness = ctx.readiness
    counts: dict[str, int] = {}
    for bead in _candidates(ctx):
        hold = readiness.hold(bead)
        if hold is not None:
            counts[hold.value] = counts.get(hold.value, 0) + 1
    return counts
