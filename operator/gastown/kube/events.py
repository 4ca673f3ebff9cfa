"""Kubernetes Events about our objects (best effort: an Event never fails a pass).

Repeats are aggregated the way client-go's event recorder does (its `EventCorrelator`), so a
busy or flapping town does not flood the namespace with Events:

* the same Event (involved object, type, reason and message) posted again within the window
  PATCHes the Event already there: `count` goes up and `lastTimestamp` moves on;
* Events that differ only in their message (same object, type and reason), past a threshold of
  distinct messages within the window, fold into one aggregate Event whose message says
  "(combined from similar events): " and the latest message, counted the same way.

What is remembered is bounded (least recently used keys are forgotten first) and only in
memory: after a restart the next Event is a new one, as with any Kubernetes controller.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gastown.kube import metrics
from gastown.kube.client import ApiError, Kube, NotFound
from gastown.model.common import API_VERSION
from gastown.reconcile.names import MAX_NAME, dns_name

log = logging.getLogger(__name__)
MAX_MESSAGE = 1024

WINDOW_SECONDS = 600.0
"""How long a repeat is folded into an earlier Event (client-go's aggregation window).

Well under the API server's default Event TTL (one hour), so the Event a repeat patches is
normally still there; when it is not, the repeat creates a new one."""
SIMILAR_THRESHOLD = 10
"""Distinct messages with the same object, type and reason within the window before further
ones fold into one aggregate Event (client-go's `maxEvents`)."""
MAX_KEYS = 4096
"""Keys each cache remembers (client-go's LRU size); the least recently used go first."""
COMBINED = "(combined from similar events): "
AGGREGATE = -1
"""The message part of the key of an aggregate Event: never the hash of a message (CPython's
`hash` never returns -1)."""


def event_name(subject: str) -> str:
    """A unique Event name about `subject`, within the 253 characters of an object name (a long
    subject is cut and hashed, so its Events are never refused for their name)."""
    suffix = f".{uuid.uuid4().hex[:16]}"
    return dns_name(subject, limit=MAX_NAME - len(suffix)) + suffix


def timestamp(moment: datetime) -> str:
    """An Event timestamp: RFC 3339 in UTC with a trailing "Z"."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def build_event(
    namespace: str,
    kind: str,
    name: str,
    uid: str,
    type_: str,
    reason: str,
    message: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A core/v1 Event about one object."""
    stamp = timestamp(now or datetime.now(UTC))
    api_version = "v1" if kind == "Pod" else API_VERSION
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(name), "namespace": namespace},
        "involvedObject": {
            "apiVersion": api_version,
            "kind": kind,
            "name": name,
            "namespace": namespace,
            "uid": uid,
        },
        "type": type_,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "source": {"component": "gastown-operator"},
        "reportingComponent": "gastown-operator",
        "reportingInstance": "gastown-operator",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def post_event(kube: Kube, event: dict[str, Any]) -> bool:
    """Create the Event; log (without the message body) and carry on if it fails."""
    try:
        await kube.create_core("Event", event["metadata"]["namespace"], event)
    except ApiError as err:
        log.warning(
            "event %s on %s not posted: %s",
            event["reason"],
            event["involvedObject"]["name"],
            err.status,
        )
        return False
    return True


Key = tuple[str | int, ...]


@dataclass
class _Similar:
    """Distinct messages seen for one (object, type, reason) since `since` (their hashes: a
    message may be a kilobyte, and at most `max_keys` times `similar_threshold` are kept)."""

    since: float
    messages: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class _Posted:
    """An Event we created (or last patched), to fold the next repeat into."""

    name: str
    count: int
    first: str
    at: float


@dataclass(frozen=True)
class Decision:
    """What to send for one Event: a new Event (`patch` None) or a patch of `name`."""

    event: dict[str, Any]
    key: Key
    name: str
    patch: dict[str, Any] | None


def _aggregate_key(event: Mapping[str, Any]) -> Key:
    obj = event["involvedObject"]
    return (
        event["metadata"]["namespace"],
        obj["kind"],
        obj["name"],
        obj.get("uid", ""),
        event["type"],
        event["reason"],
    )


class EventCorrelator:
    """Decides whether an Event is new, a repeat (patch its count) or one of many similar ones.

    `clock` returns seconds (monotonic or wall: only differences are used); `now` gives the
    timestamps written into Events. Both are injected so tests control time.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        window_seconds: float = WINDOW_SECONDS,
        similar_threshold: int = SIMILAR_THRESHOLD,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.clock = clock
        self.now = now
        self.window = window_seconds
        self.threshold = similar_threshold
        self.max_keys = max_keys
        self._similar: OrderedDict[Key, _Similar] = OrderedDict()
        self._posted: OrderedDict[Key, _Posted] = OrderedDict()

    def __len__(self) -> int:
        """Keys remembered (both caches): bounded by twice `max_keys`."""
        return len(self._similar) + len(self._posted)

    def correlate(self, event: dict[str, Any]) -> Decision:
        """What to send for `event` (built by `build_event`); call `posted` once it is sent."""
        at = self.clock()
        event, local = self._aggregate(event, at)
        key = (*_aggregate_key(event), local)
        seen = self._posted.get(key)
        if seen is None or at - seen.at > self.window:
            return Decision(event, key, event["metadata"]["name"], None)
        self._posted.move_to_end(key)
        stamp = timestamp(self.now())
        count = seen.count + 1
        repeated = event | {"count": count, "firstTimestamp": seen.first, "lastTimestamp": stamp}
        patch = {"count": count, "lastTimestamp": stamp, "message": event["message"]}
        return Decision(repeated, key, seen.name, patch)

    def posted(self, decision: Decision) -> None:
        """Remember a sent Event, so its next repeat within the window patches it."""
        event = decision.event
        record = _Posted(decision.name, event["count"], event["firstTimestamp"], self.clock())
        self._remember(self._posted, decision.key, record)

    def forget(self, decision: Decision) -> None:
        """The Event to patch is gone (expired or deleted): the next repeat creates one."""
        self._posted.pop(decision.key, None)

    def _aggregate(self, event: dict[str, Any], at: float) -> tuple[dict[str, Any], int]:
        """The event itself, or past the threshold of similar ones, their aggregate; with the
        part of its key that tells repeats apart (its message, or for the aggregate, none)."""
        key = _aggregate_key(event)
        similar = self._similar.get(key)
        if similar is None or at - similar.since > self.window:
            similar = _Similar(since=at)
        message = hash(event["message"])
        similar.messages.add(message)
        self._remember(self._similar, key, similar)
        if len(similar.messages) < self.threshold:
            return event, message
        # Like client-go: keep the set below the threshold, and fold this one into the one
        # aggregate Event of the key, whose message names the latest of them.
        similar.messages.discard(message)
        combined = (COMBINED + event["message"])[:MAX_MESSAGE]
        return event | {"message": combined}, AGGREGATE

    def _remember(self, cache: OrderedDict[Key, Any], key: Key, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self.max_keys:
            cache.popitem(last=False)


async def record_event(
    kube: Kube, correlator: EventCorrelator, event: dict[str, Any], town: str
) -> str | None:
    """Post `event`, or fold it into an earlier one; returns "create", "patch" or None (failed).

    A patch of an Event that is gone (it expired) creates a new one instead.
    """
    decision = correlator.correlate(event)
    body = decision.event
    obj = body["involvedObject"]
    verb = "create"
    if decision.patch is not None:
        namespace = body["metadata"]["namespace"]
        try:
            await kube.patch_core("Event", namespace, decision.name, decision.patch)
            verb = "patch"
        except NotFound:
            correlator.forget(decision)
            decision = correlator.correlate(event)
            body = decision.event
        except ApiError as err:
            log.warning("event %s on %s not patched: %s", body["reason"], obj["name"], err.status)
            return None
    if verb == "create" and not await post_event(kube, body):
        return None
    correlator.posted(decision)
    metrics.EVENTS.labels(town, obj["kind"], body["type"], body["reason"], verb).inc()
    return verb
