"""No confused deputy: a Town reaches only Secrets and ServiceAccounts that opted in to it.

The operator may read Secrets and starts pods under any ServiceAccount of a namespace; a Town's
author may not. Without a check the author could borrow the operator's power: mount any Secret
of the namespace into an agent pod they control (`secretEnv`, a rig's `credentialsSecret`, a PR
token), run agents as any ServiceAccount (`spec.agent.serviceAccountName`), or have the operator
send a token to a plain-http `pullRequests.apiUrl`. So:

- every Secret and ServiceAccount a Town names must carry the label `gastown.dev/town: <town>`
  (exactly that Town's name; whoever can label the object owns the decision to share it);
- a provider `apiUrl` must be https, unless the operator runs with
  `--allow-insecure-provider-urls` (env `GASTOWN_ALLOW_INSECURE_PROVIDER_URLS=1`; local tests).

A violation is a `Fault` of the town: the pure reconciler holds every new dispatch while one is
present (no pod naming the object is created), the loop holds the PR poller (no token is sent),
and the Town turns Degraded with the reason and a Warning Event. Other towns are not affected.
The check reads only metadata (the API server is asked for PartialObjectMetadata, so no Secret
value is ever fetched for it) and caches each answer for a few seconds: a town without such
references costs no calls at all, and labelling an object lets the town proceed on a later pass.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gastown.kube import labels
from gastown.kube.client import ApiError, Kube, NotFound
from gastown.model import Town
from gastown.reconcile.snapshot import Fault

OPT_IN_LABEL = labels.TOWN
"""The label a Secret or ServiceAccount carries, with the Town's name as value, to be usable."""

ALLOW_INSECURE_ENV = "GASTOWN_ALLOW_INSECURE_PROVIDER_URLS"
"""Set to 1 to let towns use plain-http provider URLs (local testing only)."""

CACHE_SECONDS = 5.0
"""How long one answer about an object is reused (a label added later is seen after this)."""

SECRET, SERVICE_ACCOUNT = "Secret", "ServiceAccount"


@dataclass(frozen=True)
class Reference:
    """A Secret or ServiceAccount a Town names, and where it names it (for the message)."""

    kind: str
    name: str
    field: str


@dataclass(frozen=True)
class Lookup:
    """What the API server said about one referenced object."""

    labels: Mapping[str, str] | None  # None: the object does not exist
    error: str = ""  # set when it could not be read at all


def insecure_allowed() -> bool:
    """True if the operator was started with the insecure-provider-URL flag."""
    return os.environ.get(ALLOW_INSECURE_ENV, "").strip().lower() in ("1", "true", "yes")


def references(town: Town) -> list[Reference]:
    """Every Secret and ServiceAccount the Town makes available to agent pods or the operator."""
    spec = town.spec
    found: list[Reference] = []
    if spec.agent.service_account_name:
        found.append(Reference(SERVICE_ACCOUNT, spec.agent.service_account_name, "spec.agent"))
    for index, var in enumerate(spec.agent.secret_env):
        found.append(Reference(SECRET, var.secret_key_ref.name, f"spec.agent.secretEnv[{index}]"))
    for rig in spec.rigs:
        if rig.credentials_secret:
            found.append(Reference(SECRET, rig.credentials_secret, f"rig {rig.name}"))
        if rig.pull_requests is not None:
            token = rig.pull_requests.token_secret.name
            found.append(Reference(SECRET, token, f"rig {rig.name} pullRequests.tokenSecret"))
    unique: dict[tuple[str, str], Reference] = {}
    for ref in found:
        unique.setdefault((ref.kind, ref.name), ref)
    return list(unique.values())


def insecure_url_faults(town: Town, allow_insecure: bool) -> list[Fault]:
    """A fault for each rig whose provider API is not https (unless explicitly allowed)."""
    if allow_insecure:
        return []
    return [
        Fault(
            "InsecureProviderUrl",
            f"rig {rig.name}: pullRequests.apiUrl must use https (the operator and the refinery "
            "send the provider token there); plain http is accepted only when the operator runs "
            "with --allow-insecure-provider-urls, for local testing",
        )
        for rig in town.spec.rigs
        if rig.pull_requests is not None
        and not rig.pull_requests.api_url.lower().startswith("https://")
    ]


def opt_in_fault(ref: Reference, lookup: Lookup, town: str) -> Fault | None:
    """The fault of one reference, or None if the object exists and opted in to `town`."""
    what = f'{ref.kind} "{ref.name}" ({ref.field})'
    if lookup.error:
        return Fault(f"{ref.kind}Unreadable", f"{what} cannot be checked: {lookup.error}")
    if lookup.labels is None:
        return Fault(f"{ref.kind}NotFound", f"{what} does not exist")
    if lookup.labels.get(OPT_IN_LABEL) != town:
        return Fault(
            f"{ref.kind}NotOptedIn",
            f"{what} is not labelled {OPT_IN_LABEL}={town}: the operator uses only Secrets and "
            "ServiceAccounts that opted in to the Town; label it to let the Town use it",
        )
    return None


class DeputyGuard:
    """Checks the references of towns before they dispatch (one guard per operator)."""

    def __init__(
        self,
        kube: Kube,
        *,
        allow_insecure: bool | None = None,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.allow_insecure = insecure_allowed() if allow_insecure is None else allow_insecure
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[tuple[str, str, str], tuple[float, Lookup]] = {}

    async def faults(self, namespace: str, town: Town) -> tuple[Fault, ...]:
        """Everything wrong with what the Town names; empty when it may dispatch."""
        refs = references(town)
        lookups = await asyncio.gather(*(self._lookup(namespace, ref) for ref in refs))
        found = [
            fault
            for ref, lookup in zip(refs, lookups, strict=True)
            if (fault := opt_in_fault(ref, lookup, town.name)) is not None
        ]
        found.extend(insecure_url_faults(town, self.allow_insecure))
        return tuple(found)

    async def _lookup(self, namespace: str, ref: Reference) -> Lookup:
        key = (namespace, ref.kind, ref.name)
        cached = self._cache.get(key)
        now = self.clock()
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        lookup = await self._read(namespace, ref)
        self._cache[key] = (now, lookup)
        return lookup

    async def _read(self, namespace: str, ref: Reference) -> Lookup:
        try:
            metadata: Mapping[str, Any] = await self.kube.read_metadata(
                ref.kind, namespace, ref.name
            )
        except NotFound:
            return Lookup(labels=None)
        except ApiError as err:
            return Lookup(labels=None, error=err.message or str(err.status))
        return Lookup(labels=dict(metadata.get("labels") or {}))
