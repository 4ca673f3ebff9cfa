"""A bead's life as a timeline: creation, dispatches, pods, reports, reviews, rework, merge, Events.

Pure: built from the town's state (as the dashboard's watches hold it) and the Events about the
bead, its merge requests and their rework beads (listed by the caller for `timeline_subjects`).
The operator's dispatch Events say "<role> <agent> dispatched (attempt N, pod P)"; the pod name
ends in `-g<generation>`, which gives the dispatch generation even after the pod is gone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gastown.model import Agent, Bead, BeadPhase
from gastown.plugin.state import TownState
from gastown.reconcile.context import aware

DISPATCH = re.compile(
    r"^(?P<role>\w+) (?P<agent>\S+) dispatched \(attempt (?P<attempt>\d+), pod (?P<pod>\S+)\)"
)
GENERATION = re.compile(r"-g(\d+)$")
_LATEST = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Entry:
    """One moment of a bead's life."""

    at: datetime | None
    kind: str
    """created, dispatch, pod, report, merge_request, review, rework, merged, closed, failed,
    event."""
    text: str
    subject: str = ""
    """The object it is about (the bead, one of its merge requests or rework beads)."""
    agent: str | None = None
    generation: int | None = None
    pod: str | None = None
    warning: bool = False


def bead_timeline(
    state: TownState, bead_name: str, events: Iterable[Mapping[str, Any]] = ()
) -> list[Entry]:
    """Every known moment of the bead, its merge requests and rework beads, oldest first."""
    related = _related(state, bead_name)
    if not related:
        return []
    entries: list[Entry] = []
    for item in related:
        entries += _lifecycle(item, bead_name)
    subjects = {b.name for b in related}
    for agent in state.agents.values():
        entries += _reports(agent, subjects)
    for pod in state.pods.values():
        if pod.bead in subjects and pod.finished_at is not None:
            outcome = pod.reason or pod.phase
            code = f", exit {pod.exit_code}" if pod.exit_code is not None else ""
            entries.append(
                Entry(
                    pod.finished_at,
                    "pod",
                    f"pod {pod.name} ended: {outcome}{code}",
                    pod.bead or "",
                    pod.agent,
                    pod.generation,
                    pod.name,
                    warning=pod.phase == "Failed",
                )
            )
    entries += [_event(e) for e in events if _about(e) in subjects]
    return sorted(entries, key=lambda e: aware(e.at) if e.at else _LATEST)


def timeline_subjects(state: TownState, bead_name: str) -> list[str]:
    """The names a bead's timeline is about: the bead, its merge requests and their rework
    beads (the Events to list for it)."""
    return [b.name for b in _related(state, bead_name)]


def _related(state: TownState, bead_name: str) -> list[Bead]:
    bead = state.beads.get(bead_name)
    if bead is None:
        return []
    merge_requests = _merge_requests(state, bead_name)
    return [bead, *merge_requests, *_reworks(state, {b.name for b in merge_requests})]


def _merge_requests(state: TownState, source: str) -> list[Bead]:
    return sorted(
        (
            b
            for b in state.beads.values()
            if b.spec.merge_request is not None and b.spec.merge_request.source_bead == source
        ),
        key=lambda b: b.name,
    )


def _reworks(state: TownState, merge_requests: set[str]) -> list[Bead]:
    return sorted(
        (
            b
            for b in state.beads.values()
            if b.spec.rework is not None and b.spec.rework.merge_request in merge_requests
        ),
        key=lambda b: b.name,
    )


def _lifecycle(bead: Bead, main: str) -> list[Entry]:
    """Creation, review and the terminal phase of one bead, from its own status."""
    name, status = bead.name, bead.status
    what = "bead"
    kind = "created"
    if bead.spec.merge_request is not None:
        what, kind = "merge request", "merge_request"
    elif bead.spec.rework is not None:
        what, kind = "rework", "rework"
    found = [Entry(bead.metadata.creation_timestamp, kind, f"{what} {name} created", name)]
    review = status.review
    if review is not None and review.started_at is not None:
        by = f" by {review.refinery}" if review.refinery else ""
        pr = f" ({review.pr_url})" if review.pr_url else ""
        found.append(Entry(review.started_at, "review", f"review of {name} started{by}{pr}", name))
    if status.phase is BeadPhase.CLOSED:
        if bead.spec.merge_request is not None:
            commit = review.merge_commit if review is not None else None
            text = f"{name} merged" + (f" as {commit}" if commit else "")
            found.append(Entry(status.closed_at or status.phase_since, "merged", text, name))
        else:
            found.append(
                Entry(status.closed_at or status.phase_since, "closed", f"{name} closed", name)
            )
    elif status.phase is BeadPhase.FAILED:
        detail = ": ".join(p for p in (status.reason, status.message) if p)
        found.append(
            Entry(status.phase_since, "failed", f"{name} failed: {detail}", name, warning=True)
        )
    if name == main and not status.phase.terminal and status.reason:
        detail = ": ".join(p for p in (status.reason, status.message) if p)
        text = f"now {status.phase.value}: {detail}"
        found.append(Entry(status.phase_since, "phase", text, name))
    return found


def _reports(agent: Agent, subjects: set[str]) -> list[Entry]:
    """The agent's reports about any of `subjects` (a report without a bead is about the hook
    the agent held in the report's generation, known only for the current generation)."""
    found: list[Entry] = []
    current = agent.spec.hook or agent.status.last_hook
    for report in agent.status.reports:
        about = report.bead
        if about is None and report.generation == agent.spec.generation:
            about = current
        if about not in subjects:
            continue
        detail = report.summary or report.message or report.feedback or ""
        text = f"{agent.name} reported {report.type.value}" + (f": {detail}" if detail else "")
        found.append(
            Entry(
                report.at,
                "report",
                text[:300],
                about or "",
                agent.name,
                report.generation,
                warning=report.type.value in ("failed", "exited", "request-changes", "gate-failed"),
            )
        )
    return found


def _about(event: Mapping[str, Any]) -> str:
    return str((event.get("involvedObject") or {}).get("name", ""))


def _event(event: Mapping[str, Any]) -> Entry:
    """One Kubernetes Event; a dispatch Event also gives agent, generation and pod."""
    at = _time(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp"))
    message = str(event.get("message", ""))
    reason = str(event.get("reason", ""))
    warning = event.get("type") == "Warning"
    match = DISPATCH.match(message)
    if match is None:
        return Entry(at, "event", f"{reason}: {message}", _about(event), warning=warning)
    pod = match["pod"]
    generation = GENERATION.search(pod)
    return Entry(
        at,
        "dispatch",
        f"{match['role']} {match['agent']} dispatched, attempt {match['attempt']}",
        _about(event),
        match["agent"],
        int(generation.group(1)) if generation else None,
        pod,
    )


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def dispatches(entries: Sequence[Entry]) -> list[Entry]:
    """The dispatch entries of a timeline."""
    return [e for e in entries if e.kind == "dispatch"]
