"""Events on the real API server: a repeated Event becomes one Event with a count."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gastown.devtools.controlplane import ControlPlane
from gastown.kube.apply import Applier
from gastown.kube.client import Kube, connect
from gastown.kube.events import COMBINED, SIMILAR_THRESHOLD
from gastown.kube.store import Store
from gastown.reconcile.actions import Announce
from gastown.reconcile.writes import Kind
from tests.support.api import Api
from tests.support.town import bead, town

pytestmark = pytest.mark.cluster


@pytest.fixture
async def kube(control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Kube]:
    """An async client of the control plane, as the operator builds it."""
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    client = Kube(await connect())
    yield client
    await client.close()


def _events(api: Api, namespace: str, name: str) -> list[dict[str, Any]]:
    items = api.call("GET", f"/api/v1/namespaces/{namespace}/events").body["items"]
    return [e for e in items if e["involvedObject"]["name"] == name]


def _say(message: str, reason: str = "Held") -> Announce:
    return Announce(kind=Kind.BEAD, name="b1", reason=reason, message=message, event="Warning")


async def test_a_repeated_event_is_one_event_with_a_count(
    api: Api, namespace: str, kube: Kube
) -> None:
    for body in (town(), bead("b1")):
        assert api.create(namespace, body).status == 201
    store = Store()
    for kind, name in (("Town", "demo"), ("Bead", "b1")):
        store.observe(kind, api.get(kind, namespace, name).body)
    held = store.town(namespace, "demo")
    # Three passes say the same thing about the same bead, the last one twice.
    for repeats in (1, 1, 2):
        plan = [_say("rig x is not in the town")] * repeats
        result = await Applier(kube, store, held).apply(plan)
        assert result.events == repeats
    (event,) = _events(api, namespace, "b1")
    assert event["count"] == 4
    assert event["reason"] == "Held"
    assert event["type"] == "Warning"
    assert (
        event["involvedObject"]["uid"] == api.get("Bead", namespace, "b1").body["metadata"]["uid"]
    )
    assert event["lastTimestamp"] >= event["firstTimestamp"]


async def test_many_similar_events_fold_into_one_aggregate_event(
    api: Api, namespace: str, kube: Kube
) -> None:
    for body in (town(), bead("b1")):
        assert api.create(namespace, body).status == 201
    store = Store()
    for kind, name in (("Town", "demo"), ("Bead", "b1")):
        store.observe(kind, api.get(kind, namespace, name).body)
    held = store.town(namespace, "demo")
    extra = 5
    for i in range(SIMILAR_THRESHOLD + extra):
        await Applier(kube, store, held).apply([_say(f"attempt {i} refused")])
    events = _events(api, namespace, "b1")
    # Each distinct message below the threshold is its own Event; the rest fold into one.
    assert len(events) == SIMILAR_THRESHOLD
    (aggregate,) = [e for e in events if e["message"].startswith(COMBINED)]
    assert aggregate["count"] == extra + 1
    assert aggregate["message"] == f"{COMBINED}attempt {SIMILAR_THRESHOLD + extra - 1} refused"
