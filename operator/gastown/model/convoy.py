"""The Convoy kind: a group of beads with dependencies that lands together."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from gastown.model.common import Conditions, LabelName, Model, ObjectName, cel
from gastown.model.enums import ConvoyMergeMode, ConvoyPhase, Priority
from gastown.model.spend import BudgetState, LedgerSpend


class ConvoyTask(
    Model,
    json_schema_extra=cel(
        ("!has(self.dependsOn) || !(self.key in self.dependsOn)", "a task cannot depend on itself")
    ),
):
    """A task that the convoy materialises as a Bead named `<convoy>-<key>`."""

    key: LabelName = Field(description="Key of the task, unique in the convoy.")
    title: str = Field(min_length=1, max_length=256, description="Short title.")
    description: str = Field(default="", max_length=20000, description="What to do.")
    priority: Priority = Field(default=Priority.MEDIUM, description="low, medium, high, critical.")
    rig: LabelName | None = Field(default=None, description="Rig, if not the convoy's.")
    depends_on: list[LabelName] = Field(
        default_factory=list,
        max_length=20,
        description="Keys of tasks in this convoy that must land first.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class ConvoySpec(
    Model,
    json_schema_extra=cel(
        (
            "!has(self.tasks) || self.tasks.all(t, !has(t.dependsOn) || "
            "t.dependsOn.all(d, self.tasks.exists(u, u.key == d)))",
            "every dependsOn must name a task key of this convoy",
        ),
        (
            "(has(self.tasks) && size(self.tasks) > 0) || "
            "(has(self.beads) && size(self.beads) > 0)",
            "a convoy needs tasks or beads",
        ),
        (
            "!has(oldSelf.staged) || oldSelf.staged || !self.staged",
            "a started convoy cannot be re-staged",
        ),
    ),
):
    """Desired state of a convoy."""

    town: ObjectName = Field(
        description="Town the convoy belongs to (immutable).",
        json_schema_extra=cel(("self == oldSelf", "town is immutable")),
    )
    rig: LabelName = Field(description="Default rig of its tasks.")
    merge_mode: ConvoyMergeMode = Field(
        default=ConvoyMergeMode.REVIEW_THEN_LAND,
        description="review-then-land: work merges into a feature branch which lands once; "
        "review-and-merge: each bead merges into the default branch.",
        json_schema_extra=cel(("self == oldSelf", "mergeMode is immutable")),
    )
    staged: bool = Field(
        default=False, description="While true nothing is dispatched; set to false to start."
    )
    budget_usd: float | None = Field(
        default=None,
        gt=0,
        description="Spending limit of the convoy in US dollars (default: the Town's "
        "policy.budget.perConvoyUsd): at it, no new work of the convoy is dispatched; raise it "
        "to resume.",
    )
    tasks: list[ConvoyTask] = Field(
        default_factory=list,
        max_length=100,
        description="Tasks materialised as Beads owned by the convoy.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["key"]},
    )
    beads: list[ObjectName] = Field(
        default_factory=list,
        max_length=100,
        description="Existing beads that also belong to the convoy.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class LandingStatus(Model):
    """Landing of a review-then-land convoy."""

    attempts: int = Field(default=0, ge=0, description="Landing merge requests created.")
    last_attempt_at: datetime | None = Field(default=None, description="Last landing attempt.")
    merge_request: str | None = Field(default=None, max_length=253, description="Current one.")
    merge_commit: str | None = Field(default=None, max_length=64, description="Landing merge.")


class ConvoyStatus(Model):
    """Observed state of a convoy."""

    observed_generation: int | None = Field(default=None, description="Last spec generation seen.")
    conditions: Conditions
    phase: ConvoyPhase | None = Field(default=None, description="Display phase.")
    progress: str = Field(default="", max_length=32, description="closed/total, e.g. 3/6.")
    total: int = Field(default=0, ge=0, description="Beads in the convoy.")
    closed: int = Field(default=0, ge=0, description="Beads closed (merged).")
    failed: int = Field(default=0, ge=0, description="Beads failed.")
    feature_branch: str | None = Field(default=None, max_length=255, description="Feature branch.")
    landing: LandingStatus = Field(default_factory=LandingStatus, description="Landing state.")
    reason: str | None = Field(default=None, max_length=64, description="Why it is in its phase.")
    message: str | None = Field(default=None, max_length=1024, description="Details.")
    started_at: datetime | None = Field(default=None, description="When dispatch started.")
    landed_at: datetime | None = Field(default=None, description="When it landed.")
    spend: LedgerSpend | None = Field(
        default=None, description="What the convoy's beads (and their reviews) spent."
    )
    budget_exceeded: BudgetState | None = Field(
        default=None, description="Set while the convoy is at its budget (no new dispatch)."
    )
