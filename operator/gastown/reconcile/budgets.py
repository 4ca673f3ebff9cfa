"""Budgets: per bead, per convoy and per town (day, month), checked on every pass from facts.

- **Bead.** A bead whose spend (over all its attempts) exceeds `perBeadUsd` fails with reason
  BudgetExceeded; an agent still working on it is stopped.
- **Convoy.** At its budget (`Convoy.spec.budgetUsd`, else `perConvoyUsd`) no new work of the
  convoy is dispatched; `status.budgetExceeded` holds the figures (condition BudgetExceeded).
- **Town.** At `perDayUsd` (today, UTC) or `perMonthUsd` (this month) nothing new is dispatched
  in the town (`TownStatus.budgetExceeded`, condition BudgetExceeded).

At a town or convoy budget, running agents finish their bead (`onExceeded: finish`) or are
stopped (`stop`: the bead reopens and the attempt is given back). Finishing a bead means
merging it, so with `finish` the review and merge of work whose coding is done go on (the
refinery is dispatched to its merge requests); with `stop` merge requests wait for the budget
too (a review already under way completes). Nothing has to be undone to resume: when the window
rolls over or the budget is raised, the next pass finds the scope under its budget and
dispatches again.
"""

from __future__ import annotations

from datetime import datetime

from gastown.model import AgentPhase, AgentRole, Bead, BeadPhase, BeadType, Convoy
from gastown.model.policy import BudgetAction, BudgetPolicy
from gastown.model.spend import BudgetState, TownSpend
from gastown.reconcile.actions import WARNING
from gastown.reconcile.context import Pass
from gastown.reconcile.ops import release_agent, transition
from gastown.reconcile.spend import day_window, month_window, rolled, spend_convoy
from gastown.reconcile.writes import Kind

BUDGET_EXCEEDED = "BudgetExceeded"


def town_budget_states(policy: BudgetPolicy, spend: TownSpend, now: datetime) -> list[BudgetState]:
    """The town budgets reached by `spend` at `now` (a rolled-over window counts as empty)."""
    states: list[BudgetState] = []
    today = rolled(spend.today, day_window(now))
    month = rolled(spend.month, month_window(now))
    if policy.per_day_usd is not None and today.cost_usd >= policy.per_day_usd:
        states.append(
            BudgetState(
                scope="day",
                spent_usd=today.cost_usd,
                budget_usd=policy.per_day_usd,
                window=today.window,
            )
        )
    if policy.per_month_usd is not None and month.cost_usd >= policy.per_month_usd:
        states.append(
            BudgetState(
                scope="month",
                spent_usd=month.cost_usd,
                budget_usd=policy.per_month_usd,
                window=month.window,
            )
        )
    return states


def convoy_budget(policy: BudgetPolicy, convoy: Convoy) -> float | None:
    """The convoy's budget: its own, else the town's default."""
    return convoy.spec.budget_usd if convoy.spec.budget_usd is not None else policy.per_convoy_usd


def convoy_budget_state(ctx: Pass, convoy: Convoy) -> BudgetState | None:
    """The convoy's reached budget, or None."""
    budget = convoy_budget(ctx.policy.budget, convoy)
    if budget is None:
        return None
    spent = ctx.spend.effective_convoy.get(convoy.name)
    if spent is None or spent.cost_usd < budget:
        return None
    return BudgetState(scope="convoy", spent_usd=spent.cost_usd, budget_usd=budget)


def describe(state: BudgetState) -> str:
    """One line for humans: `day 2026-12-02: $5.20 of $5.00`."""
    where = f"{state.scope} {state.window}".strip()
    return f"{where}: ${state.spent_usd:.2f} of ${state.budget_usd:.2f}"


def evaluate_budgets(ctx: Pass) -> None:
    """Hold new dispatch for the town or for convoys at their budget (this pass)."""
    ctx.town_budgets = town_budget_states(ctx.policy.budget, ctx.spend.town, ctx.now)
    if ctx.town_budgets and ctx.dispatch_blocked_reason is None:
        ctx.dispatch_blocked_reason = BUDGET_EXCEEDED
    default = ctx.policy.budget.per_convoy_usd
    skip = ctx.spendless_convoys() if default is None else set()
    for name, convoy in ctx.snap.convoys.items():
        if name in skip:
            continue  # no budget at all: `convoy_budget_state` is None
        state = convoy_budget_state(ctx, convoy)
        if state is not None:
            ctx.convoy_budgets[convoy.name] = state


def over_budget_convoy(ctx: Pass, bead: Bead) -> str | None:
    """The convoy of `bead` if it is at its budget (its work is not dispatched)."""
    if not ctx.convoy_budgets:
        return None
    name = ctx.index.convoy_name(bead)
    return name if name is not None and name in ctx.convoy_budgets else None


def review_allowed(ctx: Pass, mr: Bead) -> bool:
    """May a refinery be dispatched to `mr` (a merge request) in this pass?

    As new dispatch, except for budgets in `onExceeded: finish` mode: the merge request carries
    work whose coding is done, and finishing that work means merging it. A town budget then
    holds only new coding; everything else that holds new dispatch (paused or draining mode, a
    fault of the town's configuration, the failure breaker, rate-limit holds and the rate-limit
    breaker) still holds merge requests. With `stop`, a merge request waits while the town or
    the convoy its work counts for is at its budget.
    """
    finish = ctx.policy.budget.on_exceeded is BudgetAction.FINISH
    if not ctx.dispatch_allowed:
        if not finish or ctx.dispatch_blocked_reason != BUDGET_EXCEEDED or not ctx.town_open:
            return False
        # The budget took the pass's hold first: rate limits still hold merge requests.
        limits = ctx.rate_limits
        return not limits.breaker_open and limits.until is None
    return finish or held_review_convoy(ctx, mr) is None


def held_review_convoy(ctx: Pass, mr: Bead) -> str | None:
    """The convoy (at its budget) that the work of merge request `mr` counts for, or None."""
    if not ctx.convoy_budgets:
        return None
    name = spend_convoy(ctx.snap, mr)
    return name if name is not None and name in ctx.convoy_budgets else None


def enforce_budgets(ctx: Pass) -> None:
    """Fail beads over their own budget; with `onExceeded: stop`, stop work of held scopes."""
    _bead_budgets(ctx)
    if ctx.policy.budget.on_exceeded is BudgetAction.STOP:
        _stop_held_work(ctx)


def _bead_budgets(ctx: Pass) -> None:
    limit = ctx.policy.budget.per_bead_usd
    if limit is None:
        return
    for name, spent in ctx.spend.effective_bead.items():
        if spent.cost_usd <= limit:
            continue
        bead = ctx.snap.beads[name]
        if bead.spec.type not in (BeadType.ISSUE, BeadType.REWORK):
            continue
        if ctx.phase(bead).terminal or not ctx.free(Kind.BEAD, name):
            continue
        message = f"spent ${spent.cost_usd:.2f}, over the bead budget of ${limit:.2f}"
        _release_workers(ctx, bead, message)
        transition(
            ctx,
            bead,
            BeadPhase.FAILED,
            BUDGET_EXCEEDED,
            message,
            set={"assignee": None},
            event=WARNING,
        )


def _release_workers(ctx: Pass, bead: Bead, message: str) -> None:
    for agent_name in ctx.hooked_to(bead.name):
        agent = ctx.snap.agents.get(agent_name)
        if agent is not None and ctx.free(Kind.AGENT, agent_name):
            release_agent(ctx, agent, BUDGET_EXCEEDED, message, stop_pod=True, event=WARNING)


def _stop_held_work(ctx: Pass) -> None:
    """Stop polecats working in a scope at its budget; their beads reopen, attempt given back."""
    town_held = bool(ctx.town_budgets)
    if not town_held and not ctx.convoy_budgets:
        return
    for name in list(ctx.index.working):
        agent = ctx.snap.agents[name]
        if agent.spec.role is not AgentRole.POLECAT or agent.status.phase is not AgentPhase.WORKING:
            continue
        bead = ctx.snap.beads.get(agent.spec.hook or "")
        if bead is None or ctx.phase(bead) is not BeadPhase.IN_PROGRESS:
            continue
        if not (town_held or over_budget_convoy(ctx, bead)):
            continue
        if not ctx.free(Kind.AGENT, name) or not ctx.free(Kind.BEAD, bead.name):
            continue
        message = "stopped at the budget (onExceeded: stop); resumes under budget"
        release_agent(ctx, agent, BUDGET_EXCEEDED, message, stop_pod=True, event=WARNING)
        transition(
            ctx,
            bead,
            BeadPhase.OPEN,
            BUDGET_EXCEEDED,
            message,
            set={"assignee": None, "attempts": max(0, bead.status.attempts - 1)},
            expect={"attempts": bead.status.attempts},
            event=WARNING,
        )
