"""Finished beads (closed or failed), summarised so that a pass does not walk them.

A town never forgets a finished bead (finished work is never redone, so its name must keep
answering `in` and lookups), and a town that lands a few hundred beads a day holds 100,000 of
them within a year. Rules care about finished beads only through a few facts: their phase (for
dependency readiness and doom), the convoys they count for (progress), the merge requests of a
source bead, failure and rate-limit times (breaker windows), work counts (Town status) and spend.
`FinishedBeads` keeps those facts, maintained incrementally as beads enter and leave the finished
phases, plus each bead in a compact form (compressed JSON, decoded on demand) instead of a full
model. The adapter owns one per town and hands each pass an immutable `FinishedView` of it;
`BeadMap` joins that view to the live beads so `Snapshot.beads` still answers for every bead.

Pure: no I/O, no clock; `json` and `zlib` only encode what the adapter hands over.
"""

from __future__ import annotations

import bisect
import json
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from gastown.model import Bead, BeadPhase, BeadType
from gastown.model.spend import Usage

V = TypeVar("V")
FINISHED = (BeadPhase.CLOSED, BeadPhase.FAILED)
WORK_TYPES = (BeadType.ISSUE, BeadType.REWORK)


def is_finished(bead: Bead) -> bool:
    """True if the bead is closed or failed."""
    phase = bead.status.phase
    return phase is BeadPhase.CLOSED or phase is BeadPhase.FAILED


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def encode(raw: Mapping[str, Any]) -> bytes:
    """A bead as the API returned it, compressed (managed fields dropped: nothing reads them)."""
    obj = dict(raw)
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    obj["metadata"] = meta
    return zlib.compress(json.dumps(obj, separators=(",", ":")).encode(), 1)


@dataclass(frozen=True, slots=True)
class FinishedBead:
    """What the rules need of one finished bead, plus the bead itself (compact)."""

    name: str
    uid: str
    phase: BeadPhase
    type: BeadType
    convoy: str | None  # the convoy an issue names (its membership route)
    source: str | None  # the source bead of a merge request
    landing: bool  # a convoy's landing merge request
    rework_source: str | None  # the source bead of a rework bead
    assignee: str | None
    deps: tuple[str, ...]
    failed_at: datetime | None  # lastFailureAt, aware
    rate_limited_at: datetime | None  # rateLimited.at, aware
    spend: Usage | None  # status.spend.total
    finished_at: datetime | None  # closedAt, else when it entered its phase (aware)
    owned: bool  # owned by a bead or convoy (garbage-collected with it)
    payload: Bead | bytes  # the model (tests) or its compressed JSON (the adapter)

    @classmethod
    def of(cls, bead: Bead, raw: Mapping[str, Any] | None = None) -> FinishedBead:
        """The record of a finished bead; `raw` (the API object) is stored compressed."""
        spec, status = bead.spec, bead.status
        mr, rework, hold = spec.merge_request, spec.rework, status.rate_limited
        failed = status.last_failure_at
        at = status.closed_at or status.phase_since or failed
        owners = bead.metadata.owner_references
        return cls(
            name=bead.metadata.name,
            uid=bead.metadata.uid or "",
            phase=status.phase,
            type=spec.type,
            convoy=spec.convoy if spec.type is BeadType.ISSUE else None,
            source=mr.source_bead if spec.type is BeadType.MERGE_REQUEST and mr else None,
            landing=bool(mr and mr.landing),
            rework_source=rework.source_bead if rework is not None else None,
            assignee=status.assignee,
            deps=tuple(spec.depends_on),
            failed_at=_aware(failed) if failed is not None else None,
            rate_limited_at=_aware(hold.at) if hold is not None else None,
            spend=status.spend.total if status.spend is not None else None,
            finished_at=_aware(at) if at is not None else None,
            owned=any(ref.kind in ("Bead", "Convoy") for ref in owners),
            payload=encode(raw) if raw is not None else bead,
        )

    def bead(self) -> Bead:
        """The bead itself (decoded from its compact form)."""
        if isinstance(self.payload, Bead):
            return self.payload
        return Bead.from_api(json.loads(zlib.decompress(self.payload)))


@dataclass(frozen=True, slots=True)
class ConvoyTally:
    """The finished part of one convoy's progress, memoised between passes."""

    finished: frozenset[str]  # members that are finished
    closed: int
    failed: int
    pending: tuple[str, ...]  # listed names (tasks, spec.beads) that are not finished
    listed: frozenset[str]  # every listed name
    extra: int  # finished members that are not listed (they name the convoy)


@dataclass(frozen=True)
class FinishedView:
    """An immutable copy of a town's finished-bead summary, for one pass."""

    records: Mapping[str, FinishedBead]
    named: Mapping[str, Mapping[str, BeadPhase]]
    """Convoy -> its finished issue beads (those that name it) and their phases."""
    by_source: Mapping[str, tuple[str, ...]]
    """Source bead -> its finished merge requests (sorted)."""
    failures: tuple[datetime, ...]
    """lastFailureAt of every finished bead that has one, sorted (aware)."""
    rate_limited: tuple[datetime, ...]
    """rateLimited.at of every finished bead that has one, sorted (aware)."""
    work_counts: Mapping[BeadPhase, int]
    """Finished issue and rework beads by phase."""
    expiry: tuple[tuple[datetime, str], ...]
    """(finishedAt, name) of every finished issue no bead or convoy owns, sorted: what the
    retention policy may delete, oldest first (see `retention`)."""
    spent: Mapping[str, FinishedBead]
    """Finished beads whose status records spend."""
    versions: Mapping[str, int]
    """Convoy -> a number that changes whenever its finished members may have changed."""
    memo: dict[tuple[str, int], tuple[object, ConvoyTally]]
    """Convoy tallies by (convoy, version), with the Convoy object they were computed from: a
    cache shared between views, valid for that very object (models are immutable and replaced
    on every change, and holding it keeps its identity from being reused)."""

    quiet: dict[str, dict[str, tuple[object, int]]]
    """Per purpose ("pass", "check"): settled convoys found needing nothing, with the Convoy
    object looked at and the convoy's version then (see `convoys.quiet_convoys`); shared
    between views like `memo`, valid while both are the same."""

    spendless: dict[str, object]
    """Convoys found without spend, budget state or budget of their own, with the Convoy
    object looked at (valid while it is the same); shared between views like `memo`."""

    def tally_key(self, convoy: str) -> tuple[str, int]:
        """The memo key of a convoy's tally as of this view."""
        return (convoy, self.versions.get(convoy, 0))

    def since(self, times: tuple[datetime, ...], moment: datetime) -> int:
        """How many of the sorted `times` are at or after `moment`."""
        return len(times) - bisect.bisect_left(times, moment)


class Overlaid(Mapping[str, V]):
    """A read-only mapping: `delta` (None marks a removed key) over a shared `base`."""

    __slots__ = ("base", "delta")

    def __init__(self, base: Mapping[str, V], delta: Mapping[str, V | None]) -> None:
        self.base = base
        self.delta = delta

    def get(self, key: str, default: Any = None) -> Any:
        delta = self.delta
        if key in delta:
            value = delta[key]
            return default if value is None else value
        return self.base.get(key, default)

    def __getitem__(self, key: str) -> V:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        delta = self.delta
        if key in delta:
            return delta[key] is not None  # type: ignore[index]
        return key in self.base

    def __iter__(self) -> Iterator[str]:
        delta = self.delta
        yield from (k for k in self.base if k not in delta)
        yield from (k for k, v in delta.items() if v is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class LayeredDict(Generic[V]):
    """A dict whose read-only copies cost what changed since the last fold, not its size.

    Views share an immutable `base` and get a copy of the small `delta`; once the delta has
    grown past a fraction of the whole, it is folded into a new base (one copy, amortised over
    that many changes)."""

    __slots__ = ("_base", "_delta", "current")

    def __init__(self) -> None:
        self.current: dict[str, V] = {}
        self._base: dict[str, V] = {}
        self._delta: dict[str, V | None] = {}

    def set(self, key: str, value: V) -> None:
        """Add or replace `key`."""
        self.current[key] = value
        self._delta[key] = value

    def pop(self, key: str) -> None:
        """Remove `key` (a no-op if absent)."""
        if self.current.pop(key, None) is not None:
            self._delta[key] = None

    def view(self) -> Mapping[str, V]:
        """A read-only copy as of now."""
        if len(self._delta) > max(1024, len(self.current) // 32):
            self._base, self._delta = dict(self.current), {}
        if not self._delta:
            return self._base
        return Overlaid(self._base, dict(self._delta))


def expires(record: FinishedBead) -> bool:
    """True if retention may delete the bead itself: a finished issue with a known finish time
    that no bead or convoy owns (owned ones go with their owner)."""
    return record.type is BeadType.ISSUE and not record.owned and record.finished_at is not None


def _insert(items: list[datetime], moment: datetime | None) -> None:
    if moment is not None:
        bisect.insort(items, moment)


def _remove(items: list[datetime], moment: datetime | None) -> None:
    if moment is not None:
        at = bisect.bisect_left(items, moment)
        if at < len(items) and items[at] == moment:
            del items[at]


class FinishedBeads:
    """A town's finished beads, maintained as watch events arrive (owned by the adapter).

    `add` a bead when it is seen closed or failed, `discard` it when it is seen in another phase
    or deleted; `observe_convoy`/`forget_convoy` keep the names each convoy lists, so a bead
    that finishes marks exactly the convoys it counts for as changed. `view()` returns an
    immutable copy, rebuilt only after a change.
    """

    def __init__(self) -> None:
        self._records: LayeredDict[FinishedBead] = LayeredDict()
        self.records = self._records.current  # read-only outside this class
        self.named: dict[str, dict[str, BeadPhase]] = {}
        self._by_source: LayeredDict[tuple[str, ...]] = LayeredDict()
        self.by_source = self._by_source.current
        self.failures: list[datetime] = []
        self.rate_limited: list[datetime] = []
        self.work_counts: Counter[BeadPhase] = Counter()
        self._spent: LayeredDict[FinishedBead] = LayeredDict()
        self.spent = self._spent.current
        self.expiry: list[tuple[datetime, str]] = []
        self.listers: dict[str, set[str]] = {}  # listed name -> convoys that list it
        self.listed: dict[str, tuple[str, ...]] = {}  # convoy -> the names it lists
        self.versions: dict[str, int] = {}
        self._counter = 0
        self._memo: dict[tuple[str, int], tuple[object, ConvoyTally]] = {}
        self._quiet: dict[str, dict[str, tuple[object, int]]] = {"pass": {}, "check": {}}
        self._spendless: dict[str, object] = {}
        self._view: FinishedView | None = None

    @classmethod
    def build(
        cls, beads: Iterable[Bead], listed: Mapping[str, Iterable[str]] | None = None
    ) -> FinishedBeads:
        """A summary built from scratch (what the incremental one must always equal)."""
        summary = cls()
        for convoy, names in (listed or {}).items():
            summary.observe_convoy(convoy, names)
        for bead in beads:
            if is_finished(bead):
                summary.add(bead)
        return summary

    def __contains__(self, name: object) -> bool:
        return name in self.records

    def __len__(self) -> int:
        return len(self.records)

    def _touch(self, record: FinishedBead) -> None:
        """Mark the convoys the bead counts for as changed."""
        self._view = None
        self._counter += 1
        if record.convoy is not None:
            self.versions[record.convoy] = self._counter
        for convoy in self.listers.get(record.name, ()):
            self.versions[convoy] = self._counter

    def add(self, bead: Bead, raw: Mapping[str, Any] | None = None) -> None:
        """Record a finished bead (replacing what was held under its name)."""
        self.discard(bead.metadata.name)
        record = FinishedBead.of(bead, raw)
        name = record.name
        self._records.set(name, record)
        if record.convoy is not None:
            self.named[record.convoy] = {**self.named.get(record.convoy, {}), name: record.phase}
        if record.source is not None:
            self._by_source.set(
                record.source, tuple(sorted((*self.by_source.get(record.source, ()), name)))
            )
        _insert(self.failures, record.failed_at)
        _insert(self.rate_limited, record.rate_limited_at)
        if record.type in WORK_TYPES:
            self.work_counts[record.phase] += 1
        if record.spend is not None:
            self._spent.set(name, record)
        if record.finished_at is not None and expires(record):
            bisect.insort(self.expiry, (record.finished_at, name))
        self._touch(record)

    def discard(self, name: str) -> None:
        """Forget a bead that is no longer finished (or gone); a no-op for unknown names."""
        record = self.records.get(name)
        if record is None:
            return
        self._records.pop(name)
        if record.convoy is not None:
            members = {k: v for k, v in self.named[record.convoy].items() if k != name}
            if members:
                self.named[record.convoy] = members
            else:
                del self.named[record.convoy]
        if record.source is not None:
            rest = tuple(n for n in self.by_source[record.source] if n != name)
            if rest:
                self._by_source.set(record.source, rest)
            else:
                self._by_source.pop(record.source)
        _remove(self.failures, record.failed_at)
        _remove(self.rate_limited, record.rate_limited_at)
        self._spent.pop(name)
        if record.finished_at is not None and expires(record):
            at = bisect.bisect_left(self.expiry, (record.finished_at, name))
            if at < len(self.expiry) and self.expiry[at][1] == name:
                del self.expiry[at]
        if record.type in WORK_TYPES:
            self.work_counts[record.phase] -= 1
            if not self.work_counts[record.phase]:
                del self.work_counts[record.phase]
        self._touch(record)

    def observe_convoy(self, convoy: str, names: Iterable[str]) -> None:
        """Record the bead names a convoy lists (its tasks' beads and `spec.beads`)."""
        listed = tuple(dict.fromkeys(names))
        old = self.listed.get(convoy, ())
        if listed == old:
            return
        for name in old:
            convoys = self.listers.get(name)
            if convoys is not None:
                convoys.discard(convoy)
                if not convoys:
                    del self.listers[name]
        for name in listed:
            self.listers.setdefault(name, set()).add(convoy)
        if listed:
            self.listed[convoy] = listed
        else:
            self.listed.pop(convoy, None)
        self._view = None
        self._counter += 1
        self.versions[convoy] = self._counter

    def forget_convoy(self, convoy: str) -> None:
        """A convoy is gone: it lists nothing any more."""
        self.observe_convoy(convoy, ())
        self._memo = {k: v for k, v in self._memo.items() if k[0] != convoy}
        for found in self._quiet.values():
            found.pop(convoy, None)
        self._spendless.pop(convoy, None)

    def view(self) -> FinishedView:
        """An immutable copy for one pass (the same object until the next change)."""
        if self._view is None:
            # Tallies of superseded versions can never be asked for again.
            if len(self._memo) > 2 * max(len(self.versions), 16):
                self._memo = {
                    k: v for k, v in self._memo.items() if self.versions.get(k[0], 0) == k[1]
                }
            self._view = FinishedView(
                records=self._records.view(),
                named=dict(self.named),
                by_source=self._by_source.view(),
                failures=tuple(self.failures),
                rate_limited=tuple(self.rate_limited),
                work_counts=dict(self.work_counts),
                expiry=tuple(self.expiry),
                spent=self._spent.view(),
                versions=dict(self.versions),
                memo=self._memo,
                quiet=self._quiet,
                spendless=self._spendless,
            )
        return self._view


def empty_view() -> FinishedView:
    """The view of a town without finished beads."""
    return FinishedBeads().view()


class BeadMap(Mapping[str, Bead]):
    """Every bead of a snapshot: live ones as models, finished ones decoded on demand.

    Lookups and `in` answer for finished beads too (a deterministic name that exists must
    never be created again); iterating decodes every finished bead, so rules walk `live` and
    the summary instead.
    """

    __slots__ = ("_decoded", "finished", "live")

    def __init__(self, live: Mapping[str, Bead], finished: FinishedView) -> None:
        self.live = live
        self.finished = finished
        self._decoded: dict[str, Bead] = {}

    @classmethod
    def split(cls, beads: Mapping[str, Bead]) -> BeadMap:
        """The beads of a plain mapping, with the finished ones summarised from scratch."""
        live = {name: bead for name, bead in beads.items() if not is_finished(bead)}
        summary = FinishedBeads.build(bead for bead in beads.values() if is_finished(bead))
        return cls(live, summary.view())

    def __getitem__(self, name: str) -> Bead:
        bead = self.live.get(name)
        if bead is not None:
            return bead
        decoded = self._decoded.get(name)
        if decoded is None:
            decoded = self.finished.records[name].bead()  # KeyError for unknown names
            self._decoded[name] = decoded
        return decoded

    def __contains__(self, name: object) -> bool:
        return name in self.live or name in self.finished.records

    def __iter__(self) -> Iterator[str]:
        yield from self.live
        yield from self.finished.records

    def __len__(self) -> int:
        return len(self.live) + len(self.finished.records)


class Chain(Mapping[str, V]):
    """A read-only lookup: `first`, then a field of the finished records (None: absent)."""

    __slots__ = ("field", "first", "records")

    def __init__(
        self, first: Mapping[str, V], records: Mapping[str, FinishedBead], field: str
    ) -> None:
        self.first = first
        self.records = records
        self.field = field

    def get(self, key: str, default: Any = None) -> Any:
        value = self.first.get(key)
        if value is not None:
            return value
        record = self.records.get(key)
        if record is None:
            return default
        found = getattr(record, self.field)
        return default if found is None else found

    def __getitem__(self, key: str) -> V:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        yield from self.first
        field = self.field
        for name, record in self.records.items():
            if name not in self.first and getattr(record, field) is not None:
                yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)


class Layered(Mapping[str, V]):
    """A read-only lookup: `first`, then `second` (for small overlays on large mappings)."""

    __slots__ = ("first", "second")

    def __init__(self, first: Mapping[str, V], second: Mapping[str, V]) -> None:
        self.first = first
        self.second = second

    def get(self, key: str, default: Any = None) -> Any:
        value = self.first.get(key)
        return value if value is not None else self.second.get(key, default)

    def __getitem__(self, key: str) -> V:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        return key in self.first or key in self.second

    def __iter__(self) -> Iterator[str]:
        yield from self.first
        yield from (k for k in self.second if k not in self.first)

    def __len__(self) -> int:
        return sum(1 for _ in self)
