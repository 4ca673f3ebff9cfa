"""Pydantic models of the four kinds: the single source of truth for runtime and CRDs."""

from gastown.model.agent import Activity, AgentSpec, AgentStatus, GuppStatus, Nudge, Report
from gastown.model.bead import BeadSpec, BeadStatus, MergeRequestSpec, ReviewStatus, ReworkSpec
from gastown.model.common import API_VERSION, GROUP, VERSION, Condition, ConditionStatus
from gastown.model.convoy import ConvoySpec, ConvoyStatus, ConvoyTask, LandingStatus
from gastown.model.enums import (
    AgentPhase,
    AgentRole,
    BeadPhase,
    BeadType,
    CodingAgentKind,
    ConvoyMergeMode,
    ConvoyPhase,
    MergeStrategy,
    Priority,
    PRState,
    ReportType,
    TownMode,
)
from gastown.model.policy import TownPolicy
from gastown.model.resources import KINDS, Agent, Bead, Convoy, ObjectMeta, Town
from gastown.model.town import Rig, TownSpec, TownStatus, Violation

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "Activity",
    "Agent",
    "AgentPhase",
    "AgentRole",
    "AgentSpec",
    "AgentStatus",
    "Bead",
    "BeadPhase",
    "BeadSpec",
    "BeadStatus",
    "BeadType",
    "CodingAgentKind",
    "Condition",
    "ConditionStatus",
    "Convoy",
    "ConvoyMergeMode",
    "ConvoyPhase",
    "ConvoySpec",
    "ConvoyStatus",
    "ConvoyTask",
    "GuppStatus",
    "LandingStatus",
    "MergeRequestSpec",
    "MergeStrategy",
    "Nudge",
    "ObjectMeta",
    "PRState",
    "Priority",
    "Report",
    "ReportType",
    "ReviewStatus",
    "ReworkSpec",
    "Rig",
    "Town",
    "TownMode",
    "TownPolicy",
    "TownSpec",
    "TownStatus",
    "Violation",
]
