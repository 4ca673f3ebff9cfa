"""One town and everything that belongs to it, as the plugin read it (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gastown.model import Agent, Bead, Convoy, Town
from gastown.reconcile.context import Pass
from gastown.reconcile.snapshot import PodView, Snapshot


@dataclass(frozen=True)
class TownState:
    """A town with its beads, convoys, agents and agent pods (keyed by name)."""

    town: Town
    beads: Mapping[str, Bead] = field(default_factory=dict)
    convoys: Mapping[str, Convoy] = field(default_factory=dict)
    agents: Mapping[str, Agent] = field(default_factory=dict)
    pods: Mapping[str, PodView] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        town: Town,
        beads: Iterable[Bead] = (),
        convoys: Iterable[Convoy] = (),
        agents: Iterable[Agent] = (),
        pods: Iterable[PodView] = (),
    ) -> TownState:
        """Keep only the objects of `town` (a namespace may hold several towns)."""
        name = town.name
        agent_list = [a for a in agents if a.spec.town == name]
        agent_names = {a.name for a in agent_list}
        return cls(
            town=town,
            beads={b.name: b for b in beads if b.spec.town == name},
            convoys={c.name: c for c in convoys if c.spec.town == name},
            agents={a.name: a for a in agent_list},
            pods={p.name: p for p in pods if p.agent in agent_names},
        )

    @classmethod
    def parse(
        cls,
        town: Mapping[str, Any],
        beads: Iterable[Mapping[str, Any]] = (),
        convoys: Iterable[Mapping[str, Any]] = (),
        agents: Iterable[Mapping[str, Any]] = (),
        pods: Iterable[PodView] = (),
    ) -> TownState:
        """From objects as the API server returns them."""
        return cls.of(
            Town.from_api(dict(town)),
            [Bead.from_api(dict(b)) for b in beads],
            [Convoy.from_api(dict(c)) for c in convoys],
            [Agent.from_api(dict(a)) for a in agents],
            pods,
        )

    def snapshot(self) -> Snapshot:
        """The reconciler's input for this town (so the plugin reuses its rules)."""
        return Snapshot(
            town=self.town,
            beads=self.beads,
            convoys=self.convoys,
            agents=self.agents,
            pods=self.pods,
        )

    def evaluate(self, now: datetime) -> Pass:
        """A fresh reconcile pass over this state, used read-only to ask the reconciler's rules."""
        return Pass(self.snapshot(), now)
