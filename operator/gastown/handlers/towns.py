"""One reconcile loop per Town, as a kopf daemon."""

from __future__ import annotations

import os
from typing import Any

import kopf

from gastown.kube.loop import LoopSettings, TownLoop
from gastown.kube.prime import prime_town
from gastown.kube.prpoll import make_pr_poller
from gastown.model.common import GROUP, VERSION


@kopf.daemon(GROUP, VERSION, "towns", cancellation_timeout=2.0)
async def town_loop(
    name: str, namespace: str | None, memo: Any, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """Prime the town's store once (one LIST per kind), then reconcile until the Town goes."""
    assert namespace is not None, "Town is a namespaced kind"
    await prime_town(memo.kube, memo.store, namespace, name)
    settings = LoopSettings(
        resync_seconds=float(os.environ.get("GASTOWN_RESYNC_SECONDS", "10")),
    )
    loop = TownLoop(
        memo.kube,
        memo.store,
        namespace,
        name,
        settings,
        make_pr_poller(memo.kube),
        town_identity=memo.town_identity,
    )
    await loop.run(lambda: bool(stopped))
