"""Property tests of spend accounting (never decreases, exactly once, no dispatch over budget)
and of rate-limit holds (no attempt spent, no dispatch into a hold or an open breaker)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gastown.model import BeadPhase
from gastown.reconcile import reconcile
from gastown.reconcile.actions import DispatchAgent
from gastown.reconcile.budgets import town_budget_states
from gastown.reconcile.spend import build_view
from tests.unit.reconcile.builders import World, bead, seconds, town
from tests.unit.reconcile.test_spend import usage

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# One step: (bead index, cost increment in cents, re-deliver instead of growing, extra passes).
STEPS = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 80), st.booleans(), st.integers(0, 2)),
    min_size=1,
    max_size=12,
)


def totals(w: World) -> tuple[float, float, float]:
    spend = w.town.status.spend
    beads = sum(b.status.spend.total.cost_usd for b in w.beads.values() if b.status.spend)
    return (spend.total.cost_usd if spend else 0.0), beads, (spend.today.cost_usd if spend else 0)


@SETTINGS
@given(STEPS)
def test_usage_never_decreases_and_counts_exactly_once(
    steps: list[tuple[int, int, bool, int]],
) -> None:
    w = World.of(town(), *(bead(f"b{i}") for i in range(3)))
    w.settle()
    agents = {f"b{i}": w.agent_on(f"b{i}").name for i in range(3)}
    readings = dict.fromkeys(agents, 0)
    previous = (0.0, 0.0, 0.0)
    for index, cents, redeliver, passes in steps:
        name = f"b{index}"
        if not redeliver:
            readings[name] += cents
        # Cumulative readings of generation 1 of each agent, delivered (again) as reports.
        w.report(agents[name], "usage", generation=1, bead=name, usage=usage(readings[name] / 100))
        for _ in range(1 + passes):
            w.step(seconds(1))
            now = totals(w)
            assert all(n >= p - 1e-9 for n, p in zip(now, previous, strict=True))
            previous = now
    w.settle()
    expected = sum(readings.values()) / 100
    town_total, bead_total, _ = totals(w)
    assert bead_total == pytest_approx(expected)
    assert town_total == pytest_approx(expected)
    # A restart: a fresh world over the same objects counts nothing more.
    fresh = World.of(w.town, *w.beads.values(), *w.agents.values())
    fresh.pods, fresh.now = dict(w.pods), w.now
    fresh.settle()
    assert totals(fresh)[:2] == (town_total, bead_total)


def pytest_approx(value: float) -> object:
    return pytest.approx(value, abs=1e-6)


@SETTINGS
@given(st.lists(st.integers(0, 60), min_size=1, max_size=10), st.integers(20, 150))
def test_a_town_over_its_budget_never_starts_a_dispatch(costs: list[int], budget: int) -> None:
    policy = {"budget": {"perDayUsd": budget / 100}}
    w = World.of(town(policy=policy, total=2, per_rig=2), *(bead(f"b{i}") for i in range(6)))
    spent: dict[str, int] = {}
    for step, cents in enumerate(costs):
        snap = w.snapshot()
        view = build_view(snap, w.town.spec.policy.budget, w.now)
        over = town_budget_states(w.town.spec.policy.budget, view.town, w.now)
        actions = reconcile(snap, w.now)
        if over:
            assert not any(isinstance(a, DispatchAgent) for a in actions)
        w.apply(actions)
        w.now += seconds(30)
        working = sorted((a for a in w.agents.values() if a.spec.hook), key=lambda a: a.name)
        if working and cents:
            agent = working[step % len(working)]
            key = f"{agent.name}/{agent.spec.generation}"
            spent[key] = spent.get(key, 0) + cents
            w.report(agent.name, "usage", bead=agent.spec.hook, usage=usage(spent[key] / 100))


# --- rate-limit holds -------------------------------------------------------------------------

BACKOFF, MAX_HOLD, THRESHOLD, WINDOW = [30, 90], 120, 3, 300
RATE_LIMITS = {
    "backoffSeconds": BACKOFF,
    "maxHoldSeconds": MAX_HOLD,
    "breakerThreshold": THRESHOLD,
    "windowSeconds": WINDOW,
}
BEADS = 4
# One step: (bead index, how its session ends, retry-after the provider gave, seconds to wait).
ENDINGS = st.lists(
    st.tuples(
        st.integers(0, BEADS - 1),
        st.sampled_from(["rate-limited", "rate-limited", "done", "failed"]),
        st.none() | st.integers(1, 200),
        st.integers(0, 200),
    ),
    min_size=1,
    max_size=15,
)


class HoldOracle:
    """What the rate-limit rules promise, kept apart from the code that keeps them."""

    def __init__(self) -> None:
        self.until: dict[str, datetime] = {}
        self.count: dict[str, int] = {}
        self.last_at: dict[str, datetime] = {}

    def rate_limited(self, bead_name: str, now: datetime, retry_after: int | None) -> None:
        count = self.count.get(bead_name, 0) + 1
        wait = retry_after if retry_after is not None else BACKOFF[min(count, len(BACKOFF)) - 1]
        wait = max(1, min(wait, MAX_HOLD))
        self.count[bead_name] = count
        self.until[bead_name] = now + seconds(wait)
        self.last_at[bead_name] = now

    def breaker_open(self, now: datetime) -> bool:
        """The last rate-limited ending of each bead, counted while inside the window."""
        recent = sum(1 for at in self.last_at.values() if now - at <= seconds(WINDOW))
        return recent >= THRESHOLD


def checked_pass(w: World, oracle: HoldOracle) -> list[Any]:
    """One pass; no dispatch of a held bead before its hold ends, none while the breaker is open,
    and none at all while any hold is in force (the town backs off)."""
    actions = reconcile(w.snapshot(), w.now)
    for action in actions:
        if not isinstance(action, DispatchAgent):
            continue
        assert not oracle.breaker_open(w.now), f"{action.bead} dispatched, breaker open"
        until = oracle.until.get(action.bead)
        assert until is None or until <= w.now, f"{action.bead} dispatched before {until}"
        holding = sorted(name for name, end in oracle.until.items() if end > w.now)
        assert not holding, f"{action.bead} dispatched while {holding} are held"
    w.apply(actions)
    w.history.append(actions)
    return actions


@SETTINGS
@given(ENDINGS)
def test_rate_limit_holds_spend_no_attempt_and_hold_dispatch(
    endings: list[tuple[int, str, int | None, int]],
) -> None:
    the_town = town(policy={"rateLimits": RATE_LIMITS}, total=BEADS, per_rig=BEADS)
    w = World.of(the_town, *(bead(f"b{i}") for i in range(BEADS)))
    oracle = HoldOracle()
    checked_pass(w, oracle)
    for index, ending, retry_after, wait in endings:
        # Time passes, with a pass on the way; the ending comes in before the next pass.
        w.now += seconds(wait / 2)
        checked_pass(w, oracle)
        w.now += seconds(wait / 2)
        name = f"b{index}"
        hooked = [a for a in w.agents.values() if a.spec.hook == name]
        if hooked and w.bead(name).status.phase is BeadPhase.IN_PROGRESS:
            agent = hooked[0].name
            attempts = w.bead(name).status.attempts
            if ending == "rate-limited":
                limit = {"status": 429} | (
                    {"retryAfterSeconds": retry_after} if retry_after is not None else {}
                )
                w.report(agent, ending, bead=name, message="429", rateLimit=limit)
                oracle.rate_limited(name, w.now, retry_after)
            elif ending == "failed":
                w.report(agent, ending, bead=name, message="tests fail")
            else:
                w.report(agent, ending, bead=name, summary="did it")
            checked_pass(w, oracle)
            status = w.bead(name).status
            if ending == "rate-limited":
                # The attempt is given back, never spent; the hold is the one promised.
                assert status.attempts == attempts - 1
                assert status.phase is BeadPhase.OPEN
                assert status.rate_limited is not None
                assert status.rate_limited.until == oracle.until[name]
            else:
                assert status.attempts == attempts
        else:
            checked_pass(w, oracle)
