"""The pure builders of agent Pods and per-agent identities."""

from __future__ import annotations

from typing import Any

import pytest

from gastown.kube.identity import (
    POLICY_NAME,
    agent_status_policy,
    build_identity,
    build_town_identity,
    identity_name,
    town_identity_name,
)
from gastown.kube.pods import build_pod
from gastown.model import Agent, Town

TOWN = Town.from_api(
    {
        "metadata": {"name": "demo", "namespace": "ns"},
        "spec": {
            "rigs": [
                {
                    "name": "app",
                    "gitUrl": "https://git.example.com/a.git",
                    "credentialsSecret": "git-creds",
                },
                {
                    "name": "lib",
                    "gitUrl": "https://git.example.com/l.git",
                    "mergeStrategy": "pr",
                    "pullRequests": {
                        "kind": "github",
                        "apiUrl": "https://api.example.com",
                        "repository": "acme/lib",
                        "tokenSecret": {"name": "gh", "key": "token"},
                    },
                },
            ],
            "agent": {
                "image": "agent:1",
                "env": [{"name": "MODE", "value": "fast"}],
                "secretEnv": [
                    {"name": "API_KEY", "secretKeyRef": {"name": "keys", "key": "anthropic"}}
                ],
                "resources": {"limits": {"memory": "2Gi"}},
                "terminationGraceSeconds": 45,
            },
        },
    }
)


def agent(role: str = "polecat", rig: str = "app", name: str = "demo-polecat-app-1") -> Agent:
    result: Agent = Agent.from_api(
        {
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"town": "demo", "role": role, "rig": rig, "hook": "b1", "generation": 3},
        }
    )
    return result


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]
    }


def test_pod_name_and_labels_are_deterministic() -> None:
    first = build_pod(TOWN, agent(), "uid-1", 3, "b1", "sa")
    again = build_pod(TOWN, agent(), "uid-1", 3, "b1", "sa")
    assert first == again
    assert first["metadata"]["name"] == "demo-polecat-app-1-g3"
    labels = first["metadata"]["labels"]
    assert labels["gastown.dev/generation"] == "3"
    assert labels["gastown.dev/bead"] == "b1"


def test_pod_is_owned_by_its_agent_and_never_restarts() -> None:
    pod = build_pod(TOWN, agent(), "uid-1", 3, "b1", "sa")
    assert pod["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "gastown.dev/v1alpha1",
            "kind": "Agent",
            "name": "demo-polecat-app-1",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 45


def test_pod_security_is_restricted() -> None:
    pod = build_pod(TOWN, agent(), "uid-1", 3, "b1", "sa")
    spec = pod["spec"]
    container = spec["containers"][0]["securityContext"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["readOnlyRootFilesystem"] is True


def test_home_exists_and_is_writable_outside_the_workspace() -> None:
    # The root filesystem is read-only: HOME must be a volume of its own, or git config
    # --global and the coding-agent CLIs fail; and it must not sit inside the clone.
    pod = build_pod(TOWN, agent(), "uid-1", 3, "b1", "sa")
    home = env_of(pod)["HOME"]
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert home in mounts
    assert not mounts[home].get("readOnly", False)
    assert "emptyDir" in volumes[mounts[home]["name"]]
    assert not home.startswith(pod["spec"]["containers"][0]["workingDir"] + "/")


def test_identity_and_generation_are_in_the_environment() -> None:
    env = env_of(build_pod(TOWN, agent(), "uid-1", 3, "b1", "sa"))
    assert env["GASTOWN_TOWN"] == "demo"
    assert env["GASTOWN_AGENT"] == "demo-polecat-app-1"
    assert env["GASTOWN_ROLE"] == "polecat"
    assert env["GASTOWN_RIG"] == "app"
    assert env["GASTOWN_BEAD"] == "b1"
    assert env["GASTOWN_GENERATION"] == "3"
    assert env["MODE"] == "fast"


def test_credentials_only_through_secret_references() -> None:
    pod = build_pod(TOWN, agent(), "uid-1", 3, "b1", "sa")
    env = env_of(pod)
    assert env["API_KEY"] == {"secretKeyRef": {"name": "keys", "key": "anthropic"}}
    secrets = [v for v in pod["spec"]["volumes"] if "secret" in v]
    assert secrets == [
        {"name": "git-credentials", "secret": {"secretName": "git-creds", "defaultMode": 0o400}}
    ]
    assert env["GASTOWN_GIT_CREDENTIALS_DIR"] == "/var/run/gastown/git"


def test_runtime_is_told_which_variables_are_secret_by_name_only() -> None:
    pod = build_pod(TOWN, agent(), "uid-1", 3, "b1", "sa")
    entries = pod["spec"]["containers"][0]["env"]
    assert entries[-1] == {"name": "GASTOWN_SECRET_ENV", "value": "API_KEY"}
    bare = Town.from_api({**TOWN.to_api(), "spec": {**TOWN.spec.to_api(), "agent": {"image": "a"}}})
    assert "GASTOWN_SECRET_ENV" not in env_of(build_pod(bare, agent(), "uid-1", 3, "b1", "sa"))


@pytest.mark.parametrize(
    ("role", "rig", "mounted"),
    [
        ("refinery", "lib", True),
        ("polecat", "lib", False),
        ("refinery", "app", False),
    ],
)
def test_pr_token_only_for_the_refinery_of_a_pr_rig(role: str, rig: str, mounted: bool) -> None:
    pod = build_pod(TOWN, agent(role, rig), "uid-1", 1, None, "sa")
    names = {v["name"] for v in pod["spec"]["volumes"]}
    assert ("pr-token" in names) is mounted
    assert ("GASTOWN_PR_TOKEN_FILE" in env_of(pod)) is mounted


def test_resources_come_from_the_town() -> None:
    pod = build_pod(TOWN, agent(), "uid-1", 3, "b1", "sa")
    assert pod["spec"]["containers"][0]["resources"] == {"limits": {"memory": "2Gi"}}
    assert pod["spec"]["containers"][0]["image"] == "agent:1"


def test_identity_grants_only_the_own_agent() -> None:
    objects = dict(build_identity(TOWN, agent(), "uid-1", "ns"))
    role = objects["Role"]
    agent_rules = [r for r in role["rules"] if any(x.startswith("agents") for x in r["resources"])]
    assert all(r["resourceNames"] == ["demo-polecat-app-1"] for r in agent_rules)
    assert not any("secrets" in r["resources"] for r in role["rules"])
    assert all("*" not in r["verbs"] for r in role["rules"])
    assert objects["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": identity_name("demo-polecat-app-1"), "namespace": "ns"}
    ]
    assert build_pod(TOWN, agent(), "uid-1", 3, "b1", "sa")["spec"]["serviceAccountName"] == "sa"


def test_town_identity_is_owned_by_the_town_and_matched_by_the_policy() -> None:
    objects = dict(build_town_identity(TOWN, "town-uid", "ns", ["demo-polecat-app-2", "x"]))
    name = town_identity_name("demo")
    for body in objects.values():
        assert body["metadata"]["name"] == name
        assert body["metadata"]["ownerReferences"][0]["kind"] == "Town"
        assert body["metadata"]["ownerReferences"][0]["uid"] == "town-uid"
    role = objects["Role"]
    assert not any("secrets" in r["resources"] for r in role["rules"])
    assert all("*" not in r["verbs"] for r in role["rules"])
    writes = [r for r in role["rules"] if {"patch", "update"} & set(r["verbs"])]
    assert [r["resources"] for r in writes] == [["agents/status"]]
    # Only the town's own Agents, by name; never a watch (the runtime reads by name only).
    agent_rules = [r for r in role["rules"] if r["resources"][0].startswith("agents")]
    assert all(r["resourceNames"] == ["demo-polecat-app-2", "x"] for r in agent_rules)
    assert not any("watch" in r["verbs"] or "list" in r["verbs"] for r in role["rules"])
    # The policy's match condition selects exactly this naming scheme.
    policy, binding = agent_status_policy()
    condition = policy["spec"]["matchConditions"][0]["expression"]
    assert name.startswith("gastown-agents-")
    assert "'gastown-agents-'" in condition
    assert policy["metadata"]["name"] == binding["spec"]["policyName"] == POLICY_NAME
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert policy["spec"]["failurePolicy"] == "Fail"


@pytest.mark.parametrize(
    "town",
    ["demo", "a" * 63, "b" * 253],
)
def test_town_identity_names_are_valid_and_keep_the_prefix(town: str) -> None:
    name = town_identity_name(town)
    assert len(name) <= 253  # a ServiceAccount name is a DNS subdomain
    assert name.startswith("gastown-agents-")


def test_status_patch_nulls_removed_keys() -> None:
    from gastown.kube.loop import replacing

    current = {"queue": {"app": 1, "lib": 2}, "summary": "x", "beads": {"open": 1}}
    desired = {"queue": {"lib": 1}, "summary": "y", "beads": {"open": 1}}
    assert replacing(current, desired) == {
        "queue": {"app": None, "lib": 1},
        "summary": "y",
        "beads": {"open": 1},
    }
