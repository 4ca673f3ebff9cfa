"""Retry accounting: per-bead attempts with backoff, and the town circuit breaker.

Attempts are counted on the bead, across all the agents that tried it, and bumped only by a
dispatch (compare-and-set on the previous count), so a retry storm is impossible: after
`max_attempts` the bead fails with a reason, and between attempts the bead waits
`backoff_seconds[n-1]` after its last failure (the last value repeats).

The circuit breaker is derived, not accumulated: it counts beads whose last failure lies inside
the sliding window. Nothing has to be remembered across passes for it to be exact, and it closes
on its own when failures age out of the window.
"""

from __future__ import annotations

import bisect
from datetime import datetime

from gastown.model import Bead
from gastown.model.policy import RetryPolicy
from gastown.reconcile.actions import SetCircuitBreaker
from gastown.reconcile.context import Pass, aware
from gastown.reconcile.writes import Kind, iso

BREAKER_OPENED = "CircuitBreakerOpened"
BREAKER_CLOSED = "CircuitBreakerClosed"


def backoff_seconds(policy: RetryPolicy, failures: int) -> int:
    """Wait before the next attempt after `failures` failed attempts (0 means none)."""
    if failures <= 0:
        return 0
    steps = policy.backoff_seconds
    return steps[min(failures, len(steps)) - 1]


def attempts_exhausted(ctx: Pass, bead: Bead) -> bool:
    """True if the bead has used all of its dispatch attempts."""
    return bead.status.attempts >= ctx.policy.retry.max_attempts


def backoff_over(ctx: Pass, bead: Bead) -> bool:
    """True if a bead that failed before has waited long enough for its next attempt."""
    last_failure = bead.status.last_failure_at
    if last_failure is None or bead.status.attempts == 0:
        return True
    wait = backoff_seconds(ctx.policy.retry, bead.status.attempts)
    age = ctx.age(last_failure)
    return age is not None and age >= wait


def failure_record(ctx: Pass, reason: str, message: str) -> dict[str, object]:
    """Status fields that record a failed attempt on a bead."""
    return {"lastFailureAt": iso(ctx.now), "reason": reason, "message": message[:1024] or None}


def recent_failures(ctx: Pass) -> tuple[int, datetime | None]:
    """Beads whose last failure is inside the breaker window, and the newest such failure."""
    window = ctx.policy.circuit_breaker.window_seconds
    count = 0
    newest: datetime | None = None
    for failed_at in ctx.index.failures:
        if ctx.within(failed_at, window):
            count += 1
            if newest is None or aware(failed_at) > newest:
                newest = aware(failed_at)
    finished = ctx.index.finished_failures  # sorted: two bisections instead of a walk
    if finished:
        low = bisect.bisect_left(finished, ctx.since(window))
        high = bisect.bisect_right(finished, ctx.now)
        if high > low:
            count += high - low
            if newest is None or finished[high - 1] > newest:
                newest = finished[high - 1]
    return count, newest


def evaluate_circuit_breaker(ctx: Pass) -> None:
    """Open the breaker (pausing dispatch for this pass) and record changes on the Town."""
    count, newest = recent_failures(ctx)
    threshold = ctx.policy.circuit_breaker.failure_threshold
    is_open = count >= threshold
    if is_open:
        ctx.dispatch_blocked_reason = BREAKER_OPENED
    current = ctx.town.status.circuit_breaker
    if current.open == is_open and current.recent_failures == count:
        return
    opened_at = current.opened_at
    message = ""
    if is_open and not current.open:
        opened_at = newest or ctx.now
        message = (
            f"{count} beads failed a dispatch attempt in the last "
            f"{ctx.policy.circuit_breaker.window_seconds // 60} min; new dispatch is paused"
        )
    elif current.open and not is_open:
        message = "dispatch failures aged out of the window; dispatch resumes"
    ctx.add(
        SetCircuitBreaker(
            town=ctx.town.name,
            open=is_open,
            recent_failures=count,
            opened_at=opened_at,
            reason=BREAKER_OPENED if is_open else BREAKER_CLOSED,
            message=message,
        ),
        (Kind.TOWN, ctx.town.name),
    )
