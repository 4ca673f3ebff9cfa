"""`kubectl gastown status`: a one-screen dashboard of a town (pure).

Counts are taken from the objects themselves (so they are right even before the operator's
next status write); conditions, the last pass, violations and the breaker are the Town's status.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from gastown.model import AgentPhase, AgentRole, BeadPhase, BeadType
from gastown.model.spend import TownSpend
from gastown.plugin.state import TownState
from gastown.plugin.style import Style, ago, aware, iso
from gastown.reconcile.budgets import convoy_budget
from gastown.reconcile.review_queue import pr_url
from gastown.reconcile.spend import day_window, month_window, rolled
from gastown.reconcile.summary import agent_phase_counts, review_queue_lengths, work_bead_counts

Dashboard = dict[str, Any]


def build_status(state: TownState, now: datetime) -> Dashboard:
    """The dashboard as a JSON-able dict with stable keys."""
    town = state.town
    status = town.status
    return {
        "town": town.name,
        "namespace": town.metadata.namespace,
        "mode": town.spec.mode.value,
        "summary": status.summary,
        "conditions": [
            {"type": c.type, "status": c.status.value, "reason": c.reason, "message": c.message}
            for c in status.conditions
        ],
        "beads": bead_counts(state),
        "agents": agent_counts(state, now),
        "rigs": rig_rows(state),
        "circuitBreaker": {
            "open": status.circuit_breaker.open,
            "recentFailures": status.circuit_breaker.recent_failures,
            "threshold": town.spec.policy.circuit_breaker.failure_threshold,
            "openedAt": iso(status.circuit_breaker.opened_at),
        },
        "violations": [v.model_dump(mode="json") for v in status.violations],
        "spend": spend_block(state, now),
        "lastPass": _last_pass(state),
        "convoys": convoy_rows(state),
        "plannedActions": list(status.planned_actions),
    }


def bead_counts(state: TownState) -> dict[str, int]:
    """Work beads (issues, rework) by phase; merge requests and escalations counted apart."""
    work = work_bead_counts(state.beads.values())
    counts = {phase.value: work[phase] for phase in BeadPhase}
    counts["mergeRequests"] = sum(review_queue_lengths(state.beads.values()).values())
    counts["escalations"] = sum(
        1
        for bead in state.beads.values()
        if bead.spec.type is BeadType.ESCALATION and not bead.status.phase.terminal
    )
    return counts


def agent_counts(state: TownState, now: datetime) -> dict[str, int]:
    """Agents by phase, plus working ones whose heartbeat is late and agents by role."""
    timeout = state.town.spec.policy.agents.heartbeat_timeout_seconds
    phases = agent_phase_counts(state.agents.values())
    late = 0
    for agent in state.agents.values():
        beat = agent.status.activity.last_heartbeat_at
        if agent.status.phase is AgentPhase.WORKING and beat is not None:
            late += (now - aware(beat)).total_seconds() > timeout
    roles = Counter(a.spec.role.value for a in state.agents.values())
    return {
        "working": phases[AgentPhase.WORKING],
        "idle": phases[AgentPhase.IDLE],
        "stalled": phases[AgentPhase.STALLED],
        "heartbeatLate": late,
        "polecats": roles.get(AgentRole.POLECAT.value, 0),
        "refineries": roles.get(AgentRole.REFINERY.value, 0),
    }


def rig_rows(state: TownState) -> list[dict[str, Any]]:
    """Per rig: busy polecats vs cap, and the review queue (queued, reviewing, waiting on PRs)."""
    limits = state.town.spec.limits
    rows = []
    for rig in state.town.spec.rigs:
        busy = sum(
            1
            for a in state.agents.values()
            if a.spec.role is AgentRole.POLECAT and a.spec.rig == rig.name and a.spec.hook
        )
        mrs = [
            b
            for b in state.beads.values()
            if b.spec.type is BeadType.MERGE_REQUEST
            and b.spec.rig == rig.name
            and not b.status.phase.terminal
        ]
        reviewing = [
            m.name for m in mrs if m.status.phase is BeadPhase.IN_PROGRESS and not pr_url(m)
        ]
        rows.append(
            {
                "rig": rig.name,
                "polecatsBusy": busy,
                "polecatCap": rig.max_polecats
                if rig.max_polecats is not None
                else limits.max_polecats_per_rig,
                "queued": sum(1 for m in mrs if m.status.phase is BeadPhase.OPEN),
                "reviewing": reviewing,
                "waitingOnPullRequest": sum(1 for m in mrs if pr_url(m)),
                "queueReported": state.town.status.queue.get(rig.name),
            }
        )
    return rows


def _last_pass(state: TownState) -> dict[str, Any]:
    last = state.town.status.last_pass
    return {
        "finishedAt": iso(last.finished_at),
        "durationMs": last.duration_ms,
        "factsApplied": last.facts_applied,
        "actions": dict(sorted(last.actions.items())),
        "sideEffectsOk": last.side_effects_ok,
        "sideEffectsFailed": last.side_effects_failed,
        "violations": last.violations,
    }


def convoy_rows(state: TownState) -> list[dict[str, Any]]:
    """Convoys with phase, progress, spend and budget."""
    town_policy = state.town.spec.policy
    return [
        {
            "name": c.name,
            "phase": c.status.phase.value if c.status.phase is not None else None,
            "progress": c.status.progress or f"{c.status.closed}/{c.status.total}",
            "closed": c.status.closed,
            "total": c.status.total,
            "failed": c.status.failed,
            "mergeMode": c.spec.merge_mode.value,
            "staged": c.spec.staged,
            "reason": c.status.reason,
            "costUsd": c.status.spend.total.cost_usd if c.status.spend else 0.0,
            "budgetUsd": convoy_budget(town_policy.budget, c),
            "budgetExceeded": c.status.budget_exceeded is not None,
        }
        for c in sorted(state.convoys.values(), key=lambda c: c.name)
    ]


def spend_block(state: TownState, now: datetime) -> dict[str, Any]:
    """Spend today, this month and in total, the town's budgets and the rate-limit state."""
    status = state.town.status
    spend = status.spend or TownSpend()
    today = rolled(spend.today, day_window(now))
    month = rolled(spend.month, month_window(now))
    budget = state.town.spec.policy.budget
    limits = status.rate_limits
    return {
        "todayUsd": today.cost_usd,
        "monthUsd": month.cost_usd,
        "totalUsd": spend.total.cost_usd,
        "totalTokens": spend.total.tokens,
        "perDayUsd": budget.per_day_usd,
        "perMonthUsd": budget.per_month_usd,
        "perBeadUsd": budget.per_bead_usd,
        "perConvoyUsd": budget.per_convoy_usd,
        "onExceeded": budget.on_exceeded.value,
        "budgetExceeded": [
            b.model_dump(mode="json", by_alias=True) for b in status.budget_exceeded
        ],
        "rateLimits": limits.model_dump(mode="json", by_alias=True),
    }


# --- rendering ---------------------------------------------------------------------------------


def render_status(board: Dashboard, now: datetime, style: Style) -> str:
    """The dashboard as text, one topic per block."""
    lines = [f"{style.bold('Town ' + board['town'])}  mode={style.phase(board['mode'])}"]
    if board["summary"]:
        lines.append(f"  {board['summary']}")
    lines += _conditions(board, style)
    lines += _counts(board, style)
    lines += _rigs(board)
    lines += _breaker(board, style)
    lines += _spend(board, style)
    lines += _violations(board, style)
    lines += _pass(board, now)
    lines += _convoys(board, style)
    return "\n".join(lines)


def _conditions(board: Dashboard, style: Style) -> list[str]:
    if not board["conditions"]:
        return ["Conditions: none yet (is the operator running?)"]
    lines = ["Conditions:"]
    for c in board["conditions"]:
        message = f" — {c['message']}" if c["message"] else ""
        lines.append(f"  {c['type']:<10} {style.phase(c['status'], 5)} {c['reason']}{message}")
    return lines


def _counts(board: Dashboard, style: Style) -> list[str]:
    b, a = board["beads"], board["agents"]
    beads = "  ".join(f"{style.phase(p)} {b[p]}" for p in (x.value for x in BeadPhase))
    late = f" ({a['heartbeatLate']} heartbeat late)" if a["heartbeatLate"] else ""
    return [
        f"Beads:    {beads}  | open MRs {b['mergeRequests']}  escalations {b['escalations']}",
        f"Agents:   {style.phase('working')} {a['working']}{late}  {style.phase('idle')} "
        f"{a['idle']}  {style.phase('stalled')} {a['stalled']}  "
        f"(polecats {a['polecats']}, refineries {a['refineries']})",
    ]


def _rigs(board: Dashboard) -> list[str]:
    lines = ["Rigs:"]
    for r in board["rigs"]:
        reviewing = ", ".join(r["reviewing"]) or "-"
        lines.append(
            f"  {r['rig']:<12} polecats {r['polecatsBusy']}/{r['polecatCap']}  queue "
            f"{r['queued']} waiting, reviewing {reviewing}, {r['waitingOnPullRequest']} on PRs"
        )
    return lines


def _breaker(board: Dashboard, style: Style) -> list[str]:
    cb = board["circuitBreaker"]
    state = style.paint("OPEN", "red") if cb["open"] else style.paint("closed", "green")
    return [f"Breaker:  {state}  ({cb['recentFailures']}/{cb['threshold']} recent failures)"]


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:.2f}"


def _spend(board: Dashboard, style: Style) -> list[str]:
    sp = board["spend"]
    lines = [
        f"Spend:    today {_money(sp['todayUsd'])} of {_money(sp['perDayUsd'])}  "
        f"month {_money(sp['monthUsd'])} of {_money(sp['perMonthUsd'])}  "
        f"total {_money(sp['totalUsd'])} ({sp['totalTokens']} tokens)  "
        f"per bead {_money(sp['perBeadUsd'])}  at budget: {sp['onExceeded']}"
    ]
    for state in sp["budgetExceeded"]:
        lines.append(
            style.paint(
                f"  BUDGET REACHED ({state['scope']} {state['window']}): "
                f"{_money(state['spentUsd'])} of {_money(state['budgetUsd'])}; no new dispatch",
                "red",
            )
        )
    limits = sp["rateLimits"]
    if limits["breakerOpen"] or limits.get("until"):
        lines.append(
            style.paint(
                f"  RATE LIMITED: {limits['heldBeads']} beads held until {limits.get('until')}, "
                f"{limits['recent']} recent" + (" (breaker OPEN)" if limits["breakerOpen"] else ""),
                "red",
            )
        )
    return lines


def _violations(board: Dashboard, style: Style) -> list[str]:
    if not board["violations"]:
        return ["Invariants: ok"]
    lines = [style.paint(f"Invariants: {len(board['violations'])} violation(s)", "red")]
    lines += [f"  {v['code']}: {v['message']}" for v in board["violations"]]
    return lines


def _pass(board: Dashboard, now: datetime) -> list[str]:
    last = board["lastPass"]
    if last["finishedAt"] is None:
        return ["Last pass: none recorded"]
    finished = datetime.fromisoformat(last["finishedAt"].replace("Z", "+00:00"))
    actions = ", ".join(f"{k} {v}" for k, v in last["actions"].items()) or "no actions"
    return [
        f"Last pass: {ago(finished, now)}, {last['durationMs']} ms, {actions}; "
        f"side effects {last['sideEffectsOk']} ok / {last['sideEffectsFailed']} failed"
    ]


def _convoys(board: Dashboard, style: Style) -> list[str]:
    if not board["convoys"]:
        return ["Convoys: none"]
    lines = ["Convoys:"]
    for c in board["convoys"]:
        staged = " (staged)" if c["staged"] else ""
        failed = f"  {style.paint(str(c['failed']) + ' failed', 'red')}" if c["failed"] else ""
        budget = f" of {_money(c['budgetUsd'])}" if c["budgetUsd"] is not None else ""
        held = style.paint(" BUDGET REACHED", "red") if c["budgetExceeded"] else ""
        lines.append(
            f"  {c['name']:<20} {style.phase(c['phase'], 12)} "
            f"{progress_bar(c['closed'], c['total'])} {c['progress']}{failed}{staged}"
            f"  {_money(c['costUsd'])}{budget}{held}"
        )
    return lines


def progress_bar(done: int, total: int, width: int = 10) -> str:
    """[####------] style bar."""
    filled = 0 if total <= 0 else min(width, round(width * done / total))
    return "[" + "#" * filled + "-" * (width - filled) + "]"
