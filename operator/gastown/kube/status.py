"""The Town's status: counts, conditions and last-pass metrics, computed from a snapshot.

Pure functions; the loop writes the result only when it differs from what is on the Town
(ignoring the last pass's timing), so an idle town costs zero API writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gastown.model import AgentPhase, AgentRole, BeadPhase, Condition, ConditionStatus, TownMode
from gastown.model.spend import BudgetState, RateLimitState, TownSpend
from gastown.model.town import (
    AgentCounts,
    PassMetrics,
    PhaseCounts,
    TownStatus,
    Violation,
)
from gastown.reconcile.budgets import town_budget_states
from gastown.reconcile.ratelimits import rate_limit_state
from gastown.reconcile.snapshot import Snapshot
from gastown.reconcile.summary import agent_phase_counts, review_queue_lengths, work_bead_counts

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
BUDGET_EXCEEDED = "BudgetExceeded"
RATE_LIMITED = "RateLimited"
LEADER = "Leader"


def bead_counts(snapshot: Snapshot) -> PhaseCounts:
    """Work beads (issues and rework) by phase; merge requests are counted as queue."""
    index = snapshot.index
    counts = work_bead_counts(index.live.values())
    if index.finished is not None:
        counts.update(index.finished.work_counts)
    return PhaseCounts(
        open=counts[BeadPhase.OPEN],
        in_progress=counts[BeadPhase.IN_PROGRESS],
        in_review=counts[BeadPhase.IN_REVIEW],
        closed=counts[BeadPhase.CLOSED],
        failed=counts[BeadPhase.FAILED],
    )


def agent_counts(snapshot: Snapshot) -> AgentCounts:
    """Agents (all roles) by phase."""
    counts = agent_phase_counts(snapshot.agents.values())
    return AgentCounts(
        idle=counts[AgentPhase.IDLE],
        working=counts[AgentPhase.WORKING],
        stalled=counts[AgentPhase.STALLED],
    )


def _condition(
    previous: Sequence[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> Condition:
    value = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    old = next((c for c in previous if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == value else now
    return Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=since,
    )


def summary_line(
    snapshot: Snapshot,
    beads: PhaseCounts,
    violations: Sequence[Violation],
    budgets: Sequence[BudgetState] = (),
    limits: RateLimitState | None = None,
) -> str:
    """One line for `kubectl get town`."""
    town = snapshot.town
    if snapshot.faults:
        return f"dispatch held: {snapshot.faults[0].reason}"
    if town.status.circuit_breaker.open:
        return "dispatch paused: circuit breaker open"
    if budgets:
        return f"dispatch held: {budgets[0].scope} budget reached"
    if limits is not None and limits.breaker_open:
        return f"dispatch paused: {limits.recent} rate limits in the window"
    if limits is not None and limits.until is not None:
        return f"dispatch backing off: rate-limited ({limits.held_beads} held)"
    if violations:
        return f"{len(violations)} invariant violation(s): {violations[0].code}"
    if town.spec.mode is not TownMode.ACTIVE:
        return (
            f"{town.spec.mode.value}: no new dispatch"
            if town.spec.mode is not TownMode.SHADOW
            else "shadow: planning only, nothing applied"
        )
    busy = beads.open + beads.in_progress + beads.in_review
    if busy == 0:
        return "idle"
    return f"{beads.in_progress} working, {beads.in_review} in review, {beads.open} waiting"


def build_town_status(
    snapshot: Snapshot,
    violations: Sequence[Violation],
    last_pass: PassMetrics,
    planned: Sequence[str],
    now: datetime,
    leader: str | None = None,
) -> TownStatus:
    """The Town status after one pass (`leader`: this replica's identity, with leader
    election on; the Leader condition names it)."""
    town = snapshot.town
    generation = town.metadata.generation
    previous = town.status.conditions
    beads = bead_counts(snapshot)
    breaker = town.status.circuit_breaker
    budgets = town_budget_states(town.spec.policy.budget, town.status.spend or TownSpend(), now)
    limits = rate_limit_state(snapshot, town.spec.policy.rate_limits, now)
    degraded_reason, degraded_message = "AsExpected", "no invariant violations"
    if snapshot.faults:  # the town's configuration is unsafe: nothing new is dispatched
        degraded_reason = snapshot.faults[0].reason
        degraded_message = "; ".join(fault.message for fault in snapshot.faults[:3])[:32768]
    elif breaker.open:
        degraded_reason = "CircuitBreakerOpen"
        degraded_message = f"{breaker.recent_failures} dispatch failures: new dispatch paused"
    elif violations:
        degraded_reason = "InvariantViolations"
        degraded_message = "; ".join(f"{v.code}: {v.message}" for v in violations[:3])
    degraded = degraded_reason != "AsExpected"
    busy = beads.open + beads.in_progress + beads.in_review
    working_agents = sum(
        1 for a in snapshot.agents.values() if a.spec.hook and a.spec.role is not AgentRole.MAYOR
    )
    mode = town.spec.mode
    if mode is TownMode.ACTIVE:
        progressing = (
            busy > 0,
            "Working" if busy else "Idle",
            f"{beads.in_progress} in progress, {working_agents} agents hooked"
            if busy
            else "no open work",
        )
    else:
        progressing = (False, mode.value.capitalize(), f"mode is {mode.value}")
    conditions = [
        _condition(
            previous,
            READY,
            not degraded,
            "Reconciled" if not degraded else degraded_reason,
            "the town is reconciled" if not degraded else degraded_message,
            generation,
            now,
        ),
        _condition(
            previous, PROGRESSING, progressing[0], progressing[1], progressing[2], generation, now
        ),
        _condition(
            previous, DEGRADED, degraded, degraded_reason, degraded_message, generation, now
        ),
        _condition(
            previous,
            BUDGET_EXCEEDED,
            bool(budgets),
            "BudgetReached" if budgets else "UnderBudget",
            "; ".join(_budget_text(b) for b in budgets) + "; no new dispatch"
            if budgets
            else "spend is under every town budget",
            generation,
            now,
        ),
        _condition(previous, RATE_LIMITED, *_rate_limit_condition(limits), generation, now),
    ]
    if leader is not None:
        conditions.append(
            _condition(
                previous, LEADER, True, "Elected", f"reconciled by {leader}", generation, now
            )
        )
    return TownStatus(
        observed_generation=generation,
        conditions=conditions,
        summary=summary_line(snapshot, beads, violations, budgets, limits),
        beads=beads,
        agents=agent_counts(snapshot),
        queue=review_queue_lengths(snapshot.index.live.values()),  # finished ones are not queued
        last_pass=last_pass,
        violations=list(violations)[:50],
        circuit_breaker=breaker,
        spend=town.status.spend,
        budget_exceeded=budgets,
        rate_limits=limits,
        planned_actions=list(planned)[:50],
    )


def _budget_text(state: BudgetState) -> str:
    return f"{state.scope} {state.window}: ${state.spent_usd:.2f} of ${state.budget_usd:.2f}"


def _rate_limit_condition(limits: RateLimitState) -> tuple[bool, str, str]:
    """RateLimited: True while dispatch backs off for the provider's rate limit."""
    if limits.breaker_open:
        return (
            True,
            "RateLimitBreakerOpen",
            f"{limits.recent} rate-limited sessions in the window: new dispatch paused",
        )
    if limits.until is not None:
        until = limits.until.isoformat().replace("+00:00", "Z")
        return True, "Backoff", f"{limits.held_beads} beads held; dispatch resumes at {until}"
    return False, "NotLimited", "no rate limit in force"


def semantic(status: TownStatus) -> dict[str, Any]:
    """The parts of a status whose change is worth a write (not the last pass's timing)."""
    data = status.model_dump(mode="json", by_alias=True, exclude={"last_pass"})
    return data
