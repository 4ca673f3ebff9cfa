"""The operator's pull request poller (a side effect of the reconciler's PollPR).

It reads the rig's provider token from its Secret (only when a poll is due; never logged,
never cached on disk), asks the provider for the PR's state, and returns the status patch the
reconciler consumes on its next pass (`review.prState`). Lifecycle timestamps are not touched:
the reconciler already recorded `review.lastPolledAt` before this ran.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gastown.agent.providers import ProviderError, client_for
from gastown.kube.client import ApiError, Kube
from gastown.kube.store import TownStore
from gastown.model import Bead, PRState
from gastown.reconcile.writes import PollPR

log = logging.getLogger(__name__)


def make_pr_poller(kube: Kube) -> Any:
    """A poller bound to one API client (see `gastown.kube.apply.PRPoller`)."""

    async def poll(town: TownStore, effect: PollPR) -> dict[str, Any] | None:
        bead = town.objects["Bead"].get(effect.bead)
        if town.town is None or not isinstance(bead, Bead):
            return None
        rig = next((r for r in town.town.spec.rigs if r.name == bead.spec.rig), None)
        if rig is None or rig.pull_requests is None:
            return {"review": {"prState": PRState.UNKNOWN.value}}
        provider = rig.pull_requests
        try:
            token = await kube.read_secret_key(
                town.namespace, provider.token_secret.name, provider.token_secret.key
            )
        except ApiError as err:
            log.warning("PR token secret of rig %s unreadable: %s", rig.name, err.status)
            return {"review": {"prState": PRState.UNKNOWN.value}}
        try:
            client = client_for(provider, token)
            state = await asyncio.to_thread(client.pull_request_state, effect.url)
        except ProviderError as err:
            log.warning("PR poll of %s failed: %s", effect.bead, err)
            state = PRState.UNKNOWN
        return {"review": {"prState": state.value}}

    return poll
