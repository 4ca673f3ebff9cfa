"""The conditions that show spend, budgets and rate limits (Town, Convoy, Bead), with figures."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from gastown.kube.conditions import bead_conditions, convoy_conditions
from gastown.kube.status import build_town_status
from gastown.model import Condition
from gastown.model.town import PassMetrics, TownStatus
from gastown.reconcile.writes import Kind, iso
from tests.unit.reconcile.builders import T0, bead, convoy, snapshot, task, town
from tests.unit.reconcile.test_spend import report_usage, spend_world

DAY = "2026-03-01"  # the UTC day of T0
MONTH = "2026-03"


def town_status(policy: dict[str, Any], status: dict[str, Any], *beads: Any) -> TownStatus:
    snap = snapshot(town(policy=policy, status=status), beads)
    return build_town_status(snap, [], PassMetrics(), [], T0)


def condition(status: TownStatus, type_: str) -> Condition:
    found = [c for c in status.conditions if c.type == type_]
    assert len(found) == 1, [c.type for c in status.conditions]
    return found[0]


def spent(today: float, month: float | None = None) -> dict[str, Any]:
    """A town status with `today` dollars spent today (and `month` this month)."""
    month = today if month is None else month
    return {
        "spend": {
            "total": {"costUsd": month, "tokens": 1000},
            "today": {"costUsd": today, "tokens": 1000, "window": DAY},
            "month": {"costUsd": month, "tokens": 1000, "window": MONTH},
        }
    }


# --- Town: BudgetExceeded ----------------------------------------------------------------------


def test_a_town_over_its_day_budget_shows_the_figures() -> None:
    status = town_status({"budget": {"perDayUsd": 5.0}}, spent(5.2))
    cond = condition(status, "BudgetExceeded")
    assert cond.status.value == "True"
    assert cond.reason == "BudgetReached"
    assert cond.message == f"day {DAY}: $5.20 of $5.00; no new dispatch"
    assert [(b.scope, b.spent_usd, b.budget_usd) for b in status.budget_exceeded] == [
        ("day", 5.2, 5.0)
    ]
    assert status.summary == "dispatch held: day budget reached"


def test_a_town_over_day_and_month_budgets_names_both() -> None:
    status = town_status({"budget": {"perDayUsd": 5.0, "perMonthUsd": 40.0}}, spent(6.0, 41.5))
    cond = condition(status, "BudgetExceeded")
    assert cond.status.value == "True"
    assert cond.message == (
        f"day {DAY}: $6.00 of $5.00; month {MONTH}: $41.50 of $40.00; no new dispatch"
    )


def test_a_town_under_its_budgets_is_not_exceeded() -> None:
    status = town_status({"budget": {"perDayUsd": 5.0, "perMonthUsd": 40.0}}, spent(4.99, 39))
    cond = condition(status, "BudgetExceeded")
    assert cond.status.value == "False"
    assert cond.reason == "UnderBudget"
    assert cond.message == "spend is under every town budget"
    assert status.budget_exceeded == []


def test_yesterdays_spend_does_not_hold_today() -> None:
    yesterday = spent(9.0)
    yesterday["spend"]["today"]["window"] = "2026-02-28"
    status = town_status({"budget": {"perDayUsd": 5.0}}, yesterday)
    assert condition(status, "BudgetExceeded").status.value == "False"


# --- Town: RateLimited -------------------------------------------------------------------------


def limited(name: str, ago: float, hold: float, phase: str = "open", count: int = 1) -> Any:
    """A bead whose rate-limited ending was `ago` seconds before T0, held for `hold` seconds."""
    at = T0 - timedelta(seconds=ago)
    record = {"at": at, "until": at + timedelta(seconds=hold), "count": count}
    return bead(name, phase=phase, rateLimited=record)


def test_an_open_rate_limit_breaker_shows_on_the_town() -> None:
    policy = {"rateLimits": {"breakerThreshold": 2, "windowSeconds": 600}}
    # Both holds are over; the two endings still lie inside the window.
    status = town_status(policy, {}, limited("a", 120, 30), limited("b", 60, 30))
    cond = condition(status, "RateLimited")
    assert cond.status.value == "True"
    assert cond.reason == "RateLimitBreakerOpen"
    assert cond.message == "2 rate-limited sessions in the window: new dispatch paused"
    assert status.rate_limits.breaker_open is True
    assert status.rate_limits.recent == 2
    assert status.summary == "dispatch paused: 2 rate limits in the window"


def test_a_hold_in_force_backs_the_town_off_until_it_ends() -> None:
    status = town_status({}, {}, limited("a", 10, 40))
    cond = condition(status, "RateLimited")
    assert cond.status.value == "True"
    assert cond.reason == "Backoff"
    until = iso(T0 + timedelta(seconds=30))
    assert cond.message == f"1 beads held; dispatch resumes at {until}"
    assert status.rate_limits.breaker_open is False
    assert (status.rate_limits.held_beads, status.rate_limits.until) == (
        1,
        T0 + timedelta(seconds=30),
    )
    assert status.summary == "dispatch backing off: rate-limited (1 held)"


def test_without_rate_limits_the_town_is_not_limited() -> None:
    # An old ending outside the window, and a dispatched bead whose hold is over.
    status = town_status({}, {}, limited("a", 3600, 30), limited("b", 10, 5, "in_progress"))
    cond = condition(status, "RateLimited")
    assert cond.status.value == "False"
    assert cond.reason == "NotLimited"
    assert status.rate_limits.breaker_open is False
    assert status.rate_limits.until is None


# --- Convoy: BudgetExceeded --------------------------------------------------------------------


def by_type(conditions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    types = [c["type"] for c in conditions]
    assert len(types) == len(set(types)), types
    return {c["type"]: c for c in conditions}


def test_a_convoy_at_its_budget_shows_the_figures() -> None:
    status = {
        "phase": "InProgress",
        "spend": {"total": {"costUsd": 1.2, "tokens": 900}},
        "budgetExceeded": {"scope": "convoy", "spentUsd": 1.2, "budgetUsd": 1.0},
    }
    cond = by_type(convoy_conditions(status))["BudgetExceeded"]
    assert cond["status"] == "True"
    assert cond["reason"] == "BudgetReached"
    assert cond["message"] == "spent $1.20 of $1.00: no new work is dispatched"


def test_the_reconcilers_convoy_status_at_its_budget_carries_the_condition() -> None:
    w = spend_world(None, convoy("c", [task("a")]))
    w.patch_spec(Kind.CONVOY, "c", {"budgetUsd": 1.0})
    w.settle()
    report_usage(w, "c-a", 1.25)
    w.settle()
    status = w.convoys["c"].status.model_dump(mode="json", by_alias=True)
    cond = by_type(convoy_conditions(status))["BudgetExceeded"]
    assert (cond["status"], cond["message"]) == (
        "True",
        "spent $1.25 of $1.00: no new work is dispatched",
    )


def test_a_convoy_under_its_budget_shows_its_spend() -> None:
    status = {"phase": "InProgress", "spend": {"total": {"costUsd": 0.4, "tokens": 300}}}
    cond = by_type(convoy_conditions(status))["BudgetExceeded"]
    assert cond["status"] == "False"
    assert cond["reason"] == "UnderBudget"
    assert cond["message"] == "spent $0.40"


# --- Bead: RateLimited -------------------------------------------------------------------------

HOLD = {"at": "2026-03-01T12:00:00Z", "until": "2026-03-01T12:00:30Z", "count": 2}


def test_an_open_held_bead_is_rate_limited() -> None:
    cond = by_type(bead_conditions({"phase": "open", "rateLimited": HOLD}))["RateLimited"]
    assert cond["status"] == "True"
    assert cond["reason"] == "ProviderRateLimit"
    assert cond["message"] == "held until 2026-03-01T12:00:30Z after 2 rate-limited ending(s)"


def test_a_dispatched_bead_keeps_its_last_hold_as_a_false_condition() -> None:
    status = {"phase": "in_progress", "assignee": "p1", "rateLimited": HOLD}
    cond = by_type(bead_conditions(status))["RateLimited"]
    assert cond["status"] == "False"
    assert cond["reason"] == "Dispatched"
    assert cond["message"] == "last: held until 2026-03-01T12:00:30Z after 2 rate-limited ending(s)"


def test_a_bead_never_rate_limited_has_no_such_condition() -> None:
    assert "RateLimited" not in by_type(bead_conditions({"phase": "open"}))
