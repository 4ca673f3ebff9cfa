"""Property tests of spend accounting: never decreases, exactly once, no dispatch over budget."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
