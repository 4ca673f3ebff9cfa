"""The per-rig review/merge queue run by the refinery.

At most one direct-merge MR is in review per rig, oldest first; MRs waiting on a pull request
(they have a PR URL) do not block the queue. Refinery reports: `merged` (with the merge commit
verified on the remote) closes the MR and its source; `conflict`/`gate-failed`/`request-changes`
become rework; `pr-opened` hands the MR to PR polling and releases the refinery; `done` while
rework is pending releases the refinery without merging. PR polling happens at most once per
interval per PR, records its time apart from lifecycle timestamps, and fails the MR after too many
consecutive unknown results.
"""

from __future__ import annotations

import heapq
from datetime import UTC, datetime

from gastown.model import (
    Agent,
    AgentPhase,
    AgentRole,
    Bead,
    BeadPhase,
    BeadType,
    MergeStrategy,
    PRState,
    Report,
    ReportType,
)
from gastown.reconcile import names
from gastown.reconcile.actions import WARNING, AnnotateBead, PollPullRequest
from gastown.reconcile.beads import dispatch, hooked_in_progress, redispatch_or_give_up
from gastown.reconcile.context import Pass
from gastown.reconcile.ops import (
    MAX_ATTEMPTS,
    close_merged,
    escalate,
    fail_merge_request,
    mark_applied,
    release_agent,
    retry_or_fail,
    transition,
)
from gastown.reconcile.retries import attempts_exhausted, backoff_over
from gastown.reconcile.rework import REWORK_REPORTS, request_rework, rework_failed, rework_pending
from gastown.reconcile.writes import Kind


def is_mr(bead: Bead) -> bool:
    """True for merge_request beads."""
    return bead.spec.type is BeadType.MERGE_REQUEST and bead.spec.merge_request is not None


def pr_url(bead: Bead) -> str | None:
    """The pull request URL of an MR, once the refinery opened one."""
    return bead.status.review.pr_url if bead.status.review is not None else None


# --- facts: refinery reports and PR results ----------------------------------------------------


def apply_refinery_report(ctx: Pass, agent: Agent, report: Report) -> None:
    """Apply one current-generation report of a refinery."""
    hook = agent.spec.hook
    mr = ctx.snap.beads.get(hook) if hook is not None else None
    relevant = (
        mr is not None
        and is_mr(mr)
        and (report.bead is None or report.bead == hook)
        and ctx.phase(mr) is BeadPhase.IN_PROGRESS
        and ctx.free(Kind.BEAD, mr.name)
    )
    if report.type is ReportType.ESCALATE:
        escalate(
            ctx,
            agent.name,
            f"r{report.seq}",
            f"{agent.name} asks for help",
            report.message or "The refinery escalated without details.",
        )
    elif relevant and mr is not None:
        _apply_outcome(ctx, agent, mr, report)
    mark_applied(ctx, agent, report.seq)


def _apply_outcome(ctx: Pass, agent: Agent, mr: Bead, report: Report) -> None:
    if report.type in REWORK_REPORTS:
        request_rework(ctx, agent, mr, report)
        return
    if rework_pending(ctx, mr):
        # Never merge while rework is pending (the original's false merge): release only.
        release_agent(ctx, agent, "ReworkPending")
        transition(
            ctx, mr, BeadPhase.OPEN, "ReworkPending", "waiting for rework", set={"assignee": None}
        )
        return
    kind = report.type
    if kind is ReportType.DONE:
        kind = (
            ReportType.MERGED
            if report.merge_commit
            else ReportType.PR_OPENED
            if report.pr_url
            else ReportType.DONE
        )
    if kind is ReportType.DONE:
        # A plain `done` from the refinery is its review approval: the runtime's verified
        # outcome (merged, conflict, gate-failed, pr-opened, failed) follows in the same
        # generation. Acting on it would release the refinery and make that outcome stale.
        return
    if kind is ReportType.MERGED and report.merge_commit:
        release_agent(ctx, agent, "Merged")
        close_merged(ctx, mr, report.merge_commit, "Merged")
    elif kind is ReportType.PR_OPENED and (report.pr_url or "").startswith("https://"):
        release_agent(ctx, agent, "PullRequestOpened")
        ctx.add(
            AnnotateBead(
                bead=mr.name,
                set={
                    "assignee": None,
                    "reason": "PullRequestOpened",
                    "message": report.pr_url,
                    "review": {
                        "prUrl": report.pr_url,
                        "prState": PRState.OPEN.value,
                        "unknownPolls": 0,
                    },
                },
                expect={"phase": BeadPhase.IN_PROGRESS.value, "assignee": agent.name},
                reason="PullRequestOpened",
                message=report.pr_url or "",
                event="Normal",
            ),
            (Kind.BEAD, mr.name),
        )
    else:
        reason = {
            ReportType.MERGED: "MergeUnverified",
            ReportType.PR_OPENED: "InvalidPullRequestUrl",
            ReportType.FAILED: "RefineryFailed",
            ReportType.EXITED: "RefineryExited",
        }.get(kind, "NoReviewOutcome")
        release_agent(ctx, agent, reason, event=WARNING)
        retry_or_fail(ctx, mr, reason, report.message or "")


def apply_pr_results(ctx: Pass) -> None:
    """Consume PR states written by the poller (merged, closed, unknown, open)."""
    limit = ctx.policy.review.pr_unknown_limit
    for name in ctx.index.pr_mrs:  # live merge requests with a pull request URL
        mr = ctx.snap.beads[name]
        review = mr.status.review
        if (
            review is None
            or review.pr_url is None
            or review.pr_state is None
            or not is_mr(mr)
            or mr.status.phase is not BeadPhase.IN_PROGRESS
            or not ctx.free(Kind.BEAD, name)
        ):
            continue
        state = review.pr_state
        if state is PRState.MERGED:
            close_merged(ctx, mr, review.merge_commit, "PullRequestMerged")
        elif state is PRState.CLOSED:
            fail_merge_request(ctx, mr, "PullRequestClosed", review.pr_url)
        elif state is PRState.UNKNOWN:
            count = review.unknown_polls + 1
            if count >= limit:
                fail_merge_request(
                    ctx,
                    mr,
                    "PullRequestUnknown",
                    f"{count} polls could not determine {review.pr_url}",
                )
                continue
            ctx.add(
                AnnotateBead(
                    bead=name,
                    set={"review": {"prState": None, "unknownPolls": count}},
                    expect={"phase": BeadPhase.IN_PROGRESS.value},
                    reason="PullRequestUnknown",
                ),
                (Kind.BEAD, name),
            )
        elif state is PRState.OPEN and review.unknown_polls:
            ctx.add(
                AnnotateBead(
                    bead=name,
                    set={"review": {"unknownPolls": 0}},
                    expect={"phase": BeadPhase.IN_PROGRESS.value},
                    reason="PullRequestOpen",
                ),
                (Kind.BEAD, name),
            )


# --- rules -------------------------------------------------------------------------------------


def repair_merge_requests(ctx: Pass) -> None:
    """Failed rework or source, abandoned and stuck reviews, PRs that never opened."""
    review = ctx.policy.review
    beads, claimed, facts = ctx.snap.beads, ctx.claimed, ctx.index.mr_facts
    planned, phases = ctx.planned_phases, ctx.index.phases  # ctx.phase_of, inlined
    closed, failed, in_progress = BeadPhase.CLOSED, BeadPhase.FAILED, BeadPhase.IN_PROGRESS
    for name in ctx.index.live_mrs:  # every one is a merge request (is_mr holds)
        if (Kind.BEAD, name) in claimed:
            continue
        phase = planned.get(name) or phases[name]
        if phase is closed or phase is failed:
            continue
        source, landing, _, _, pr, has_rework = facts[name]
        if has_rework:
            failed_rework = rework_failed(ctx, beads[name])
            if failed_rework is not None:
                fail_merge_request(ctx, beads[name], "ReworkFailed", failed_rework)
                continue
        if _source_gone_by(ctx, source, landing):
            message = "the reviewed work is no longer open"
            fail_merge_request(ctx, beads[name], "SourceFinished", message)
            continue
        if phase is not in_progress or pr is not None:
            continue
        mr = beads[name]
        hooked = [ctx.snap.agents[a] for a in ctx.hooked_to(name) if a in ctx.snap.agents]
        working = any(a.status.phase is AgentPhase.WORKING for a in hooked)
        if not hooked and ctx.older_than(mr.status.phase_since, review.abandoned_seconds):
            transition(
                ctx,
                mr,
                BeadPhase.OPEN,
                "ReviewAbandoned",
                "no refinery holds it",
                set={"assignee": None},
                event=WARNING,
            )
        elif _never_opened_pr(ctx, mr, working):
            fail_merge_request(
                ctx, mr, "PullRequestNeverOpened", "no pull request was opened in time"
            )
        elif (
            hooked
            and not working
            and all(ctx.older_than(a.status.phase_since, review.stuck_seconds) for a in hooked)
        ):
            for agent in hooked:
                if ctx.free(Kind.AGENT, agent.name):
                    release_agent(ctx, agent, "ReviewStuck", stop_pod=True, event=WARNING)
            transition(
                ctx,
                mr,
                BeadPhase.OPEN,
                "ReviewStuck",
                "requeued",
                set={"assignee": None},
                event=WARNING,
            )


def _source_gone(ctx: Pass, mr: Bead) -> bool:
    spec = mr.spec.merge_request
    if spec is None:
        return False
    return _source_gone_by(ctx, spec.source_bead, spec.landing)


def _source_gone_by(ctx: Pass, source: str, landing: bool) -> bool:
    if landing:
        convoy = ctx.snap.convoys.get(source)
        return convoy is None or (
            convoy.status.phase is not None and (convoy.status.phase.value in ("Failed", "Landed"))
        )
    phase = ctx.phase_of(source)
    return phase is None or phase is BeadPhase.CLOSED or phase is BeadPhase.FAILED


def _never_opened_pr(ctx: Pass, mr: Bead, working: bool) -> bool:
    rig = ctx.index.rigs.get(mr.spec.rig or "")
    if rig is None or rig.merge_strategy is not MergeStrategy.PR or working:
        return False
    started = mr.status.review.started_at if mr.status.review is not None else None
    return ctx.older_than(started, ctx.policy.review.orphaned_pr_seconds)


def poll_pull_requests(ctx: Pass) -> None:
    """Poll each open PR at most once per interval (lifecycle timestamps untouched)."""
    interval = ctx.policy.review.pr_poll_interval_seconds
    for name in ctx.index.pr_mrs:  # live merge requests with a pull request URL
        mr = ctx.snap.beads[name]
        url = pr_url(mr)
        if url is None or not is_mr(mr) or not ctx.free(Kind.BEAD, name):
            continue
        if ctx.phase(mr) is not BeadPhase.IN_PROGRESS or mr.status.review is None:
            continue
        last = mr.status.review.last_polled_at
        if last is not None and not ctx.older_than(last, interval - 1e-9):
            continue
        ctx.add(
            PollPullRequest(bead=name, url=url, now=ctx.now, reason="PollPullRequest"),
            (Kind.BEAD, name),
        )


def redispatch_refineries(ctx: Pass) -> None:
    """Re-dispatch an idle/stalled refinery still hooked to its in-review MR (with backoff)."""
    cooldown = ctx.policy.agents.redispatch_cooldown_seconds
    for name in ctx.index.parked:  # hooked workers that are not working
        agent = ctx.snap.agents[name]
        if agent.spec.role is not AgentRole.REFINERY:
            continue
        mr = hooked_in_progress(ctx, agent)
        if mr is None or not is_mr(mr) or pr_url(mr) is not None:
            continue
        if rework_pending(ctx, mr):
            release_agent(ctx, agent, "ReworkPending")
            transition(ctx, mr, BeadPhase.OPEN, "ReworkPending", set={"assignee": None})
            continue
        redispatch_or_give_up(ctx, agent, mr, "refinery", cooldown, fail_merge_request)


def pop_queues(ctx: Pass) -> None:
    """Per rig: if no direct review is under way, give the oldest ready MR to the refinery."""
    by_rig: dict[str, list[tuple[datetime, str]]] = {}
    busy: set[str] = set()
    facts, planned, snapshot_phases = ctx.index.mr_facts, ctx.planned_phases, ctx.index.phases
    open_, in_progress = BeadPhase.OPEN, BeadPhase.IN_PROGRESS
    for name in ctx.index.live_mrs:
        phase = planned.get(name) or snapshot_phases[name]  # ctx.phase_of, inlined
        if phase is in_progress:
            _, _, rig, _, pr, _ = facts[name]
            if pr is None:
                busy.add(rig)
        elif phase is open_ and snapshot_phases[name] is open_:  # open in the snapshot, too
            _, _, rig, created, _, _ = facts[name]
            by_rig.setdefault(rig, []).append(_age_key(created, name))
    for rig in sorted(by_rig):
        if rig in busy or rig not in ctx.index.rigs:
            continue
        # Oldest first. Usually the first MR is popped, so order lazily: a heap is linear to
        # build and pays log n per MR actually tried, where a full sort pays n log n per rig.
        queue = by_rig[rig]
        heapq.heapify(queue)
        while queue:
            if _pop(ctx, rig, ctx.snap.beads[heapq.heappop(queue)[1]]):
                break


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _age_key(created: datetime | None, name: str) -> tuple[datetime, str]:
    """Creation time (naive means UTC; unknown sorts as the epoch), then name.

    Aware datetimes order exactly as their POSIX timestamps do, without computing them.
    """
    if created is None:
        created = _EPOCH
    elif created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return (created, name)


def _pop(ctx: Pass, rig: str, mr: Bead) -> bool:
    """Try to start reviewing `mr`; True if the queue of the rig is now busy."""
    if mr.spec.cancel or not ctx.free(Kind.BEAD, mr.name) or rework_pending(ctx, mr):
        return False
    if attempts_exhausted(ctx, mr):
        fail_merge_request(ctx, mr, MAX_ATTEMPTS)
        return False
    if not backoff_over(ctx, mr):
        return False
    if not ctx.dispatch_allowed:
        return True
    name = ctx.index.refineries.get(rig) or names.refinery_name(ctx.town.name, rig)
    refinery = ctx.snap.agents.get(name)
    if (
        refinery is not None
        and name not in ctx.releases
        and (
            refinery.spec.hook is not None
            or refinery.status.phase is not AgentPhase.IDLE
            or refinery.metadata.deletion_timestamp is not None
            or not ctx.free(Kind.AGENT, name)
        )
    ):
        return True
    dispatch(ctx, name, refinery, mr, rig=rig, role="refinery")
    return True
