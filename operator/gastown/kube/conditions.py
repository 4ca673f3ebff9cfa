"""Conditions of Beads, Convoys and Agents, derived from the status the reconciler writes.

The reconciler writes phases and reasons; this module turns them into standard Kubernetes
conditions in the same patch (so conditions cost no extra API writes) and keeps each
condition's lastTransitionTime unless its status really changed.

- Bead: `Assigned` (an agent is hooked) and `Complete` (True once closed; False with the reason
  otherwise, e.g. Dispatched, InReview, BlockedByFailedDependency, MaxAttemptsExceeded), and
  `ClaimsVerified` (False, only while an agent's claim about the bead failed verification).
  `RateLimited` (True while an open bead waits out a rate-limit hold).
- Convoy: `Complete` (True once landed; False with the reason otherwise) and `BudgetExceeded`
  (True while the convoy is at its budget).
- Agent: `Working` (hooked to a bead) and `Healthy` (False while stalled).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from gastown.model.resources import Resource
from gastown.reconcile.writes import iso, merge_patch

Status = Mapping[str, Any]


def _reason(text: str | None, fallback: str) -> str:
    cleaned = "".join(ch for ch in (text or "") if ch.isalnum() or ch in "_,:")
    if not cleaned or not cleaned[0].isalpha():
        return fallback
    return cleaned[:1024]


def _camel(phase: str | None) -> str:
    return "".join(part.capitalize() for part in (phase or "unknown").split("_"))


def _cond(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message[:32768],
    }


def bead_conditions(status: Status) -> list[dict[str, Any]]:
    """Assigned and Complete of a bead."""
    phase = status.get("phase") or "open"
    assignee = status.get("assignee")
    reason = _reason(status.get("reason"), _camel(phase))
    message = status.get("message") or f"phase {phase}"
    return [
        _cond(
            "Assigned",
            bool(assignee),
            "Hooked" if assignee else "Unassigned",
            f"hooked to {assignee}" if assignee else "no agent is hooked",
        ),
        _cond("Complete", phase == "closed", "Closed" if phase == "closed" else reason, message),
        *_claims_condition(status),
        *_rate_limit_condition(status),
    ]


def _rate_limit_condition(status: Status) -> list[dict[str, Any]]:
    """RateLimited=True while an open bead waits out its hold (absent when never limited)."""
    hold = status.get("rateLimited")
    if not hold:
        return []
    waiting = (status.get("phase") or "open") == "open"
    message = f"held until {hold.get('until')} after {hold.get('count', 1)} rate-limited ending(s)"
    if not waiting:
        return [_cond("RateLimited", False, "Dispatched", f"last: {message}")]
    return [_cond("RateLimited", True, "ProviderRateLimit", message)]


def _claims_condition(status: Status) -> list[dict[str, Any]]:
    """ClaimsVerified=False while an agent's refused claim is on record (absent otherwise)."""
    refused = status.get("refusedClaim")
    if not refused:
        return []
    reason = _reason(refused.get("reason"), "ClaimRefused")
    who = f"{refused.get('agent')} generation {refused.get('generation')}"
    return [_cond("ClaimsVerified", False, reason, f"{who}: {refused.get('message') or reason}")]


def convoy_conditions(status: Status) -> list[dict[str, Any]]:
    """Complete of a convoy."""
    phase = status.get("phase") or "InProgress"
    reason = _reason(status.get("reason"), phase)
    message = status.get("message") or f"{phase}, progress {status.get('progress') or '0/0'}"
    budget = status.get("budgetExceeded")
    spend = status.get("spend") or {}
    spent = (spend.get("total") or {}).get("costUsd", 0)
    budget_cond = (
        _cond(
            "BudgetExceeded",
            True,
            "BudgetReached",
            f"spent ${budget.get('spentUsd', 0):.2f} of ${budget.get('budgetUsd', 0):.2f}: "
            "no new work is dispatched",
        )
        if budget
        else _cond("BudgetExceeded", False, "UnderBudget", f"spent ${spent:.2f}")
    )
    return [
        _cond("Complete", phase == "Landed", "Landed" if phase == "Landed" else reason, message),
        budget_cond,
    ]


def agent_conditions(spec: Status, status: Status) -> list[dict[str, Any]]:
    """Working and Healthy of an agent."""
    phase = status.get("phase") or "idle"
    hook = spec.get("hook")
    return [
        _cond(
            "Working",
            bool(hook),
            "Hooked" if hook else "Idle",
            f"running {hook} (generation {spec.get('generation', 0)})" if hook else "no hook",
        ),
        _cond(
            "Healthy",
            phase != "stalled",
            "Stalled" if phase == "stalled" else "AsExpected",
            status.get("statusMessage") or f"phase {phase}",
        ),
    ]


def with_transitions(
    desired: list[dict[str, Any]],
    previous: Sequence[Mapping[str, Any]],
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """Stamp observedGeneration and keep lastTransitionTime where the status is unchanged."""
    old = {c.get("type"): c for c in previous}
    result = []
    for cond in desired:
        before = old.get(cond["type"])
        since = (
            (before or {}).get("lastTransitionTime")
            if before and before.get("status") == cond["status"]
            else None
        )
        result.append(
            {**cond, "observedGeneration": generation or 0, "lastTransitionTime": since or iso(now)}
        )
    return result


def derive(
    kind: str,
    spec: Status,
    status: Status,
    previous: Sequence[Mapping[str, Any]],
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]] | None:
    """The conditions an object of `kind` should carry, or None for kinds without derived ones."""
    if kind == "Bead":
        desired = bead_conditions(status)
    elif kind == "Convoy":
        desired = convoy_conditions(status)
    elif kind == "Agent":
        desired = agent_conditions(spec, status)
    else:
        return None
    return with_transitions(desired, previous, generation, now)


def after_patch(
    kind: str,
    held: Resource[Any, Any],
    spec_patch: Mapping[str, Any],
    status_patch: Mapping[str, Any],
    now: datetime,
) -> list[dict[str, Any]] | None:
    """The conditions `held` must carry once the patches apply, or None if they stay the same.

    Every status write of ours goes through here, so conditions travel in the same patch and
    keep their lastTransitionTime unless their status really changes.
    """
    status = held.status.model_dump(mode="json", by_alias=True)
    new_spec = merge_patch(held.spec.model_dump(mode="json", by_alias=True), spec_patch)
    previous = status.get("conditions") or []
    derived = derive(
        kind, new_spec, merge_patch(status, status_patch), previous, held.metadata.generation, now
    )
    if derived is None or same(derived, previous):
        return None
    return derived


def same(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> bool:
    """Equal apart from timestamps."""

    def key(conds: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted(
            (
                c.get("type"),
                c.get("status"),
                c.get("reason"),
                c.get("message"),
                c.get("observedGeneration"),
            )
            for c in conds
        )

    return key(a) == key(b)
