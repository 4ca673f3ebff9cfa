"""The Town kind: rigs, the agent runtime, limits, policy and mode; status of the whole town."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from gastown.model.common import (
    Conditions,
    EnvVar,
    LabelName,
    Model,
    ObjectName,
    SecretEnvVar,
    SecretKeyRef,
    cel,
)
from gastown.model.enums import CodingAgentKind, GitProvider, MergeStrategy, TownMode
from gastown.model.policy import TownPolicy
from gastown.model.spend import BudgetState, RateLimitState, TownSpend

GateCommand = Annotated[str, Field(min_length=1, max_length=1024)]
Quantity = Annotated[
    str,
    Field(
        max_length=32,
        pattern=r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$",
        description="A Kubernetes quantity such as 500m or 2Gi.",
    ),
]


IMAGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$"
"""An image reference: registry/repository[:tag][@digest]; no whitespace or other characters
that the container runtime would refuse only after the pod was created."""

LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
"""A label key (as in nodeSelector): optional DNS prefix and "/", then a name of 1-63 characters.
Written for CEL (a single-quoted string), hence the doubled backslash."""

LabelValue = Annotated[
    str,
    Field(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"),
]
"""A label value: empty, or up to 63 characters of [A-Za-z0-9-_.], alphanumeric at both ends."""


class PullRequestProvider(Model):
    """Where pull/merge requests are opened for a rig using the `pr` merge strategy."""

    kind: GitProvider = Field(description="github or gitlab.")
    api_url: str = Field(
        max_length=512,
        pattern=r"^https?://[^\s]+$",
        description="Base URL of the provider's REST API; the only host the refinery contacts. "
        "Must be https: the operator refuses http (Town Degraded, InsecureProviderUrl) unless it "
        "runs with --allow-insecure-provider-urls (local testing only).",
    )
    repository: str = Field(
        min_length=1,
        max_length=256,
        pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$",
        description="owner/name (GitHub) or group/project path (GitLab).",
    )
    token_secret: SecretKeyRef = Field(
        description="Secret key holding the API token; the Secret must carry the label "
        "gastown.dev/town=<this town's name>."
    )


class Rig(
    Model,
    json_schema_extra=cel(
        (
            "self.mergeStrategy != 'pr' || has(self.pullRequests)",
            "rigs with mergeStrategy pr need pullRequests",
        ),
    ),
):
    """One git repository the town works on."""

    name: LabelName = Field(description="Rig name, unique within the town.")
    git_url: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^(https?://|ssh://|git@|file://|/)[^\s]+$",
        description="Clone URL of the repository (https, ssh, or a local path in tests).",
    )
    default_branch: str = Field(
        default="main",
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9._/-]+$",
        description="Branch that finished work is merged into.",
    )
    merge_strategy: MergeStrategy = Field(
        default=MergeStrategy.DIRECT,
        description="direct: the refinery merges and pushes; pr: it opens a pull request.",
    )
    credentials_secret: ObjectName | None = Field(
        default=None,
        description="Secret with git credentials (keys `username` and `password`/token, or "
        "`ssh-privatekey`), mounted into agent pods; never logged. The Secret must carry the "
        "label gastown.dev/town=<this town's name>.",
    )
    pull_requests: PullRequestProvider | None = Field(
        default=None, description="Pull request provider (required for mergeStrategy pr)."
    )
    gates: list[GateCommand] | None = Field(
        default=None,
        max_length=20,
        description="Commands the refinery runs before merging (overrides the town's gates).",
    )
    max_polecats: int | None = Field(
        default=None, ge=0, le=100, description="Worker cap for this rig (overrides the town's)."
    )


class ResourceList(Model):
    """CPU and memory amounts."""

    cpu: Quantity | None = Field(default=None, description="CPU, e.g. 500m.")
    memory: Quantity | None = Field(default=None, description="Memory, e.g. 1Gi.")


class Resources(Model):
    """Requests and limits of an agent container."""

    requests: ResourceList | None = Field(default=None, description="Guaranteed resources.")
    limits: ResourceList | None = Field(default=None, description="Maximum resources.")


class CodingAgent(Model):
    """The coding-agent CLI that agent pods run."""

    kind: CodingAgentKind = Field(
        default=CodingAgentKind.CLAUDE_CODE,
        description="claude-code, codex, opencode, aider, or command (any program).",
    )
    command: list[Annotated[str, Field(max_length=1024)]] | None = Field(
        default=None,
        max_length=32,
        description="Program and arguments; required for kind command, optional override "
        "otherwise. The prompt is passed on standard input.",
    )
    model: str | None = Field(default=None, max_length=128, description="Model name to request.")


class AgentRuntime(
    Model,
    json_schema_extra=cel(
        (
            "self.codingAgent.kind != 'command' || has(self.codingAgent.command)",
            "codingAgent.kind command needs codingAgent.command",
        ),
    ),
):
    """How agent pods are built."""

    image: str = Field(
        min_length=1,
        max_length=512,
        pattern=IMAGE_PATTERN,
        description="Agent container image (has git and `gt`), e.g. "
        "registry.example/gastown-agent:1.0 or a digest reference; no spaces.",
    )
    image_pull_policy: str = Field(
        default="IfNotPresent",
        pattern=r"^(Always|IfNotPresent|Never)$",
        description="Always, IfNotPresent or Never.",
    )
    coding_agent: CodingAgent = Field(
        default_factory=CodingAgent, description="The coding-agent CLI to run."
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=64, description="Plain environment variables."
    )
    secret_env: list[SecretEnvVar] = Field(
        default_factory=list,
        max_length=32,
        description="Environment variables read from Secrets (API keys); each Secret must carry "
        "the label gastown.dev/town=<this town's name>.",
    )
    resources: Resources | None = Field(default=None, description="Container resources.")
    service_account_name: ObjectName | None = Field(
        default=None,
        description="ServiceAccount for agent pods; by default the operator's per-town one. "
        "It must carry the label gastown.dev/town=<this town's name>.",
    )
    node_selector: dict[str, LabelValue] | None = Field(
        default=None,
        max_length=32,
        description="Node selector for agent pods: label keys (an optional DNS prefix and "
        "`/`, then a name of at most 63 characters) and label values.",
        json_schema_extra=cel(
            (
                f"self.all(k, size(k) <= 317 && k.matches('{LABEL_KEY_PATTERN}'))",
                "nodeSelector keys must be label keys: an optional DNS subdomain prefix and "
                "'/', then at most 63 characters of [A-Za-z0-9-_.] starting and ending with an "
                "alphanumeric character",
            ),
        ),
    )
    termination_grace_seconds: int = Field(
        default=30, ge=0, le=3600, description="Grace period when an agent pod is stopped."
    )


class Limits(Model):
    """Capacity of the town."""

    max_polecats_per_rig: int = Field(
        default=3, ge=0, le=100, description="Workers per rig (0 stops new work on rigs)."
    )
    max_polecats: int = Field(default=10, ge=0, le=1000, description="Workers in the whole town.")


class Refinery(Model):
    """What the per-rig refinery does before it merges."""

    gates: list[GateCommand] = Field(
        default_factory=list,
        max_length=20,
        description="Commands run in the merged tree before pushing (tests, lint).",
    )
    review: bool = Field(
        default=False,
        description="Let the coding agent review the merge and possibly request changes.",
    )


class TownSpec(
    Model,
    json_schema_extra=cel(
        (
            "self.rigs.all(r, self.rigs.exists_one(s, s.name == r.name))",
            "rig names must be unique",
        ),
    ),
):
    """Desired state of a town."""

    rigs: list[Rig] = Field(min_length=1, max_length=20, description="Repositories worked on.")
    agent: AgentRuntime = Field(description="How agent pods are built and what they run.")
    limits: Limits = Field(default_factory=Limits, description="Worker caps.")
    refinery: Refinery = Field(default_factory=Refinery, description="Refinery behaviour.")
    policy: TownPolicy = Field(default_factory=TownPolicy, description="Timeouts and retries.")
    mode: TownMode = Field(
        default=TownMode.ACTIVE,
        description="active, shadow (plan but apply nothing), paused (no new dispatch), or "
        "draining (no new dispatch, idle agents removed).",
    )


class PhaseCounts(Model):
    """Beads by phase."""

    open: int = Field(default=0, ge=0, description="Open beads.")
    in_progress: int = Field(default=0, ge=0, description="Beads being worked on.")
    in_review: int = Field(default=0, ge=0, description="Beads waiting for review/merge.")
    closed: int = Field(default=0, ge=0, description="Closed beads.")
    failed: int = Field(default=0, ge=0, description="Failed beads.")


class AgentCounts(Model):
    """Agents by phase."""

    idle: int = Field(default=0, ge=0, description="Idle agents.")
    working: int = Field(default=0, ge=0, description="Working agents.")
    stalled: int = Field(default=0, ge=0, description="Stalled agents.")


class PassMetrics(Model):
    """What the last reconcile pass did."""

    finished_at: datetime | None = Field(default=None, description="When the pass finished.")
    duration_ms: int = Field(default=0, ge=0, description="Duration of the pass.")
    facts_applied: int = Field(default=0, ge=0, description="Durable facts applied.")
    actions: dict[str, int] = Field(default_factory=dict, description="Actions by type.")
    side_effects_ok: int = Field(default=0, ge=0, description="Side effects that succeeded.")
    side_effects_failed: int = Field(default=0, ge=0, description="Side effects that failed.")
    violations: int = Field(default=0, ge=0, description="Invariant violations found.")


class Violation(Model):
    """One invariant violation."""

    code: str = Field(max_length=64, description="Stable code, e.g. DuplicateHook.")
    message: str = Field(max_length=1024, description="What is wrong, for humans.")
    subject: str = Field(default="", max_length=253, description="Object the violation is about.")


class Repair(Model):
    """A state that should never exist, found and repaired by a reconcile pass.

    Repairs happen before the invariant check, so without this record the state would leave no
    trace; it means a bug or someone tampering with the town's objects.
    """

    code: str = Field(max_length=64, description="Stable code, e.g. DuplicateHook.")
    message: str = Field(max_length=1024, description="What was found, for humans.")
    subject: str = Field(default="", max_length=253, description="Object the repair is about.")
    at: datetime | None = Field(default=None, description="When the pass repaired it.")


class CircuitBreakerStatus(Model):
    """State of the dispatch circuit breaker."""

    open: bool = Field(default=False, description="True while new dispatch is paused.")
    recent_failures: int = Field(default=0, ge=0, description="Failures in the current window.")
    opened_at: datetime | None = Field(default=None, description="When it last opened.")


class TownStatus(Model):
    """Observed state of a town."""

    observed_generation: int | None = Field(default=None, description="Last spec generation seen.")
    conditions: Conditions
    summary: str = Field(default="", max_length=256, description="One-line state for humans.")
    beads: PhaseCounts = Field(default_factory=PhaseCounts, description="Beads by phase.")
    agents: AgentCounts = Field(default_factory=AgentCounts, description="Agents by phase.")
    queue: dict[str, int] = Field(default_factory=dict, description="Open MRs per rig.")
    last_pass: PassMetrics = Field(default_factory=PassMetrics, description="Last pass.")
    violations: list[Violation] = Field(
        default_factory=list, max_length=50, description="Current invariant violations."
    )
    last_repairs: list[Repair] = Field(
        default_factory=list,
        max_length=20,
        description="Impossible states repaired recently (newest last; kept for an hour).",
    )
    circuit_breaker: CircuitBreakerStatus = Field(
        default_factory=CircuitBreakerStatus, description="Dispatch circuit breaker."
    )
    spend: TownSpend | None = Field(
        default=None, description="What the town's agents spent: total, today and this month."
    )
    budget_exceeded: list[BudgetState] = Field(
        default_factory=list,
        max_length=4,
        description="Town budgets reached now (day, month): no new dispatch while set.",
    )
    rate_limits: RateLimitState = Field(
        default_factory=RateLimitState, description="Provider rate limits in force."
    )
    planned_actions: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="In shadow mode: actions the operator would have applied last pass.",
    )
