"""Prime a town's store before its first pass.

The watch streams deliver objects in no particular order; a pass that saw the town's beads but
not yet its agents would misjudge assignments. So before the first pass of a town the loop lists
each kind once (never per pass) and merges the result into the store; later watch events only
replace these with newer versions.
"""

from __future__ import annotations

from gastown.kube.client import Kube
from gastown.kube.labels import town_selector
from gastown.kube.store import Store


async def prime_town(kube: Kube, store: Store, namespace: str, town: str) -> None:
    """List the town, its beads, convoys, agents and pods once into the store."""
    store.observe("Town", await kube.get("Town", namespace, town))
    for kind in ("Bead", "Convoy", "Agent"):
        for item in await kube.list_objects(kind, namespace):
            if (item.get("spec") or {}).get("town") == town:
                store.observe(kind, item)
    for pod in await kube.list_pods(namespace, town_selector(town)):
        store.observe("Pod", pod)
