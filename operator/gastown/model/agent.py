"""The Agent kind: one agent identity. The operator writes spec; the agent's pod writes reports.

Status is shared between two writers, each owning its own fields: the operator (phase, pod,
conditions, appliedReportSeq, gupp) and the agent runtime (activity, reports, checkpoint,
statusMessage, deliveredNudges). Both use optimistic concurrency on status writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from gastown.model.common import Conditions, LabelName, Model, ObjectName, cel
from gastown.model.enums import AgentPhase, AgentRole, ReportType
from gastown.model.spend import RateLimitInfo, Usage

ToolName = Annotated[str, Field(max_length=128)]

RUNTIME_STATUS_FIELDS = ("activity", "reports", "checkpoint", "statusMessage", "deliveredNudges")
"""The Agent status fields the agent's pod owns (API names); every other one is the operator's.
The admission policy (`gastown.kube.identity.agent_status_policy`) refuses an agent token that
changes any other field."""

MAX_REPORTS = 64
"""Reports an Agent status holds; the runtime trims applied ones (oldest first) to make room."""


class Nudge(Model):
    """A message the operator asks the runtime to deliver into the coding agent's session."""

    id: str = Field(min_length=1, max_length=64, description="Unique id, acknowledged once.")
    message: str = Field(max_length=4096, description="Text delivered to the coding agent.")
    source: str = Field(max_length=64, description="Why, e.g. gupp-warn or rework.")
    created_at: datetime = Field(description="When it was posted.")


class AgentSpec(
    Model,
    json_schema_extra=cel(
        ("self.role == 'mayor' || has(self.rig)", "polecats and refineries need a rig"),
        (
            "!has(oldSelf.generation) || self.generation >= oldSelf.generation",
            "generation never decreases",
        ),
    ),
):
    """Desired state of an agent (written by the operator)."""

    town: ObjectName = Field(
        description="Town the agent belongs to.",
        json_schema_extra=cel(("self == oldSelf", "town is immutable")),
    )
    role: AgentRole = Field(
        description="polecat, refinery or mayor.",
        json_schema_extra=cel(("self == oldSelf", "role is immutable")),
    )
    rig: LabelName | None = Field(default=None, description="Rig of a polecat or refinery.")
    hook: ObjectName | None = Field(default=None, description="Bead the agent must run.")
    generation: int = Field(
        default=0, ge=0, description="Dispatch generation; each dispatch increments it."
    )
    nudges: list[Nudge] = Field(
        default_factory=list, max_length=20, description="Pending nudges for the runtime."
    )


class Activity(Model):
    """The activity watermark written by the runtime with every heartbeat."""

    generation: int = Field(default=0, ge=0, description="Generation the heartbeat is for.")
    last_heartbeat_at: datetime | None = Field(default=None, description="Liveness.")
    last_event_type: str | None = Field(default=None, max_length=64, description="Last event.")
    last_event_at: datetime | None = Field(default=None, description="Last progress event.")
    active_tools: list[ToolName] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Tool calls in flight. Claude Code and Codex report a tool while it runs; OpenCode "
            "reports a tool only once it has finished and Aider reports no tool calls, so for "
            "those two this stays empty (their output still moves lastEventAt)."
        ),
    )


class Report(Model):
    """One durable fact from the agent: done, request-changes, merged, failed, ..."""

    seq: int = Field(ge=1, description="Sequence number, increasing over the agent's life.")
    generation: int = Field(ge=0, description="Dispatch generation it was produced in.")
    type: ReportType = Field(description="What happened.")
    at: datetime = Field(description="When.")
    bead: str | None = Field(default=None, max_length=253, description="Bead it is about.")
    branch: str | None = Field(default=None, max_length=255, description="Pushed branch.")
    head_sha: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[0-9a-f]{7,64}$",
        description="Commit the pushed branch points at (a polecat's done); the operator checks "
        "it against the remote before any merge request is made.",
    )
    summary: str | None = Field(default=None, max_length=4096, description="Summary of work.")
    pr_url: str | None = Field(default=None, max_length=1024, description="Pull request URL.")
    merge_commit: str | None = Field(default=None, max_length=64, description="Merge commit.")
    feedback: str | None = Field(default=None, max_length=20000, description="Review feedback.")
    files: list[Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=list, max_length=100, description="Files the feedback is about."
    )
    message: str | None = Field(default=None, max_length=4096, description="Details.")
    exit_code: int | None = Field(default=None, description="Process exit code.")
    usage: Usage | None = Field(
        default=None,
        description="Tokens and cost of this dispatch generation so far (cumulative: a later "
        "report of the same generation supersedes it).",
    )
    rate_limit: RateLimitInfo | None = Field(
        default=None, description="For rate-limited reports: the status and retry-after."
    )


class GuppStatus(Model):
    """Which GUPP tiers already fired for the current generation."""

    generation: int = Field(default=0, ge=0, description="Generation the tiers belong to.")
    warned_at: datetime | None = Field(default=None, description="Warn tier fired.")
    escalated_at: datetime | None = Field(default=None, description="Escalate tier fired.")
    force_stopped_at: datetime | None = Field(default=None, description="Force-stop fired.")


class PodRejection(Model):
    """The API server refused the pod of one dispatch generation (written by the operator)."""

    generation: int = Field(ge=0, description="Dispatch generation whose pod was refused.")
    message: str = Field(max_length=1024, description="The API server's answer.")
    at: datetime = Field(description="When the pod was refused.")


class AgentStatus(Model):
    """Observed state of an agent."""

    observed_generation: int | None = Field(default=None, description="Last spec generation seen.")
    conditions: Conditions
    phase: AgentPhase = Field(default=AgentPhase.IDLE, description="idle, working or stalled.")
    phase_since: datetime | None = Field(default=None, description="When the phase changed.")
    pod: str | None = Field(default=None, max_length=253, description="Current pod.")
    dispatched_at: datetime | None = Field(default=None, description="Last dispatch.")
    activity: Activity = Field(default_factory=Activity, description="Activity watermark.")
    reports: list[Report] = Field(
        default_factory=list, max_length=MAX_REPORTS, description="Reports not yet trimmed."
    )
    applied_report_seq: int = Field(
        default=0, ge=0, description="Highest report seq the operator has applied."
    )
    checkpoint: str | None = Field(
        default=None, max_length=16384, description="Agent checkpoint (JSON), fed back on restart."
    )
    status_message: str | None = Field(default=None, max_length=1024, description="Agent says.")
    delivered_nudges: list[str] = Field(
        default_factory=list, max_length=64, description="Nudge ids delivered."
    )
    gupp: GuppStatus = Field(default_factory=GuppStatus, description="GUPP tiers fired.")
    last_hook: str | None = Field(default=None, max_length=253, description="Previous hook.")
    pod_rejection: PodRejection | None = Field(
        default=None,
        description="The last pod the API server refused to create; for the current "
        "generation it ends the session as a failed attempt (reason PodRejected).",
    )
