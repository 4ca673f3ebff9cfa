"""Bad input is rejected by the API server with a message that says what is wrong."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.api import Api

pytestmark = pytest.mark.cluster

Obj = dict[str, Any]

TOWN: Obj = {
    "apiVersion": "gastown.dev/v1alpha1",
    "kind": "Town",
    "metadata": {"name": "t"},
    "spec": {
        "rigs": [{"name": "app", "gitUrl": "https://git.example.com/a.git"}],
        "agent": {"image": "agent:1"},
    },
}
BEAD: Obj = {
    "apiVersion": "gastown.dev/v1alpha1",
    "kind": "Bead",
    "metadata": {"name": "b"},
    "spec": {"town": "t", "rig": "app", "title": "Do it"},
}
CONVOY: Obj = {
    "apiVersion": "gastown.dev/v1alpha1",
    "kind": "Convoy",
    "metadata": {"name": "c"},
    "spec": {
        "town": "t",
        "rig": "app",
        "tasks": [{"key": "a", "title": "A"}, {"key": "b", "title": "B"}],
    },
}
AGENT: Obj = {
    "apiVersion": "gastown.dev/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "a"},
    "spec": {"town": "t", "role": "polecat", "rig": "app"},
}


def mutate(base: Obj, change: Callable[[Obj], None]) -> Obj:
    """A deep copy of base with one change applied."""
    obj = copy.deepcopy(base)
    change(obj)
    return obj


def _set(path: str, value: Any) -> Callable[[Obj], None]:
    def change(obj: Obj) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _delete(path: str) -> Callable[[Obj], None]:
    def change(obj: Obj) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return change


# (id, object, fragments that must all appear in the API server's message)
INVALID: list[tuple[str, Obj, list[str]]] = [
    (
        "town-no-rigs",
        mutate(TOWN, _set("spec.rigs", [])),
        ["spec.rigs", "should have at least 1 items"],
    ),
    ("town-missing-agent", mutate(TOWN, _delete("spec.agent")), ["spec.agent", "Required value"]),
    (
        "town-rig-bad-name",
        mutate(TOWN, _set("spec.rigs.0.name", "App_1")),
        ["spec.rigs[0].name", "should match"],
    ),
    (
        "town-rig-bad-url",
        mutate(TOWN, _set("spec.rigs.0.gitUrl", "not a url")),
        ["spec.rigs[0].gitUrl", "should match"],
    ),
    (
        "town-unknown-merge-strategy",
        mutate(TOWN, _set("spec.rigs.0.mergeStrategy", "yolo")),
        ["spec.rigs[0].mergeStrategy", "Unsupported value", '"direct"', '"pr"'],
    ),
    (
        "town-pr-without-provider",
        mutate(TOWN, _set("spec.rigs.0.mergeStrategy", "pr")),
        ["rigs with mergeStrategy pr need pullRequests"],
    ),
    (
        "town-duplicate-rigs",
        mutate(
            TOWN,
            _set("spec.rigs", [{"name": "app", "gitUrl": "/r"}, {"name": "app", "gitUrl": "/s"}]),
        ),
        ["rig names must be unique"],
    ),
    (
        "town-name-over-63",
        mutate(TOWN, _set("metadata.name", "t" * 64)),
        ["a Town name has at most 63 characters", "gastown.dev/town"],
    ),
    (
        "town-image-leading-space",
        mutate(TOWN, _set("spec.agent.image", " agent:1")),
        ["spec.agent.image", "should match"],
    ),
    (
        "town-image-inner-space",
        mutate(TOWN, _set("spec.agent.image", "agent: 1")),
        ["spec.agent.image", "should match"],
    ),
    (
        "town-node-selector-bad-key",
        mutate(TOWN, _set("spec.agent.nodeSelector", {"bad key": "x"})),
        ["spec.agent.nodeSelector", "nodeSelector keys must be label keys"],
    ),
    (
        "town-node-selector-long-key",
        mutate(TOWN, _set("spec.agent.nodeSelector", {"example.com/" + "k" * 64: "x"})),
        ["nodeSelector keys must be label keys"],
    ),
    (
        "town-node-selector-bad-value",
        mutate(TOWN, _set("spec.agent.nodeSelector", {"disk": "-ssd"})),
        ["spec.agent.nodeSelector.disk", "should match"],
    ),
    (
        "town-negative-cap",
        mutate(TOWN, _set("spec.limits", {"maxPolecats": -1})),
        ["spec.limits.maxPolecats", "should be greater than or equal to 0"],
    ),
    (
        "town-absurd-cap",
        mutate(TOWN, _set("spec.limits", {"maxPolecatsPerRig": 100000})),
        ["spec.limits.maxPolecatsPerRig", "should be less than or equal to 100"],
    ),
    (
        "town-unknown-mode",
        mutate(TOWN, _set("spec.mode", "turbo")),
        ["spec.mode", "Unsupported value", '"shadow"'],
    ),
    (
        "town-gupp-out-of-order",
        mutate(
            TOWN,
            _set(
                "spec.policy",
                {"gupp": {"warnSeconds": 4000, "escalateSeconds": 3600, "forceStopSeconds": 7200}},
            ),
        ),
        ["gupp.warnSeconds must be below escalateSeconds"],
    ),
    (
        "town-heartbeat-too-short",
        mutate(TOWN, _set("spec.policy", {"agents": {"heartbeatTimeoutSeconds": 1}})),
        ["spec.policy.agents.heartbeatTimeoutSeconds", "should be greater than or equal to 10"],
    ),
    (
        "town-wrong-type",
        mutate(TOWN, _set("spec.limits", {"maxPolecats": "ten"})),
        ["spec.limits.maxPolecats", "Invalid value", "must be of type integer"],
    ),
    (
        "town-command-agent-without-command",
        mutate(TOWN, _set("spec.agent.codingAgent", {"kind": "command"})),
        ["codingAgent.kind command needs codingAgent.command"],
    ),
    (
        "town-bad-quantity",
        mutate(TOWN, _set("spec.agent.resources", {"limits": {"memory": "lots"}})),
        ["spec.agent.resources.limits.memory", "should match"],
    ),
    (
        "town-secret-env-bad-name",
        mutate(
            TOWN,
            _set(
                "spec.agent.secretEnv",
                [{"name": "1BAD", "secretKeyRef": {"name": "s", "key": "k"}}],
            ),
        ),
        ["spec.agent.secretEnv[0].name", "should match"],
    ),
    (
        "bead-self-dependency",
        mutate(BEAD, _set("spec.dependsOn", ["b"])),
        ["a bead cannot depend on itself"],
    ),
    ("bead-missing-title", mutate(BEAD, _delete("spec.title")), ["spec.title", "Required value"]),
    (
        "bead-overlong-title",
        mutate(BEAD, _set("spec.title", "x" * 300)),
        ["spec.title", "Too long", "256"],
    ),
    (
        "bead-unknown-priority",
        mutate(BEAD, _set("spec.priority", "urgent")),
        ["spec.priority", "Unsupported value", '"critical"'],
    ),
    (
        "bead-unknown-type",
        mutate(BEAD, _set("spec.type", "epic")),
        ["spec.type", "Unsupported value"],
    ),
    (
        "bead-issue-without-rig",
        mutate(BEAD, _delete("spec.rig")),
        ["rig is required for issue, rework and merge_request beads"],
    ),
    (
        "bead-mr-without-details",
        mutate(BEAD, _set("spec.type", "merge_request")),
        ["merge_request beads need mergeRequest"],
    ),
    (
        "bead-invalid-name",
        mutate(BEAD, _set("metadata.name", "Bad_Name")),
        ["metadata.name", "RFC 1123"],
    ),
    (
        "bead-dependency-bad-name",
        mutate(BEAD, _set("spec.dependsOn", ["Not Valid"])),
        ["spec.dependsOn[0]", "should match"],
    ),
    (
        "bead-too-many-dependencies",
        mutate(BEAD, _set("spec.dependsOn", [f"d{i}" for i in range(51)])),
        ["spec.dependsOn", "must have at most 50 items"],
    ),
    (
        "convoy-task-self-dependency",
        mutate(CONVOY, _set("spec.tasks.0.dependsOn", ["a"])),
        ["a task cannot depend on itself"],
    ),
    (
        "convoy-unknown-dependency",
        mutate(CONVOY, _set("spec.tasks.1.dependsOn", ["zzz"])),
        ["every dependsOn must name a task key of this convoy"],
    ),
    (
        "convoy-duplicate-task-keys",
        mutate(
            CONVOY, _set("spec.tasks", [{"key": "a", "title": "A"}, {"key": "a", "title": "B"}])
        ),
        ["spec.tasks[1]", "Duplicate value"],
    ),
    ("convoy-empty", mutate(CONVOY, _set("spec.tasks", [])), ["a convoy needs tasks or beads"]),
    (
        "convoy-unknown-merge-mode",
        mutate(CONVOY, _set("spec.mergeMode", "squash")),
        ["spec.mergeMode", "Unsupported value", '"review-then-land"'],
    ),
    (
        "agent-unknown-role",
        mutate(AGENT, _set("spec.role", "witness")),
        ["spec.role", "Unsupported value", '"polecat"'],
    ),
    (
        "agent-polecat-without-rig",
        mutate(AGENT, _delete("spec.rig")),
        ["polecats and refineries need a rig"],
    ),
    (
        "agent-negative-generation",
        mutate(AGENT, _set("spec.generation", -1)),
        ["spec.generation", "should be greater than or equal to 0"],
    ),
]


def test_there_are_enough_invalid_cases() -> None:
    assert len(INVALID) >= 25


@pytest.mark.parametrize(
    ("obj", "fragments"), [(o, f) for _, o, f in INVALID], ids=[i for i, _, _ in INVALID]
)
def test_invalid_object_is_rejected_with_a_clear_message(
    api: Api, namespace: str, obj: Obj, fragments: list[str]
) -> None:
    response = api.create(namespace, obj)
    assert response.status == 422, (response.status, response.message)
    for fragment in fragments:
        assert fragment in response.message, response.message
    # Nothing else was disturbed: the valid base object of the same kind is still accepted.


# (id, base, update to the spec, fragment) — transition rules evaluated on UPDATE only.
IMMUTABLE: list[tuple[str, Obj, dict[str, Any], str]] = [
    ("bead-town-immutable", BEAD, {"town": "other"}, "town is immutable"),
    ("bead-rig-immutable", BEAD, {"rig": "other"}, "rig is immutable"),
    ("bead-type-immutable", BEAD, {"type": "escalation"}, "type is immutable"),
    (
        "bead-cancel-irreversible",
        mutate(BEAD, _set("spec.cancel", True)),
        {"cancel": False},
        "a cancel cannot be undone",
    ),
    ("convoy-mode-immutable", CONVOY, {"mergeMode": "review-and-merge"}, "mergeMode is immutable"),
    ("convoy-cannot-restage", CONVOY, {"staged": True}, "a started convoy cannot be re-staged"),
    ("agent-role-immutable", AGENT, {"role": "refinery"}, "role is immutable"),
    (
        "agent-generation-monotonic",
        mutate(AGENT, _set("spec.generation", 3)),
        {"generation": 2},
        "generation never decreases",
    ),
]


@pytest.mark.parametrize(
    ("base", "update", "fragment"),
    [(b, u, f) for _, b, u, f in IMMUTABLE],
    ids=[i for i, _, _, _ in IMMUTABLE],
)
def test_transition_rule_rejects_update(
    api: Api, namespace: str, base: Obj, update: dict[str, Any], fragment: str
) -> None:
    created = api.create(namespace, base)
    assert created.status == 201, created.message
    response = api.merge_patch(base["kind"], namespace, base["metadata"]["name"], {"spec": update})
    assert response.status == 422, response.body
    assert fragment in response.message, response.message
    # The rejected update left the object as it was.
    after = api.get(base["kind"], namespace, base["metadata"]["name"]).body
    assert after["metadata"]["generation"] == created.body["metadata"]["generation"]


@pytest.mark.parametrize("base", [TOWN, BEAD, CONVOY, AGENT], ids=lambda o: o["kind"])
def test_valid_base_objects_are_accepted(api: Api, namespace: str, base: Obj) -> None:
    assert api.create(namespace, base).status == 201
