"""Event aggregation (client-go's EventCorrelator): repeats raise a count, similar ones fold."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from gastown.kube.client import NotFound
from gastown.kube.events import (
    COMBINED,
    SIMILAR_THRESHOLD,
    WINDOW_SECONDS,
    EventCorrelator,
    build_event,
    record_event,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    """An injected clock: seconds for the window, datetimes for the timestamps."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.seconds)


def correlator(clock: Clock, **kwargs: Any) -> EventCorrelator:
    return EventCorrelator(clock, clock.now, **kwargs)


def event(message: str = "m", *, name: str = "b1", reason: str = "Dispatched") -> dict[str, Any]:
    return build_event("ns", "Bead", name, "uid-1", "Normal", reason, message, T0)


def send(c: EventCorrelator, body: dict[str, Any]) -> tuple[str, Mapping[str, Any] | None]:
    decision = c.correlate(body)
    c.posted(decision)
    return decision.name, decision.patch


def test_a_repeat_within_the_window_patches_the_first_event() -> None:
    clock = Clock()
    c = correlator(clock)
    first, patch = send(c, event())
    assert patch is None
    clock.seconds += 30
    name, patch = send(c, event())
    assert name == first
    assert patch == {"count": 2, "lastTimestamp": "2026-01-01T00:17:10Z", "message": "m"}
    name, patch = send(c, event())
    assert (name, patch and patch["count"]) == (first, 3)


def test_a_repeat_keeps_the_first_timestamp_and_moves_the_last() -> None:
    clock = Clock()
    c = correlator(clock)
    send(c, event())
    clock.seconds += 5
    decision = c.correlate(event())
    assert decision.event["firstTimestamp"] == "2026-01-01T00:00:00Z"
    assert decision.event["lastTimestamp"] == "2026-01-01T00:16:45Z"
    assert decision.event["count"] == 2


def test_a_repeat_after_the_window_is_a_new_event() -> None:
    clock = Clock()
    c = correlator(clock)
    first, _ = send(c, event())
    clock.seconds += WINDOW_SECONDS + 1
    name, patch = send(c, event())
    assert patch is None
    assert name != first


def test_a_different_message_object_type_or_reason_is_not_a_repeat() -> None:
    clock = Clock()
    c = correlator(clock)
    send(c, event())
    for other in (event("other"), event(name="b2"), event(reason="Merged")):
        assert c.correlate(other).patch is None
    warning = event() | {"type": "Warning"}
    assert c.correlate(warning).patch is None


def test_many_similar_events_fold_into_one_aggregate() -> None:
    clock = Clock()
    c = correlator(clock)
    names = {send(c, event(f"message {i}"))[0] for i in range(SIMILAR_THRESHOLD - 1)}
    assert len(names) == SIMILAR_THRESHOLD - 1  # below the threshold: each its own Event
    decision = c.correlate(event("message 9"))
    c.posted(decision)
    assert decision.patch is None  # the aggregate is created once...
    assert decision.event["message"] == COMBINED + "message 9"
    aggregate = decision.name
    for i in range(10, 15):
        later = c.correlate(event(f"message {i}"))
        c.posted(later)
        # ...and every later similar Event raises its count, naming the latest message.
        assert later.name == aggregate
        assert later.patch is not None
        assert later.patch["message"] == COMBINED + f"message {i}"
        assert later.patch["count"] == i - 8


def test_similar_events_start_over_after_the_window() -> None:
    clock = Clock()
    c = correlator(clock)
    for i in range(SIMILAR_THRESHOLD - 1):
        send(c, event(f"message {i}"))
    clock.seconds += WINDOW_SECONDS + 1
    decision = c.correlate(event("message x"))
    assert decision.event["message"] == "message x"


def test_memory_is_bounded_and_the_least_recently_used_go_first() -> None:
    clock = Clock()
    c = correlator(clock, max_keys=8)
    first, _ = send(c, event(name="keep"))
    for i in range(20):
        send(c, event(name=f"b{i}"))
        send(c, event(name="keep"))  # used again and again: never the oldest
    assert len(c) <= 16
    assert c.correlate(event(name="keep")).name == first
    assert c.correlate(event(name="b0")).patch is None  # forgotten: a new Event


class FakeKube:
    """Records Event creates and patches; a patch of an unknown Event is NotFound."""

    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []

    async def create_core(self, kind: str, namespace: str, body: Mapping[str, Any]) -> None:
        self.calls.append("create")
        self.events[body["metadata"]["name"]] = dict(body)

    async def patch_core(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        self.calls.append("patch")
        if name not in self.events:
            raise NotFound(404, "gone")
        self.events[name].update(patch)
        return self.events[name]


def test_record_event_creates_then_patches_and_recreates_an_expired_event() -> None:
    clock = Clock()
    c = correlator(clock)
    kube = FakeKube()

    async def run() -> list[str | None]:
        verbs = [await record_event(kube, c, event(), "t") for _ in range(3)]  # type: ignore[arg-type]
        kube.events.clear()  # the API server's TTL removed it
        verbs.append(await record_event(kube, c, event(), "t"))  # type: ignore[arg-type]
        verbs.append(await record_event(kube, c, event(), "t"))  # type: ignore[arg-type]
        return verbs

    assert asyncio.run(run()) == ["create", "patch", "patch", "create", "patch"]
    (only,) = kube.events.values()
    assert only["count"] == 2
