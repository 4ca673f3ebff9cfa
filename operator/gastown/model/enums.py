"""Enumerations shared by the four kinds; string values are what users and the API see."""

from __future__ import annotations

from enum import StrEnum


class BeadType(StrEnum):
    """What a bead is. Users create issues; the operator creates the others."""

    ISSUE = "issue"
    MERGE_REQUEST = "merge_request"
    REWORK = "rework"
    ESCALATION = "escalation"


class BeadPhase(StrEnum):
    """Lifecycle of a bead: open -> in_progress -> in_review -> closed, or failed."""

    OPEN = "open"
    IN_PROGRESS = "in_progress"
    IN_REVIEW = "in_review"
    CLOSED = "closed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """Closed and failed beads never change again."""
        return self in (BeadPhase.CLOSED, BeadPhase.FAILED)


class Priority(StrEnum):
    """Scheduling priority of a bead; higher is served first."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Numeric rank, larger is more urgent."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.LOW: 0, Priority.MEDIUM: 1, Priority.HIGH: 2, Priority.CRITICAL: 3}


class AgentRole(StrEnum):
    """Role of an agent: workers (polecats), the per-rig reviewer (refinery), the coordinator."""

    POLECAT = "polecat"
    REFINERY = "refinery"
    MAYOR = "mayor"


class AgentPhase(StrEnum):
    """What an agent is doing, as the operator sees it."""

    IDLE = "idle"
    WORKING = "working"
    STALLED = "stalled"


class MergeStrategy(StrEnum):
    """How the refinery lands reviewed work on a rig."""

    DIRECT = "direct"
    PR = "pr"


class GitProvider(StrEnum):
    """Hosting provider whose REST API opens pull/merge requests (merge strategy `pr`)."""

    GITHUB = "github"
    GITLAB = "gitlab"


class ConvoyMergeMode(StrEnum):
    """How a convoy's work reaches the default branch."""

    REVIEW_AND_MERGE = "review-and-merge"
    REVIEW_THEN_LAND = "review-then-land"


class ConvoyPhase(StrEnum):
    """Display phase of a convoy, derived from its members and landing state."""

    STAGED = "Staged"
    IN_PROGRESS = "InProgress"
    READY_TO_LAND = "ReadyToLand"
    LANDING = "Landing"
    LANDED = "Landed"
    FAILED = "Failed"


class TownMode(StrEnum):
    """How the operator treats a town.

    active: reconcile and apply. shadow: compute and report planned actions, apply nothing.
    paused: no new dispatch, nothing is stopped. draining: no new dispatch; running agents finish
    their bead and idle agents are removed.
    """

    ACTIVE = "active"
    SHADOW = "shadow"
    PAUSED = "paused"
    DRAINING = "draining"


class CodingAgentKind(StrEnum):
    """Which coding-agent CLI the in-pod runtime drives."""

    CLAUDE_CODE = "claude-code"
    CODEX = "codex"
    OPENCODE = "opencode"
    AIDER = "aider"
    COMMAND = "command"


class ReportType(StrEnum):
    """A durable fact an agent writes into its own Agent status."""

    DONE = "done"
    REQUEST_CHANGES = "request-changes"
    MERGED = "merged"
    CONFLICT = "conflict"
    GATE_FAILED = "gate-failed"
    PR_OPENED = "pr-opened"
    EXITED = "exited"
    FAILED = "failed"
    ESCALATE = "escalate"
    USAGE = "usage"
    """Only carries usage (the session's tokens and cost after its last other report)."""
    RATE_LIMITED = "rate-limited"
    """The session ended on the model provider's rate limit: no attempt is spent."""


class PRState(StrEnum):
    """State of a pull/merge request as last polled."""

    OPEN = "open"
    MERGED = "merged"
    CLOSED = "closed"
    UNKNOWN = "unknown"
    MISMATCH = "mismatch"
    """The provider's API contradicts the claim (head branch or SHA, base, repository, URL)."""
