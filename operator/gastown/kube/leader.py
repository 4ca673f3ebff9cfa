"""Leader election on a `coordination.k8s.io/v1` Lease, with fencing of the operator's writes.

Several replicas of the operator may run: every one watches (its store stays warm), exactly one
reconciles. The protocol is the one client-go's leader election and controller-runtime use:

- the Lease records `holderIdentity`, `leaseDurationSeconds`, `acquireTime`, `renewTime` and
  `leaseTransitions`; every update is conditional on the Lease's resourceVersion;
- the holder renews every `retry_period`; a candidate that has seen the same record (same
  holder and renewTime) for `lease_duration` on its own clock takes the Lease over;
- a holder that has not renewed for `renew_deadline` stops leading.

Fencing: a holder leads only until `renew_deadline` after the START of its last successful
renew, measured on its own monotonic clock. A candidate can take over no earlier than
`lease_duration` after it saw that renew, which happened after the request started. As
`renew_deadline < lease_duration`, the old holder has stopped writing at least
`lease_duration - renew_deadline` (5 s by default) before anybody else can start — also when its
process was frozen (SIGSTOP) or cut off from the API server: a frozen process resumes with its
monotonic clock past the deadline and refuses every write before it tries one (`Kube` asks
`Leadership.leading` before each write). A write already on the wire when the process froze is
the remaining gap; every write the operator makes is conditional (resourceVersion preconditions,
deterministic names), so such a late write fails instead of duplicating work.

Clock rates of the replicas are assumed to agree (not their wall clocks: only monotonic
intervals are compared, never timestamps of different machines).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import aiohttp

from gastown.kube import metrics
from gastown.kube.client import ApiError, Conflict, Kube

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseSettings:
    """Where the Lease lives and its timings (controller-runtime's defaults)."""

    name: str
    namespace: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retryPeriod < renewDeadline < leaseDuration, got "
                f"{self.retry_period} / {self.renew_deadline} / {self.lease_duration}"
            )

    @classmethod
    def from_env(cls, namespace: str, environ: Mapping[str, str] | None = None) -> LeaseSettings:
        """Settings from GASTOWN_LEASE_* variables (the chart sets them)."""
        env = os.environ if environ is None else environ
        return cls(
            name=env.get("GASTOWN_LEASE_NAME") or "gastown-operator",
            namespace=env.get("GASTOWN_LEASE_NAMESPACE") or namespace,
            identity=env.get("GASTOWN_LEASE_IDENTITY") or default_identity(),
            lease_duration=float(env.get("GASTOWN_LEASE_DURATION_SECONDS") or 15),
            renew_deadline=float(env.get("GASTOWN_LEASE_RENEW_DEADLINE_SECONDS") or 10),
            retry_period=float(env.get("GASTOWN_LEASE_RETRY_PERIOD_SECONDS") or 2),
        )


def default_identity() -> str:
    """The pod's name (its hostname) plus a random suffix: a restarted process is a new
    candidate, never mistaken for the holder it replaced."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class Move(Enum):
    """What a candidate does after reading the Lease."""

    CREATE = "create"  # no Lease yet
    RENEW = "renew"  # we hold it
    TAKE = "take"  # free, released, or expired on our clock
    WAIT = "wait"  # somebody else holds it


@dataclass
class Observation:
    """The last record a candidate saw, and when (its monotonic clock)."""

    holder: str | None = None
    renew_time: str | None = None
    seen_at: float = 0.0


def decide(
    lease: Mapping[str, Any] | None, me: str, seen: Observation, now: float, duration: float
) -> Move:
    """The next move on a Lease as read at `now` (pure: `seen` is updated by the caller).

    A holder is considered gone when its record has not changed for `duration` seconds of our
    own clock since we first saw it (wall-clock timestamps of another machine are never
    compared with ours).
    """
    if lease is None:
        return Move.CREATE
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity") or None
    if holder == me:
        return Move.RENEW
    if holder is None:
        return Move.TAKE  # released (a leader that stopped cleanly gives it up)
    if (holder, spec.get("renewTime")) != (seen.holder, seen.renew_time):
        return Move.WAIT  # a new record: the holder is alive; the caller restarts the clock
    return Move.TAKE if now - seen.seen_at >= duration else Move.WAIT


def _micro_time(moment: datetime) -> str:
    """The MicroTime format of Lease timestamps."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Leadership:
    """Contends for the Lease in the background; `leading()` is the fence of every write."""

    def __init__(
        self,
        kube: Kube,
        settings: LeaseSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock
        self._valid_until = 0.0
        self._seen = Observation()
        self._changed = asyncio.Event()
        self._announced = False
        """The leadership last logged and exported (the fence can fall between rounds)."""
        self.holder: str | None = None
        """The holder as last read (for status and metrics)."""

    # -- the fence -------------------------------------------------------------------------

    def leading(self) -> bool:
        """True while this process holds the Lease and may write."""
        return self.clock() < self._valid_until

    async def wait_leading(self, stopped: Callable[[], bool], poll: float = 1.0) -> bool:
        """Wait until this process leads (True) or `stopped()` (False)."""
        while not self.leading():
            if stopped():
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=poll)
        return True

    # -- the contender ---------------------------------------------------------------------

    async def run(self) -> None:
        """Try to acquire or renew every `retry_period` until cancelled; release on the way out."""
        try:
            while True:
                await self.try_once()
                await asyncio.sleep(self.settings.retry_period)
        finally:
            if self.leading():
                with contextlib.suppress(
                    ApiError, OSError, aiohttp.ClientError, asyncio.CancelledError
                ):
                    await asyncio.shield(self.release())

    async def try_once(self) -> bool:
        """One round: read the Lease and acquire, renew or wait. True if we lead after it.

        A round that hangs (a network that drops packets instead of refusing them) is given up
        after half the renew deadline, so the next round starts while renewing can still help.
        """
        started = self.clock()
        try:
            async with asyncio.timeout(self.settings.renew_deadline / 2):
                move = await self._round(started)
        except (TimeoutError, ApiError, OSError, aiohttp.ClientError) as err:
            # Conflict: somebody else wrote the Lease first (we read it again next round).
            # Anything else: the API server is unreachable; the fence runs out by itself.
            if not isinstance(err, Conflict):
                log.warning("lease %s: %s", self.settings.name, err or type(err).__name__)
            self._publish()
            return self.leading()
        if move is Move.WAIT:
            self._publish()
            return False
        self._valid_until = started + self.settings.renew_deadline
        self.holder = self.settings.identity
        self._publish()
        return True

    async def _round(self, started: float) -> Move:
        """Read the Lease and make the move it calls for."""
        lease = await self.kube.get_lease(self.settings.namespace, self.settings.name)
        move = self._decide(lease, started)
        if move is Move.CREATE:
            await self.kube.create_lease(self.settings.namespace, self._record(None))
        elif move in (Move.RENEW, Move.TAKE):
            assert lease is not None
            await self.kube.replace_lease(
                self.settings.namespace, self.settings.name, self._record(lease)
            )
        return move

    def _decide(self, lease: Mapping[str, Any] | None, now: float) -> Move:
        spec = (lease or {}).get("spec") or {}
        self.holder = spec.get("holderIdentity") or None
        move = decide(lease, self.settings.identity, self._seen, now, self.settings.lease_duration)
        record = (self.holder, spec.get("renewTime"))
        if record != (self._seen.holder, self._seen.renew_time):
            self._seen = Observation(record[0], record[1], now)
        if move is not Move.RENEW and self.leading():
            # Somebody else holds it now: we lost it (the fence may not have run out yet).
            self._valid_until = 0.0
        return move

    def _record(self, lease: Mapping[str, Any] | None) -> dict[str, Any]:
        """The Lease body that makes us the holder (renewing keeps acquireTime)."""
        now = _micro_time(datetime.now(UTC))
        spec = dict((lease or {}).get("spec") or {})
        transitions = int(spec.get("leaseTransitions") or 0)
        if spec.get("holderIdentity") != self.settings.identity:
            if lease is not None:
                transitions += 1
            spec["acquireTime"] = now
        spec.update(
            holderIdentity=self.settings.identity,
            leaseDurationSeconds=round(self.settings.lease_duration),
            renewTime=now,
            leaseTransitions=transitions,
        )
        metadata: dict[str, Any] = {"name": self.settings.name}
        if lease is not None:
            metadata["resourceVersion"] = lease["metadata"]["resourceVersion"]
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": spec,
        }

    async def release(self) -> None:
        """Give the Lease up (a clean shutdown or a rolling update hands over at once)."""
        self._valid_until = 0.0
        lease = await self.kube.get_lease(self.settings.namespace, self.settings.name)
        if lease is None:
            return
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.settings.identity:
            return
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.settings.name,
                "resourceVersion": lease["metadata"]["resourceVersion"],
            },
            "spec": {**spec, "holderIdentity": None, "leaseDurationSeconds": 1},
        }
        await self.kube.replace_lease(self.settings.namespace, self.settings.name, body)
        self.holder = None
        log.info("released lease %s", self.settings.name)
        self._publish()

    def _publish(self) -> None:
        """Log and export changes of leadership; wake whoever waits for it."""
        leading = self.leading()
        metrics.LEADER.set(1 if leading else 0)
        if leading != self._announced:
            self._announced = leading
            if leading:
                log.info(
                    "leading (lease %s, identity %s)", self.settings.name, self.settings.identity
                )
            else:
                log.warning(
                    "not leading any more (lease %s held by %s): writes stop",
                    self.settings.name,
                    self.holder,
                )
            self._changed.set()
