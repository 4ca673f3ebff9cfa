"""The per-rig review/merge queue run by the refinery.

At most one direct-merge MR is in review per rig, oldest first; MRs waiting on a pull request
(they have a PR URL) do not block the queue. Refinery reports: `merged` (with the merge commit
verified on the remote) closes the MR and its source; `conflict`/`gate-failed`/`request-changes`
become rework; `pr-opened` hands the MR to PR polling and releases the refinery; `done` while
rework is pending releases the refinery without merging. PR polling happens at most once per
interval per PR, records its time apart from lifecycle timestamps, and fails the MR after too many
consecutive unknown results. A PR URL is a claim: it counts as opened, and its merge closes the
MR, only once the provider's API confirmed its repository, head branch and commit and base branch
(`apply_pr_results`); a contradicted claim is refused and the MR goes back to review.
"""

from __future__ import annotations

import heapq
from datetime import UTC, datetime
from typing import Any

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
    ReviewStatus,
)
from gastown.reconcile import names
from gastown.reconcile.actions import WARNING, AnnotateBead, PollPullRequest
from gastown.reconcile.beads import (
    dispatch,
    hooked_in_progress,
    redispatch_or_give_up,
    surface_hold,
)
from gastown.reconcile.budgets import BUDGET_EXCEEDED, held_review_convoy, review_allowed
from gastown.reconcile.capacity import session_ending
from gastown.reconcile.claims import refuse, verdict
from gastown.reconcile.context import Pass
from gastown.reconcile.convoys import member_names
from gastown.reconcile.ops import (
    MAX_ATTEMPTS,
    agent_escalation_tag,
    close_merged,
    escalate,
    fail_merge_request,
    mark_applied,
    release_agent,
    retry_or_fail,
    transition,
)
from gastown.reconcile.ratelimits import apply_rate_limited
from gastown.reconcile.retries import attempts_exhausted, backoff_over, failure_record
from gastown.reconcile.rework import (
    REWORK_REPORTS,
    request_rework,
    rework_beads,
    rework_failed,
    rework_pending,
)
from gastown.reconcile.writes import Kind, MergeClaim, iso


def is_mr(bead: Bead) -> bool:
    """True for merge_request beads."""
    return bead.spec.type is BeadType.MERGE_REQUEST and bead.spec.merge_request is not None


def pr_url(bead: Bead) -> str | None:
    """The pull request URL of an MR, once the refinery opened one."""
    return bead.status.review.pr_url if bead.status.review is not None else None


# --- facts: refinery reports and PR results ----------------------------------------------------


def expected_source_sha(ctx: Pass, mr: Bead) -> str | None:
    """The verified head a merge of `mr` must contain.

    That is the head the last closed rework of the MR pushed (verified when it reported done), else
    the head verified when the work was submitted (`spec.mergeRequest.sourceSha`). None for merge
    requests made before heads were recorded, and for landings (see `merge_must_contain`).
    """
    for name in reversed(rework_beads(ctx, mr)):
        rework = ctx.snap.beads.get(name)
        if rework is not None and rework.status.phase is BeadPhase.CLOSED:
            if rework.status.head_sha:
                return rework.status.head_sha
            break
    spec = mr.spec.merge_request
    return spec.source_sha if spec is not None else None


def merge_must_contain(ctx: Pass, mr: Bead) -> tuple[str, ...]:
    """Commits a verified merge of `mr` must contain.

    A work MR: its verified source head. A landing MR: every verified merge of the convoy's work
    into the feature branch, so a landing cannot skip reviewed work.
    """
    spec = mr.spec.merge_request
    if spec is None:
        return ()
    if not spec.landing:
        sha = expected_source_sha(ctx, mr)
        return (sha,) if sha else ()
    convoy = ctx.snap.convoys.get(spec.source_bead)
    if convoy is None:
        return ()
    commits: list[str] = []
    for member in member_names(ctx, convoy):
        bead = ctx.snap.beads.get(member)
        merged = ctx.snap.beads.get(bead.status.merge_request or "") if bead else None
        review = merged.status.review if merged is not None else None
        if review is not None and review.merge_commit:
            commits.append(review.merge_commit)
    return tuple(commits)


def apply_refinery_report(ctx: Pass, agent: Agent, report: Report) -> None:
    """Apply one current-generation report of a refinery."""
    hook = agent.spec.hook
    mr = ctx.snap.beads.get(hook) if hook is not None else None
    relevant = (
        mr is not None
        and is_mr(mr)
        and (report.bead is None or report.bead == hook)
        and ctx.phase(mr) is BeadPhase.IN_PROGRESS
        # Only the refinery the MR is assigned to may change it: every outcome's write expects
        # it, so acting for another would conflict on every pass (and the report never apply).
        and mr.status.assignee == agent.name
        and ctx.free(Kind.BEAD, mr.name)
    )
    if report.type is ReportType.ESCALATE:
        escalate(
            ctx,
            agent.name,
            agent_escalation_tag(agent),
            f"{agent.name} asks for help",
            report.message or "The refinery escalated without details.",
        )
    elif relevant and mr is not None and not _apply_outcome(ctx, agent, mr, report):
        return  # a merge claim is being verified: the report stays unapplied until then
    mark_applied(ctx, agent, report.seq)


def _apply_outcome(ctx: Pass, agent: Agent, mr: Bead, report: Report) -> bool:
    """Apply a refinery's outcome; False while a merge claim is being verified."""
    if report.type is ReportType.USAGE:
        return True  # usage only (counted by `accounting`); the outcome is another report
    if report.type is ReportType.RATE_LIMITED:
        apply_rate_limited(ctx, agent, mr, report)  # held like any bead, no attempt spent
        return True
    if report.type in REWORK_REPORTS:
        request_rework(ctx, agent, mr, report)
        return True
    if rework_pending(ctx, mr):
        # Never merge while rework is pending (the original's false merge): release only.
        release_agent(ctx, agent, "ReworkPending")
        transition(
            ctx, mr, BeadPhase.OPEN, "ReworkPending", "waiting for rework", set={"assignee": None}
        )
        return True
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
        return True
    if kind is ReportType.MERGED and report.merge_commit:
        return _merged(ctx, agent, mr, report, report.merge_commit)
    if kind is ReportType.PR_OPENED and report.pr_url and report.pr_url.startswith("https://"):
        _claim_pull_request(ctx, agent, mr, report, report.pr_url)
    else:
        reason = {
            ReportType.MERGED: "MergeUnverified",
            ReportType.PR_OPENED: "InvalidPullRequestUrl",
            ReportType.FAILED: "RefineryFailed",
            ReportType.EXITED: "RefineryExited",
        }.get(kind, "NoReviewOutcome")
        release_agent(ctx, agent, reason, event=WARNING)
        retry_or_fail(ctx, mr, reason, report.message or "")
    return True


def _merged(ctx: Pass, agent: Agent, mr: Bead, report: Report, merge_commit: str) -> bool:
    """Close the MR and its source only once the merge is verified on the remote."""
    spec = mr.spec.merge_request
    assert spec is not None  # is_mr
    claim = MergeClaim(
        rig=mr.spec.rig or "",
        target=spec.target_branch,
        merge_commit=merge_commit,
        contains=merge_must_contain(ctx, mr),
    )
    checked = verdict(ctx, agent, mr, report, claim)
    if checked is None:
        return False
    if not checked.ok:
        refuse(ctx, agent, mr, report, "MergeUnverified", checked.message)
        return True
    release_agent(ctx, agent, "Merged")
    close_merged(ctx, mr, merge_commit, "Merged")
    return True


PR_UNVERIFIED = "PullRequestUnverified"


def _claim_pull_request(ctx: Pass, agent: Agent, mr: Bead, report: Report, url: str) -> None:
    """Record a refinery's pr-opened claim and release it; the PR does not count as opened yet.

    The URL is only a claim: the first poll (due at once, `lastPolledAt` is cleared) asks the
    provider's API whether it is a PR of the rig's repository carrying the merge request's head
    branch and commit into its target branch (see `apply_pr_results`).
    """
    release_agent(ctx, agent, "PullRequestClaimed")
    ctx.add(
        AnnotateBead(
            bead=mr.name,
            set={
                "assignee": None,
                "reason": "PullRequestClaimed",
                "message": f"verifying {url} with the provider",
                "review": {
                    "prUrl": url,
                    "prState": None,
                    "prMismatch": None,
                    "prVerifiedAt": None,
                    "lastPolledAt": None,
                    "unknownPolls": 0,
                    "prClaim": {
                        "agent": agent.name,
                        "generation": report.generation,
                        "seq": report.seq,
                    },
                },
            },
            expect={"phase": BeadPhase.IN_PROGRESS.value, "assignee": agent.name},
            reason="PullRequestClaimed",
            message=f"{agent.name} reports {url}; it counts once the provider confirms it",
            event="Normal",
        ),
        (Kind.BEAD, mr.name),
    )


def apply_pr_results(ctx: Pass) -> None:
    """Consume PR results written by the poller (open, merged, closed, unknown, mismatch)."""
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
        if state is PRState.MISMATCH:
            _refuse_pull_request(ctx, mr, review)
        elif state is PRState.MERGED and review.merge_commit:
            # Written by the poller only after the provider confirmed head, base and commit.
            close_merged(ctx, mr, review.merge_commit, "PullRequestMerged")
        elif state is PRState.CLOSED:
            fail_merge_request(ctx, mr, "PullRequestClosed", review.pr_url)
        elif state is PRState.OPEN:
            _pull_request_open(ctx, mr, review)
        else:  # unknown, or merged without a merge commit (nothing we could record)
            _pull_request_unknown(ctx, mr, review)


def _pull_request_open(ctx: Pass, mr: Bead, review: ReviewStatus) -> None:
    """The provider confirmed the PR: the first time, it now counts as opened."""
    if review.pr_verified_at is None:
        ctx.add(
            AnnotateBead(
                bead=mr.name,
                set={
                    "reason": "PullRequestOpened",
                    "message": review.pr_url,
                    "review": {"prVerifiedAt": iso(ctx.now), "unknownPolls": 0},
                },
                expect={"phase": BeadPhase.IN_PROGRESS.value},
                reason="PullRequestOpened",
                message=f"the provider confirmed {review.pr_url}",
                event="Normal",
            ),
            (Kind.BEAD, mr.name),
        )
    elif review.unknown_polls:
        ctx.add(
            AnnotateBead(
                bead=mr.name,
                set={"review": {"unknownPolls": 0}},
                expect={"phase": BeadPhase.IN_PROGRESS.value},
                reason="PullRequestOpen",
            ),
            (Kind.BEAD, mr.name),
        )


def _pull_request_unknown(ctx: Pass, mr: Bead, review: ReviewStatus) -> None:
    """Count a poll that could not tell; too many in a row fail the merge request."""
    count = review.unknown_polls + 1
    if count >= ctx.policy.review.pr_unknown_limit:
        message = f"{count} polls could not determine {review.pr_url}"
        fail_merge_request(ctx, mr, "PullRequestUnknown", message)
        return
    ctx.add(
        AnnotateBead(
            bead=mr.name,
            set={"review": {"prState": None, "unknownPolls": count}},
            expect={"phase": BeadPhase.IN_PROGRESS.value},
            reason="PullRequestUnknown",
        ),
        (Kind.BEAD, mr.name),
    )


def _refuse_pull_request(ctx: Pass, mr: Bead, review: ReviewStatus) -> None:
    """The provider contradicts the PR claim: never close on it.

    The claim is recorded as refused (the ClaimsVerified condition and a Warning Event), the URL
    is dropped and the merge request goes back to the review queue as a failed attempt (with
    backoff); once its attempts are spent it fails. Attempts are counted per refinery dispatch,
    so a refinery that keeps claiming a wrong PR cannot loop forever.
    """
    message = f"{review.pr_url}: {review.pr_mismatch or 'the provider contradicts the claim'}"
    message = message[:1024]
    claim = review.pr_claim
    fields: dict[str, Any] = {
        "assignee": None,
        "refusedClaim": {
            "agent": claim.agent if claim is not None else (review.refinery or "unknown"),
            "generation": claim.generation if claim is not None else 0,
            "seq": claim.seq if claim is not None else 0,
            "reason": PR_UNVERIFIED,
            "message": message,
            "at": iso(ctx.now),
        },
        "review": {
            "prUrl": None,
            "prState": None,
            "prMismatch": None,
            "prClaim": None,
            "prVerifiedAt": None,
            "lastPolledAt": None,
            "unknownPolls": 0,
        },
    }
    if attempts_exhausted(ctx, mr):
        fail_merge_request(ctx, mr, PR_UNVERIFIED, message, set=fields)
        return
    transition(
        ctx,
        mr,
        BeadPhase.OPEN,
        PR_UNVERIFIED,
        message,
        set={**fields, **failure_record(ctx, PR_UNVERIFIED, message)},
        expect={"attempts": mr.status.attempts},
        event=WARNING,
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
    """Poll each PR at most once per interval (lifecycle timestamps untouched).

    A freshly claimed PR has no poll time, so its first poll, which verifies the claim, is due
    at once. Every poll carries what the PR must be: the MR's branch at its expected head commit
    into its target branch. When that commit is unknown (MRs made before heads were recorded,
    landings), only the repository and the branches are checked.
    """
    interval = ctx.policy.review.pr_poll_interval_seconds
    for name in ctx.index.pr_mrs:  # live merge requests with a pull request URL
        mr = ctx.snap.beads[name]
        url = pr_url(mr)
        spec = mr.spec.merge_request
        if url is None or spec is None or not is_mr(mr) or not ctx.free(Kind.BEAD, name):
            continue
        if ctx.phase(mr) is not BeadPhase.IN_PROGRESS or mr.status.review is None:
            continue
        last = mr.status.review.last_polled_at
        if last is not None and not ctx.older_than(last, interval - 1e-9):
            continue
        ctx.add(
            PollPullRequest(
                bead=name,
                url=url,
                now=ctx.now,
                head_branch=spec.branch,
                base_branch=spec.target_branch,
                head_sha=expected_source_sha(ctx, mr),
                reason="PollPullRequest",
            ),
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
        allowed = review_allowed(ctx, mr)
        redispatch_or_give_up(ctx, agent, mr, "refinery", cooldown, fail_merge_request, allowed)


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
    if not review_allowed(ctx, mr):
        convoy = held_review_convoy(ctx, mr) if ctx.dispatch_allowed else None
        if convoy is None:
            return True  # the whole town holds: no MR of the rig starts
        # `onExceeded: stop` at the convoy's budget: MRs of other convoys may go first.
        state = ctx.convoy_budgets[convoy]
        spent = f"${state.spent_usd:.2f} of ${state.budget_usd:.2f}"
        message = f"convoy {convoy} is at its budget ({spent}): the merge waits"
        surface_hold(ctx, mr, BUDGET_EXCEEDED, message)
        return False
    name = ctx.index.refineries.get(rig) or names.refinery_name(ctx.town.name, rig)
    refinery = ctx.snap.agents.get(name)
    if refinery is not None and (
        session_ending(ctx, refinery)  # its last report (the review's usage) is on the way
        or (
            name not in ctx.releases
            and (
                refinery.spec.hook is not None
                or refinery.status.phase is not AgentPhase.IDLE
                or refinery.metadata.deletion_timestamp is not None
                or not ctx.free(Kind.AGENT, name)
            )
        )
    ):
        return True
    dispatch(ctx, name, refinery, mr, rig=rig, role="refinery")
    return True
