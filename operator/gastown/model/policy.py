"""Town policy: every threshold the reconciler uses, with the defaults of the original system.

Durations are integer seconds (fields end in `Seconds`) so that bounds are checked by the API
server and arithmetic in the reconciler is exact.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from gastown.model.common import Model, cel

_MINUTE = 60
_HOUR = 3600
_DAY = 86400


class AgentHealthPolicy(Model):
    """When an agent counts as lost or stuck in start-up."""

    heartbeat_timeout_seconds: int = Field(
        default=90,
        ge=10,
        le=_DAY,
        description="A working agent whose last heartbeat is older than this is lost.",
    )
    startup_grace_seconds: int = Field(
        default=180,
        ge=0,
        le=_DAY,
        description="Time after dispatch before a missing first heartbeat counts as lost.",
    )
    pod_pending_timeout_seconds: int = Field(
        default=600,
        ge=10,
        le=_DAY,
        description="A pod still Pending (unscheduled, pulling) after this is a failed dispatch.",
    )
    redispatch_cooldown_seconds: int = Field(
        default=60,
        ge=0,
        le=_DAY,
        description="Minimum time between two dispatches of the same hooked agent.",
    )
    lost_agent_timeout_seconds: int = Field(
        default=300,
        ge=10,
        le=_DAY,
        description="An in_progress bead whose agent is gone is reopened after this long.",
    )


class RetryPolicy(Model):
    """Per-bead retry accounting, across all the agents that tried it."""

    max_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Dispatch attempts after which the bead fails with a reason.",
    )
    backoff_seconds: list[Annotated[int, Field(ge=0, le=_DAY)]] = Field(
        default_factory=lambda: [2 * _MINUTE, 2 * _MINUTE, 5 * _MINUTE, 10 * _MINUTE, 30 * _MINUTE],
        min_length=1,
        max_length=20,
        description="Wait before attempt n+1 after n failures; the last value repeats.",
    )


class CircuitBreakerPolicy(Model):
    """Stops new dispatch town-wide when dispatches keep failing (bad image, no quota)."""

    failure_threshold: int = Field(
        default=20,
        ge=1,
        le=10000,
        description="Dispatch failures within the window that open the breaker.",
    )
    window_seconds: int = Field(
        default=30 * _MINUTE,
        ge=60,
        le=_DAY,
        description="Sliding window over which dispatch failures are counted.",
    )


class GuppPolicy(
    Model,
    json_schema_extra=cel(
        (
            "self.warnSeconds < self.escalateSeconds",
            "gupp.warnSeconds must be below escalateSeconds",
        ),
        (
            "self.escalateSeconds < self.forceStopSeconds",
            "gupp.escalateSeconds must be below forceStopSeconds",
        ),
    ),
):
    """The stuck-agent ladder, measured from the agent's last progress event."""

    warn_seconds: int = Field(
        default=15 * _MINUTE,
        ge=60,
        le=7 * _DAY,
        description="No progress for this long: nudge the agent (skipped while a tool runs).",
    )
    escalate_seconds: int = Field(
        default=60 * _MINUTE,
        ge=60,
        le=7 * _DAY,
        description="No progress for this long: escalate (nudge and raise an escalation).",
    )
    force_stop_seconds: int = Field(
        default=120 * _MINUTE,
        ge=60,
        le=7 * _DAY,
        description="No progress for this long: stop the pod once and mark the agent stalled.",
    )


class ReviewPolicy(Model):
    """The per-rig review/merge queue."""

    stuck_seconds: int = Field(
        default=30 * _MINUTE,
        ge=60,
        le=7 * _DAY,
        description="A merge request in review without refinery progress this long is requeued.",
    )
    abandoned_seconds: int = Field(
        default=2 * _MINUTE,
        ge=10,
        le=_DAY,
        description="A merge request in review whose refinery is gone is requeued after this.",
    )
    orphaned_pr_seconds: int = Field(
        default=30 * _MINUTE,
        ge=60,
        le=30 * _DAY,
        description="A pull request MR with no known PR URL after this long fails.",
    )
    pr_poll_interval_seconds: int = Field(
        default=60,
        ge=1,
        le=_DAY,
        description="Minimum time between two polls of the same pull request.",
    )
    pr_unknown_limit: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Consecutive polls with an unknown result after which the MR fails.",
    )
    max_rework_per_merge_request: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Rework beads one merge request may create (requested changes, conflicts, "
        "failed gates); one more request fails the merge request (ReworkLimitReached).",
    )


class LandingPolicy(Model):
    """Landing of review-then-land convoys."""

    max_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Landing merge requests tried before the convoy fails.",
    )
    cooldown_seconds: int = Field(
        default=2 * _MINUTE,
        ge=0,
        le=_DAY,
        description="Base cooldown between landing attempts; doubles after each failure.",
    )


class GcPolicy(Model):
    """Removal of agents nobody needs any more."""

    idle_agent_ttl_seconds: int = Field(
        default=_DAY,
        ge=60,
        le=30 * _DAY,
        description="Idle agents without a hook are removed after this long.",
    )


class RetentionPolicy(Model):
    """How long finished work is kept (like a Job's `ttlSecondsAfterFinished`); off by default."""

    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        le=10 * 365 * _DAY,
        description="Delete a landed or failed convoy this long after it finished (its "
        "materialised beads, merge requests and rework go with it, by garbage collection), and "
        "a finished issue that no existing convoy counts this long after it closed or failed "
        "(with its merge requests). Kept whatever their age: a dependency of unfinished work, "
        "a bead an agent is hooked to, the owner of unfinished beads, a convoy with unfinished "
        "members, escalations. At most 100 deletions per pass. Unset (the default): finished "
        "work is kept forever.",
    )


class ModelPrice(Model):
    """Price of one model, for coding agents that report tokens but no cost."""

    model: str = Field(
        min_length=1,
        max_length=128,
        description="Model name as the agent reports it; a trailing * matches a prefix, and * "
        "alone matches every model.",
    )
    input_per_mtok: float = Field(default=0, ge=0, description="USD per million input tokens.")
    output_per_mtok: float = Field(default=0, ge=0, description="USD per million output tokens.")
    cache_read_per_mtok: float = Field(
        default=0, ge=0, description="USD per million input tokens read from cache."
    )
    cache_write_per_mtok: float = Field(
        default=0, ge=0, description="USD per million input tokens written to cache."
    )


class BudgetAction(StrEnum):
    """What happens to running agents when a town or convoy budget is reached."""

    FINISH = "finish"
    STOP = "stop"


class BudgetPolicy(Model):
    """Spending limits in US dollars (unset: no limit), checked by the reconciler on every pass."""

    per_bead_usd: float | None = Field(
        default=None,
        gt=0,
        description="A bead whose spend (over all its attempts) exceeds this fails with reason "
        "BudgetExceeded; its running agent is stopped.",
    )
    per_convoy_usd: float | None = Field(
        default=None,
        gt=0,
        description="Default budget of every convoy (a convoy's own budgetUsd wins): at it, no "
        "new work of the convoy is dispatched.",
    )
    per_day_usd: float | None = Field(
        default=None,
        gt=0,
        description="Town spend per UTC day: at it, no new dispatch until the next day.",
    )
    per_month_usd: float | None = Field(
        default=None,
        gt=0,
        description="Town spend per UTC calendar month: at it, no new dispatch until the next "
        "month.",
    )
    on_exceeded: BudgetAction = Field(
        default=BudgetAction.FINISH,
        description="At a town or convoy budget: finish (running agents finish their bead, and "
        "the review and merge of beads whose coding is done go on, since finishing a bead means "
        "merging it; only new coding waits) or stop (running polecats are stopped and their "
        "beads reopened, no attempt spent, and merge requests wait too). Rate-limit holds and "
        "breakers hold merge requests in either mode.",
    )
    prices: list[ModelPrice] = Field(
        default_factory=list,
        max_length=50,
        description="Prices for agents that report tokens only (first match wins).",
    )


class RateLimitPolicy(Model):
    """Holding work when the model provider rate-limits the town's agents."""

    backoff_seconds: list[Annotated[int, Field(ge=1, le=_DAY)]] = Field(
        default_factory=lambda: [60, 2 * _MINUTE, 5 * _MINUTE, 15 * _MINUTE],
        min_length=1,
        max_length=20,
        description="Hold after the n-th rate-limited ending of a bead when the provider gave "
        "no retry-after (the last value repeats).",
    )
    max_hold_seconds: int = Field(
        default=_HOUR,
        ge=1,
        le=_DAY,
        description="A retry-after longer than this is cut to it.",
    )
    breaker_threshold: int = Field(
        default=5,
        ge=1,
        le=10000,
        description="Rate-limited endings within the window that pause all new dispatch.",
    )
    window_seconds: int = Field(
        default=15 * _MINUTE,
        ge=60,
        le=_DAY,
        description="Sliding window over which rate-limited endings are counted.",
    )


class TownPolicy(Model):
    """Timeouts, retries, the GUPP ladder and the circuit breaker of one town."""

    agents: AgentHealthPolicy = Field(
        default_factory=AgentHealthPolicy, description="Agent liveness."
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Per-bead retries.")
    circuit_breaker: CircuitBreakerPolicy = Field(
        default_factory=CircuitBreakerPolicy, description="Town-wide dispatch circuit breaker."
    )
    gupp: GuppPolicy = Field(default_factory=GuppPolicy, description="Stuck-agent ladder.")
    review: ReviewPolicy = Field(default_factory=ReviewPolicy, description="Review queue.")
    landing: LandingPolicy = Field(default_factory=LandingPolicy, description="Convoy landing.")
    gc: GcPolicy = Field(default_factory=GcPolicy, description="Agent garbage collection.")
    retention: RetentionPolicy = Field(
        default_factory=RetentionPolicy, description="Deletion of finished convoys and beads."
    )
    budget: BudgetPolicy = Field(
        default_factory=BudgetPolicy, description="Spending limits and model prices."
    )
    rate_limits: RateLimitPolicy = Field(
        default_factory=RateLimitPolicy, description="Holds and backoff on provider rate limits."
    )
