"""The operator's pull request poller (a side effect of the reconciler's PollPR).

It reads the rig's provider token from its Secret (only when a poll is due; never logged,
never cached on disk), asks the provider for the PR's details, checks them against what the
merge request expects, and returns the status patch the reconciler consumes on its next pass
(`review.prState`). Lifecycle timestamps are not touched: the reconciler already recorded
`review.lastPolledAt` before this ran.

The PR URL is a refinery's claim, so the provider's answer must confirm it: the URL is a PR of
the configured repository (not a fork's), its head branch and commit and its base branch are
the merge request's. Anything else is `mismatch` (with what differed in `review.prMismatch`),
whatever the PR's state; `merged` is written only with the provider's merge SHA.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gastown.agent.providers import (
    ForeignPullRequestError,
    ProviderError,
    PullRequestInfo,
    client_for,
)
from gastown.kube.client import ApiError, Kube
from gastown.kube.store import TownStore
from gastown.model import Bead, PRState
from gastown.reconcile.writes import PollPR

log = logging.getLogger(__name__)

MAX_MISMATCH = 1024


def make_pr_poller(kube: Kube) -> Any:
    """A poller bound to one API client (see `gastown.kube.apply.PRPoller`)."""

    async def poll(town: TownStore, effect: PollPR) -> dict[str, Any] | None:
        bead = town.get("Bead", effect.bead)
        if town.town is None or not isinstance(bead, Bead):
            return None
        rig = next((r for r in town.town.spec.rigs if r.name == bead.spec.rig), None)
        if rig is None or rig.pull_requests is None:
            # No provider to confirm it with: a PR claim on such a rig cannot be true.
            return mismatch([f"rig {bead.spec.rig!r} has no pull request provider configured"])
        provider = rig.pull_requests
        try:
            token = await kube.read_secret_key(
                town.namespace, provider.token_secret.name, provider.token_secret.key
            )
        except ApiError as err:
            log.warning("PR token secret of rig %s unreadable: %s", rig.name, err.status)
            return unknown()
        try:
            client = client_for(provider, token)
            info = await asyncio.to_thread(client.pull_request, effect.url)
        except ForeignPullRequestError as err:
            return mismatch([str(err)])
        except ProviderError as err:
            log.warning("PR poll of %s failed: %s", effect.bead, err)
            return unknown()
        return verdict(effect, info)

    return poll


def verdict(effect: PollPR, info: PullRequestInfo | None) -> dict[str, Any]:
    """The status patch for what the provider said about the PR the poll was asked to check."""
    if info is None:
        return unknown()
    problems = info.mismatches(
        url=effect.url,
        head_branch=effect.head_branch,
        base_branch=effect.base_branch,
        head_sha=effect.head_sha,
    )
    if problems:
        return mismatch(problems)
    review: dict[str, Any] = {"prState": info.state.value, "prMismatch": None}
    if info.state is PRState.MERGED:
        review["mergeCommit"] = info.merge_commit
    return {"review": review}


def unknown() -> dict[str, Any]:
    """The provider could not tell us (unreachable, no token, an error answer)."""
    return {"review": {"prState": PRState.UNKNOWN.value}}


def mismatch(problems: list[str]) -> dict[str, Any]:
    """The provider's answer contradicts the claim."""
    text = "; ".join(problems)
    if len(text) > MAX_MISMATCH:
        text = text[: MAX_MISMATCH - 1] + "…"
    return {"review": {"prState": PRState.MISMATCH.value, "prMismatch": text}}
