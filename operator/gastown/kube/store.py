"""In-memory indices of each town's objects.

Fed by two sources: watch events (via the kopf handlers) and the objects the API server returns
to our own writes. An object is replaced only by a version at least as new as the one held
(resourceVersions of one etcd are increasing integers), so a lagging watch event never makes
the store forget a write we already made — the "expectations" of ReplicaSets, without a
separate ledger. A pass reads a snapshot of the store and makes no LIST calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from gastown.kube import labels
from gastown.kube.events import EventCorrelator
from gastown.model import Bead, Convoy, Town
from gastown.model.resources import BY_KIND, Resource
from gastown.reconcile.convoys import listed_names
from gastown.reconcile.finished import BeadMap, FinishedBeads, is_finished
from gastown.reconcile.snapshot import Fault, PodView, Snapshot, Verdict

log = logging.getLogger(__name__)

MAX_VERDICTS = 1024
"""Claim verdicts a town keeps in memory (far more than the reports awaiting application)."""


def _rv(obj: Mapping[str, Any]) -> int:
    try:
        return int(obj.get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def pod_view(pod: Mapping[str, Any]) -> PodView | None:
    """The reconciler's view of an agent Pod, or None if it is not one of ours."""
    meta = pod.get("metadata", {})
    pod_labels = meta.get("labels") or {}
    agent = labels.full_name(meta, labels.AGENT)
    if not agent:
        return None
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    reason, exit_code, started, finished = _container_state(status)
    return PodView(
        name=meta["name"],
        agent=agent,
        generation=int(pod_labels.get(labels.GENERATION, "0") or 0),
        bead=labels.full_name(meta, labels.BEAD),
        phase=phase,
        reason=reason or status.get("reason"),
        exit_code=exit_code,
        created_at=_time(meta.get("creationTimestamp")) or datetime.now(UTC),
        started_at=started or _time(status.get("startTime")),
        finished_at=finished,
        deleting=bool(meta.get("deletionTimestamp")),
    )


def _container_state(
    status: Mapping[str, Any],
) -> tuple[str | None, int | None, datetime | None, datetime | None]:
    """Reason, exit code, start and finish time of the first container."""
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if "terminated" in state:
            term = state["terminated"]
            return (
                term.get("reason"),
                term.get("exitCode"),
                _time(term.get("startedAt")),
                _time(term.get("finishedAt")),
            )
        if "waiting" in state:
            return (state["waiting"].get("reason"), None, None, None)
        if "running" in state:
            return (None, None, _time(state["running"].get("startedAt")), None)
    return (None, None, None, None)


@dataclass
class TownStore:
    """Everything known about one town (namespace + name)."""

    namespace: str
    name: str
    town: Town | None = None
    objects: dict[str, dict[str, Resource[Any, Any]]] = field(
        default_factory=lambda: {"Bead": {}, "Convoy": {}, "Agent": {}}
    )
    """Live objects as models; finished (closed or failed) beads are in `finished` instead."""
    finished: FinishedBeads = field(default_factory=FinishedBeads)
    """Finished beads, summarised and held compactly (a town never forgets one)."""
    raw_versions: dict[tuple[str, str], int] = field(default_factory=dict)
    uids: dict[tuple[str, str], str] = field(default_factory=dict)
    pods: dict[str, PodView] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    invalid: dict[tuple[str, str], str] = field(default_factory=dict)
    identities: set[tuple[str, str]] = field(default_factory=set)
    """Agent ServiceAccounts/Roles/RoleBindings known to exist (saves repeated creates)."""
    role_agents: set[str] = field(default_factory=set)
    """Agents the town's shared agent Role is known to name (see `Applier._allow_in_town_role`)."""
    role_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Serialises the patches of that Role."""
    verdicts: dict[str, Verdict | None] = field(default_factory=dict)
    """Verdicts on agents' claims by report key (None while checked); see `kube.verify`."""
    faults: tuple[Fault, ...] = ()
    """What the last check of the town's references found wrong (see `gastown.kube.deputy`)."""
    events: EventCorrelator = field(default_factory=lambda: EventCorrelator(time.monotonic))
    """Events posted about the town's objects, so repeats update their count (bounded)."""

    def snapshot(self) -> Snapshot | None:
        """A consistent snapshot for one pass (shallow copies; models are immutable)."""
        if self.town is None:
            return None
        return Snapshot(
            town=self.town,
            beads=BeadMap(
                dict(self.objects["Bead"]),  # type: ignore[arg-type]
                self.finished.view(),
            ),
            convoys=dict(self.objects["Convoy"]),  # type: ignore[arg-type]
            agents=dict(self.objects["Agent"]),  # type: ignore[arg-type]
            pods=dict(self.pods),
            faults=self.faults,
            verdicts=dict(self.verdicts),
        )

    def record_verdict(self, key: str, verdict: Verdict | None) -> None:
        """Keep a claim's verdict (bounded: the oldest settled ones are forgotten; a forgotten
        claim whose report is still unapplied is simply checked again)."""
        self.verdicts.pop(key, None)
        self.verdicts[key] = verdict
        if len(self.verdicts) > MAX_VERDICTS:
            settled = [k for k, v in self.verdicts.items() if v is not None]  # never in flight
            for stale in settled[: len(self.verdicts) - MAX_VERDICTS]:
                del self.verdicts[stale]

    def get(self, kind: str, name: str) -> Resource[Any, Any] | None:
        """The held object of a kind, if any."""
        if kind == "Town":
            return self.town if self.town and self.town.name == name else None
        found = self.objects[kind].get(name)
        if found is None and kind == "Bead":
            record = self.finished.records.get(name)
            return record.bead() if record is not None else None
        return found

    def hold(self, kind: str, obj: Resource[Any, Any], raw: Mapping[str, Any]) -> None:
        """Keep a parsed object: a finished bead in the summary, anything else as a model."""
        name = obj.metadata.name
        if isinstance(obj, Bead):
            if is_finished(obj):
                self.objects["Bead"].pop(name, None)
                self.finished.add(obj, raw)
                return
            self.finished.discard(name)
        elif isinstance(obj, Convoy):
            self.finished.observe_convoy(name, listed_names(obj))
        self.objects[kind][name] = obj

    def drop(self, kind: str, name: str) -> None:
        """Forget an object that is gone."""
        self.objects[kind].pop(name, None)
        if kind == "Bead":
            self.finished.discard(name)
        elif kind == "Convoy":
            self.finished.forget_convoy(name)


class Store:
    """All towns the operator watches, keyed by (namespace, town name)."""

    def __init__(self) -> None:
        self.towns: dict[tuple[str, str], TownStore] = {}
        self.identity_faults: tuple[Fault, ...] = ()
        """Faults of every town at once: the agent identity is unprotected (see
        `gastown.kube.identity_guard`); the loops add them to each town's own faults."""

    def set_identity_faults(self, faults: tuple[Fault, ...]) -> None:
        """Publish the identity faults and wake every town so that it reacts at once."""
        self.identity_faults = faults
        for town in self.towns.values():
            town.wake.set()

    def town(self, namespace: str, name: str) -> TownStore:
        """The store of one town (created empty on first use)."""
        key = (namespace, name)
        if key not in self.towns:
            self.towns[key] = TownStore(namespace=namespace, name=name)
        return self.towns[key]

    def observe(self, kind: str, obj: Mapping[str, Any], deleted: bool = False) -> TownStore | None:
        """Record a watched or written object; returns the town it belongs to, woken."""
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace", "")
        if kind == "Pod":
            return self._observe_pod(namespace, obj, deleted)
        town_name = meta.get("name") if kind == "Town" else (obj.get("spec") or {}).get("town")
        if not town_name:
            return None
        store = self.town(namespace, town_name)
        name = meta["name"]
        key = (kind, name)
        if deleted:
            self.forget(store, kind, name)
        elif _rv(obj) > store.raw_versions.get(key, -1):
            # Strictly newer only: the watch echo of our own write carries the version the
            # write already put here, and parsing it again is the costliest part of an event.
            self._remember(store, kind, obj)
        store.wake.set()
        return store

    def _remember(self, store: TownStore, kind: str, obj: Mapping[str, Any]) -> None:
        name = obj["metadata"]["name"]
        try:
            parsed = BY_KIND[kind].from_api(dict(obj))
        except ValidationError as err:
            # The API server validated it, so this is version skew; keep the old copy.
            store.invalid[(kind, name)] = str(err).splitlines()[0]
            log.warning("cannot parse %s %s: %s", kind, name, store.invalid[(kind, name)])
            return
        store.invalid.pop((kind, name), None)
        store.raw_versions[(kind, name)] = _rv(obj)
        store.uids[(kind, name)] = obj["metadata"].get("uid", "")
        if kind == "Town":
            assert isinstance(parsed, Town)
            store.town = parsed
        else:
            store.hold(kind, parsed, obj)

    def forget(self, store: TownStore, kind: str, name: str) -> None:
        """Drop an object that is gone (deleted by us, or a DELETED watch event)."""
        store.raw_versions.pop((kind, name), None)
        store.uids.pop((kind, name), None)
        if kind == "Town":
            store.town = None
        else:
            store.drop(kind, name)

    def _observe_pod(
        self, namespace: str, obj: Mapping[str, Any], deleted: bool
    ) -> TownStore | None:
        meta = obj.get("metadata", {})
        town_name = labels.full_name(meta, labels.TOWN)
        if not town_name or not labels.full_name(meta, labels.AGENT):
            return None
        store = self.town(namespace, town_name)
        name = meta["name"]
        key = ("Pod", name)
        if deleted:
            store.pods.pop(name, None)
            store.raw_versions.pop(key, None)
        elif _rv(obj) > store.raw_versions.get(key, -1):
            view = pod_view(obj)
            assert view is not None  # it carries the agent label checked above
            store.pods[name] = view
            store.raw_versions[key] = _rv(obj)
            store.uids[key] = obj["metadata"].get("uid", "")
        store.wake.set()
        return store
