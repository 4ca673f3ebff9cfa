"""The pass: facts first, then the rule families in a fixed order, over one snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gastown.model import AgentRole
from gastown.model.town import Repair
from gastown.reconcile.accounting import evaluate_spend, record_spend
from gastown.reconcile.actions import Action
from gastown.reconcile.agents import (
    apply_session_facts,
    clean_pods,
    finish_releases,
    repair_hooks,
)
from gastown.reconcile.beads import (
    apply_polecat_report,
    assign_ready_beads,
    redispatch_polecats,
    repair_beads,
)
from gastown.reconcile.budgets import enforce_budgets, evaluate_budgets
from gastown.reconcile.cancel import apply_cancels
from gastown.reconcile.context import Pass
from gastown.reconcile.convoys import reconcile_convoys
from gastown.reconcile.facts import pending_reports
from gastown.reconcile.gc import collect_agents
from gastown.reconcile.gupp import apply_gupp
from gastown.reconcile.ops import mark_applied
from gastown.reconcile.ratelimits import evaluate_rate_limits
from gastown.reconcile.retention import expire_finished
from gastown.reconcile.retries import evaluate_circuit_breaker
from gastown.reconcile.review_queue import (
    apply_pr_results,
    apply_refinery_report,
    poll_pull_requests,
    pop_queues,
    redispatch_refineries,
    repair_merge_requests,
)
from gastown.reconcile.snapshot import Snapshot
from gastown.reconcile.writes import Kind


def apply_reports(ctx: Pass) -> None:
    """Apply at most one report per agent per pass, in seq order; drop stale generations."""
    for name in ctx.index.reporting:  # workers with a report newer than appliedReportSeq
        agent = ctx.snap.agents[name]
        if not ctx.free(Kind.AGENT, name):
            continue
        pending = pending_reports(agent)
        if pending.next is None:
            if pending.drop_upto:
                mark_applied(ctx, agent, pending.drop_upto)
            continue
        if agent.spec.role is AgentRole.REFINERY:
            apply_refinery_report(ctx, agent, pending.next)
        else:
            apply_polecat_report(ctx, agent, pending.next)


@dataclass(frozen=True)
class Plan:
    """What one pass decided: the actions, and the impossible states they repair."""

    actions: list[Action]
    repairs: list[Repair]


def reconcile(snapshot: Snapshot, now: datetime) -> list[Action]:
    """Decide every action for one pass over a town. Pure: no I/O, no clock, no randomness."""
    return plan(snapshot, now).actions


def plan(snapshot: Snapshot, now: datetime) -> Plan:
    """`reconcile`, with the repairs of states that should never exist (see `repairs`)."""
    ctx = Pass(snapshot, now)
    evaluate_circuit_breaker(ctx)
    # Spend first: budgets and rate limits may hold all new dispatch of this pass.
    evaluate_spend(ctx)
    evaluate_budgets(ctx)
    evaluate_rate_limits(ctx)
    # Facts, exactly once each (their actions record that they were applied).
    apply_cancels(ctx)
    apply_reports(ctx)
    apply_session_facts(ctx)
    apply_pr_results(ctx)
    # Rules.
    enforce_budgets(ctx)
    finish_releases(ctx)
    repair_hooks(ctx)
    apply_gupp(ctx)
    repair_merge_requests(ctx)
    poll_pull_requests(ctx)
    redispatch_refineries(ctx)
    repair_beads(ctx)
    redispatch_polecats(ctx)
    pop_queues(ctx)
    assign_ready_beads(ctx)
    reconcile_convoys(ctx)
    expire_finished(ctx)
    collect_agents(ctx)
    clean_pods(ctx)
    # Last: the ledgers, on objects no rule above wrote in this pass.
    record_spend(ctx)
    return Plan(ctx.actions, ctx.repairs)
