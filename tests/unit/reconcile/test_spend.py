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


def dispatches(w: World, since: int = 0) -> list[DispatchAgent]:
    """Every DispatchAgent of the passes from `since` on."""
    return [a for pass_ in w.history[since:] for a in pass_ if isinstance(a, DispatchAgent)]


def finish_coding_over_budget(w: World, name: str, cost: float) -> int:
    """The polecat on `name` reports `cost` spent, then done; returns where the passes after
    that begin in `w.history`."""
    polecat = report_usage(w, name, cost)
    w.report(polecat, "done", bead=name, summary=f"did {name}")
    since = len(w.history)
    w.settle(advance=seconds(5))
    return since


def test_finish_mode_over_the_day_budget_merges_done_work_and_starts_no_new_coding() -> None:
    w = spend_world({"perDayUsd": 1.0}, bead("a"), bead("b"), total=1, per_rig=1)
    w.settle()
    assert w.bead("b").status.phase is BeadPhase.OPEN  # no capacity for it yet
    since = finish_coding_over_budget(w, "a", 1.2)
    # The finished bead gets to land: its merge request is dispatched to the refinery...
    mr = w.bead("a").status.merge_request
    assert mr is not None
    assert w.bead(mr).status.phase is BeadPhase.IN_PROGRESS
    assert [(d.role, d.bead) for d in dispatches(w, since)] == [("refinery", mr)]
    refinery = w.agent_on(mr).name
    w.report(refinery, "merged", mergeCommit="c0ffee")
    w.settle(advance=seconds(5))
    assert w.bead(mr).status.phase is BeadPhase.CLOSED
    assert w.bead("a").status.phase is BeadPhase.CLOSED
    # ...while the free polecat takes no new bead: the town is still over its day budget.
    assert w.bead("b").status.phase is BeadPhase.OPEN
    assert w.bead("b").status.assignee is None
    assert [d.role for d in dispatches(w, since)] == ["refinery"]
    assert w.town.status.spend is not None
    assert w.town.status.spend.today.cost_usd == 1.2


def test_stop_mode_over_the_day_budget_holds_the_merge_request_too() -> None:
    w = spend_world({"perDayUsd": 1.0, "onExceeded": "stop"}, bead("a"))
    w.settle()
    since = finish_coding_over_budget(w, "a", 1.2)
    mr = w.bead("a").status.merge_request
    assert mr is not None
    assert w.bead(mr).status.phase is BeadPhase.OPEN
    assert w.bead("a").status.phase is BeadPhase.IN_REVIEW
    assert dispatches(w, since) == []
    # The next UTC day the merge request goes to the refinery.
    w.now = T0.replace(hour=0) + timedelta(days=1)
    w.settle()
    assert w.bead(mr).status.phase is BeadPhase.IN_PROGRESS


def test_finish_mode_rate_limit_holds_still_hold_merge_requests() -> None:
    w = spend_world({"perDayUsd": 1.0}, bead("a"), bead("b"))
    w.settle()
    report_usage(w, "a", 1.2)
    rate_limited(w, "b", 60)
    polecat = w.agent_on("a").name
    w.report(polecat, "done", bead="a", summary="did a")
    w.settle(advance=seconds(5))
    mr = w.bead("a").status.merge_request
    assert mr is not None
    assert w.bead(mr).status.phase is BeadPhase.OPEN  # the provider's limit is in force
    w.settle(advance=seconds(60))  # the hold is over: the merge goes on, b stays held
    assert w.bead(mr).status.phase is BeadPhase.IN_PROGRESS
    assert w.bead("b").status.phase is BeadPhase.OPEN


def test_convoy_budget_in_finish_mode_merges_done_work() -> None:
    w = spend_world(None, convoy("c", [task("a"), task("b")]))
    w.patch_spec(Kind.CONVOY, "c", {"budgetUsd": 1.0})
    w.settle()
    polecat = report_usage(w, "c-a", 1.2)
    w.report(polecat, "done", bead="c-a", summary="did a")
    w.settle(advance=seconds(5))
    mr = w.bead("c-a").status.merge_request
    assert mr is not None
    assert w.bead(mr).status.phase is BeadPhase.IN_PROGRESS


def test_convoy_budget_in_stop_mode_holds_its_merge_requests_but_not_others() -> None:
    w = spend_world({"onExceeded": "stop"}, convoy("c", [task("a")]), bead("x"))
    w.patch_spec(Kind.CONVOY, "c", {"budgetUsd": 1.0})
    w.settle()
    polecat = report_usage(w, "c-a", 1.2)
    w.report(polecat, "done", bead="c-a", summary="did a")
    w.settle(advance=seconds(5))
    w.report(w.agent_on("x").name, "done", bead="x", summary="did x")
    w.settle(advance=seconds(5))
    held = w.bead("c-a").status.merge_request
    other = w.bead("x").status.merge_request
    assert held is not None
    assert other is not None
    assert w.bead(held).status.phase is BeadPhase.OPEN
    assert w.bead(held).status.reason == "BudgetExceeded"
    assert w.bead(other).status.phase is BeadPhase.IN_PROGRESS  # another convoy's work merges
    w.patch_spec(Kind.CONVOY, "c", {"budgetUsd": 5.0})
    w.report(w.agent_on(other).name, "merged", mergeCommit="c0ffee")
    w.settle(advance=seconds(5))
    assert w.bead(held).status.phase is BeadPhase.IN_PROGRESS


def test_month_budget_holds_new_dispatch_until_the_first_of_the_next_month() -> None:
    w = spend_world({"perMonthUsd": 10.0}, bead("a"), total=1, per_rig=1)
    w.settle()
    agent = report_usage(w, "a", 10.5)
    w.settle()
    assert w.agents[agent].spec.hook == "a"  # onExceeded: finish
    w.put(bead("b"))
    w.report(agent, "failed", bead="a", message="gave up")
    w.settle()
    assert w.town.status.spend is not None
    assert w.town.status.spend.month.window == "2026-03"
    # Days later, still in March: the month's budget still holds (the day's would not).
    w.now = T0.replace(day=31, hour=23, minute=59)
    since = len(w.history)
    w.settle()
    assert dispatches(w, since) == []
    assert w.bead("a").status.phase is BeadPhase.OPEN
    assert w.bead("b").status.phase is BeadPhase.OPEN
    # The 1st of April (UTC): the month rolls over and dispatch resumes by itself.
    w.now = T0.replace(month=4, day=1, hour=0, minute=0)
    w.settle()
    assert dispatches(w, since)
    assert BeadPhase.IN_PROGRESS in (w.bead("a").status.phase, w.bead("b").status.phase)


def test_raising_the_town_budget_resumes_dispatch() -> None:
    w = spend_world({"perDayUsd": 1.0}, bead("a"), total=1, per_rig=1)
    w.settle()
    agent = report_usage(w, "a", 1.2)
    w.settle()
    w.put(bead("b"))
    w.report(agent, "failed", bead="a", message="gave up")
    w.settle(advance=timedelta(minutes=5))
    assert w.bead("a").status.phase is BeadPhase.OPEN
    assert w.bead("b").status.phase is BeadPhase.OPEN
    since = len(w.history)
    w.patch_spec(Kind.TOWN, w.town.name, {"policy": {"budget": {"perDayUsd": 2.0}}})
    w.settle()
    assert dispatches(w, since)
    assert BeadPhase.IN_PROGRESS in (w.bead("a").status.phase, w.bead("b").status.phase)


def test_convoy_budget_in_stop_mode_stops_its_running_work_only() -> None:
    w = spend_world({"onExceeded": "stop"}, convoy("c", [task("a"), task("b")]), bead("x"))
    w.patch_spec(Kind.CONVOY, "c", {"budgetUsd": 1.0})
    w.settle()
    report_usage(w, "c-a", 1.0)
    w.settle()
    for name in ("c-a", "c-b"):
        status = w.bead(name).status
        assert (status.phase, status.attempts, status.reason) == (
            BeadPhase.OPEN,
            0,
            "BudgetExceeded",
        )
    # Work outside the convoy goes on.
    assert w.bead("x").status.phase is BeadPhase.IN_PROGRESS
    assert len(w.stopped) == 2
    w.patch_spec(Kind.CONVOY, "c", {"budgetUsd": 5.0})
    w.settle()
    assert w.bead("c-a").status.phase is BeadPhase.IN_PROGRESS
    assert w.bead("c-b").status.phase is BeadPhase.IN_PROGRESS


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


def test_the_pass_that_applies_a_rate_limited_ending_starts_nothing_else() -> None:
    w = World.of(town(), bead("a"), bead("b"))
    w.settle()
    w.report(w.agent_on("a").name, "failed", bead="a", message="tests fail")
    w.settle()
    # a's backoff runs out while no pass runs; then b's session ends on a rate limit.
    w.now += timedelta(minutes=3)
    rate_limited(w, "b", 60)
    actions = w.step()
    assert w.bead("b").status.rate_limited is not None
    assert not any(isinstance(a, DispatchAgent) for a in actions)
    assert w.bead("a").status.phase is BeadPhase.OPEN
    w.settle(advance=seconds(61))
    assert w.bead("a").status.phase is BeadPhase.IN_PROGRESS


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
