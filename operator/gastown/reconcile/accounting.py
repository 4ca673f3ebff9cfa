"""The spend rules of a pass: build the view at the start, write the ledgers at the end.

See `spend` for the accounting itself. The writes come last in the pass and only touch objects
no earlier rule wrote in it (one write per object per pass); whatever is skipped is still
pending in the next pass's view, so nothing is lost and budgets already see it.
"""

from __future__ import annotations

from gastown.model import Bead, BeadType, Convoy
from gastown.model.spend import BeadSpend
from gastown.reconcile.actions import RecordBeadSpend, RecordTownSpend, UpdateConvoy
from gastown.reconcile.budgets import BUDGET_EXCEEDED, describe
from gastown.reconcile.context import Pass
from gastown.reconcile.spend import build_view, dump, fold_convoy, fold_town, replacement
from gastown.reconcile.writes import Kind

SPEND_RECORDED = "SpendRecorded"


def evaluate_spend(ctx: Pass) -> None:
    """Build the pass's spend view (effective figures for budgets, pending writes)."""
    ctx.spend = build_view(ctx.snap, ctx.policy.budget, ctx.now, ctx.spendless_convoys())


def record_spend(ctx: Pass) -> None:
    """Write grown bead spend, then convoy and town ledgers (each on a free object only)."""
    for name, spend in ctx.spend.beads.items():
        if ctx.free(Kind.BEAD, name):
            _record_bead(ctx, ctx.snap.beads[name], spend)
    stored, budgets = ctx.spend.stored, ctx.convoy_budgets
    spendless = ctx.spendless_convoys()
    for name, convoy in ctx.snap.convoys.items():
        if name in spendless and name not in stored and budgets.get(name) is None:
            continue  # nothing spent, nothing to count, no budget state (most convoys)
        if ctx.free(Kind.CONVOY, name):
            _record_convoy(ctx, convoy)
    if ctx.free(Kind.TOWN, ctx.town.name):
        _record_town(ctx)


def _record_bead(ctx: Pass, bead: Bead, spend: BeadSpend) -> None:
    old = bead.status.spend
    role = "refinery" if bead.spec.type is BeadType.MERGE_REQUEST else "polecat"
    deltas = []
    for key, usage in spend.sessions.items():
        before = old.sessions.get(key) if old is not None else None
        tokens = usage.tokens - (before.tokens if before else 0)
        cost = usage.cost_usd - (before.cost_usd if before else 0.0)
        if tokens > 0 or cost > 0:
            agent = key.partition("/")[0]
            deltas.append((bead.spec.rig or "", role, usage.model or "", agent, tokens, cost))
    ctx.add(
        RecordBeadSpend(
            bead=bead.name,
            set={"spend": replacement(dump(old), dump(spend))},
            expect={"spend": dump(old)},
            reason=SPEND_RECORDED,
            delta=tuple(deltas),
        ),
        (Kind.BEAD, bead.name),
    )


def _record_convoy(ctx: Pass, convoy: Convoy) -> None:
    figures = ctx.spend.stored.get(convoy.name, {})
    old = convoy.status.spend
    state = ctx.convoy_budgets.get(convoy.name)
    if old is None and not figures:  # nothing spent, nothing to count (most settled convoys)
        new, spend_changed = None, False
    else:
        new = fold_convoy(old, figures, ctx.spend.live)
        spend_changed = dump(new) != dump(old) and not (old is None and not figures)
    state_changed = dump(state) != dump(convoy.status.budget_exceeded)
    if not spend_changed and not state_changed:
        return
    patch: dict[str, object] = {}
    if spend_changed:
        patch["spend"] = replacement(dump(old), dump(new))
    if state_changed:
        patch["budgetExceeded"] = dump(state)
    reason, message, event = SPEND_RECORDED, "", None
    if state_changed and state is not None:
        reason, message, event = BUDGET_EXCEEDED, f"no new dispatch: {describe(state)}", "Warning"
    elif state_changed:
        reason, message, event = "BudgetResumed", "under budget again: dispatch resumes", "Normal"
    ctx.add(
        UpdateConvoy(
            convoy=convoy.name,
            set=patch,
            expect={"spend": dump(old)},
            reason=reason,
            message=message,
            event=event,
        ),
        (Kind.CONVOY, convoy.name),
    )


def _record_town(ctx: Pass) -> None:
    figures = ctx.spend.stored.get("", {})
    old = ctx.town.status.spend
    if old is None and not figures:
        return
    new = fold_town(old, figures, ctx.spend.live, ctx.now)
    if dump(new) == dump(old):
        return
    ctx.add(
        RecordTownSpend(
            town=ctx.town.name,
            patch=replacement(dump(old), dump(new)) if old is not None else dump(new),
            expect_spend=dump(old),
            reason=SPEND_RECORDED,
        ),
        (Kind.TOWN, ctx.town.name),
    )
