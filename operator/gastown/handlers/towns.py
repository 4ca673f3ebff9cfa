"""One reconcile loop per Town, as a kopf daemon."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf

from gastown.kube.client import ApiError, Kube
from gastown.kube.labels import Selector, parse_selector
from gastown.kube.loop import LoopSettings, TownLoop, report_loop_failure
from gastown.kube.prime import prime_town
from gastown.kube.prpoll import make_pr_poller
from gastown.kube.store import Store
from gastown.model.common import GROUP, VERSION

log = logging.getLogger(__name__)

PRIME_RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Waits between attempts to prime a town's store; the last one repeats."""


@functools.cache
def town_selector() -> Selector:
    """The towns this operator reconciles (`--town-selector`; read once, after the CLI set it)."""
    return parse_selector(os.environ.get("GASTOWN_TOWN_SELECTOR", ""))


def selected(labels: Mapping[str, str], **_: Any) -> bool:
    """Whether a Town belongs to this operator's shard. kopf re-checks it on every Town event:
    a Town relabelled out of the shard has its loop stopped, one relabelled into it gets one."""
    return town_selector().matches(labels)


@kopf.daemon(GROUP, VERSION, "towns", cancellation_timeout=2.0, when=selected)
async def town_loop(
    name: str, namespace: str | None, memo: Any, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """Prime the town's store once (one LIST per kind), then reconcile until the Town goes."""
    assert namespace is not None, "Town is a namespaced kind"
    if not await prime_until_done(memo.kube, memo.store, namespace, name, stopped):
        return
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
        verifier=memo.verifier,
        leadership=getattr(memo, "leadership", None),
    )
    log.info("started reconciling town %s/%s", namespace, name, extra={"town": name})
    try:
        await loop.run(lambda: bool(stopped))
    finally:
        # Deleted, relabelled out of this shard (--town-selector), or the operator stopping.
        log.info("stopped reconciling town %s/%s", namespace, name, extra={"town": name})


async def prime_until_done(
    kube: Kube, store: Store, namespace: str, name: str, stopped: kopf.DaemonStopped
) -> bool:
    """Prime the town's store, retrying with backoff; False if the daemon was stopped first.

    A failure is written to the Town's status (Ready=False, reason LoopFailed, the API's
    message) instead of ending the daemon: the Town says why it does not run, and the loop
    starts by itself once the cause is gone.
    """
    attempt = 0
    while not stopped:
        try:
            await prime_town(kube, store, namespace, name)
            return True
        except ApiError as err:
            message = f"cannot load the town's objects: {err}"
        except Exception as err:  # a bug must not kill the loop silently either
            log.exception("priming town %s failed", name, extra={"town": name})
            message = f"cannot load the town's objects: {type(err).__name__}: {err}"
        log.warning("town %s cannot start: %s", name, message, extra={"town": name})
        with contextlib.suppress(ApiError):
            await report_loop_failure(kube, store, store.town(namespace, name), message)
        delay = PRIME_RETRY_SECONDS[min(attempt, len(PRIME_RETRY_SECONDS) - 1)]
        attempt += 1
        await stopped.wait(delay)
    return False
