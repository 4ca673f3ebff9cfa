"""The Bead kind: one work item, and the operator-made merge requests and rework items."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from gastown.model.common import Conditions, LabelName, Model, ObjectName, cel
from gastown.model.enums import BeadPhase, BeadType, Priority, PRState
from gastown.model.spend import BeadSpend, RateLimitHold

BranchName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._/-]+$")]
FilePath = Annotated[str, Field(min_length=1, max_length=1024)]
CommitSha = Annotated[str, Field(min_length=7, max_length=64, pattern=r"^[0-9a-f]+$")]
Label = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9:._/-]+$")]


class MergeRequestSpec(Model):
    """What a merge_request bead asks the refinery to merge."""

    source_bead: ObjectName = Field(description="The bead whose work is reviewed.")
    branch: BranchName = Field(description="Branch holding the work.")
    target_branch: BranchName = Field(description="Branch to merge into.")
    source_sha: CommitSha | None = Field(
        default=None,
        description="Head of `branch` that the operator verified on the remote when the work "
        "was submitted; a merge counts only if it contains this commit.",
    )
    landing: bool = Field(
        default=False, description="True for the one landing MR of a review-then-land convoy."
    )


class ReworkSpec(Model):
    """What a rework bead must fix, from the refinery's request-changes."""

    merge_request: ObjectName = Field(description="The merge request that waits for this rework.")
    source_bead: ObjectName = Field(description="The original work item.")
    branch: BranchName = Field(description="The branch under review, continued by the rework.")
    feedback: str = Field(default="", max_length=20000, description="Reviewer feedback.")
    files: list[FilePath] = Field(default_factory=list, max_length=100, description="Files named.")


class BeadSpec(
    Model,
    json_schema_extra=cel(
        (
            "self.type == 'escalation' || has(self.rig)",
            "rig is required for issue, rework and merge_request beads",
        ),
        (
            "self.type != 'merge_request' || has(self.mergeRequest)",
            "merge_request beads need mergeRequest",
        ),
        ("self.type != 'rework' || has(self.rework)", "rework beads need rework"),
        ("!has(oldSelf.cancel) || !oldSelf.cancel || self.cancel", "a cancel cannot be undone"),
    ),
):
    """Desired state of a bead."""

    town: ObjectName = Field(
        description="Town this bead belongs to (immutable).",
        json_schema_extra=cel(("self == oldSelf", "town is immutable")),
    )
    rig: LabelName | None = Field(
        default=None,
        description="Rig (repository) the work is done in (immutable).",
        json_schema_extra=cel(("self == oldSelf", "rig is immutable")),
    )
    type: BeadType = Field(
        default=BeadType.ISSUE,
        description="issue (users), merge_request / rework / escalation (operator).",
        json_schema_extra=cel(("self == oldSelf", "type is immutable")),
    )
    title: str = Field(min_length=1, max_length=256, description="Short title.")
    description: str = Field(default="", max_length=20000, description="What to do.")
    priority: Priority = Field(default=Priority.MEDIUM, description="low, medium, high, critical.")
    depends_on: list[ObjectName] = Field(
        default_factory=list,
        max_length=50,
        description="Beads that must be closed (merged) before this one is ready.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    labels: list[Label] = Field(
        default_factory=list,
        max_length=20,
        description="Free-form labels.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    convoy: ObjectName | None = Field(
        default=None,
        description="Convoy this bead belongs to (immutable; set when the convoy made it).",
        json_schema_extra=cel(("self == oldSelf", "convoy is immutable")),
    )
    cancel: bool = Field(
        default=False, description="Set to true to cancel: the agent is released, its pod stopped."
    )
    merge_request: MergeRequestSpec | None = Field(
        default=None, description="For merge_request beads: what to merge."
    )
    rework: ReworkSpec | None = Field(default=None, description="For rework beads: what to fix.")


class PRClaim(Model):
    """The refinery report that claimed a pull request URL (kept to name it if refused)."""

    agent: str = Field(max_length=253, description="Refinery that reported the URL.")
    generation: int = Field(ge=0, description="Its dispatch generation.")
    seq: int = Field(ge=0, description="Sequence number of its pr-opened report.")


class ReviewStatus(Model):
    """Review/merge progress of a merge_request bead."""

    refinery: str | None = Field(default=None, max_length=253, description="Refinery reviewing.")
    started_at: datetime | None = Field(default=None, description="When review started.")
    pr_url: str | None = Field(default=None, max_length=1024, description="Pull request URL.")
    pr_state: PRState | None = Field(default=None, description="PR state at the last poll.")
    last_polled_at: datetime | None = Field(default=None, description="Last PR poll.")
    unknown_polls: int = Field(default=0, ge=0, description="Consecutive unknown poll results.")
    pr_claim: PRClaim | None = Field(
        default=None, description="The refinery report that claimed `prUrl` (an unverified claim)."
    )
    pr_verified_at: datetime | None = Field(
        default=None,
        description="When the provider's API confirmed the claimed PR (repository, head branch "
        "and commit, base branch); until then the pull request does not count as opened.",
    )
    pr_mismatch: str | None = Field(
        default=None,
        max_length=1024,
        description="What the provider's API contradicted at the last poll (prState mismatch).",
    )
    merge_commit: str | None = Field(
        default=None, max_length=64, description="Merge commit verified on the remote."
    )
    rework: list[str] = Field(
        default_factory=list, max_length=50, description="Rework beads created for this MR."
    )


class RefusedClaim(Model):
    """The last claim of an agent about this bead that failed verification (nothing changed)."""

    agent: str = Field(max_length=253, description="Agent that made the claim.")
    generation: int = Field(ge=0, description="Its dispatch generation.")
    seq: int = Field(ge=0, description="Sequence number of the refused report.")
    reason: str = Field(max_length=64, description="Why it was refused, e.g. MergeNotOnTarget.")
    message: str = Field(default="", max_length=1024, description="What did not match.")
    at: datetime = Field(description="When it was refused.")


class BeadStatus(Model):
    """Observed state of a bead."""

    observed_generation: int | None = Field(default=None, description="Last spec generation seen.")
    conditions: Conditions
    phase: BeadPhase = Field(default=BeadPhase.OPEN, description="Lifecycle phase.")
    phase_since: datetime | None = Field(default=None, description="When the phase last changed.")
    assignee: str | None = Field(default=None, max_length=253, description="Agent hooked to it.")
    attempts: int = Field(default=0, ge=0, description="Dispatch attempts, across agents.")
    last_attempt_at: datetime | None = Field(default=None, description="Last dispatch.")
    last_failure_at: datetime | None = Field(default=None, description="Last failed attempt.")
    branch: str | None = Field(default=None, max_length=255, description="Branch with the work.")
    head_sha: str | None = Field(
        default=None, max_length=64, description="Verified head of the branch with the work."
    )
    merge_request: str | None = Field(
        default=None, max_length=253, description="Merge request bead reviewing this work."
    )
    summary: str | None = Field(default=None, max_length=4096, description="Agent's summary.")
    review: ReviewStatus | None = Field(default=None, description="For merge requests.")
    reason: str | None = Field(default=None, max_length=64, description="Why it is in its phase.")
    message: str | None = Field(default=None, max_length=1024, description="Details.")
    closed_at: datetime | None = Field(default=None, description="When it closed.")
    spend: BeadSpend | None = Field(
        default=None, description="Tokens and cost of every session on this bead."
    )
    rate_limited: RateLimitHold | None = Field(
        default=None,
        description="The last rate-limited ending; while `until` lies ahead the bead is held "
        "(condition RateLimited).",
    )
    refused_claim: RefusedClaim | None = Field(
        default=None,
        description="Last agent claim about this bead that failed verification; while set, the "
        "ClaimsVerified condition is False.",
    )
