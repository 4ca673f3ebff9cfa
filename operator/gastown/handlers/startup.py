"""Operator start-up: kopf settings under our own prefix, the API client, the store, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import kopf

from gastown.kube import metrics
from gastown.kube.client import Kube, connect
from gastown.kube.identity_guard import start_guard
from gastown.kube.labels import TOWN
from gastown.kube.leader import Leadership, LeaseSettings
from gastown.kube.orphans import watch_orphans
from gastown.kube.store import Store
from gastown.kube.verify import ClaimVerifier

PREFIX = "gastown.dev"


class NoEssenceDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff-base storage, minus the per-event copy of every object.

    kopf deep-copies each watched object on every event to compute its "essence", which only
    change-detecting handlers (`on.create`, `on.update`, `on.resume`, ...) use. This operator
    registers none (only `on.event` and a daemon per Town; tests/unit/test_handlers.py keeps it
    that way), and in a dispatch burst the copies cost more than a tenth of the operator's CPU.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        """An empty essence: nothing here compares one against another."""
        return kopf.BodyEssence()


log = logging.getLogger(__name__)


WATCH_RETRY_SECONDS = (0.5, 1.0, 1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 5.0, 10.0, 10.0)
"""Delays between retries of a failed API request of kopf's (watches), then it gives up."""


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's bookkeeping under gastown.dev and open our own client."""
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = NoEssenceDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own Events are explicit; no handler chatter
    watch_only_agent_pods(settings)
    settings.watching.server_timeout = int(os.environ.get("GASTOWN_WATCH_TIMEOUT", "300"))
    settings.watching.client_timeout = settings.watching.server_timeout + 30
    # A watch that fails (the API server restarting) is retried sooner and more often than kopf's
    # default (1, 1, 2, 3, 5, 8, 13, 21 s): a town's store is stale until its watches resume.
    settings.networking.error_backoffs = WATCH_RETRY_SECONDS
    settings.execution.max_workers = 4
    memo.kube = Kube(await connect())
    memo.leadership = None
    if os.environ.get("GASTOWN_LEADER_ELECT", "").lower() in ("1", "true", "yes"):
        # Every replica watches; only the Lease's holder writes (the fence is on the client).
        memo.leadership = Leadership(memo.kube, LeaseSettings.from_env("default"))
        memo.kube.fence = memo.leadership.leading
        memo.lease_task = asyncio.create_task(memo.leadership.run())
    memo.store = Store()
    memo.verifier = ClaimVerifier(memo.kube)  # agents' claims, checked against the remotes
    # Which identity agent pods get; where it relies on the admission policy, the policy is
    # re-checked for as long as the operator runs (a missing one holds dispatch).
    memo.identity_guard, memo.identity_task = await start_guard(memo.kube, memo.store)
    memo.town_identity = memo.identity_guard.mode.town_identity
    # Objects of missing towns have no loop; a slow timer tells their owners.
    memo.orphans = asyncio.create_task(
        watch_orphans(memo.kube, memo.store, float(os.environ.get("GASTOWN_ORPHAN_SECONDS", "10")))
    )
    port = int(os.environ.get("GASTOWN_METRICS_PORT", "0") or 0)
    if port:
        metrics.serve(port, os.environ.get("GASTOWN_METRICS_ADDRESS", "0.0.0.0"))


def watch_only_agent_pods(settings: kopf.OperatorSettings) -> None:
    """Let the API server filter the pod watch: only pods carrying a town label reach us.

    The pod handler's own label filter is applied by kopf after the event arrived; cluster-wide,
    without this, every pod event of the cluster would be sent, decoded and dropped.
    """
    settings.watching.label_selectors[("v1", "pods")] = TOWN


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    """Close the API client."""
    for name in ("orphans", "identity_task"):
        task: asyncio.Task[None] | None = getattr(memo, name, None)
        if task is not None:
            task.cancel()
    lease_task: asyncio.Task[None] | None = getattr(memo, "lease_task", None)
    if lease_task is not None:
        # Cancelling the contender releases the Lease: a standby takes over at once instead
        # of after the lease duration (a rolling update hands over without a gap).
        lease_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lease_task
    verifier: ClaimVerifier | None = getattr(memo, "verifier", None)
    if verifier is not None:
        await verifier.close()
    kube: Kube | None = getattr(memo, "kube", None)
    if kube is not None:
        await kube.close()
