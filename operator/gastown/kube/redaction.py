"""Defence in depth: the operator never writes a value of a Secret that a town gives its agents.

Agent pods hold the town's secrets (`spec.agent.secretEnv`, each rig's `credentialsSecret`, each
rig's pull-request token). The in-pod runtime redacts what it writes, but a coding agent may be
prompt-injected into writing a secret into its own Agent's reports through its token, and the
operator copies report text into Bead status (message, summary), rework Beads (feedback) and
Events. So every object the operator creates or patches, and every Event message, passes through
the town's `Redactor` first (`gastown.kube.apply`), and so does the Town status the loop writes.

The values are read through the API (a GET per named Secret: the chart grants `get` on Secrets,
no list or watch) lazily, the first time a pass writes something, and kept for `CACHE_SECONDS`
(so a rotated value is known within that time). A town that names no Secret costs nothing, and
its writes skip redaction entirely. Values are never logged; they also feed the operator's log
filter (`log_redactor`), so not even a log line of the operator can carry one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gastown.agent.redaction import PUBLIC_CREDENTIAL_KEYS, Redactor
from gastown.kube.client import ApiError, Kube
from gastown.model import Town

log = logging.getLogger(__name__)

CACHE_SECONDS = 30.0
"""How long the values of a town's Secrets are reused before they are read again."""

NO_SECRETS = Redactor()


@dataclass(frozen=True, order=True)
class SecretRef:
    """A Secret a town hands to its agent pods: one key of it, or every key (`key` None)."""

    name: str
    key: str | None = None


def town_secret_refs(town: Town) -> frozenset[SecretRef]:
    """Every Secret key whose value reaches an agent pod of `town`.

    A rig's credentials Secret is mounted whole, so all of its keys count, except those that
    hold no secret (`username`, `known_hosts`).
    """
    refs = {
        SecretRef(v.secret_key_ref.name, v.secret_key_ref.key) for v in town.spec.agent.secret_env
    }
    for rig in town.spec.rigs:
        if rig.credentials_secret:
            refs.add(SecretRef(rig.credentials_secret))
        if rig.pull_requests is not None:
            token = rig.pull_requests.token_secret
            refs.add(SecretRef(token.name, token.key))
    return frozenset(refs)


def select_values(data: dict[str, str], ref: SecretRef) -> list[str]:
    """The values of `ref` in one Secret's decoded data."""
    if ref.key is not None:
        return [data[ref.key]] if ref.key in data else []
    return [value for key, value in data.items() if key not in PUBLIC_CREDENTIAL_KEYS]


class TownSecrets:
    """The redactor of one town: the values of the Secrets it names, read lazily, cached briefly."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        town: str,
        ttl: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.town = town
        self.ttl = ttl
        self.clock = clock
        self._refs: frozenset[SecretRef] = frozenset()
        self._redactor = NO_SECRETS
        self._expires = float("-inf")
        self._lock = asyncio.Lock()

    def known(self) -> Redactor:
        """The redactor as last read, without any API call (empty before the first read)."""
        return self._redactor

    async def redactor(self, town: Town | None) -> Redactor:
        """The redactor for the town's current Secret references (reads them when stale)."""
        refs = town_secret_refs(town) if town is not None else self._refs
        if not refs:
            self._remember(frozenset(), NO_SECRETS, float("inf"))
            return NO_SECRETS
        if refs == self._refs and self.clock() < self._expires:
            return self._redactor
        async with self._lock:  # concurrent writes of a dispatch burst share one read
            if refs == self._refs and self.clock() < self._expires:
                return self._redactor
            values = await self._read(sorted(refs))
            self._remember(refs, Redactor(values), self.clock() + self.ttl)
        return self._redactor

    async def _read(self, refs: Iterable[SecretRef]) -> list[str]:
        values: list[str] = []
        cache: dict[str, dict[str, str]] = {}
        for ref in refs:
            if ref.name not in cache:
                try:
                    cache[ref.name] = await self.kube.read_secret_data(self.namespace, ref.name)
                except ApiError as err:
                    # A missing or unreadable Secret reaches no pod either: nothing to hide.
                    log.info(
                        "secret %s of town %s not readable for redaction: HTTP %s",
                        ref.name,
                        self.town,
                        err.status,
                        extra={"town": self.town},
                    )
                    cache[ref.name] = {}
            values.extend(select_values(cache[ref.name], ref))
        return values

    def _remember(self, refs: frozenset[SecretRef], redactor: Redactor, expires: float) -> None:
        self._refs, self._redactor, self._expires = refs, redactor, expires
        _remember_for_logs((self.namespace, self.town), redactor)


# --- The operator's log filter ------------------------------------------------------------------

_TOWN_REDACTORS: dict[tuple[str, str], Redactor] = {}
_LOG_REDACTOR = NO_SECRETS


def _remember_for_logs(town: tuple[str, str], redactor: Redactor) -> None:
    global _LOG_REDACTOR
    if _TOWN_REDACTORS.get(town, NO_SECRETS) == redactor:
        return
    if redactor:
        _TOWN_REDACTORS[town] = redactor
    else:
        _TOWN_REDACTORS.pop(town, None)
    values: set[str] = set()
    for known in _TOWN_REDACTORS.values():
        values |= known.values
    _LOG_REDACTOR = Redactor(values)


def log_redactor() -> Redactor:
    """Every secret value of every town this operator has read (for its log filter)."""
    return _LOG_REDACTOR
