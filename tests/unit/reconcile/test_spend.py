"""Spend accounting, budgets and rate-limit holds in the pure reconciler (issue 12)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from gastown.model import BeadPhase
from gastown.reconcile.actions import DispatchAgent
from gastown.reconcile.writes import Kind
from tests.unit.reconcile.builders import T0, World, bead, convoy, seconds, task, town

HOUR = timedelta(hours=1)


def usage(cost: float | None, tokens: int = 1000, model: str = "claude-x") -> dict[str, Any]:
    """A cumulative usage reading as the runtime reports it (no cost: tokens only)."""
    reading: dict[str, Any] = {"inputTokens": tokens, "outputTokens": tokens // 10, "model": model}
    if cost is not None:
        reading |= {"costUsd": cost, "costReported": True}
    return reading


def spend_world(policy: dict[str, Any] | None = None, *objects: Any, **limits: Any) -> World:
    return World.of(town(policy={"budget": policy or {}}, **limits), *objects)


def report_usage(w: World, bead_name: str, cost: float | None, **kw: Any) -> str:
    agent = w.agent_on(bead_name).name
    w.report(agent, "usage", bead=bead_name, usage=usage(cost, **kw))
    return agent


def bead_cost(w: World, name: str) -> float:
    spend = w.bead(name).status.spend
    return spend.total.cost_usd if spend else 0.0


def town_cost(w: World) -> tuple[float, float, float]:
    spend = w.town.status.spend
    assert spend is not None
    return spend.total.cost_usd, spend.today.cost_usd, spend.month.cost_usd


# --- accounting -----------------------------------------------------------------------------


def test_usage_is_counted_once_into_bead_convoy_and_town() -> None:
    w = spend_world(None, convoy("c", [task("a")]))
    w.settle()
    report_usage(w, "c-a", 1.25)
    w.settle()
    assert bead_cost(w, "c-a") == 1.25
    assert w.convoys["c"].status.spend is not None
    assert w.convoys["c"].status.spend.total.cost_usd == 1.25
    assert town_cost(w) == (1.25, 1.25, 1.25)
    # Re-delivered (the same cumulative reading in a new report) and re-read: nothing more.
    report_usage(w, "c-a", 1.25)
    w.settle()
    w.settle()
    assert bead_cost(w, "c-a") == 1.25
    assert town_cost(w) == (1.25, 1.25, 1.25)
    # A later reading of the same session replaces, never adds to, the earlier one.
    report_usage(w, "c-a", 2.0)
    w.settle()
    assert bead_cost(w, "c-a") == 2.0
    assert w.convoys["c"].status.spend.total.cost_usd == 2.0
    assert town_cost(w) == (2.0, 2.0, 2.0)


def test_a_restarted_operator_recounts_nothing() -> None:
    w = spend_world(None, bead("a"))
    w.settle()
    report_usage(w, "a", 0.5)
    w.settle()
    before = (w.bead("a").status.spend, w.town.status.spend)
    # A new operator process: nothing in memory, the same objects (and reports) in the API.
    fresh = World.of(w.town, *w.beads.values(), *w.agents.values())
    fresh.pods, fresh.now = dict(w.pods), w.now
    fresh.settle()
    assert (fresh.bead("a").status.spend, fresh.town.status.spend) == before


def test_attempts_add_up_on_the_bead() -> None:
    w = spend_world(None, bead("a"))
    w.settle()
    first = report_usage(w, "a", 0.3)
    w.report(first, "failed", bead="a", message="boom", usage=usage(0.4))
    w.settle()
    w.settle(advance=timedelta(minutes=3))  # backoff over: the second attempt
    assert w.bead("a").status.attempts == 2
    report_usage(w, "a", 0.1)
    w.settle()
    assert bead_cost(w, "a") == pytest.approx(0.5)
    assert len(w.bead("a").status.spend.sessions) == 2
    assert town_cost(w)[0] == pytest.approx(0.5)


def test_tokens_without_cost_are_priced_from_the_town_price_table() -> None:
    prices = [{"model": "gpt-*", "inputPerMtok": 2.0, "outputPerMtok": 10.0}]
    w = spend_world({"prices": prices}, bead("a"))
    w.settle()
    report_usage(w, "a", None, tokens=1_000_000, model="gpt-5")
    w.settle()
    # 1M input at $2 + 100k output at $10/M
    assert bead_cost(w, "a") == pytest.approx(3.0)
    assert w.bead("a").status.spend.total.cost_reported is False


def test_a_new_day_starts_from_zero_and_the_month_keeps_counting() -> None:
    w = spend_world(None, bead("a"))
    w.settle()
    agent = report_usage(w, "a", 1.0)
    w.settle()
    w.now = T0.replace(hour=23, minute=59)
    w.settle()
    w.step(timedelta(minutes=2))  # past midnight UTC
    # The same session (generation 1) reports more after midnight.
    w.report(agent, "usage", generation=1, bead="a", usage=usage(1.5))
    w.settle()
    total, today, month = town_cost(w)
    assert (total, today, month) == (1.5, 0.5, 1.5)
    assert w.town.status.spend.today.window == "2026-03-02"


# --- budgets --------------------------------------------------------------------------------


def test_a_bead_over_its_budget_fails_and_its_agent_is_stopped() -> None:
    w = spend_world({"perBeadUsd": 1.0}, bead("a"))
    w.settle()
    agent = report_usage(w, "a", 1.5)
    w.settle()
    assert w.bead("a").status.phase is BeadPhase.FAILED
    assert w.bead("a").status.reason == "BudgetExceeded"
    assert w.agents[agent].spec.hook is None
    assert w.stopped  # its pod is stopped


def test_town_day_budget_holds_new_dispatch_lets_work_finish_and_resumes_next_day() -> None:
    w = spend_world({"perDayUsd": 1.0}, bead("a"), total=1, per_rig=1)
    w.settle()
    agent = report_usage(w, "a", 1.2)
    w.settle()
    # Running work finishes (onExceeded: finish): the agent is still on its bead.
    assert w.agents[agent].spec.hook == "a"
    w.put(bead("b"))
    w.report(agent, "failed", bead="a", message="gave up")
    w.settle()
    w.settle(advance=timedelta(minutes=5))
    assert w.bead("b").status.phase is BeadPhase.OPEN
    assert w.bead("a").status.phase is BeadPhase.OPEN
    assert not any(isinstance(a, DispatchAgent) for a in w.history[-1])
    # The next UTC day the window rolls over and dispatch resumes by itself.
    w.now = T0.replace(hour=0) + timedelta(days=1)
    w.settle()
    assert BeadPhase.IN_PROGRESS in (w.bead("a").status.phase, w.bead("b").status.phase)


def test_convoy_budget_holds_its_work_until_the_budget_is_raised() -> None:
    w = spend_world(None, convoy("c", [task("a"), task("b", "a")]))
    w.patch_spec(Kind.CONVOY, "c", {"budgetUsd": 1.0})
    w.settle()
    agent = report_usage(w, "c-a", 1.0)
    w.report(agent, "done", bead="c-a")
    w.settle()
    w.put(w.bead("c-a").model_copy())  # (c-b waits on c-a: close it by hand, as a merge would)
    w._patch_status(Kind.BEAD, "c-a", {"phase": "closed"})
    w.settle()
    assert w.bead("c-b").status.phase is BeadPhase.OPEN
    assert w.bead("c-b").status.reason == "BudgetExceeded"
    assert w.convoys["c"].status.budget_exceeded is not None
    w.patch_spec(Kind.CONVOY, "c", {"budgetUsd": 5.0})
    w.settle()
    assert w.bead("c-b").status.phase is BeadPhase.IN_PROGRESS
    assert w.convoys["c"].status.budget_exceeded is None


def test_stop_mode_stops_running_agents_and_gives_the_attempt_back() -> None:
    w = spend_world({"perDayUsd": 1.0, "onExceeded": "stop"}, bead("a"), bead("b"))
    w.settle()
    report_usage(w, "a", 1.0)
    w.settle()
    for name in ("a", "b"):
        assert w.bead(name).status.phase is BeadPhase.OPEN
        assert w.bead(name).status.attempts == 0
        assert w.bead(name).status.reason == "BudgetExceeded"
    assert len(w.stopped) == 2


# --- rate limits ----------------------------------------------------------------------------


def rate_limited(w: World, bead_name: str, retry_after: int | None) -> None:
    agent = w.agent_on(bead_name).name
    limit = {"status": 429} | ({"retryAfterSeconds": retry_after} if retry_after else {})
    w.report(agent, "rate-limited", bead=bead_name, message="429", rateLimit=limit)


def test_a_rate_limited_ending_spends_no_attempt_and_holds_the_bead_until_retry_after() -> None:
    w = World.of(town(), bead("a"))
    w.settle()
    assert w.bead("a").status.attempts == 1
    rate_limited(w, "a", 30)
    w.settle()
    status = w.bead("a").status
    assert status.phase is BeadPhase.OPEN
    assert status.attempts == 0
    assert status.reason == "RateLimited"
    assert status.rate_limited is not None
    assert status.rate_limited.until == w.now + seconds(30)
    assert status.last_failure_at is None  # not a failure: no backoff, no failure breaker
    # The town backs off: nothing else is dispatched into the limit either.
    w.put(bead("b"))
    w.settle(advance=seconds(10))
    assert w.bead("b").status.phase is BeadPhase.OPEN
    w.settle(advance=seconds(25))
    assert w.bead("a").status.phase is BeadPhase.IN_PROGRESS
    assert w.bead("a").status.attempts == 1


def test_without_retry_after_the_policy_backoff_applies() -> None:
    w = World.of(town(policy={"rateLimits": {"backoffSeconds": [45, 90]}}), bead("a"))
    w.settle()
    rate_limited(w, "a", None)
    w.settle()
    assert w.bead("a").status.rate_limited.until == w.now + seconds(45)
    w.settle(advance=seconds(46))
    rate_limited(w, "a", None)
    w.settle()
    hold = w.bead("a").status.rate_limited
    assert (hold.count, hold.until) == (2, w.now + seconds(90))


def test_repeated_rate_limits_open_the_breaker_until_they_age_out() -> None:
    limits = {"breakerThreshold": 2, "windowSeconds": 600, "backoffSeconds": [5]}
    w = World.of(town(policy={"rateLimits": limits}), bead("a"), bead("b"), bead("c"))
    w.settle()
    rate_limited(w, "a", None)
    rate_limited(w, "b", None)
    w.settle()
    w.step(seconds(60))  # the holds are over, but two endings lie in the window
    assert w.bead("a").status.phase is BeadPhase.OPEN
    assert w.bead("b").status.phase is BeadPhase.OPEN
    w.step(seconds(600))
    assert w.bead("a").status.phase is BeadPhase.IN_PROGRESS


def test_a_usage_report_changes_no_state() -> None:
    w = World.of(town(), bead("a"))
    w.settle()
    agent = report_usage(w, "a", 0.1)
    w.settle()
    assert w.bead("a").status.phase is BeadPhase.IN_PROGRESS
    assert w.agents[agent].spec.hook == "a"
    assert w.agents[agent].status.applied_report_seq == 1
