"""Reading durable facts out of the snapshot: agent reports, pod observations, PR results.

Facts live in the objects whose authors own them (an agent's reports in its Agent status, pod
phases in Pods, PR results in the merge request's review status). This module only *reads* them;
the rule families turn them into actions, and every such action records that the fact was
applied (e.g. `appliedReportSeq`) in the same plan, so the same fact never applies twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from gastown.model import Agent, Report
from gastown.reconcile.context import Pass, aware
from gastown.reconcile.snapshot import PodView

# A pod that has just terminated may have written its final report a moment before; wait this
# long for the report to become visible before treating the exit as "ended without a report".
REPORT_GRACE_SECONDS = 30

# Pending reasons that will not resolve on their own; anything else gets the pending timeout.
_HOPELESS_PENDING = frozenset(
    {"ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError"}
)
_SLOW_PENDING = frozenset({"ErrImagePull"})

POD_REJECTED = "PodRejected"
"""Session end reason when the API server refused to create the pod (see `AgentStatus`)."""


@dataclass(frozen=True)
class PendingReports:
    """An agent's unapplied reports: stale ones to drop and the next one to apply."""

    drop_upto: int  # highest seq of leading stale reports (0 if none)
    next: Report | None  # first report of the current generation, if any

    @property
    def applied_upto(self) -> int:
        """The appliedReportSeq after applying `next` (or dropping the stale ones)."""
        return self.next.seq if self.next is not None else self.drop_upto


def pending_reports(agent: Agent) -> PendingReports:
    """Unapplied reports in seq order: a report from an older generation has no effect."""
    applied = agent.status.applied_report_seq
    drop = 0
    for report in sorted(agent.status.reports, key=lambda r: r.seq):
        if report.seq <= applied:
            continue
        if report.generation != agent.spec.generation:
            drop = report.seq
            continue
        return PendingReports(drop_upto=drop, next=report)
    return PendingReports(drop_upto=drop, next=None)


class Session(StrEnum):
    """How a working agent's current session looks from its pod and heartbeats."""

    STARTING = "Starting"
    HEALTHY = "Healthy"
    LOST = "Lost"  # no sign of life: the session may still be running somewhere
    ENDED = "Ended"  # the pod terminated or can never start


@dataclass(frozen=True)
class SessionState:
    """A session classification with the reason behind it."""

    state: Session
    reason: str = ""
    message: str = ""  # details for the bead's failure record, when there are any


def current_heartbeat(agent: Agent) -> datetime | None:
    """The last heartbeat of the current generation (older generations do not count)."""
    activity = agent.status.activity
    if activity.generation != agent.spec.generation:
        return None
    return activity.last_heartbeat_at


_HEALTHY = SessionState(Session.HEALTHY)
_STARTING = SessionState(Session.STARTING)


def classify_session(ctx: Pass, agent: Agent, pod: PodView | None) -> SessionState:
    """Classify the current-generation session of a working agent."""
    agents = ctx.policy.agents
    dispatched = agent.status.dispatched_at
    if pod is None:
        rejection = agent.status.pod_rejection
        if rejection is not None and rejection.generation == agent.spec.generation:
            # The API server refused this generation's pod: it will never run. A failed
            # attempt like any other (retry with backoff, or fail), with the API's answer.
            return SessionState(Session.ENDED, POD_REJECTED, rejection.message)
        if ctx.older_than(dispatched, agents.startup_grace_seconds):
            return SessionState(Session.LOST, "PodMissing")
        return _STARTING
    if pod.deleting:
        return SessionState(Session.LOST, "PodDeleted")
    if pod.finished:
        if pod.phase == "Succeeded" and ctx.within(pod.finished_at, REPORT_GRACE_SECONDS):
            return _HEALTHY
        return SessionState(Session.ENDED, _end_reason(pod))
    if pod.phase == "Pending":
        return _pending(ctx, pod)
    return _liveness(ctx, agent, pod)


def _pending(ctx: Pass, pod: PodView) -> SessionState:
    agents = ctx.policy.agents
    if pod.reason in _HOPELESS_PENDING:
        return SessionState(Session.ENDED, pod.reason or "PodFailed")
    if pod.reason in _SLOW_PENDING and ctx.older_than(pod.created_at, agents.startup_grace_seconds):
        return SessionState(Session.ENDED, pod.reason or "PodFailed")
    if ctx.older_than(pod.created_at, agents.pod_pending_timeout_seconds):
        return SessionState(Session.ENDED, "PodPendingTimeout")
    return _STARTING


def _liveness(ctx: Pass, agent: Agent, pod: PodView) -> SessionState:
    agents = ctx.policy.agents
    beat = current_heartbeat(agent)
    if beat is None:
        started = pod.started_at or pod.created_at
        if ctx.older_than(started, agents.startup_grace_seconds):
            return SessionState(Session.LOST, "NoHeartbeat")
        return _STARTING
    if (ctx.now - aware(beat)).total_seconds() > agents.heartbeat_timeout_seconds:  # older_than
        return SessionState(Session.LOST, "HeartbeatLost")
    return _HEALTHY


def _end_reason(pod: PodView) -> str:
    if pod.reason == "OOMKilled":
        return "OOMKilled"
    if pod.phase == "Succeeded" or pod.exit_code == 0:
        return "ExitedWithoutReport"
    if pod.exit_code is not None:
        return f"ExitCode{pod.exit_code}"
    return pod.reason or "PodFailed"
