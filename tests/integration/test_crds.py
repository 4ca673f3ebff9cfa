"""The CRDs on a real API server: established, samples round-trip, status, GC, printer columns."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from gastown.devtools.controlplane import REPO_ROOT, ControlPlane
from gastown.model.common import GROUP, VERSION
from gastown.model.resources import BY_KIND
from tests.support.api import Api, eventually

pytestmark = pytest.mark.cluster

SAMPLES = sorted((REPO_ROOT / "manifests" / "samples").glob("*.yaml"))
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


def load(path: Path) -> dict[str, Any]:
    """One sample object."""
    obj: dict[str, Any] = yaml.safe_load(path.read_text())
    return obj


def test_every_crd_is_established(control_plane: ControlPlane) -> None:
    out = control_plane.kubectl(
        "get",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=gastown",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}="
        '{.status.conditions[?(@.type=="Established")].status} {end}',
    ).stdout.split()
    assert sorted(out) == [
        "agents.gastown.dev=True",
        "beads.gastown.dev=True",
        "convoys.gastown.dev=True",
        "towns.gastown.dev=True",
    ]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_sample_round_trips_with_status_subresource(api: Api, namespace: str, sample: Path) -> None:
    obj = load(sample)
    kind, name = obj["kind"], obj["metadata"]["name"]
    created = api.create(namespace, obj)
    assert created.status == 201, created.message
    got = api.get(kind, namespace, name)
    assert got.status == 200
    # The API server's defaults and the models' defaults agree: both parse to the same spec.
    model = BY_KIND[kind]
    assert model.from_api(got.body).spec == model.from_api(obj).spec

    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "Testing",
        "message": "set by a test",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    patched = api.merge_patch(
        kind, namespace, name, {"status": {"conditions": [condition]}}, sub="status"
    )
    assert patched.status == 200, patched.message
    assert api.get(kind, namespace, name).body["status"]["conditions"][0]["reason"] == "Testing"
    # A spec change through /status is ignored: only status is written there.
    api.merge_patch(kind, namespace, name, {"metadata": {"labels": {"x": "y"}}}, sub="status")
    assert "x" not in api.get(kind, namespace, name).body["metadata"].get("labels", {})

    assert api.delete(kind, namespace, name).status == 200
    eventually(lambda: api.get(kind, namespace, name).status == 404, 10, f"{kind} deleted")


def test_status_written_through_the_main_resource_is_dropped(api: Api, namespace: str) -> None:
    """With the status subresource, status in a create/update of the object is ignored."""
    bead = load(REPO_ROOT / "manifests" / "samples" / "bead.yaml")
    bead["status"] = {"phase": "closed", "assignee": "someone"}
    assert api.create(namespace, bead).status == 201
    body = api.get("Bead", namespace, bead["metadata"]["name"]).body
    assert body.get("status", {}).get("phase") != "closed"
    api.merge_patch("Bead", namespace, "fix-typo", {"status": {"phase": "closed"}})
    body = api.get("Bead", namespace, bead["metadata"]["name"]).body
    assert body.get("status", {}).get("phase") != "closed"


def test_defaults_fill_the_policy(api: Api, namespace: str) -> None:
    town = load(REPO_ROOT / "manifests" / "samples" / "town.yaml")
    assert api.create(namespace, town).status == 201
    spec = api.get("Town", namespace, "demo").body["spec"]
    assert spec["policy"]["gupp"] == {
        "warnSeconds": 900,
        "escalateSeconds": 3600,
        "forceStopSeconds": 7200,
    }
    assert spec["policy"]["retry"]["backoffSeconds"] == [120, 120, 300, 600, 1800]
    assert spec["rigs"][0]["mergeStrategy"] == "direct"


def test_deleting_an_owner_garbage_collects_its_beads(api: Api, namespace: str) -> None:
    convoy = load(REPO_ROOT / "manifests" / "samples" / "convoy.yaml")
    created = api.create(namespace, convoy)
    assert created.status == 201
    owner = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Convoy",
        "name": "login-page",
        "uid": created.body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    bead = load(REPO_ROOT / "manifests" / "samples" / "bead.yaml")
    bead["metadata"]["ownerReferences"] = [owner]
    assert api.create(namespace, bead).status == 201
    assert api.delete("Convoy", namespace, "login-page").status == 200
    # kube-controller-manager's garbage collector discovers new CRDs periodically: poll.
    eventually(lambda: api.get("Bead", namespace, "fix-typo").status == 404, 90, "GC of the bead")


def _table(api: Api, kind: str, namespace: str) -> tuple[list[str], list[list[Any]]]:
    resp = api.call("GET", Api.path(kind, namespace), accept=TABLE)
    assert resp.status == 200, resp.message
    names = [col["name"] for col in resp.body["columnDefinitions"]]
    return names, [row["cells"] for row in resp.body["rows"]]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            "Town",
            [
                "Name",
                "Ready",
                "Reason",
                "Mode",
                "Open",
                "Working",
                "Review",
                "Closed",
                "Failed",
                "Today$",
                "Spend$",
                "Summary",
                "Age",
            ],
        ),
        (
            "Bead",
            [
                "Name",
                "Type",
                "Rig",
                "Phase",
                "Assignee",
                "Attempts",
                "Cost$",
                "Reason",
                "Title",
                "Age",
            ],
        ),
        (
            "Convoy",
            [
                "Name",
                "Phase",
                "Progress",
                "Failed",
                "Cost$",
                "Budget$",
                "Mode",
                "Branch",
                "Reason",
                "Age",
            ],
        ),
        ("Agent", ["Name", "Role", "Rig", "Phase", "Hook", "Gen", "Pod", "Heartbeat", "Age"]),
    ],
)
def test_printer_columns_through_the_table_api(
    api: Api, namespace: str, kind: str, expected: list[str]
) -> None:
    sample = next(load(p) for p in SAMPLES if load(p)["kind"] == kind)
    assert api.create(namespace, sample).status == 201
    names, rows = _table(api, kind, namespace)
    assert names == expected
    assert rows[0][0] == sample["metadata"]["name"]


def test_printer_columns_show_status(api: Api, namespace: str, control_plane: ControlPlane) -> None:
    bead = copy.deepcopy(load(REPO_ROOT / "manifests" / "samples" / "bead.yaml"))
    assert api.create(namespace, bead).status == 201
    status = {
        "phase": "in_progress",
        "assignee": "demo-polecat-1",
        "attempts": 2,
        "reason": "Dispatched",
    }
    assert (
        api.merge_patch("Bead", namespace, "fix-typo", {"status": status}, sub="status").status
        == 200
    )
    names, rows = _table(api, "Bead", namespace)
    row = dict(zip(names, rows[0], strict=True))
    assert (row["Phase"], row["Assignee"], row["Attempts"], row["Reason"]) == (
        "in_progress",
        "demo-polecat-1",
        2,
        "Dispatched",
    )
    out = control_plane.kubectl("get", "gastown", "-n", namespace).stdout
    assert "fix-typo" in out
    assert "in_progress" in out


def test_kubectl_explain_shows_descriptions(control_plane: ControlPlane) -> None:
    out = control_plane.kubectl("explain", "town.spec.rigs.mergeStrategy").stdout
    assert "the refinery merges and pushes" in out
    out = control_plane.kubectl("explain", "bead.spec.dependsOn").stdout
    assert "must be closed" in out
