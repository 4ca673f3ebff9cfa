"""`kubectl gastown why <bead>`: why a bead is (not) progressing, in plain words (pure).

Every judgement is the reconciler's own: dependency holds come from `dag.Readiness`, backoff
from `retries.backoff_seconds`/`backoff_over`, capacity from `capacity.measure`, the breaker
from `retries.recent_failures`, staging from `convoys.in_staged_convoy`, rework from
`rework.rework_pending`. On top, the plugin runs one pure `reconcile()` over the same snapshot and
reports the actions the operator's next pass would take on the bead, so `why` cannot disagree
with what the operator does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gastown.model import Agent, AgentPhase, Bead, BeadPhase, BeadType, TownMode
from gastown.plugin.state import TownState
from gastown.plugin.style import Style, ago, aware, iso
from gastown.reconcile.capacity import measure, rig_cap, town_cap
from gastown.reconcile.context import Pass
from gastown.reconcile.convoys import convoy_of, in_staged_convoy
from gastown.reconcile.core import reconcile
from gastown.reconcile.dag import Hold
from gastown.reconcile.retries import (
    attempts_exhausted,
    backoff_over,
    backoff_seconds,
    recent_failures,
)
from gastown.reconcile.review_queue import pr_url
from gastown.reconcile.rework import rework_beads, rework_pending


@dataclass
class Why:
    """The answer: a stable verdict code, one-line summary, details and structured facts."""

    bead: str
    phase: str
    verdict: str
    summary: str
    details: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    next_pass: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Stable keys for `-o json`."""
        return {
            "bead": self.bead,
            "phase": self.phase,
            "verdict": self.verdict,
            "summary": self.summary,
            "details": self.details,
            "facts": self.facts,
            "nextPass": self.next_pass,
        }


def explain(state: TownState, name: str, now: datetime) -> Why:
    """Why bead `name` of the town is where it is; KeyError if the town has no such bead."""
    bead = state.beads[name]
    ctx = state.evaluate(now)
    why = _by_phase(ctx, bead)
    why.facts.setdefault("attempts", bead.status.attempts)
    why.facts.setdefault("maxAttempts", ctx.policy.retry.max_attempts)
    why.next_pass = next_pass_actions(state, name, now)
    _claim_notes(bead, why)
    _town_notes(ctx, why)
    return why


def _claim_notes(bead: Bead, why: Why) -> None:
    """An agent's claim about this bead that failed verification (it changed nothing)."""
    refused = bead.status.refused_claim
    if refused is None:
        return
    why.facts["refusedClaim"] = refused.to_api()
    why.details.append(
        f"note: a claim by {refused.agent} (generation {refused.generation}) was refused "
        f"({refused.reason}): {refused.message}"
    )


def next_pass_actions(state: TownState, name: str, now: datetime) -> list[str]:
    """What the operator's next pass would do about this bead (the reconciler, run here)."""
    actions = reconcile(state.snapshot(), now)
    return [a.describe() for a in actions if a.subject == name or getattr(a, "bead", None) == name]


def _by_phase(ctx: Pass, bead: Bead) -> Why:
    phase = bead.status.phase
    if phase is BeadPhase.CLOSED:
        return _closed(ctx, bead)
    if phase is BeadPhase.FAILED:
        return _failed(ctx, bead)
    if bead.spec.cancel:
        return _why(
            bead,
            "CancelRequested",
            "cancel requested: the operator fails it with "
            "reason Cancelled, releases its agent and stops its pod on its next pass",
        )
    if phase is BeadPhase.IN_REVIEW:
        return _in_review(ctx, bead)
    if phase is BeadPhase.IN_PROGRESS:
        return _in_progress(ctx, bead)
    return _open(ctx, bead)


def _why(bead: Bead, verdict: str, summary: str, *details: str, **facts: Any) -> Why:
    return Why(
        bead=bead.name,
        phase=bead.status.phase.value,
        verdict=verdict,
        summary=summary,
        details=list(details),
        facts=dict(facts),
    )


# --- terminal ----------------------------------------------------------------------------------


def _closed(ctx: Pass, bead: Bead) -> Why:
    review = bead.status.review
    commit = review.merge_commit if review is not None else None
    mr = ctx.snap.beads.get(bead.status.merge_request or "")
    if commit is None and mr is not None and mr.status.review is not None:
        commit = mr.status.review.merge_commit
    details = [f"closed {ago(bead.status.closed_at, ctx.now)} ({bead.status.reason or 'done'})"]
    if commit:
        details.append(f"merge commit {commit}")
    if bead.status.summary:
        details.append(f"summary: {bead.status.summary}")
    return _why(
        bead,
        "Done",
        "done: nothing to wait for",
        *details,
        closedAt=iso(bead.status.closed_at),
        mergeCommit=commit,
    )


def _failed(ctx: Pass, bead: Bead) -> Why:
    reason = bead.status.reason or "Failed"
    message = bead.status.message or ""
    if reason == "Cancelled":
        return _why(bead, "Cancelled", "cancelled by a user: it will not run again", message)
    summary = f"failed ({reason}): it will not run again without a human"
    details = [message] if message else []
    if reason == "MaxAttemptsExceeded":
        details.append(
            f"all {bead.status.attempts} of {ctx.policy.retry.max_attempts} attempts were used"
        )
    details.append("create a new bead (kubectl gastown sling bead ...) to try again")
    return _why(bead, "Failed", summary, *details, reason=reason)


# --- open --------------------------------------------------------------------------------------


def _open(ctx: Pass, bead: Bead) -> Why:
    if bead.spec.type is BeadType.ESCALATION:
        return _why(
            bead,
            "Escalation",
            "an escalation for humans: read it, act, then set spec.cancel=true to dismiss it",
            bead.spec.description[:500],
        )
    if bead.spec.type is BeadType.MERGE_REQUEST:
        return _open_merge_request(ctx, bead)
    if bead.status.assignee is not None:
        return _stale_assignee(ctx, bead)
    for check in (_rig_unknown, _dependencies, _staged, _retries, _town_switch, _capacity):
        why = check(ctx, bead)
        if why is not None:
            return why
    return _ready(ctx, bead)


def _stale_assignee(ctx: Pass, bead: Bead) -> Why:
    assignee = bead.status.assignee
    if ctx.hooked_to(bead.name):
        return _why(
            bead,
            "Dispatching",
            f"being dispatched to {assignee}: waiting for the agent to start",
            assignee=assignee,
        )
    return _why(
        bead,
        "StaleAssignee",
        f"open but still names {assignee}, which no longer "
        "holds it; the operator clears it on its next pass",
        assignee=assignee,
    )


def _rig_unknown(ctx: Pass, bead: Bead) -> Why | None:
    rig = bead.spec.rig
    if rig is not None and rig in ctx.index.rigs:
        return None
    rigs = ", ".join(sorted(ctx.index.rigs)) or "none"
    return _why(
        bead,
        "UnknownRig",
        f"rig {rig!r} is not a rig of town {ctx.town.name}",
        f"the town's rigs: {rigs}",
        rig=rig,
    )


def dependency_facts(ctx: Pass, bead: Bead) -> list[dict[str, Any]]:
    """Each dependency with its phase (None if missing) and whether it can never close."""
    readiness = ctx.readiness
    result = []
    for dep in bead.spec.depends_on:
        phase = ctx.phase_of(dep)
        result.append(
            {
                "name": dep,
                "phase": phase.value if phase is not None else None,
                "doomed": phase is not None and readiness.doomed(dep),
                "cyclic": dep in readiness.cyclic,
            }
        )
    return result


def _dependencies(ctx: Pass, bead: Bead) -> Why | None:
    hold = ctx.readiness.hold(bead)
    if hold is None:
        return None
    deps = dependency_facts(ctx, bead)
    lines = [_dep_line(d) for d in deps]
    if hold is Hold.CYCLE:
        cycle = sorted(ctx.readiness.cyclic)
        summary = "on (or behind) a dependency cycle: it can never become ready"
        lines.append("beads on or behind the cycle: " + ", ".join(cycle[:20]))
        lines.append("fix: recreate the beads without the cycle (dependsOn is a DAG)")
    elif hold is Hold.FAILED:
        bad = [
            d["name"]
            for d in deps
            if d["phase"] is not None and (d["phase"] == BeadPhase.FAILED.value or d["doomed"])
        ]
        summary = f"blocked by a failed dependency ({', '.join(bad)}): held until a human acts"
    elif hold is Hold.MISSING:
        missing = [d["name"] for d in deps if d["phase"] is None]
        summary = f"depends on beads that do not exist: {', '.join(missing)}"
    else:
        pending = [d["name"] for d in deps if d["phase"] != BeadPhase.CLOSED.value]
        summary = (
            f"waiting for {len(pending)} dependenc{'y' if len(pending) == 1 else 'ies'} "
            f"to close (merge): {', '.join(pending)}"
        )
    return _why(bead, hold.value, summary, *lines, dependencies=deps)


def _dep_line(dep: dict[str, Any]) -> str:
    phase = dep["phase"] or "missing"
    notes = [
        n for n, on in (("on a cycle", dep["cyclic"]), ("can never close", dep["doomed"])) if on
    ]
    extra = f" ({', '.join(notes)})" if notes and phase != "failed" else ""
    return f"depends on {dep['name']}: {phase}{extra}"


def _staged(ctx: Pass, bead: Bead) -> Why | None:
    if not in_staged_convoy(ctx, bead):
        return None
    convoy = convoy_of(ctx, bead)
    name = convoy.name if convoy is not None else "?"
    return _why(
        bead,
        "ConvoyStaged",
        f"its convoy {name} is staged: nothing is dispatched until it starts",
        f'start it: kubectl patch convoy {name} --type merge -p \'{{"spec":{{"staged":false}}}}\'',
        convoy=name,
    )


def _retries(ctx: Pass, bead: Bead) -> Why | None:
    if attempts_exhausted(ctx, bead):
        return _why(
            bead,
            "AttemptsExhausted",
            f"all {bead.status.attempts} attempts used: the "
            "operator fails it (MaxAttemptsExceeded) on its next pass",
        )
    if backoff_over(ctx, bead):
        return None
    until = backoff_until(ctx, bead)
    wait = backoff_seconds(ctx.policy.retry, bead.status.attempts)
    last = bead.status.reason or "a failure"
    return _why(
        bead,
        "BackingOff",
        f"backing off after {bead.status.attempts} failed attempt(s): next attempt "
        f"{ago(until, ctx.now)} (at {iso(until)})",
        f"last failure {ago(bead.status.last_failure_at, ctx.now)}: {last}"
        + (f": {bead.status.message}" if bead.status.message else ""),
        f"backoff after {bead.status.attempts} failure(s) is {wait}s "
        f"(policy.retry.backoffSeconds {ctx.policy.retry.backoff_seconds})",
        backoffUntil=iso(until),
        backoffSeconds=wait,
    )


def backoff_until(ctx: Pass, bead: Bead) -> datetime | None:
    """When the bead's backoff ends (None if it never failed)."""
    failed = bead.status.last_failure_at
    if failed is None or bead.status.attempts == 0:
        return None
    return aware(failed) + timedelta(
        seconds=backoff_seconds(ctx.policy.retry, bead.status.attempts)
    )


def _town_switch(ctx: Pass, bead: Bead) -> Why | None:
    mode = ctx.town.spec.mode
    if mode is TownMode.PAUSED:
        return _why(
            bead,
            "TownPaused",
            f"town {ctx.town.name} is paused: no new dispatch",
            "resume: set the Town's spec.mode to active",
        )
    if mode is TownMode.DRAINING:
        return _why(
            bead,
            "TownDraining",
            f"town {ctx.town.name} is draining: no new dispatch",
            "resume: set the Town's spec.mode to active",
        )
    return _breaker(ctx, bead)


def breaker_state(ctx: Pass) -> tuple[bool, int, int]:
    """(open, failures in the window, threshold), as the reconciler computes it this pass."""
    count, _ = recent_failures(ctx)
    threshold = ctx.policy.circuit_breaker.failure_threshold
    return count >= threshold, count, threshold


def _breaker(ctx: Pass, bead: Bead) -> Why | None:
    is_open, count, threshold = breaker_state(ctx)
    if not is_open:
        return None
    window = ctx.policy.circuit_breaker.window_seconds // 60
    return _why(
        bead,
        "CircuitBreakerOpen",
        "the town's circuit breaker is open: new dispatch is paused",
        f"{count} beads failed an attempt in the last {window} min (threshold {threshold}); it "
        "closes on its own as failures age out",
        recentFailures=count,
        threshold=threshold,
    )


def capacity_facts(ctx: Pass, rig: str) -> dict[str, Any]:
    """Busy polecats and caps of a rig and of the town (the reconciler's own accounting)."""
    cap = measure(ctx)
    rig_obj = ctx.index.rigs[rig]
    busy = [
        name
        for name in ctx.index.polecats_by_rig.get(rig, ())
        if ctx.hook(ctx.snap.agents[name]) is not None
    ]
    return {
        "rig": rig,
        "rigBusy": rig_cap(ctx, rig_obj) - cap.rig_left.get(rig, 0),
        "rigCap": rig_cap(ctx, rig_obj),
        "townBusy": town_cap(ctx) - cap.town_left,
        "townCap": town_cap(ctx),
        "busyPolecats": busy,
        "available": cap.available(rig),
    }


def _capacity(ctx: Pass, bead: Bead) -> Why | None:
    facts = capacity_facts(ctx, bead.spec.rig or "")
    if facts["available"]:
        return None
    full = []
    if facts["rigBusy"] >= facts["rigCap"]:
        full.append(f"rig {facts['rig']} has {facts['rigBusy']}/{facts['rigCap']} polecats busy")
    if facts["townBusy"] >= facts["townCap"]:
        full.append(f"the town has {facts['townBusy']}/{facts['townCap']} polecats busy")
    busy = ", ".join(facts["busyPolecats"]) or "none"
    return _why(
        bead,
        "WaitingForCapacity",
        "ready, waiting for capacity: " + "; ".join(full),
        f"busy polecats on {facts['rig']}: {busy}",
        "raise spec.limits (maxPolecatsPerRig, maxPolecats) or the rig's maxPolecats",
        capacity=facts,
    )


def _ready(ctx: Pass, bead: Bead) -> Why:
    facts = capacity_facts(ctx, bead.spec.rig or "")
    if ctx.town.spec.mode is TownMode.SHADOW:
        return _why(
            bead,
            "ShadowMode",
            "ready, but the town is in shadow mode: the operator "
            "only plans the dispatch and applies nothing",
            capacity=facts,
        )
    return _why(
        bead,
        "Ready",
        "ready: the operator dispatches it on its next pass "
        "(more urgent ready beads go first when slots are short)",
        capacity=facts,
    )


# --- merge requests ----------------------------------------------------------------------------


def _open_merge_request(ctx: Pass, mr: Bead) -> Why:
    if rework_pending(ctx, mr):
        return _rework_pending(ctx, mr)
    retry = _retries(ctx, mr)
    if retry is not None:
        return retry
    town = _town_switch(ctx, mr)
    if town is not None:
        return town
    rig = mr.spec.rig or ""
    ahead = _queue_ahead(ctx, mr)
    if ahead:
        return _why(
            mr,
            "Queued",
            f"queued for the refinery of rig {rig}: {', '.join(ahead)} first",
            queueAhead=ahead,
        )
    return _why(
        mr,
        "Ready",
        f"next in the review queue of rig {rig}: the refinery picks it up on the next pass",
        queueAhead=[],
    )


def _queue_ahead(ctx: Pass, mr: Bead) -> list[str]:
    """Merge requests of the same rig under direct review, or older and open (queue order)."""
    rig = mr.spec.rig
    ahead = []
    for name in ctx.index.live_mrs:
        other = ctx.snap.beads[name]
        if name == mr.name or other.spec.rig != rig:
            continue
        reviewing = other.status.phase is BeadPhase.IN_PROGRESS and pr_url(other) is None
        older = other.status.phase is BeadPhase.OPEN and _created(other) < _created(mr)
        if reviewing or (older and not rework_pending(ctx, other)):
            ahead.append(name)
    return ahead


def _created(bead: Bead) -> tuple[float, str]:
    created = bead.metadata.creation_timestamp
    return (aware(created).timestamp() if created is not None else 0.0, bead.name)


def _rework_pending(ctx: Pass, mr: Bead) -> Why:
    items = rework_facts(ctx, mr)
    lines = [
        f"rework {r['name']}: {r['phase'] or 'not created yet'}"
        + (f" @{r['assignee']}" if r["assignee"] else "")
        for r in items
    ]
    return _why(
        mr,
        "ReworkPending",
        "waiting for rework requested by the reviewer; the MR is re-reviewed once it closes",
        *lines,
        rework=items,
    )


def rework_facts(ctx: Pass, mr: Bead) -> list[dict[str, Any]]:
    """Rework beads of a merge request with their phases and assignees."""
    items = []
    for name in rework_beads(ctx, mr):
        bead = ctx.snap.beads.get(name)
        items.append(
            {
                "name": name,
                "phase": bead.status.phase.value if bead is not None else None,
                "assignee": bead.status.assignee if bead is not None else None,
            }
        )
    return items


def review_facts(ctx: Pass, mr: Bead) -> dict[str, Any]:
    """The review state of a merge request bead."""
    review = mr.status.review
    return {
        "mergeRequest": mr.name,
        "phase": mr.status.phase.value,
        "assignee": mr.status.assignee,
        "reason": mr.status.reason,
        "prUrl": review.pr_url if review is not None else None,
        "prState": review.pr_state.value if review and review.pr_state else None,
        "lastPolledAt": iso(review.last_polled_at) if review is not None else None,
        "rework": rework_facts(ctx, mr),
    }


def _in_review(ctx: Pass, bead: Bead) -> Why:
    mr = ctx.snap.beads.get(bead.status.merge_request or "")
    if mr is None:
        return _why(
            bead,
            "InReview",
            f"in review, but its merge request "
            f"{bead.status.merge_request or '(none)'} is missing: the operator retries "
            "the bead after the lost-agent timeout",
        )
    facts = review_facts(ctx, mr)
    inner = _by_phase(ctx, mr)
    lines = [f"merge request {mr.name}: {mr.status.phase.value} — {inner.summary}"]
    if facts["prUrl"]:
        polled = ago(mr.status.review.last_polled_at if mr.status.review else None, ctx.now)
        lines.append(
            f"pull request {facts['prUrl']}: {facts['prState'] or 'unknown'} (polled {polled})"
        )
    lines += inner.details
    verdict = "ReworkPending" if inner.verdict == "ReworkPending" else "InReview"
    return _why(
        bead,
        verdict,
        f"in review: {mr.name} is {_mr_words(inner.verdict)}",
        *lines,
        review=facts,
        mergeRequestVerdict=inner.verdict,
    )


def _mr_words(verdict: str) -> str:
    return {
        "Working": "being reviewed by the refinery",
        "PullRequestOpen": "waiting for its pull request to merge",
        "ReworkPending": "waiting for rework",
        "Queued": "queued for the refinery",
        "Ready": "next in the review queue",
        "Done": "merged",
    }.get(verdict, verdict)


# --- in progress -------------------------------------------------------------------------------


def _in_progress(ctx: Pass, bead: Bead) -> Why:
    if pr_url(bead) is not None and bead.spec.type is BeadType.MERGE_REQUEST:
        review = review_facts(ctx, bead)
        return _why(
            bead,
            "PullRequestOpen",
            f"waiting for pull request {review['prUrl']} to "
            f"merge (last seen {review['prState'] or 'unknown'}, polled "
            f"{ago(bead.status.review.last_polled_at if bead.status.review else None, ctx.now)})",
            review=review,
        )
    agent = ctx.snap.agents.get(bead.status.assignee or "")
    if agent is None or agent.spec.hook != bead.name:
        lost = ctx.policy.agents.lost_agent_timeout_seconds
        at = (
            aware(bead.status.phase_since) + timedelta(seconds=lost)
            if bead.status.phase_since
            else None
        )
        return _why(
            bead,
            "AgentLost",
            f"in progress but no agent holds it: reopened for another attempt {ago(at, ctx.now)}",
            assignee=bead.status.assignee,
        )
    return _agent_state(ctx, bead, agent)


def agent_facts(ctx: Pass, agent: Agent) -> dict[str, Any]:
    """An agent's phase, generation, pod and activity watermark."""
    activity = agent.status.activity
    pod = ctx.index.pod(agent.name, agent.spec.generation)
    return {
        "name": agent.name,
        "role": agent.spec.role.value,
        "phase": agent.status.phase.value,
        "generation": agent.spec.generation,
        "pod": agent.status.pod or (pod.name if pod else None),
        "podPhase": pod.phase if pod is not None else None,
        "lastHeartbeatAt": iso(activity.last_heartbeat_at),
        "lastEventType": activity.last_event_type,
        "lastEventAt": iso(activity.last_event_at),
        "activeTools": list(activity.active_tools),
        "statusMessage": agent.status.status_message,
    }


def _agent_state(ctx: Pass, bead: Bead, agent: Agent) -> Why:
    facts = agent_facts(ctx, agent)
    activity = agent.status.activity
    timeout = ctx.policy.agents.heartbeat_timeout_seconds
    lines = [
        f"agent {agent.name} ({agent.spec.role.value}, gen {agent.spec.generation}), pod "
        f"{facts['pod'] or 'none'}: {facts['podPhase'] or 'not seen'}",
        f"heartbeat {ago(activity.last_heartbeat_at, ctx.now)}"
        + (" — LATE" if ctx.older_than(activity.last_heartbeat_at, timeout) else ""),
        f"last event {activity.last_event_type or '-'} {ago(activity.last_event_at, ctx.now)}",
    ]
    if activity.active_tools:
        lines.append("tools running: " + ", ".join(activity.active_tools))
    if agent.status.status_message:
        lines.append(f"agent says: {agent.status.status_message}")
    if agent.status.phase is AgentPhase.WORKING:
        return _why(bead, "Working", f"being worked on by {agent.name}", *lines, agent=facts)
    if agent.status.phase is AgentPhase.STALLED:
        return _why(
            bead,
            "Stalled",
            f"{agent.name} is stalled: it is re-dispatched after the "
            "cooldown while attempts remain",
            *lines,
            agent=facts,
        )
    retry = _retries(ctx, bead) or _town_switch(ctx, bead)
    if retry is not None:
        retry.details = lines + retry.details
        retry.facts["agent"] = facts
        return retry
    return _why(
        bead,
        "Redispatching",
        f"{agent.name} holds it but is idle: the operator re-dispatches it after the cooldown",
        *lines,
        agent=facts,
    )


# --- town-wide notes and rendering -------------------------------------------------------------


def _town_notes(ctx: Pass, why: Why) -> None:
    town = ctx.town
    why.facts["townMode"] = town.spec.mode.value
    if town.spec.mode is not TownMode.ACTIVE and why.verdict not in ("TownPaused", "TownDraining"):
        why.details.append(f"note: town {town.name} is in {town.spec.mode.value} mode")
    is_open, _, _ = breaker_state(ctx)
    if is_open and why.verdict != "CircuitBreakerOpen":
        why.details.append("note: the town's circuit breaker is open (no new dispatch)")


def render_why(why: Why, style: Style) -> str:
    """Plain words: the verdict line, details, and the operator's next step."""
    lines = [
        f"{style.bold('Bead ' + why.bead)}  {style.phase(why.phase)}  "
        f"{style.paint(why.verdict, _verdict_colour(why.verdict))}",
        f"  {why.summary}",
    ]
    lines += [f"  - {line}" for line in why.details if line]
    if why.next_pass:
        lines.append(style.dim("  next pass of the operator:"))
        lines += [style.dim(f"    {line}") for line in why.next_pass]
    return "\n".join(lines)


_GOOD = {"Done", "Working", "Ready", "InReview", "Dispatching", "PullRequestOpen"}
_BAD = {
    "Failed",
    "Cancelled",
    "DependencyFailed",
    "DependencyCycle",
    "MissingDependency",
    "UnknownRig",
    "AttemptsExhausted",
    "Stalled",
    "AgentLost",
    "CircuitBreakerOpen",
}


def _verdict_colour(verdict: str) -> str:
    if verdict in _GOOD:
        return "green"
    if verdict in _BAD:
        return "red"
    return "yellow"
