"""The four kinds as whole objects, and the CRD metadata declared next to them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import Field

from gastown.model.agent import AgentSpec, AgentStatus
from gastown.model.bead import BeadSpec, BeadStatus
from gastown.model.common import API_VERSION, Model
from gastown.model.convoy import ConvoySpec, ConvoyStatus
from gastown.model.town import TownSpec, TownStatus


class OwnerReference(Model):
    """An owner of an object (garbage collection)."""

    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(Model):
    """The parts of metadata the operator reads."""

    name: str
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    owner_references: list[OwnerReference] = Field(default_factory=list)


SpecT = TypeVar("SpecT", bound=Model)
StatusT = TypeVar("StatusT", bound=Model)


@dataclass(frozen=True)
class PrinterColumn:
    """One `kubectl get` column."""

    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class KindInfo:
    """Names and presentation of a kind, used by the CRD generator and the adapter."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    description: str
    columns: tuple[PrinterColumn, ...]
    root_rules: tuple[tuple[str, str], ...] = field(default=())

    @property
    def singular(self) -> str:
        """Lowercase singular name."""
        return self.kind.lower()


class Resource(Model, Generic[SpecT, StatusT]):
    """A whole object of one of our kinds."""

    info: ClassVar[KindInfo]
    api_version: str = API_VERSION
    kind: str
    metadata: ObjectMeta
    spec: SpecT
    status: StatusT

    @property
    def name(self) -> str:
        """metadata.name."""
        return self.metadata.name

    @classmethod
    def from_api(cls, obj: dict[str, Any]) -> Self:
        """Parse an object as the API server returns it (status may be missing)."""
        data = dict(obj)
        data.setdefault("status", {})
        if data["status"] is None:
            data["status"] = {}
        return cls.model_validate(data)


def _ready(kind_desc: str) -> tuple[PrinterColumn, PrinterColumn]:
    return (
        PrinterColumn(
            "Ready",
            '.status.conditions[?(@.type=="Ready")].status',
            description=f"Whether the {kind_desc} is healthy.",
        ),
        PrinterColumn(
            "Reason",
            '.status.conditions[?(@.type=="Ready")].reason',
            description="Why it is (not) ready.",
            priority=1,
        ),
    )


_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", type="date", description="Age.")


class Town(Resource[TownSpec, TownStatus]):
    """A town of agents working on a set of rigs."""

    info: ClassVar[KindInfo] = KindInfo(
        kind="Town",
        plural="towns",
        short_names=("twn",),
        description="A town of AI coding agents working on a set of git repositories (rigs).",
        columns=(
            *_ready("town"),
            PrinterColumn("Mode", ".spec.mode", description="active, shadow, paused, draining."),
            PrinterColumn("Open", ".status.beads.open", "integer", "Open beads."),
            PrinterColumn("Working", ".status.agents.working", "integer", "Working agents."),
            PrinterColumn("Review", ".status.beads.inReview", "integer", "Beads in review."),
            PrinterColumn("Closed", ".status.beads.closed", "integer", "Closed beads."),
            PrinterColumn("Failed", ".status.beads.failed", "integer", "Failed beads."),
            PrinterColumn(
                "Today$", ".status.spend.today.costUsd", "number", "Spend today (UTC, USD)."
            ),
            PrinterColumn(
                "Spend$", ".status.spend.total.costUsd", "number", "Total spend (USD).", priority=1
            ),
            PrinterColumn("Summary", ".status.summary", description="What is going on."),
            _AGE,
        ),
        root_rules=(
            (
                "size(self.metadata.name) <= 63",
                "a Town name has at most 63 characters: it is the value of the gastown.dev/town "
                "label on the town's pods and on the Secrets and ServiceAccounts that opt in to "
                "the town",
            ),
        ),
    )
    kind: str = "Town"
    status: TownStatus = Field(default_factory=TownStatus)


class Bead(Resource[BeadSpec, BeadStatus]):
    """A work item."""

    info: ClassVar[KindInfo] = KindInfo(
        kind="Bead",
        plural="beads",
        short_names=("bd",),
        description="A work item: an issue, a merge request, a rework item or an escalation.",
        columns=(
            PrinterColumn("Type", ".spec.type", description="Bead type.", priority=1),
            PrinterColumn("Rig", ".spec.rig", description="Rig."),
            PrinterColumn("Phase", ".status.phase", description="Lifecycle phase."),
            PrinterColumn("Assignee", ".status.assignee", description="Hooked agent."),
            PrinterColumn("Attempts", ".status.attempts", "integer", "Dispatch attempts."),
            PrinterColumn("Cost$", ".status.spend.total.costUsd", "number", "Spend (USD)."),
            PrinterColumn("Reason", ".status.reason", description="Why it is in its phase."),
            PrinterColumn("Title", ".spec.title", description="Title.", priority=1),
            _AGE,
        ),
        root_rules=(
            (
                "!has(self.spec.dependsOn) || !(self.metadata.name in self.spec.dependsOn)",
                "a bead cannot depend on itself",
            ),
        ),
    )
    kind: str = "Bead"
    status: BeadStatus = Field(default_factory=BeadStatus)


class Convoy(Resource[ConvoySpec, ConvoyStatus]):
    """A group of beads with dependencies."""

    info: ClassVar[KindInfo] = KindInfo(
        kind="Convoy",
        plural="convoys",
        short_names=("cvy",),
        description="A group of beads with dependencies, reviewed and landed together.",
        columns=(
            PrinterColumn("Phase", ".status.phase", description="Display phase."),
            PrinterColumn("Progress", ".status.progress", description="Closed/total beads."),
            PrinterColumn("Failed", ".status.failed", "integer", "Failed beads."),
            PrinterColumn("Cost$", ".status.spend.total.costUsd", "number", "Spend (USD)."),
            PrinterColumn("Budget$", ".spec.budgetUsd", "number", "Budget (USD).", priority=1),
            PrinterColumn("Mode", ".spec.mergeMode", description="Merge mode.", priority=1),
            PrinterColumn(
                "Branch", ".status.featureBranch", description="Feature branch.", priority=1
            ),
            PrinterColumn("Reason", ".status.reason", description="Why it is in its phase."),
            _AGE,
        ),
    )
    kind: str = "Convoy"
    status: ConvoyStatus = Field(default_factory=ConvoyStatus)


class Agent(Resource[AgentSpec, AgentStatus]):
    """An agent identity (worker, refinery or mayor)."""

    info: ClassVar[KindInfo] = KindInfo(
        kind="Agent",
        plural="agents",
        short_names=("agt",),
        description="An agent identity: a polecat (worker), a refinery or the mayor.",
        columns=(
            PrinterColumn("Role", ".spec.role", description="Role."),
            PrinterColumn("Rig", ".spec.rig", description="Rig."),
            PrinterColumn("Phase", ".status.phase", description="idle, working, stalled."),
            PrinterColumn("Hook", ".spec.hook", description="Bead it runs."),
            PrinterColumn("Gen", ".spec.generation", "integer", "Dispatch generation."),
            PrinterColumn("Pod", ".status.pod", description="Current pod.", priority=1),
            PrinterColumn(
                "Heartbeat", ".status.activity.lastHeartbeatAt", "date", "Last heartbeat."
            ),
            _AGE,
        ),
    )
    kind: str = "Agent"
    status: AgentStatus = Field(default_factory=AgentStatus)


KINDS: tuple[type[Resource[Any, Any]], ...] = (Town, Bead, Convoy, Agent)
BY_KIND: dict[str, type[Resource[Any, Any]]] = {kind.info.kind: kind for kind in KINDS}
"""Model class of each kind, by kind name."""
PLURALS: dict[str, str] = {kind.info.kind: kind.info.plural for kind in KINDS}
"""REST resource name (plural) of each kind."""
