"""Watch events of the town's objects feed the store and wake the town's loop.

The handlers are coroutines on purpose: kopf runs plain functions in a thread pool, and a hop
to a thread and back for every watch event cost more than the store update itself.
"""

from __future__ import annotations

from typing import Any

import kopf

from gastown.kube.labels import TOWN
from gastown.model.common import GROUP, VERSION


def _observe(kind: str, event: kopf.RawEvent, memo: Any) -> None:
    memo.store.observe(kind, event["object"], deleted=event.get("type") == "DELETED")


@kopf.on.event(GROUP, VERSION, "towns")
async def town_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    """A Town changed."""
    _observe("Town", event, memo)


@kopf.on.event(GROUP, VERSION, "beads")
async def bead_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    """A Bead changed."""
    _observe("Bead", event, memo)


@kopf.on.event(GROUP, VERSION, "convoys")
async def convoy_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    """A Convoy changed."""
    _observe("Convoy", event, memo)


@kopf.on.event(GROUP, VERSION, "agents")
async def agent_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    """An Agent changed (including reports its pod wrote)."""
    _observe("Agent", event, memo)


@kopf.on.event("", "v1", "pods", labels={TOWN: kopf.PRESENT})
async def pod_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    """An agent Pod changed."""
    _observe("Pod", event, memo)
