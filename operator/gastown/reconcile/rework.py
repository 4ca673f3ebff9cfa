"""Rework: the refinery's request-changes (and merge conflicts, failed gates) become a rework
bead that blocks the merge request; closing it unblocks the merge request, which is re-reviewed.

A merge request with an unresolved rework blocker is never completed or re-dispatched: a
refinery `done` (or even `merged`) while rework is pending releases the refinery without merging.
A conflict therefore never reaches the target branch: it is fixed on the branch under review.
"""

from __future__ import annotations

from typing import Any

from gastown.model import Agent, Bead, BeadPhase, BeadType, Report, ReportType
from gastown.reconcile import names
from gastown.reconcile.actions import CreateReworkBead, labels_for
from gastown.reconcile.context import Pass
from gastown.reconcile.ops import fail_merge_request, release_agent, transition
from gastown.reconcile.writes import Kind

REWORK_LIMIT = "ReworkLimitReached"
REWORK_REPORTS = (ReportType.REQUEST_CHANGES, ReportType.CONFLICT, ReportType.GATE_FAILED)
_REASONS = {
    ReportType.REQUEST_CHANGES: "ChangesRequested",
    ReportType.CONFLICT: "MergeConflict",
    ReportType.GATE_FAILED: "GateFailed",
}


def rework_beads(ctx: Pass, mr: Bead) -> list[str]:
    """Rework beads created for a merge request."""
    return list(mr.status.review.rework) if mr.status.review is not None else []


def rework_pending(ctx: Pass, mr: Bead) -> bool:
    """True while a rework bead of the MR is not closed (missing counts as pending)."""
    return any(ctx.phase_of(name) is not BeadPhase.CLOSED for name in rework_beads(ctx, mr))


def rework_failed(ctx: Pass, mr: Bead) -> str | None:
    """The name of a failed rework bead of the MR, if any."""
    for name in rework_beads(ctx, mr):
        if ctx.phase_of(name) is BeadPhase.FAILED:
            return name
    return None


def rework_limit_reached(ctx: Pass, mr: Bead, name: str) -> bool:
    """Fail the MR instead of creating rework bead `name` when it has had its share (a cap on
    what a reviewer can make the operator create); True if so."""
    made = rework_beads(ctx, mr)
    limit = ctx.policy.review.max_rework_per_merge_request
    if name in made or len(made) < limit:
        return False
    fail_merge_request(
        ctx,
        mr,
        REWORK_LIMIT,
        f"{len(made)} rework beads were made for this merge request, the limit "
        f"(policy.review.maxReworkPerMergeRequest) is {limit}",
    )
    return True


def request_rework(ctx: Pass, refinery: Agent, mr: Bead, report: Report) -> None:
    """Create the rework bead of this review attempt; the MR waits (open) until it closes."""
    spec_mr = mr.spec.merge_request
    if spec_mr is None:
        return
    name = names.rework_name(mr.name, max(mr.status.attempts, 1))
    if rework_limit_reached(ctx, mr, name):
        return
    source = ctx.snap.beads.get(spec_mr.source_bead)
    title = source.spec.title if source is not None else spec_mr.source_bead
    reason = _REASONS.get(report.type, "ChangesRequested")
    feedback = report.feedback or report.message or reason
    if report.type is ReportType.CONFLICT:
        feedback = (
            f"Merging {spec_mr.branch} into {spec_mr.target_branch} conflicts. Rebase or merge "
            f"{spec_mr.target_branch} into {spec_mr.branch}, resolve the conflicts and push.\n\n"
            + (report.feedback or report.message or "")
        ).strip()
    spec: dict[str, Any] = {
        "town": ctx.town.name,
        "rig": mr.spec.rig,
        "type": BeadType.REWORK.value,
        "title": f"Rework: {title}"[:256],
        "description": feedback[:20000],
        "priority": (source.spec.priority if source is not None else mr.spec.priority).value,
        "rework": {
            "mergeRequest": mr.name,
            "sourceBead": spec_mr.source_bead,
            "branch": spec_mr.branch,
            "feedback": feedback[:20000],
            "files": list(report.files),
        },
    }
    if name not in ctx.snap.beads and ctx.free(Kind.BEAD, name):
        ctx.add(
            CreateReworkBead(
                town=ctx.town.name,
                bead=name,
                spec=spec,
                owner=(Kind.BEAD, mr.name),
                labels=labels_for(ctx.town.name, mergeRequest=mr.name),
                reason=reason,
                message=feedback[:1024],
            ),
            (Kind.BEAD, name),
        )
    rework = rework_beads(ctx, mr)
    if name not in rework:
        rework.append(name)
    release_agent(ctx, refinery, reason)
    transition(
        ctx,
        mr,
        BeadPhase.OPEN,
        reason,
        f"waiting for {name}",
        set={"assignee": None, "review": {"rework": rework}},
        expect={"attempts": mr.status.attempts},
    )
