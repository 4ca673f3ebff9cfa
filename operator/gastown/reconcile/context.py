"""The state of one pass: the snapshot, `now`, the plan so far and what it has claimed.

Rules run in a fixed order over the same snapshot. Two rules must never write the same object in
one pass (their compare-and-set preconditions would make the second one conflict, and partial
application is harder to reason about), so every action claims the objects it writes and later
rules skip claimed objects; the next pass sees the result and continues. Bead phase changes are
also recorded as a small overlay, so that rules that aggregate (convoy progress, readiness of
dependents, the per-rig review queue) see this pass's decisions and do not lag a pass behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from gastown.model import Agent, Bead, BeadPhase, Town, TownMode, TownPolicy
from gastown.model.spend import BudgetState, RateLimitState
from gastown.model.town import Repair
from gastown.reconcile.actions import Action, UpdateAgent
from gastown.reconcile.dag import Readiness
from gastown.reconcile.finished import Layered
from gastown.reconcile.snapshot import Index, Snapshot
from gastown.reconcile.spend import SpendView
from gastown.reconcile.writes import Kind

Ref = tuple[Kind, str]


def aware(moment: datetime) -> datetime:
    """Treat naive datetimes as UTC so that all comparisons are between aware datetimes."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Pass:
    """Mutable bookkeeping of one `reconcile` call; never outlives it."""

    def __init__(self, snap: Snapshot, now: datetime) -> None:
        self.snap = snap
        self.now = aware(now)
        self.town: Town = snap.town
        self.policy: TownPolicy = snap.town.spec.policy
        self.index: Index = snap.index
        self.actions: list[Action] = []
        self._claimed: set[Ref] = set()
        # Read-only views for hot loops (rules bind them to locals instead of calling methods).
        self.claimed: set[Ref] = self._claimed
        self._phase: dict[str, BeadPhase] = {}
        self.planned_phases: dict[str, BeadPhase] = self._phase
        self._phases: Mapping[str, BeadPhase] = self.index.phases
        self._phase_view: Mapping[str, BeadPhase] | None = None  # snapshot + plan, merged
        self._assignee: dict[str, str | None] = {}
        self._hook: dict[str, str | None] = {}
        self._hooked_by_plan: dict[str, list[str]] = {}
        self.dispatch_blocked_reason: str | None = None
        # Agents this pass releases plainly (their work is done: no pod to stop, nothing to
        # announce): a dispatch later in the pass may reuse one, replacing its release.
        self.releases: dict[str, UpdateAgent] = {}
        self._readiness: Readiness | None = None
        self.members_cache: dict[str, list[str]] = {}
        self._busy: set[str] | None = None
        self._spendless: set[str] | None = None
        # Spend, budgets and rate limits as this pass sees them (see `accounting`, `budgets`,
        # `ratelimits`); empty until evaluated at the start of the pass.
        self.spend = SpendView()
        self.town_budgets: list[BudgetState] = []
        self.convoy_budgets: dict[str, BudgetState] = {}
        self.rate_limits = RateLimitState()
        # States that should never exist, repaired by this pass (see `repairs`): facts for the
        # adapter to publish, since the invariant check after the pass no longer sees them.
        self.repairs: list[Repair] = []

    @property
    def readiness(self) -> Readiness:
        """Dependency readiness, built on first use (it sees this pass's phase overlay)."""
        if self._readiness is None:
            self._readiness = Readiness(self.index.graph, self.phase_of)
        return self._readiness

    # --- time -------------------------------------------------------------------------------

    def age(self, moment: datetime | None) -> float | None:
        """Seconds since `moment` (negative if it lies in the future); None if unknown."""
        if moment is None:
            return None
        return (self.now - aware(moment)).total_seconds()

    def older_than(self, moment: datetime | None, seconds: float) -> bool:
        """True if `moment` is known and more than `seconds` ago."""
        age = self.age(moment)
        return age is not None and age > seconds

    def within(self, moment: datetime | None, seconds: float) -> bool:
        """True if `moment` is known and at most `seconds` ago (and not in the future)."""
        age = self.age(moment)
        return age is not None and 0 <= age <= seconds

    def since(self, seconds: float) -> datetime:
        """The moment `seconds` before now."""
        return self.now - timedelta(seconds=seconds)

    # --- claims and the plan ------------------------------------------------------------------

    def free(self, kind: Kind, name: str) -> bool:
        """True if no earlier action of this pass writes the object."""
        return (kind, name) not in self._claimed

    def all_free(self, refs: Iterable[Ref]) -> bool:
        """True if none of the objects is claimed yet."""
        return not any(ref in self._claimed for ref in refs)

    def add(self, action: Action, *claims: Ref) -> None:
        """Append an action to the plan and claim the objects it writes."""
        self.actions.append(action)
        self._claimed.update(claims)

    def hold(self, *claims: Ref) -> None:
        """Claim objects without acting on them this pass (a fact awaits verification)."""
        self._claimed.update(claims)

    def replace(self, old: Action, new: Action) -> None:
        """Swap a planned action for another that does its work and more, at the end of the
        plan (so after everything planned in between); claims stay as they are."""
        self.actions.remove(old)
        self.actions.append(new)

    def plan_phase(self, bead: str, phase: BeadPhase) -> None:
        """Record that this pass moves a bead to `phase`."""
        self._phase[bead] = phase
        self._phase_view = None

    def plan_assignee(self, bead: str, agent: str | None) -> None:
        """Record that this pass changes a bead's assignee."""
        self._assignee[bead] = agent

    def plan_hook(self, agent: str, bead: str | None) -> None:
        """Record that this pass changes an agent's hook."""
        self._hook[agent] = bead
        if bead is not None:
            self._hooked_by_plan.setdefault(bead, []).append(agent)

    def phase(self, bead: Bead) -> BeadPhase:
        """The bead's phase after this pass's decisions so far."""
        if self._phase:  # hot path: most passes plan few transitions
            planned = self._phase.get(bead.metadata.name)
            if planned is not None:
                return planned
        return bead.status.phase

    def phase_view(self) -> Mapping[str, BeadPhase]:
        """Every bead's phase after this pass's decisions so far, as one mapping (read-only).

        For loops that look up many beads while planning no transitions themselves: one
        lookup per bead instead of two; rebuilt only after a new transition is planned.
        """
        if not self._phase:
            return self._phases
        if self._phase_view is None:
            if self.index.finished is not None:
                # Copying every finished bead's phase would cost what the summary saves.
                self._phase_view = Layered(self._phase, self._phases)
            else:
                self._phase_view = {**self._phases, **self._phase}
        return self._phase_view

    def quiet_blocked(self) -> bool:
        """True while this pass moves a finished bead (then no settled convoy is skipped)."""
        finished = self.index.finished
        planned = self._phase
        return finished is not None and any(name in finished.records for name in planned)

    def spendless_convoys(self) -> set[str]:
        """Convoys with no spend, no budget state and no budget of their own in the snapshot
        (most settled ones): the spend and budget rules skip them without reading them."""
        if self._spendless is None:
            finished = self.index.finished
            known: dict[str, object] = finished.spendless if finished is not None else {}
            found = set()
            for name, convoy in self.snap.convoys.items():
                if known.get(name) is convoy:
                    found.add(name)
                    continue
                status = convoy.status
                if (
                    status.spend is None
                    and status.budget_exceeded is None
                    and convoy.spec.budget_usd is None
                ):
                    known[name] = convoy
                    found.add(name)
            self._spendless = found
        return self._spendless

    def busy_convoys(self) -> set[str]:
        """Convoys with a live member (a bead that names or is listed by it and is live)."""
        if self._busy is None:
            live = self.index.live
            self._busy = {
                convoy
                for convoy, members in self.index.members.items()
                if any(name in live for name in members)
            }
        return self._busy

    def phase_of(self, name: str) -> BeadPhase | None:
        """Phase of a bead by name, or None if it does not exist."""
        planned = self._phase.get(name)
        if planned is not None:
            return planned
        return self._phases.get(name)

    def assignee(self, bead: Bead) -> str | None:
        """The bead's assignee after this pass's decisions so far."""
        return self._assignee.get(bead.metadata.name, bead.status.assignee)

    def assignee_of(self, bead: str) -> str | None:
        """`assignee`, by the name of a snapshot bead."""
        planned = self._assignee
        if planned and bead in planned:
            return planned[bead]
        return self.index.assignees.get(bead)

    def hook(self, agent: Agent) -> str | None:
        """The agent's hook after this pass's decisions so far."""
        return self._hook.get(agent.metadata.name, agent.spec.hook)

    def is_hooked(self, bead: str) -> bool:
        """True if some agent is hooked to the bead after this pass's decisions so far."""
        if not self._hook:  # hot path: no hook planned yet (the index lists no empty entries)
            return bead in self.index.hooked
        return bool(self.hooked_to(bead))

    def hooked_to(self, bead: str) -> list[str]:
        """Agents hooked to a bead after this pass's decisions so far."""
        if not self._hook:  # hot path: no hook planned yet, the snapshot is the answer
            return list(self.index.hooked.get(bead, ()))
        result = [
            name for name in self.index.hooked.get(bead, ()) if self._hook.get(name, bead) == bead
        ]
        for name in self._hooked_by_plan.get(bead, ()):
            if self._hook.get(name) == bead and name not in result:
                result.append(name)
        return result

    # --- town-wide switches ------------------------------------------------------------------

    @property
    def town_open(self) -> bool:
        """The town's mode (active or shadow) and configuration (no fault, see
        `Snapshot.faults`) allow dispatch; the pass's own holds aside."""
        mode = self.town.spec.mode
        return mode not in (TownMode.PAUSED, TownMode.DRAINING) and not self.snap.faults

    @property
    def dispatch_allowed(self) -> bool:
        """New dispatch happens only in active/shadow mode with the circuit breaker closed and
        no fault of the town's configuration (`Snapshot.faults`)."""
        return self.town_open and self.dispatch_blocked_reason is None
