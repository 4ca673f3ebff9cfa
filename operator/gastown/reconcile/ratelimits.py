"""Rate-limit holds: a session that ends on the provider's rate limit spends no attempt.

The agent's `rate-limited` report (HTTP 429 or the CLI's equivalent, with the retry-after the
provider gave when it gave one) releases the agent and reopens the bead with its attempt given
back and `status.rateLimited` set: the bead is held until `until` (retry-after, else the policy's
backoff for the bead's n-th rate limit, at most `maxHoldSeconds`). Because every agent of a town
talks to the same provider and model, the town backs off too: no new dispatch at all while any
bead is held, and a breaker opens when `breakerThreshold` rate-limited endings fall inside the
window. Like the failure breaker, both are derived from the beads on every pass (nothing to
remember), and they lift on their own when the holds run out and the endings age out.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from gastown.model import Agent, Bead, BeadPhase, Report
from gastown.model.policy import RateLimitPolicy
from gastown.model.spend import RateLimitHold, RateLimitState
from gastown.reconcile.actions import WARNING
from gastown.reconcile.context import Pass, aware
from gastown.reconcile.finished import BeadMap
from gastown.reconcile.ops import release_agent, transition
from gastown.reconcile.snapshot import Snapshot
from gastown.reconcile.writes import iso

RATE_LIMITED = "RateLimited"
RATE_LIMIT_BREAKER = "RateLimitBreakerOpen"


def hold_seconds(policy: RateLimitPolicy, retry_after: int | None, count: int) -> int:
    """How long a bead is held after its `count`-th rate-limited ending."""
    if retry_after is None:
        steps = policy.backoff_seconds
        retry_after = steps[min(max(count, 1), len(steps)) - 1]
    return max(1, min(retry_after, policy.max_hold_seconds))


def rate_limit_state(snap: Snapshot, policy: RateLimitPolicy, now: datetime) -> RateLimitState:
    """Holds in force and recent rate-limited endings, derived from the beads."""
    held = recent = 0
    until: datetime | None = None
    window = timedelta(seconds=policy.window_seconds)
    beads: Iterable[Bead] = snap.beads.values()
    if isinstance(snap.beads, BeadMap):
        # Finished beads are never held: only their recent endings count (two bisections).
        finished = snap.beads.finished
        recent = finished.since(finished.rate_limited, aware(now) - window)
        live = snap.beads.live
        beads = [live[name] for name in snap.index.rate_limited]
    for bead in beads:
        hold = bead.status.rate_limited
        if hold is None:
            continue
        if now - aware(hold.at) <= window:
            recent += 1
        end = aware(hold.until)
        if end > now and bead.status.phase is BeadPhase.OPEN:
            held += 1
            until = end if until is None or end > until else until
    return RateLimitState(
        held_beads=held,
        until=until,
        recent=recent,
        breaker_open=recent >= policy.breaker_threshold,
        model=snap.town.spec.agent.coding_agent.model,
    )


def evaluate_rate_limits(ctx: Pass) -> None:
    """Back off all new dispatch while a hold is in force or the rate-limit breaker is open."""
    state = rate_limit_state(ctx.snap, ctx.policy.rate_limits, ctx.now)
    ctx.rate_limits = state
    if ctx.dispatch_blocked_reason is not None:
        return
    if state.breaker_open:
        ctx.dispatch_blocked_reason = RATE_LIMIT_BREAKER
    elif state.until is not None:
        ctx.dispatch_blocked_reason = RATE_LIMITED


def held(ctx: Pass, bead: Bead) -> bool:
    """True while the bead's rate-limit hold is in force."""
    hold = bead.status.rate_limited
    return hold is not None and aware(hold.until) > ctx.now


def apply_rate_limited(ctx: Pass, agent: Agent, bead: Bead, report: Report) -> None:
    """A session ended on a rate limit: release the agent, hold the bead, give the attempt back."""
    previous = bead.status.rate_limited
    count = (previous.count + 1) if previous is not None else 1
    retry_after = report.rate_limit.retry_after_seconds if report.rate_limit else None
    wait = hold_seconds(ctx.policy.rate_limits, retry_after, count)
    until = ctx.now + timedelta(seconds=wait)
    message = f"rate-limited by the model provider; held for {wait}s"
    hold = RateLimitHold(
        at=ctx.now,
        until=until,
        count=count,
        retry_after_seconds=retry_after,
        message=(report.message or "")[:1024],
    )
    _back_off_now(ctx, until)
    release_agent(ctx, agent, RATE_LIMITED, message, event=WARNING)
    record = hold.model_dump(mode="json", by_alias=True, exclude_none=True)
    record["at"], record["until"] = iso(ctx.now), iso(until)
    record["retryAfterSeconds"] = retry_after  # None clears an earlier hold's figure
    transition(
        ctx,
        bead,
        BeadPhase.OPEN,
        RATE_LIMITED,
        message,
        set={
            "assignee": None,
            "attempts": max(0, bead.status.attempts - 1),
            "rateLimited": record,
        },
        expect={"attempts": bead.status.attempts},
        event=WARNING,
    )


def _back_off_now(ctx: Pass, until: datetime) -> None:
    """The town backs off from this pass on: the holds were read at its start, and a dispatch
    later in the same pass would start a session into the limit just reported."""
    limits = ctx.rate_limits
    later = until if limits.until is None or until > limits.until else limits.until
    ctx.rate_limits = limits.model_copy(
        update={"held_beads": limits.held_beads + 1, "until": later}
    )
    if ctx.dispatch_blocked_reason is None:
        ctx.dispatch_blocked_reason = RATE_LIMITED
