"""Spend accounting: agent usage into Beads, Bead totals into Convoys and the Town, exactly once.

Two stages, each recorded in the one status write that counts it:

1. **Agent -> Bead.** Every report of an agent may carry the cumulative usage of its dispatch
   generation (`Report.usage`). Per generation the largest reading is the session's usage; the
   bead keeps one entry per session (`spend.sessions`, key `<agent uid>/<generation>`, like
   `claims.claim_key`) and its total is the sum of the entries. Folding a reading in is a
   field-by-field maximum, so a report read again, or read after an operator restart, adds
   nothing: the entry already covers it.
2. **Bead -> Convoy, Town.** A convoy and the town keep, per bead (uid), the part of the bead's
   total they have counted (`spend.counted`) and add only the difference, in the same write as
   their totals (compare-and-set on the previous `spend`). The town also keeps today's and this
   month's spend (UTC calendar windows from the pass's `now`); a window that has rolled over
   starts again from zero. Entries of beads that no longer exist are dropped (a deleted bead
   cannot spend again).

Costs come from the agent when its CLI reports them; otherwise tokens are priced with the Town's
price table (`policy.budget.prices`), so a cumulative reading always prices the same.

Budgets are checked on the *effective* figures: the stored ones plus everything reported but not
yet written, so a pass never dispatches on figures a pass behind. The writes themselves happen
last in the pass, only on objects no other rule wrote in it (the next pass catches up).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gastown.model import Agent, Bead, BeadType
from gastown.model.policy import BudgetPolicy, ModelPrice
from gastown.model.spend import (
    MAX_SESSIONS,
    BeadSpend,
    LedgerSpend,
    Spend,
    TownSpend,
    Usage,
    WindowSpend,
    dollars,
)
from gastown.reconcile.finished import FinishedBead
from gastown.reconcile.snapshot import Snapshot

MILLION = 1_000_000
NOTHING = Spend()


def session_key(agent: Agent, generation: int) -> str:
    """One key per dispatch generation of one Agent object (its uid keeps a re-created agent
    apart from the old one)."""
    return f"{agent.metadata.uid or agent.name}/{generation}"


def bead_key(bead: Bead) -> str:
    """Ledger key of a bead: its uid (a re-created bead of the same name starts afresh)."""
    return bead.metadata.uid or bead.name


def day_window(now: datetime) -> str:
    """The UTC day of `now`, e.g. 2026-12-02."""
    return now.strftime("%Y-%m-%d")


def month_window(now: datetime) -> str:
    """The UTC month of `now`, e.g. 2026-12."""
    return now.strftime("%Y-%m")


# --- prices ------------------------------------------------------------------------------------


def price_for(prices: Iterable[ModelPrice], model: str | None) -> ModelPrice | None:
    """The first price whose model matches (exact, `prefix*`, or `*`)."""
    name = model or ""
    for price in prices:
        pattern = price.model
        if pattern == name or pattern == "*":
            return price
        if pattern.endswith("*") and name.startswith(pattern[:-1]):
            return price
    return None


def priced(usage: Usage, policy: BudgetPolicy) -> Usage:
    """The usage with a cost: the agent's own when it reported one, else from the price table."""
    if usage.cost_reported:
        return usage
    price = price_for(policy.prices, usage.model)
    if price is None:
        return usage
    cost = (
        usage.input_tokens * price.input_per_mtok
        + usage.output_tokens * price.output_per_mtok
        + usage.cache_read_tokens * price.cache_read_per_mtok
        + usage.cache_write_tokens * price.cache_write_per_mtok
    ) / MILLION
    return usage.model_copy(update={"cost_usd": dollars(cost)})


def figure(usage: Usage) -> Spend:
    """Cost and tokens of a usage."""
    return Spend(cost_usd=usage.cost_usd, tokens=usage.tokens)


# --- stage 1: agents -> beads ------------------------------------------------------------------


def session_readings(agent: Agent) -> dict[int, tuple[str, Usage]]:
    """Per generation of the agent: the bead its reports name and the largest usage reading."""
    found: dict[int, tuple[str, Usage]] = {}
    for report in agent.status.reports:
        if report.usage is None or report.bead is None:
            continue
        known = found.get(report.generation)
        usage = report.usage if known is None else known[1].at_least(report.usage)
        found[report.generation] = (report.bead, usage)
    return found


def fold_sessions(old: BeadSpend | None, updates: Mapping[str, Usage]) -> BeadSpend:
    """The bead's spend with the sessions' readings folded in (each entry only grows).

    Beyond `MAX_SESSIONS` entries the oldest (in key order of arrival) move into `earlier`,
    which only grows too; their keys are then forgotten, which is safe because an agent's
    reports of so old a generation are long applied and trimmed.
    """
    base = old or BeadSpend()
    sessions = dict(base.sessions)
    for key, reading in updates.items():
        current = sessions.get(key)
        sessions[key] = reading if current is None else current.at_least(reading)
    earlier = base.earlier
    while len(sessions) > MAX_SESSIONS:
        oldest = next(iter(sessions))
        earlier = earlier.plus(sessions.pop(oldest))
    total = earlier
    for usage in sessions.values():
        total = total.plus(usage)
    return BeadSpend(total=total, sessions=sessions, earlier=earlier)


def pending_bead_spend(snap: Snapshot, policy: BudgetPolicy) -> dict[str, BeadSpend]:
    """Beads whose spend must grow: reported usage their stored sessions do not cover yet."""
    updates: dict[str, dict[str, Usage]] = {}
    for agent in snap.agents.values():
        if not agent.status.reports:
            continue
        for generation, (bead_name, reading) in session_readings(agent).items():
            bead = snap.beads.get(bead_name)
            if bead is None:
                continue
            key = session_key(agent, generation)
            usage = priced(reading, policy)
            stored = bead.status.spend.sessions.get(key) if bead.status.spend else None
            if stored is not None and stored.covers(usage):
                continue
            updates.setdefault(bead_name, {})[key] = usage
    return {
        name: fold_sessions(snap.beads[name].status.spend, sessions)
        for name, sessions in updates.items()
    }


# --- stage 2: beads -> convoys and the town ----------------------------------------------------


def spend_convoy(snap: Snapshot, bead: Bead) -> str | None:
    """The convoy a bead's spend counts for: its own, or its source's (merge requests, rework)."""
    spec = bead.spec
    mr, rework = spec.merge_request, spec.rework
    return _spend_convoy(
        snap,
        snap.index.convoy_name(bead),
        spec.type,
        mr.source_bead if mr is not None else None,
        mr is not None and mr.landing,
        rework.source_bead if rework is not None else None,
    )


def _record_convoy(snap: Snapshot, record: FinishedBead) -> str | None:
    """`spend_convoy` of a finished bead, from its summary record."""
    return _spend_convoy(
        snap,
        snap.index.convoy_of_record(record.name, record.convoy),
        record.type,
        record.source,
        record.landing,
        record.rework_source,
    )


def _spend_convoy(
    snap: Snapshot,
    own: str | None,
    kind: BeadType,
    mr_source: str | None,
    landing: bool,
    rework_source: str | None,
) -> str | None:
    if own is not None:
        return own
    source: str | None = None
    if kind is BeadType.MERGE_REQUEST and mr_source is not None:
        source = mr_source
        if landing:
            return source if source in snap.convoys else None
    elif kind is BeadType.REWORK and rework_source is not None:
        source = rework_source
    if source is None:
        return None
    index = snap.index
    origin = index.live.get(source)
    if origin is not None:
        return index.convoy_name(origin)
    record = index.finished.records.get(source) if index.finished is not None else None
    if record is not None:
        return index.convoy_of_record(source, record.convoy)
    origin = snap.beads.get(source)  # a plain mapping: every bead is live
    return index.convoy_name(origin) if origin is not None else None


def fold_ledger(
    counted: Mapping[str, Spend], total: Spend, figures: Mapping[str, Spend]
) -> tuple[dict[str, Spend], Spend, Spend]:
    """Count what `figures` (per bead) have beyond `counted`: (new counted, new total, delta)."""
    new_counted = dict(counted)
    delta = Spend()
    for key, value in figures.items():
        before = counted.get(key, Spend())
        grown = value.minus(before)
        if grown.empty:
            continue
        new_counted[key] = before.plus(grown)
        delta = delta.plus(grown)
    return new_counted, total.plus(delta), delta


def rolled(window: WindowSpend, name: str) -> WindowSpend:
    """The window's spend if it is still `name`, else an empty window `name` (roll-over)."""
    return window if window.window == name else WindowSpend(window=name)


def add_to_window(window: WindowSpend, name: str, delta: Spend) -> WindowSpend:
    """Add `delta` to the window `name` (starting it afresh if the stored one rolled over)."""
    base = rolled(window, name)
    grown = base.plus(delta)
    return WindowSpend(window=name, cost_usd=grown.cost_usd, tokens=grown.tokens)


def fold_town(
    old: TownSpend | None, figures: Mapping[str, Spend], live: set[str], now: datetime
) -> TownSpend:
    """The town's spend with the beads' figures counted (and gone beads' entries dropped)."""
    base = old or TownSpend()
    counted, total, delta = fold_ledger(base.counted, base.total, figures)
    counted = {key: value for key, value in counted.items() if key in live}
    return TownSpend(
        total=total,
        counted=counted,
        today=add_to_window(base.today, day_window(now), delta),
        month=add_to_window(base.month, month_window(now), delta),
    )


def fold_convoy(
    old: LedgerSpend | None, figures: Mapping[str, Spend], live: set[str]
) -> LedgerSpend:
    """The convoy's spend with its beads' figures counted."""
    base = old or LedgerSpend()
    counted, total, _ = fold_ledger(base.counted, base.total, figures)
    counted = {key: value for key, value in counted.items() if key in live}
    return LedgerSpend(total=total, counted=counted)


# --- the pass's view ---------------------------------------------------------------------------


@dataclass
class SpendView:
    """Spend as one pass sees it: stored figures, what to write, and the effective figures."""

    beads: dict[str, BeadSpend] = field(default_factory=dict)
    """Beads whose spend grows this pass (stage 1 writes)."""
    stored: dict[str, dict[str, Spend]] = field(default_factory=dict)
    """Per convoy ('' for the town): bead key -> the bead's stored total (stage 2 input)."""
    effective_bead: dict[str, Spend] = field(default_factory=dict)
    """Bead name -> its spend including what is not written yet."""
    effective_convoy: dict[str, Spend] = field(default_factory=dict)
    town: TownSpend = field(default_factory=TownSpend)
    """The town's spend including what is not written yet (windows at `now`)."""
    live: set[str] = field(default_factory=set)
    """Keys of the beads that exist."""


def build_view(
    snap: Snapshot, policy: BudgetPolicy, now: datetime, spendless: AbstractSet[str] = frozenset()
) -> SpendView:
    """Everything spend-related one pass needs, from the snapshot alone (`spendless`: convoys
    known to have no spend recorded, which need no fold unless a bead counts for them)."""
    view = SpendView(beads=pending_bead_spend(snap, policy))
    town_effective: dict[str, Spend] = {}
    convoy_effective: dict[str, dict[str, Spend]] = {}
    index = snap.index
    for name, bead in index.live.items():
        key = bead_key(bead)
        view.live.add(key)
        stored = bead.status.spend
        pending = view.beads.get(name)
        if stored is None and pending is None:
            continue
        _count_bead(
            view,
            town_effective,
            convoy_effective,
            name,
            key,
            stored.total if stored is not None else None,
            pending,
            spend_convoy(snap, bead),
        )
    if index.finished is not None:
        # Finished beads with spend, or with usage still to record (a finished bead without
        # either has no ledger entry to keep: entries only come from figures).
        records = index.finished.records
        names = [*index.finished.spent, *(n for n in view.beads if n in records)]
        for name in dict.fromkeys(names):
            record = records[name]
            key = record.uid or record.name
            view.live.add(key)
            _count_bead(
                view,
                town_effective,
                convoy_effective,
                name,
                key,
                record.spend,
                view.beads.get(name),
                _record_convoy(snap, record),
            )
    view.town = fold_town(snap.town.status.spend, town_effective, view.live, now)
    for convoy_name, group in snap.convoys.items():
        if convoy_name in spendless and convoy_name not in convoy_effective:
            view.effective_convoy[convoy_name] = NOTHING  # what the fold would give
            continue
        figures = convoy_effective.get(convoy_name, {})
        if group.status.spend is None and not figures:
            view.effective_convoy[convoy_name] = NOTHING  # what the fold would give
            continue
        view.effective_convoy[convoy_name] = fold_convoy(
            group.status.spend, figures, view.live
        ).total
    return view


def _count_bead(
    view: SpendView,
    town_effective: dict[str, Spend],
    convoy_effective: dict[str, dict[str, Spend]],
    name: str,
    key: str,
    stored: Usage | None,
    pending: BeadSpend | None,
    convoy: str | None,
) -> None:
    """Count one bead's stored and effective spend for the town and its convoy."""
    if stored is not None:
        value = figure(stored)
        view.stored.setdefault("", {})[key] = value
        if convoy is not None:
            view.stored.setdefault(convoy, {})[key] = value
    effective = figure(pending.total if pending is not None else stored or Usage())
    view.effective_bead[name] = effective
    town_effective[key] = effective
    if convoy is not None:
        convoy_effective.setdefault(convoy, {})[key] = effective


def dump(model: Any) -> Any:
    """A status value as compared by `expect` (None stays None)."""
    return None if model is None else model.model_dump(mode="json", by_alias=True)


def replacement(old: Any, new: Any) -> Any:
    """A merge patch that turns `old` into `new` (nulls for keys that are gone)."""
    if not isinstance(new, dict) or not isinstance(old, dict):
        return new
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        patch[key] = replacement(old.get(key), value)
    return patch
