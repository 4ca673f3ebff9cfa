"""The adapter's apply step against the real API server: conflicts stop a pass safely."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from gastown.devtools.controlplane import ControlPlane
from gastown.kube.apply import Applier
from gastown.kube.client import Kube, connect
from gastown.kube.store import Store
from gastown.model import BeadPhase
from gastown.reconcile.actions import MarkReportsApplied, TransitionBead
from tests.support.api import Api
from tests.support.town import bead, town

pytestmark = pytest.mark.cluster


def _agent() -> dict[str, Any]:
    return {
        "apiVersion": "gastown.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "a1"},
        "spec": {"town": "demo", "role": "polecat", "rig": "app", "generation": 1},
    }


@pytest.fixture
async def kube(control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Kube]:
    """An async client of the control plane, as the operator builds it."""
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    client = Kube(await connect())
    yield client
    await client.close()


async def test_a_conflict_stops_the_pass_before_later_actions(
    api: Api, namespace: str, kube: Kube
) -> None:
    for body in (town(), bead("b1"), _agent()):
        assert api.create(namespace, body).status == 201
    store = Store()
    for kind, name in (("Town", "demo"), ("Bead", "b1"), ("Agent", "a1")):
        store.observe(kind, api.get(kind, namespace, name).body)
    # Someone changes the bead after the snapshot: our resourceVersion is now stale.
    labelled = api.merge_patch("Bead", namespace, "b1", {"metadata": {"labels": {"team": "x"}}})
    assert labelled.status == 200
    now = datetime.now(UTC)
    plan = [
        TransitionBead(
            bead="b1",
            from_phase=BeadPhase.OPEN,
            to_phase=BeadPhase.IN_REVIEW,
            now=now,
            reason="AgentDone",
        ),
        MarkReportsApplied(agent="a1", seq=1, old_seq=0, reason="ReportsApplied"),
    ]
    result = await Applier(kube, store, store.town(namespace, "demo")).apply(plan)
    assert result.conflicts == 1
    assert result.stopped_early
    # The report is NOT recorded as applied: its effect did not happen, so the next pass
    # (on fresh state) applies it again. Nothing is lost.
    agent = api.get("Agent", namespace, "a1").body
    assert agent.get("status", {}).get("appliedReportSeq", 0) == 0
    assert api.get("Bead", namespace, "b1").body.get("status", {}).get("phase") != "in_review"
    # No Event announces the transition that did not happen.
    events = api.call("GET", f"/api/v1/namespaces/{namespace}/events").body["items"]
    assert not [e for e in events if e["reason"] == "AgentDone"]

    # On fresh state the same plan goes through.
    store.observe("Bead", api.get("Bead", namespace, "b1").body)
    result = await Applier(kube, store, store.town(namespace, "demo")).apply(plan)
    assert (result.conflicts, result.stopped_early) == (0, False)
    assert api.get("Agent", namespace, "a1").body["status"]["appliedReportSeq"] == 1
    assert api.get("Bead", namespace, "b1").body["status"]["phase"] == "in_review"
