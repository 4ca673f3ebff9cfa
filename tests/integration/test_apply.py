"""The adapter's apply step against the real API server: conflicts stop a pass safely."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from gastown.devtools.controlplane import ControlPlane
from gastown.kube.apply import Applier
from gastown.kube.client import Kube, connect
from gastown.kube.store import Store
from gastown.model import AgentPhase, BeadPhase
from gastown.reconcile.actions import DispatchAgent, MarkReportsApplied, TransitionBead
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

    # The conflicting object was re-read, so the next pass plans on its current state even
    # when no watch delivers it (a watch reconnecting after an API server restart): the same
    # plan now goes through.
    current = api.get("Bead", namespace, "b1").body["metadata"]["resourceVersion"]
    held = store.town(namespace, "demo").get("Bead", "b1")
    assert held is not None
    assert held.metadata.resource_version == current
    result = await Applier(kube, store, store.town(namespace, "demo")).apply(plan)
    assert (result.conflicts, result.stopped_early) == (0, False)
    assert api.get("Agent", namespace, "a1").body["status"]["appliedReportSeq"] == 1
    assert api.get("Bead", namespace, "b1").body["status"]["phase"] == "in_review"


async def test_a_write_to_an_object_gone_unseen_drops_it_from_the_store(
    api: Api, namespace: str, kube: Kube
) -> None:
    """A watch that resumed by relisting never reports what was deleted meanwhile: the first
    write that finds the object gone drops it, so the next pass no longer plans on it."""
    for body in (town(), bead("b1")):
        assert api.create(namespace, body).status == 201
    store = Store()
    for kind, name in (("Town", "demo"), ("Bead", "b1")):
        store.observe(kind, api.get(kind, namespace, name).body)
    assert api.delete("Bead", namespace, "b1").status == 200  # the store never hears of it
    plan = [
        TransitionBead(
            bead="b1",
            from_phase=BeadPhase.OPEN,
            to_phase=BeadPhase.IN_PROGRESS,
            now=datetime.now(UTC),
            reason="Dispatched",
        )
    ]
    town_store = store.town(namespace, "demo")
    result = await Applier(kube, store, town_store).apply(plan)
    assert result.stopped_early
    assert town_store.get("Bead", "b1") is None


class CountingKube(Kube):
    """The real client, counting the identity requests it sends."""

    def __init__(self, kube: Kube) -> None:
        super().__init__(kube.api)
        self.requests: Counter[str] = Counter()

    async def create_core(self, kind: str, namespace: str, body: Any) -> None:
        self.requests[kind] += 1
        await super().create_core(kind, namespace, body)


async def test_a_burst_of_dispatches_creates_the_town_identity_with_one_request_each(
    api: Api, namespace: str, kube: Kube
) -> None:
    """64 concurrent dispatches need the town's ServiceAccount, Role and RoleBinding: each is
    requested once, not once per dispatch (409s are cheap, not free, in a burst)."""
    beads = [bead(f"b{i:02d}") for i in range(20)]
    for body in (town(), *beads):
        assert api.create(namespace, body).status == 201
    store = Store()
    store.observe("Town", api.get("Town", namespace, "demo").body)
    for body in beads:
        store.observe("Bead", api.get("Bead", namespace, body["metadata"]["name"]).body)
    now = datetime.now(UTC)
    plan = [
        DispatchAgent(
            town="demo",
            agent=f"demo-polecat-app-{i + 1}",
            role="polecat",
            rig="app",
            create=True,
            generation=1,
            old_hook=None,
            old_phase=AgentPhase.IDLE,
            bead=body["metadata"]["name"],
            bead_phase=BeadPhase.OPEN,
            bead_assignee=None,
            attempts=0,
            review=False,
            now=now,
            reason="Dispatched",
        )
        for i, body in enumerate(beads)
    ]
    counting = CountingKube(kube)
    result = await Applier(counting, store, store.town(namespace, "demo")).apply(plan)
    assert result.errors == []
    assert result.side_effects_ok == len(beads)
    assert counting.requests == Counter(
        {"ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "Event": 20}
    )
    pods = api.call("GET", f"/api/v1/namespaces/{namespace}/pods").body["items"]
    assert len(pods) == len(beads)
    assert {p["spec"]["serviceAccountName"] for p in pods} == {"gastown-agents-demo"}
    # The town's Role names exactly the town's Agents (reads of other towns' Agents refused),
    # with one write for the whole burst (the batch's Agents are named together).
    role = api.call(
        "GET",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/gastown-agents-demo",
    ).body
    named = [r["resourceNames"] for r in role["rules"] if r["resources"][0].startswith("agents")]
    wanted = sorted(f"demo-polecat-app-{i + 1}" for i in range(len(beads)))
    assert named == [wanted, wanted]
    assert result.writes["Role"] == 1, result.writes  # created naming the whole batch

    # Pods first, records after (`DispatchAgent.after_pod`): etcd's revision orders every write,
    # so each pod was created before any bead or agent status of the burst was written.
    beads_now = [api.get("Bead", namespace, b["metadata"]["name"]).body for b in beads]
    agents_now = [api.get("Agent", namespace, f"demo-polecat-app-{i + 1}").body for i in range(20)]
    last_pod = max(int(p["metadata"]["resourceVersion"]) for p in pods)
    first_record = min(int(o["metadata"]["resourceVersion"]) for o in beads_now + agents_now)
    assert last_pod < first_record
    assert {b["status"]["phase"] for b in beads_now} == {"in_progress"}
    assert {a["status"]["pod"] for a in agents_now} == {p["metadata"]["name"] for p in pods}
