"""Objects that name a Town which does not exist get a clear reason, a condition and an Event.

No town loop runs for a missing Town, so nothing else would ever tell the user. The check runs
on a slow timer over the store (no API reads) and writes each object once: it skips objects
that already carry the TownNotFound reason.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from gastown.kube import conditions
from gastown.kube.client import ApiError, Kube
from gastown.kube.events import build_event, post_event
from gastown.kube.store import Store

log = logging.getLogger(__name__)
REASON = "TownNotFound"


async def flag_orphans(kube: Kube, store: Store) -> int:
    """Mark every bead and convoy of a missing town; return how many were marked."""
    marked = 0
    for town in list(store.towns.values()):
        if town.town is not None:
            continue
        for kind in ("Bead", "Convoy"):
            held: list[tuple[str, Any]] = list(town.objects[kind].items())
            if kind == "Bead":  # finished beads too (decoded: a missing town is rare)
                held += [(n, r.bead()) for n, r in town.finished.records.items()]
            for name, obj in held:
                if getattr(obj.status, "reason", None) == REASON:
                    continue
                message = f"town {town.name!r} does not exist in namespace {town.namespace!r}"
                status: dict[str, Any] = {"reason": REASON, "message": message}
                derived = conditions.after_patch(kind, obj, {}, status, datetime.now(UTC))
                if derived is not None:
                    status["conditions"] = derived
                patch = {
                    "metadata": {"resourceVersion": obj.metadata.resource_version},
                    "status": status,
                }
                try:
                    result = await kube.patch(kind, town.namespace, name, patch, status=True)
                except ApiError as err:
                    log.info("could not flag %s %s: %s", kind, name, err.status)
                    continue
                store.observe(kind, result)
                uid = town.uids.get((kind, name), "")
                await post_event(
                    kube, build_event(town.namespace, kind, name, uid, "Warning", REASON, message)
                )
                marked += 1
    return marked


async def watch_orphans(kube: Kube, store: Store, interval: float = 10.0) -> None:
    """Run `flag_orphans` forever on a slow timer (a missing town is a user error, not urgent)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await flag_orphans(kube, store)
        except ApiError as err:  # never let the checker die
            log.warning("orphan check failed: %s", err)
