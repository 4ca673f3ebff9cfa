"""Invariants checked after every pass, each with a stable CamelCase code and a human message.

They are written so that legitimate states never trip them: MRs waiting on a pull request do not
count as direct reviews, and the mayor is not a worker.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from gastown.model import AgentPhase, BeadPhase, Violation
from gastown.reconcile.context import Pass
from gastown.reconcile.convoys import convoy_counts, note_quiet, quiet_convoys
from gastown.reconcile.snapshot import Snapshot

DUPLICATE_HOOK = "DuplicateHook"
AGENT_ON_MANY_BEADS = "AgentOnMultipleBeads"
WORKING_WITHOUT_HOOK = "WorkingWithoutHook"
WORKING_WITHOUT_POD = "WorkingWithoutPod"
CONCURRENT_DIRECT_REVIEWS = "ConcurrentDirectReviews"
REVIEW_WITHOUT_MR = "ReviewWithoutMergeRequest"
CONVOY_PROGRESS = "ConvoyProgressMismatch"
ORPHAN_POD = "OrphanPod"
HOOK_ON_TERMINAL = "HookOnTerminalBead"
HOOK_ON_MISSING = "HookOnMissingBead"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def check_invariants(snapshot: Snapshot, now: datetime | None = None) -> list[Violation]:
    """All violations in the snapshot; time-dependent checks run only when `now` is given."""
    ctx = Pass(snapshot, now or _EPOCH)
    found: list[Violation] = []
    found += _hooks(ctx)
    found += _workers(ctx, timed=now is not None)
    found += _reviews(ctx)
    found += _convoys(ctx)
    found += _pods(ctx)
    return found


def _v(code: str, subject: str, message: str) -> Violation:
    return Violation(code=code, subject=subject[:253], message=message[:1024])


def _hooks(ctx: Pass) -> list[Violation]:
    found: list[Violation] = []
    for bead, agents in sorted(ctx.index.hooked.items()):
        if len(agents) > 1:
            found.append(
                _v(
                    DUPLICATE_HOOK,
                    bead,
                    f"bead {bead} has {len(agents)} agents hooked: {', '.join(agents)}",
                )
            )
    holders = Counter(ctx.index.holders)  # assignees of in_progress beads
    for agent, count in sorted(holders.items()):
        if agent is not None and count > 1:
            found.append(
                _v(
                    AGENT_ON_MANY_BEADS,
                    agent,
                    f"agent {agent} is the assignee of {count} in_progress beads",
                )
            )
    return found


def _workers(ctx: Pass, *, timed: bool) -> list[Violation]:
    found: list[Violation] = []
    grace = ctx.policy.agents.startup_grace_seconds
    facts, phases = ctx.index.agent_facts, ctx.index.phases
    closed, failed, working = BeadPhase.CLOSED, BeadPhase.FAILED, AgentPhase.WORKING
    for name in ctx.index.workers:  # every agent but the mayor, in name order
        _, hook, generation, agent_phase, dispatched, _, _, _ = facts[name]
        if hook is not None:
            phase = phases.get(hook)
            if phase is None:
                found.append(_v(HOOK_ON_MISSING, name, f"agent {name} is hooked to missing {hook}"))
            elif phase is closed or phase is failed:
                found.append(
                    _v(HOOK_ON_TERMINAL, name, f"agent {name} is hooked to {phase.value} {hook}")
                )
        if agent_phase is not working:
            continue
        if hook is None:
            found.append(_v(WORKING_WITHOUT_HOOK, name, f"working agent {name} has no hook"))
        pod = ctx.index.pod(name, generation)
        if timed and pod is None and ctx.older_than(dispatched, grace):
            found.append(
                _v(
                    WORKING_WITHOUT_POD,
                    name,
                    f"working agent {name} has no pod for generation {generation}",
                )
            )
    return found


def _reviews(ctx: Pass) -> list[Violation]:
    found: list[Violation] = []
    direct: Counter[str] = Counter()
    live_mr_sources: set[str] = set()
    facts, phases = ctx.index.mr_facts, ctx.index.phases
    open_, in_progress = BeadPhase.OPEN, BeadPhase.IN_PROGRESS
    # Closed and failed merge requests count for neither check: live ones are enough.
    for name in ctx.index.live_mrs:
        phase = phases[name]
        if phase is open_:
            live_mr_sources.add(facts[name][0])
        elif phase is in_progress:
            source, _, rig, _, pr, _ = facts[name]
            live_mr_sources.add(source)
            if pr is None:
                direct[rig] += 1
    for rig, count in sorted(direct.items()):
        if count > 1:
            found.append(
                _v(
                    CONCURRENT_DIRECT_REVIEWS,
                    rig,
                    f"rig {rig} has {count} direct-merge reviews in progress",
                )
            )
    for name in ctx.index.in_review:  # every in_review bead, in name order
        if name not in live_mr_sources:
            found.append(
                _v(
                    REVIEW_WITHOUT_MR,
                    name,
                    f"bead {name} is in_review without an open merge request",
                )
            )
    return found


def _convoys(ctx: Pass) -> list[Violation]:
    found: list[Violation] = []
    quiet = quiet_convoys(ctx, "check")
    for name in sorted(ctx.snap.convoys):
        convoy = ctx.snap.convoys[name]
        if convoy.status.observed_generation is None and convoy.status.phase is None:
            continue  # never reconciled yet: nothing has been claimed about it
        if name in quiet:
            continue  # checked before: same convoy object, same finished members
        total, closed, failed, _ = convoy_counts(ctx, convoy, settle=False)
        status = convoy.status
        if (status.total, status.closed, status.failed) == (total, closed, failed):
            note_quiet(ctx, convoy, "check")
        else:
            found.append(
                _v(
                    CONVOY_PROGRESS,
                    name,
                    f"convoy {name} says {status.closed}/{status.total} closed, "
                    f"{status.failed} failed; members say {closed}/{total}, "
                    f"{failed}",
                )
            )
    return found


def _pods(ctx: Pass) -> list[Violation]:
    return [
        _v(ORPHAN_POD, pod.name, f"pod {pod.name} runs for missing agent {pod.agent}")
        for pod in sorted(ctx.snap.pods.values(), key=lambda p: p.name)
        if pod.live and pod.agent not in ctx.snap.agents
    ]
