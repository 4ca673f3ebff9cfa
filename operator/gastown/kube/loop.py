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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gastown.kube import metrics
from gastown.kube.apply import Applier, ApplyResult, PRPoller
from gastown.kube.client import ApiError, Conflict, Kube
from gastown.kube.status import build_town_status, semantic
from gastown.kube.store import Store, TownStore
from gastown.model import TownMode
from gastown.model.town import PassMetrics, TownStatus, Violation
from gastown.reconcile import check_invariants, reconcile
from gastown.reconcile.actions import Action
from gastown.reconcile.writes import Emit, Kind

log = logging.getLogger(__name__)


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


def _urgent(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Changes a user waits for (kubectl wait, alerts) are written without delay."""

    def key(status: dict[str, Any]) -> Any:
        conditions = [(c["type"], c["status"], c["reason"]) for c in status.get("conditions", [])]
        return conditions, status.get("violations"), status.get("circuitBreaker")

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
    ) -> None:
        self.kube = kube
        self.town_identity = town_identity
        self.store = store
        self.town: TownStore = store.town(namespace, name)
        self.settings = settings or LoopSettings()
        self.pr_poller = pr_poller
        self.clock = clock
        self._reported_violations: set[tuple[str, str]] = set()
        self._last_status_write = float("-inf")
        self._status_wake: asyncio.TimerHandle | None = None

    async def run(self, stopped: Callable[[], bool]) -> None:
        """Run passes until `stopped()` is true; a failing pass is logged and retried."""
        self.town.wake.set()
        while not stopped():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.town.wake.wait(), self.settings.resync_seconds)
            if stopped():
                return
            await asyncio.sleep(self.settings.debounce_seconds)  # gather a burst of events
            self.town.wake.clear()
            try:
                report = await self.pass_once()
            except ApiError as err:
                log.warning(
                    "pass of town %s failed: %s",
                    self.town.name,
                    err,
                    extra={"town": self.town.name},
                )
                self.town.wake.set()
                await asyncio.sleep(1.0)
                continue
            except Exception:  # a bug or a dropped connection must not end the town's loop
                log.exception(
                    "pass of town %s crashed; retrying",
                    self.town.name,
                    extra={"town": self.town.name},
                )
                self.town.wake.set()
                await asyncio.sleep(2.0)
                continue
            if report is not None and report.actions.total():
                # Our own writes are already in the store: go again at once until quiet.
                self.town.wake.set()

    async def pass_once(self) -> PassReport | None:
        """One reconcile pass."""
        snapshot = self.town.snapshot()
        if snapshot is None:
            return None
        started = time.perf_counter()
        now = self.clock()
        actions: Sequence[Action] = reconcile(snapshot, now)
        counts = Counter(type(action).__name__ for action in actions)
        for kind, number in counts.items():
            metrics.ACTIONS.labels(self.town.name, kind).inc(number)
        shadow = snapshot.town.spec.mode is TownMode.SHADOW
        applier = Applier(
            self.kube, self.store, self.town, self.pr_poller, town_identity=self.town_identity
        )
        if shadow:
            result = ApplyResult()
            planned = [action.describe() for action in actions]
        else:
            result = await applier.apply(actions)
            planned = []
        # Without writes the pass's own snapshot is still current, and reusing it reuses the
        # index reconcile already built (a full sweep at 10,000 beads).
        after = (self.town.snapshot() or snapshot) if sum(result.writes.values()) else snapshot
        violations = check_invariants(after)
        metrics.VIOLATIONS.labels(self.town.name).set(len(violations))
        await self._emit_new_violations(applier, violations)
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
        status = build_town_status(after, violations, last_pass, planned, self.clock())
        written = await self._write_status(status)
        self._export_gauges(status)
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
        return PassReport(counts, result, violations, written, duration_ms)

    async def _write_status(self, status: TownStatus) -> bool:
        town = self.town.town
        if town is None:
            return False
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

    def _export_gauges(self, status: TownStatus) -> None:
        name = self.town.name
        for phase, value in status.beads.model_dump(by_alias=True).items():
            metrics.BEADS.labels(name, phase).set(value)
        for phase, value in status.agents.model_dump(by_alias=True).items():
            metrics.AGENTS.labels(name, phase).set(value)
        for rig, length in status.queue.items():
            metrics.QUEUE.labels(name, rig).set(length)
