"""The store keeps finished beads in the summary (compactly), live ones as models, and moves a
bead between the two as watch events show its phase change."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gastown.kube import metrics
from gastown.kube.apply import count_outcome
from gastown.kube.store import Store
from gastown.model import BeadPhase
from gastown.reconcile.actions import TransitionBead
from gastown.reconcile.finished import BeadMap


def raw_bead(name: str, rv: int, phase: str = "open", **spec: Any) -> dict[str, Any]:
    """A Bead as the API server returns it."""
    return {
        "apiVersion": "gastown.dev/v1alpha1",
        "kind": "Bead",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "resourceVersion": str(rv),
            "creationTimestamp": "2026-03-01T12:00:00Z",
            "managedFields": [{"manager": "kubectl", "operation": "Update"}],
        },
        "spec": {"town": "t", "rig": "app", "title": name, **spec},
        "status": {"phase": phase},
    }


def raw_town() -> dict[str, Any]:
    return {
        "metadata": {"name": "t", "namespace": "ns", "uid": "u", "resourceVersion": "1"},
        "spec": {"rigs": [{"name": "app", "gitUrl": "/r.git"}], "agent": {"image": "a"}},
    }


def test_beads_move_between_live_and_finished_as_their_phase_changes() -> None:
    store = Store()
    town = store.observe("Town", raw_town())
    assert town is not None
    store.observe("Bead", raw_bead("x", 2))
    assert "x" in town.objects["Bead"]
    assert "x" not in town.finished
    store.observe("Bead", raw_bead("x", 3, phase="closed"))
    assert "x" not in town.objects["Bead"]
    assert "x" in town.finished
    held = town.get("Bead", "x")
    assert held is not None
    assert held.status.phase.value == "closed"
    assert held.metadata.resource_version == "3"
    snap = town.snapshot()
    assert snap is not None
    assert isinstance(snap.beads, BeadMap)
    assert "x" in snap.beads
    assert snap.index.phases.get("x") is not None
    store.observe("Bead", raw_bead("x", 2, phase="open"))  # an older event: ignored
    assert "x" in town.finished
    store.observe("Bead", raw_bead("x", 4, phase="failed"))
    assert town.finished.records["x"].phase.value == "failed"
    store.observe("Bead", raw_bead("x", 5), deleted=True)
    assert "x" not in town.finished
    assert town.get("Bead", "x") is None


def test_a_convoy_listing_a_finished_bead_is_marked_changed_when_it_goes() -> None:
    store = Store()
    town = store.observe("Town", raw_town())
    assert town is not None
    store.observe("Bead", raw_bead("y", 2, phase="closed"))
    convoy = {
        "metadata": {"name": "c", "namespace": "ns", "uid": "uc", "resourceVersion": "3"},
        "spec": {"town": "t", "rig": "app", "beads": ["y"]},
    }
    store.observe("Convoy", convoy)
    before = town.finished.view().versions["c"]
    store.observe("Bead", raw_bead("y", 4), deleted=True)
    assert town.finished.view().versions["c"] > before
    store.observe("Convoy", convoy, deleted=True)
    assert "y" not in town.finished.listers


def test_a_merged_request_is_counted_once_it_is_held_as_finished() -> None:
    store = Store()
    town = store.observe("Town", raw_town())
    assert town is not None
    mr = raw_bead("x-mr-1", 2, phase="closed", type="merge_request")
    mr["spec"]["mergeRequest"] = {"sourceBead": "x", "branch": "b", "targetBranch": "main"}
    store.observe("Bead", mr)  # the write's result, seen before the counters run
    assert "x-mr-1" in town.finished
    before = metrics.MERGES.labels("t")._value.get()
    close = TransitionBead(
        bead="x-mr-1",
        from_phase=BeadPhase.IN_PROGRESS,
        to_phase=BeadPhase.CLOSED,
        now=datetime(2026, 3, 1, tzinfo=UTC),
        reason="Merged",
    )
    count_outcome(town, close)
    assert metrics.MERGES.labels("t")._value.get() == before + 1
