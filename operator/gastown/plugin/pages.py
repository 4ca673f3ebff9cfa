"""The dashboard's HTML pages (pure): towns, a town, a convoy's DAG, a bead's timeline, agents,
the review queue. Every value from the cluster is escaped; the only script is the small live
updater in `PAGE`, which reloads the page's `<main>` when the server says something changed.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape

from gastown.model import Agent, AgentRole, Bead, BeadType, Convoy
from gastown.plugin.dag import PHASE_COLOURS, convoy_graph, layout, render_svg
from gastown.plugin.state import TownState
from gastown.plugin.status import build_status
from gastown.plugin.style import ago
from gastown.plugin.timeline import Entry
from gastown.reconcile.review_queue import pr_url

STYLE = """
body{font:14px system-ui,sans-serif;margin:0;color:#111827;background:#f9fafb}
header{background:#111827;color:#f9fafb;padding:8px 16px}header a{color:#f9fafb;margin-right:12px}
main{padding:16px}table{border-collapse:collapse;margin:8px 0 16px}
td,th{border-bottom:1px solid #e5e7eb;padding:4px 10px;text-align:left;vertical-align:top}
.phase{padding:1px 6px;border-radius:4px}.warn{color:#b91c1c}.muted{color:#6b7280}
.error{background:#fee2e2;padding:8px;border-radius:4px}
ol.timeline{list-style:none;padding:0}ol.timeline li{padding:4px 0;border-left:3px solid #9ca3af;
padding-left:10px;margin-left:4px}ol.timeline li.warning{border-color:#dc2626}
.legend span{margin-right:10px}
"""

SCRIPT = """
(function(){
  var main=document.getElementById('live');
  if(!main||!window.EventSource)return;
  var timer=null,version=null,source=new EventSource('/events');
  function refresh(){
    timer=null;
    var url=location.pathname+(location.search?location.search+'&':'?')+'fragment=1';
    fetch(url,{cache:'no-store'}).then(function(r){return r.text();}).then(function(html){
      main.innerHTML=html;main.setAttribute('data-version',version);
    });
  }
  source.onmessage=function(event){
    version=event.data;
    if(!timer)timer=setTimeout(refresh,150);
  };
})();
"""


def page(title: str, body: str, namespace: str) -> str:
    """A whole page: header with navigation, the live `<main>`, the updater script."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)} · gastown</title><style>{STYLE}</style></head><body>"
        f'<header><a href="/">towns</a><span class=muted>namespace {escape(namespace)}</span>'
        f"</header><main id=live>{body}</main><script>{SCRIPT}</script></body></html>"
    )


def _phase(value: str | None) -> str:
    text = value or "—"
    colour = PHASE_COLOURS.get(text, "#f3f4f6")
    return f'<span class=phase style="background:{colour}">{escape(text)}</span>'


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], attrs: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table {attrs}><tr>{head}</tr>{body}</table>"


def _link(href: str, text: str) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>'


def errors_block(errors: Mapping[str, str]) -> str:
    """What the user's credentials could not read (shown, never worked around)."""
    if not errors:
        return ""
    items = "".join(f"<li>{escape(kind)}: {escape(msg)}</li>" for kind, msg in errors.items())
    return f"<div class=error>Not readable with your credentials:<ul>{items}</ul></div>"


# --- towns and one town ---------------------------------------------------------------------


def towns_body(states: Sequence[TownState], now: datetime) -> str:
    """Every town of the namespace: health, counts, spend."""
    rows = []
    for state in states:
        board = build_status(state, now)
        ready = next((c for c in board["conditions"] if c["type"] == "Ready"), None)
        health = f"{ready['status']} ({ready['reason']})" if ready else "unknown"
        beads, agents = board["beads"], board["agents"]
        rows.append(
            [
                _link(f"/town/{state.town.name}", state.town.name),
                escape(health),
                escape(board["summary"]),
                f"{beads['open']} open · {beads['in_progress']} in progress · "
                f"{beads['in_review']} in review · {beads['closed']} closed · "
                f"{beads['failed']} failed",
                f"{agents['working']} working · {agents['idle']} idle · "
                f"{agents['stalled']} stalled",
                f"${board['spend']['todayUsd']:.2f} today · ${board['spend']['totalUsd']:.2f}",
                str(len(board["violations"])),
                str(len(state.town.status.last_repairs)),
            ]
        )
    headers = ["town", "ready", "summary", "beads", "agents", "spend", "violations", "repairs"]
    if not rows:
        return "<h1>Towns</h1><p class=muted>No Town in this namespace.</p>"
    return "<h1>Towns</h1>" + _table(headers, rows, "id=towns")


def town_body(state: TownState, now: datetime) -> str:
    """One town: conditions, violations and repairs, convoys, links to agents and queue."""
    board = build_status(state, now)
    name = state.town.name
    parts = [
        f"<h1>Town {escape(name)}</h1><p>{escape(board['summary'])} · "
        f"{_link(f'/town/{name}/agents', 'agents')} · "
        f"{_link(f'/town/{name}/queue', 'review queue')}</p>",
        _table(
            ["condition", "status", "reason", "message"],
            (
                [escape(c["type"]), escape(c["status"]), escape(c["reason"]), escape(c["message"])]
                for c in board["conditions"]
            ),
        ),
    ]
    if state.town.status.violations:
        parts.append("<h2>Invariant violations</h2>")
        parts.append(
            _table(
                ["code", "subject", "message"],
                (
                    [escape(v.code), escape(v.subject), escape(v.message)]
                    for v in state.town.status.violations
                ),
            )
        )
    if state.town.status.last_repairs:
        parts.append("<h2>Recent repairs</h2>")
        parts.append(
            _table(
                ["when", "code", "subject", "what was found"],
                (
                    [escape(ago(r.at, now)), escape(r.code), escape(r.subject), escape(r.message)]
                    for r in state.town.status.last_repairs
                ),
            )
        )
    parts.append("<h2>Convoys</h2>")
    parts.append(
        _table(
            ["convoy", "phase", "progress", "mode", "reason"],
            (
                [
                    _link(f"/convoy/{c['name']}", c["name"]),
                    _phase(c["phase"]),
                    escape(c["progress"]),
                    escape(c["mergeMode"]),
                    escape(c["reason"] or ""),
                ]
                for c in board["convoys"]
            ),
            "id=convoys",
        )
    )
    return "".join(parts)


# --- a convoy -----------------------------------------------------------------------------------


def convoy_body(state: TownState, convoy: Convoy) -> str:
    """The convoy as a DAG (click a node for its bead), with its landing state."""
    graph = convoy_graph(state, convoy)
    placed = layout(graph)
    landing = convoy.status.landing
    facts = [f"phase {_phase(graph.phase or None)}", f"progress {escape(graph.progress or '—')}"]
    if convoy.status.feature_branch:
        facts.append(f"feature branch <code>{escape(convoy.status.feature_branch)}</code>")
    if landing.merge_request:
        facts.append(
            f"landing MR {_link('/bead/' + landing.merge_request, landing.merge_request)} "
            f"(attempt {landing.attempts})"
        )
    legend = "".join(
        f'<span><span class=phase style="background:{c}">{escape(p)}</span></span>'
        for p, c in PHASE_COLOURS.items()
    )
    return (
        f"<h1>Convoy {escape(convoy.name)}</h1>"
        f"<p>town {_link('/town/' + state.town.name, state.town.name)} · {' · '.join(facts)}</p>"
        f"<p class=legend>{legend}</p>{render_svg(placed)}"
    )


# --- a bead -------------------------------------------------------------------------------------


def bead_body(bead: Bead, entries: Sequence[Entry], now: datetime) -> str:
    """A bead's facts and its timeline."""
    status = bead.status
    facts = [
        f"phase {_phase(status.phase.value)}",
        f"attempts {status.attempts}",
        f"assignee {escape(status.assignee or '—')}",
    ]
    if bead.spec.convoy:
        facts.append(f"convoy {_link('/convoy/' + bead.spec.convoy, bead.spec.convoy)}")
    if status.branch:
        facts.append(f"branch <code>{escape(status.branch)}</code>")
    items = []
    for entry in entries:
        when = escape(ago(entry.at, now)) if entry.at else "—"
        extra = []
        if entry.generation is not None:
            extra.append(f"generation {entry.generation}")
        if entry.pod:
            extra.append(f"pod {escape(entry.pod)}")
        if entry.subject and entry.subject != bead.name:
            extra.append(_link("/bead/" + entry.subject, entry.subject))
        tail = f" <span class=muted>{' · '.join(extra)}</span>" if extra else ""
        css = "warning" if entry.warning else ""
        items.append(
            f'<li class="{css}" data-kind="{escape(entry.kind)}">'
            f"<span class=muted>{when}</span> {escape(entry.text)}{tail}</li>"
        )
    return (
        f"<h1>Bead {escape(bead.name)}</h1><p><b>{escape(bead.spec.title)}</b></p>"
        f"<p>{' · '.join(facts)}</p><h2>Timeline</h2>"
        f"<ol class=timeline id=timeline>{''.join(items)}</ol>"
    )


# --- agents and the review queue -------------------------------------------------------------


def gupp_tier(agent: Agent) -> str:
    """The highest GUPP tier fired for the agent's current generation ("" if none)."""
    gupp = agent.status.gupp
    if gupp.generation != agent.spec.generation:
        return ""
    for tier, at in (
        ("force-stop", gupp.force_stopped_at),
        ("escalate", gupp.escalated_at),
        ("warn", gupp.warned_at),
    ):
        if at is not None:
            return tier
    return ""


def agents_body(state: TownState, now: datetime) -> str:
    """Agents with their hook, generation, pod, activity watermark and GUPP tier."""
    rows: list[list[str]] = []
    for agent in sorted(state.agents.values(), key=lambda a: a.name):
        activity = agent.status.activity
        hook = agent.spec.hook
        rows.append(
            [
                escape(agent.name),
                escape(agent.spec.role.value),
                escape(agent.spec.rig or ""),
                _phase(agent.status.phase.value),
                _link("/bead/" + hook, hook) if hook else "—",
                str(agent.spec.generation),
                escape(agent.status.pod or "—"),
                escape(ago(activity.last_heartbeat_at, now)),
                escape(
                    f"{activity.last_event_type or '—'} {ago(activity.last_event_at, now)}".strip()
                ),
                escape(", ".join(activity.active_tools) or "—"),
                escape(gupp_tier(agent) or "—"),
            ]
        )
    headers = [
        "agent",
        "role",
        "rig",
        "phase",
        "hook",
        "generation",
        "pod",
        "heartbeat",
        "last event",
        "tools",
        "GUPP tier",
    ]
    title = f"<h1>Agents of {_link('/town/' + state.town.name, state.town.name)}</h1>"
    return title + _table(headers, rows, "id=agents")


def queue_body(state: TownState) -> str:
    """Merge requests not yet merged or failed, per rig, oldest first."""
    parts = [f"<h1>Review queue of {_link('/town/' + state.town.name, state.town.name)}</h1>"]
    for rig in state.town.spec.rigs:
        mrs = sorted(
            (
                b
                for b in state.beads.values()
                if b.spec.type is BeadType.MERGE_REQUEST
                and b.spec.rig == rig.name
                and not b.status.phase.terminal
            ),
            key=lambda b: (b.metadata.creation_timestamp or datetime.min, b.name),
        )
        rows = [_queue_row(state, mr) for mr in mrs]
        parts.append(f"<h2>{escape(rig.name)} <span class=muted>({len(rows)})</span></h2>")
        parts.append(
            _table(["merge request", "phase", "source", "refinery", "pull request"], rows)
            if rows
            else "<p class=muted>empty</p>"
        )
    return "".join(parts)


def _queue_row(state: TownState, mr: Bead) -> list[str]:
    spec = mr.spec.merge_request
    source = spec.source_bead if spec is not None else ""
    landing = spec is not None and spec.landing
    refinery = next(
        (
            a.name
            for a in state.agents.values()
            if a.spec.role is AgentRole.REFINERY and a.spec.hook == mr.name
        ),
        "—",
    )
    url = pr_url(mr)
    return [
        _link("/bead/" + mr.name, mr.name),
        _phase(mr.status.phase.value),
        (
            _link("/convoy/" + source, f"landing of {source}")
            if landing
            else _link("/bead/" + source, source)
        ),
        escape(refinery),
        _external(url),
    ]


def _external(url: str | None) -> str:
    """A link to a pull request; only http(s) URLs become links (an agent may have written
    it, and a `javascript:` URL must never run in the dashboard's origin)."""
    if not url:
        return "—"
    if urllib.parse.urlsplit(url).scheme in ("http", "https"):
        return f'<a href="{escape(url)}" rel="noreferrer noopener">{escape(url)}</a>'
    return escape(url)


def not_found(what: str) -> str:
    """Body of a page whose object is not (or no longer) readable."""
    return f"<h1>Not found</h1><p>{escape(what)} does not exist or you may not read it.</p>"
