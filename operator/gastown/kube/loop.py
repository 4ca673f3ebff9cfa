"""The per-town reconcile loop: wake, snapshot, reconcile, apply, side effects, invariants, status.

One loop runs per Town (a kopf daemon). It wakes on any watch event of the town's objects
(debounced by a few tens of milliseconds, so a burst becomes one pass) and on a safety-net
interval, which keeps it level-triggered: a missed event delays work, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gastown.kube import metrics
from gastown.kube.apply import Applier, ApplyResult, ClaimRequester, PRPoller
from gastown.kube.client import ApiError, Conflict, Kube, NotLeading
from gastown.kube.deputy import DeputyGuard
from gastown.kube.gauges import export_alert_gauges
from gastown.kube.leader import Leadership
from gastown.kube.redaction import TownSecrets
from gastown.kube.repairs import new_repairs, publish_repairs, unwritten, with_repairs
from gastown.kube.status import build_town_status, semantic
from gastown.kube.store import Store, TownStore
from gastown.model import Condition, ConditionStatus, TownMode
from gastown.model.town import PassMetrics, Repair, TownStatus, Violation
from gastown.reconcile import check_invariants
from gastown.reconcile.actions import Action
from gastown.reconcile.core import plan
from gastown.reconcile.snapshot import Fault
from gastown.reconcile.writes import Emit, Kind

log = logging.getLogger(__name__)


FAILURES_BEFORE_REPORT = 3
"""Consecutive failed passes after which the Town's status says that its loop cannot run."""
CONFLICT_BACKOFF_SECONDS = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0)
"""Wait before the next pass after 1, 2, 3… consecutive passes that ended on a conflict (the
last one repeats). One conflict is routine (another writer got there first; the conflicting
object is re-read) and is retried at once; a run of them backs off instead of spinning."""


def conflict_backoff(streak: int) -> float:
    """Seconds to wait after `streak` consecutive passes that ended on a conflict."""
    if streak <= 0:
        return 0.0
    return CONFLICT_BACKOFF_SECONDS[min(streak, len(CONFLICT_BACKOFF_SECONDS)) - 1]


@dataclass(frozen=True)
class LoopSettings:
    """Timing of the loop."""

    debounce_seconds: float = 0.03
    resync_seconds: float = 10.0
    status_interval_seconds: float = 1.0
    """Minimum time between Town status writes that change only counts or the summary; a
    change of conditions, violations or the breaker is written at once."""


@dataclass
class PassReport:
    """What one pass did (for tests, logs and status)."""

    actions: Counter[str]
    result: ApplyResult
    violations: list[Violation]
    status_written: bool
    duration_ms: int
    repairs: list[Repair] = field(default_factory=list)
    """Impossible states this pass repaired (none in shadow mode: nothing is applied)."""


def _urgent(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Changes a user waits for (kubectl wait, alerts) are written without delay."""

    def key(status: dict[str, Any]) -> Any:
        conditions = [(c["type"], c["status"], c["reason"]) for c in status.get("conditions", [])]
        return (
            conditions,
            status.get("violations"),
            status.get("circuitBreaker"),
            status.get("lastRepairs"),
        )

    return bool(key(new) != key(old))


def replacing(current: Any, desired: Any) -> Any:
    """A JSON merge patch that turns `current` into `desired` (nulls for removed keys)."""
    if not isinstance(desired, dict) or not isinstance(current, dict):
        return desired
    patch: dict[str, Any] = {key: None for key in current if key not in desired}
    for key, value in desired.items():
        patch[key] = replacing(current.get(key), value)
    return patch


class TownLoop:
    """Reconciles one town until stopped."""

    def __init__(
        self,
        kube: Kube,
        store: Store,
        namespace: str,
        name: str,
        settings: LoopSettings | None = None,
        pr_poller: PRPoller | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        town_identity: bool = True,
        guard: DeputyGuard | None = None,
        verifier: ClaimRequester | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.kube = kube
        self.leadership = leadership
        self.town_identity = town_identity
        self.verifier = verifier
        self.guard = guard or DeputyGuard(kube)
        self.secrets = TownSecrets(kube, namespace, name)
        self._reported_faults: set[str] = set()
        self._failures = 0
        self._conflicts = 0
        """Consecutive passes that ended on a conflict (see `conflict_backoff`)."""
        self.store = store
        self.town: TownStore = store.town(namespace, name)
        self.settings = settings or LoopSettings()
        self.pr_poller = pr_poller
        self.clock = clock
        self._reported_violations: set[tuple[str, str]] = set()
        self._unwritten_repairs: list[Repair] = []
        self._last_status_write = float("-inf")
        self._status_wake: asyncio.TimerHandle | None = None

    async def run(self, stopped: Callable[[], bool]) -> None:
        """Run passes until `stopped()` is true; a failing pass is logged and retried."""
        self.town.wake.set()
        while not stopped():
            if self.leadership is not None and not self.leadership.leading():
                # A standby: the store stays warm (the watches feed it), nothing is written.
                if not await self.leadership.wait_leading(stopped):
                    return
                self.town.wake.set()  # a new leader starts with a full pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.town.wake.wait(), self.settings.resync_seconds)
            if stopped():
                return
            await asyncio.sleep(self.settings.debounce_seconds)  # gather a burst of events
            self.town.wake.clear()
            try:
                report = await self.pass_once()
            except NotLeading:
                log.warning(
                    "pass of town %s stopped: this replica lost the lead",
                    self.town.name,
                    extra={"town": self.town.name},
                )
                continue
            except ApiError as err:
                log.warning(
                    "pass of town %s failed: %s",
                    self.town.name,
                    err,
                    extra={"town": self.town.name},
                )
                await self._pass_failed(f"a reconcile pass failed: {err}")
                self.town.wake.set()
                await asyncio.sleep(1.0)
                continue
            except Exception as err:  # a bug or a dropped connection must not end the loop
                log.exception(
                    "pass of town %s crashed; retrying",
                    self.town.name,
                    extra={"town": self.town.name},
                )
                await self._pass_failed(f"a reconcile pass crashed: {type(err).__name__}: {err}")
                self.town.wake.set()
                await asyncio.sleep(2.0)
                continue
            self._failures = 0
            conflicted = report is not None and report.result.conflicts > 0
            self._conflicts = self._conflicts + 1 if conflicted else 0
            await asyncio.sleep(conflict_backoff(self._conflicts))
            if report is not None and report.actions.total():
                # Our own writes are already in the store: go again at once until quiet.
                self.town.wake.set()

    async def _pass_failed(self, message: str) -> None:
        """After repeated failed passes, say so on the Town (a silent loop helps nobody)."""
        self._failures += 1
        if self._failures < FAILURES_BEFORE_REPORT:
            return
        with contextlib.suppress(ApiError):
            await report_loop_failure(self.kube, self.store, self.town, message)

    async def pass_once(self) -> PassReport | None:
        """One reconcile pass."""
        if self.town.town is not None:
            # Facts from outside the town's objects (opt-in labels, provider URLs): cached, and
            # no API call at all for a town that names no Secret or ServiceAccount.
            self.town.faults = self.store.identity_faults + await self.guard.faults(
                self.town.namespace, self.town.town
            )
        snapshot = self.town.snapshot()
        if snapshot is None:
            return None
        started = time.perf_counter()
        now = self.clock()
        decided = plan(snapshot, now)
        actions: Sequence[Action] = decided.actions
        counts = Counter(type(action).__name__ for action in actions)
        for kind, number in counts.items():
            metrics.ACTIONS.labels(self.town.name, kind).inc(number)
        shadow = snapshot.town.spec.mode is TownMode.SHADOW
        applier = Applier(
            self.kube,
            self.store,
            self.town,
            self.pr_poller,
            town_identity=self.town_identity,
            verifier=self.verifier,
            secrets=self.secrets,
        )
        if shadow:
            result = ApplyResult()
            planned = [action.describe() for action in actions]
            repairs: list[Repair] = []  # planned only: nothing was repaired
        else:
            result = await applier.apply(actions)
            planned = []
            repairs = decided.repairs
            await publish_repairs(self.town.name, repairs, applier._emit)
        # Without writes the pass's own snapshot is still current, and reusing it reuses the
        # index reconcile already built (a full sweep at 10,000 beads).
        after = (self.town.snapshot() or snapshot) if sum(result.writes.values()) else snapshot
        violations = check_invariants(after)
        metrics.VIOLATIONS.labels(self.town.name).set(len(violations))
        await self._emit_new_violations(applier, violations)
        await self._emit_new_faults(applier, snapshot.faults)
        duration_ms = int((time.perf_counter() - started) * 1000)
        metrics.PASS_SECONDS.labels(self.town.name).observe(duration_ms / 1000)
        last_pass = PassMetrics(
            finished_at=self.clock(),
            duration_ms=duration_ms,
            facts_applied=sum(1 for action in actions if action.records_reports),
            actions=dict(sorted(counts.items())),
            side_effects_ok=result.side_effects_ok,
            side_effects_failed=result.side_effects_failed,
            violations=len(violations),
        )
        leader = self.leadership.settings.identity if self.leadership is not None else None
        status = build_town_status(after, violations, last_pass, planned, self.clock(), leader)
        # Repairs not yet on the Town (a status write lost to a conflict) are carried over.
        found = new_repairs(self._unwritten_repairs, repairs, after.town.status.last_repairs)
        status = with_repairs(status, after.town.status.last_repairs, found, self.clock())
        written = await self._write_status(status)
        held = self.town.town.status.last_repairs if self.town.town is not None else []
        self._unwritten_repairs = unwritten(status.last_repairs, held)
        self._export_gauges(status)
        export_alert_gauges(self.town.name, after, status)
        if actions or written:
            log.info(
                "pass: %d actions, %d writes, %d conflicts, %d violations, %d ms",
                len(actions),
                sum(result.writes.values()),
                result.conflicts,
                len(violations),
                duration_ms,
                extra={"town": self.town.name},
            )
        return PassReport(counts, result, violations, written, duration_ms, repairs)

    async def _write_status(self, status: TownStatus) -> bool:
        town = self.town.town
        if town is None:
            return False
        redactor = self.secrets.known()  # no API call: as read by this or an earlier pass
        if redactor:
            # Shadow plans and messages may quote agent reports. Compare what would really be
            # written, or a redacted value would differ from its source on every pass.
            status = TownStatus.model_validate(redactor.redact_json(status.to_api()))
        new, old = semantic(status), semantic(town.status)
        if new == old:
            return False
        wait = self.settings.status_interval_seconds - (time.monotonic() - self._last_status_write)
        if wait > 0 and not _urgent(new, old):
            # Busy towns change counts on every pass; coalesce those writes, and come back
            # when the interval is over so the last state is always written.
            self._wake_later(wait)
            return False
        changed = sorted(key for key in new if new[key] != old.get(key))
        log.debug(
            "town %s status changed: %s", town.name, ", ".join(changed), extra={"town": town.name}
        )
        body = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        current = town.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        patch = {
            "metadata": {"resourceVersion": town.metadata.resource_version},
            # A merge patch only adds keys: say null for keys that are gone (e.g. a rig's queue).
            "status": replacing(current, body),
        }
        try:
            result = await self.kube.patch(
                "Town", self.town.namespace, town.name, patch, status=True
            )
        except Conflict:
            self.town.wake.set()  # someone else wrote it; recompute on the fresh object
            return False
        metrics.API_WRITES.labels(self.town.name, "Town").inc()
        metrics.WRITE_CAUSES.labels(self.town.name, "Town", "TownStatus", "").inc()
        self.store.observe("Town", result)
        self._last_status_write = time.monotonic()
        return True

    def _wake_later(self, delay: float) -> None:
        if self._status_wake is not None and not self._status_wake.cancelled():
            return
        loop = asyncio.get_running_loop()

        def wake() -> None:
            self._status_wake = None
            self.town.wake.set()

        self._status_wake = loop.call_later(delay, wake)

    async def _emit_new_violations(self, applier: Applier, violations: Sequence[Violation]) -> None:
        """One Warning Event per violation when it first appears (not on every pass)."""
        current = {(v.code, v.subject) for v in violations}
        for violation in violations:
            if (violation.code, violation.subject) not in self._reported_violations:
                await applier._emit(
                    Emit(
                        kind=Kind.TOWN,
                        name=self.town.name,
                        type="Warning",
                        reason="InvariantViolation",
                        message=f"{violation.code}: {violation.message}",
                    )
                )
        self._reported_violations = current

    async def _emit_new_faults(self, applier: Applier, faults: Sequence[Fault]) -> None:
        """One Warning Event per fault of the town's configuration when it first appears."""
        current = {fault.message for fault in faults}
        for fault in faults:
            if fault.message not in self._reported_faults:
                await applier._emit(
                    Emit(
                        kind=Kind.TOWN,
                        name=self.town.name,
                        type="Warning",
                        reason=fault.reason,
                        message=f"{fault.message}; no new agent pod is started until it is fixed",
                    )
                )
        self._reported_faults = current

    def _export_gauges(self, status: TownStatus) -> None:
        name = self.town.name
        for phase, value in status.beads.model_dump(by_alias=True).items():
            metrics.BEADS.labels(name, phase).set(value)
        for phase, value in status.agents.model_dump(by_alias=True).items():
            metrics.AGENTS.labels(name, phase).set(value)
        for rig, length in status.queue.items():
            metrics.QUEUE.labels(name, rig).set(length)


LOOP_FAILED = "LoopFailed"
"""Reason on a Town whose reconcile loop cannot run (see `report_loop_failure`)."""


async def report_loop_failure(kube: Kube, store: Store, town: TownStore, message: str) -> None:
    """Mark the Town Ready=False / Degraded=True with reason LoopFailed and `message`.

    Used when the loop cannot start (priming failed) or its passes keep failing, so `kubectl get
    town` shows why nothing happens. Other conditions are kept; the next successful pass
    replaces these two. Idempotent: nothing is written when the Town already says the same.
    """
    held = town.town
    if held is None:
        held_raw = await kube.get("Town", town.namespace, town.name)
        store.observe("Town", held_raw)
        held = town.town
    if held is None:
        return
    message = message[:1024]
    now = datetime.now(UTC)
    generation = held.metadata.generation
    previous = {c.type: c for c in held.status.conditions}
    wanted = {"Ready": ConditionStatus.FALSE, "Degraded": ConditionStatus.TRUE}
    if all(
        (c := previous.get(type_)) is not None
        and (c.status, c.reason, c.message) == (status, LOOP_FAILED, message)
        for type_, status in wanted.items()
    ):
        return
    conditions = [c for c in held.status.conditions if c.type not in wanted]
    for type_, status in wanted.items():
        old = previous.get(type_)
        since = old.last_transition_time if old is not None and old.status == status else now
        conditions.append(
            Condition(
                type=type_,
                status=status,
                reason=LOOP_FAILED,
                message=message,
                observed_generation=generation,
                last_transition_time=since,
            )
        )
    patch = {
        "metadata": {"resourceVersion": held.metadata.resource_version},
        "status": {
            "conditions": [c.model_dump(mode="json", by_alias=True) for c in conditions],
            "summary": f"loop failed: {message}"[:256],
        },
    }
    result = await kube.patch("Town", town.namespace, town.name, patch, status=True)
    store.observe("Town", result)
