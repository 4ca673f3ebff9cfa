"""Pure builders of agent Pods (their identities are built by `gastown.kube.identity`).

Every agent dispatch generation gets exactly one Pod with a deterministic name, so creating it
twice is harmless. The Pod runs `gastown agent run` with the agent's identity in its
environment; credentials reach it only through Secret references; it runs under restricted pod
security (non-root, no privilege escalation, RuntimeDefault seccomp, all capabilities dropped,
read-only root filesystem with emptyDirs for the workspace, HOME and /tmp).
"""

from __future__ import annotations

from typing import Any

from gastown.kube import labels
from gastown.kube.identity import owner_reference
from gastown.model import Agent, Town
from gastown.model.enums import AgentRole, MergeStrategy
from gastown.model.town import Rig
from gastown.reconcile.names import pod_name

WORKSPACE = "/workspace"
HOME = "/home/gastown"
"""The agent's HOME: an emptyDir of its own, so it exists and is writable from the first moment
(git config --global, the coding-agent CLIs' settings and sessions) and stays out of the clone."""
GIT_CREDENTIALS_DIR = "/var/run/gastown/git"
PR_TOKEN_DIR = "/var/run/gastown/pr"
SECRET_ENV = "GASTOWN_SECRET_ENV"
"""Names the secret environment variables of the pod (see `gastown.agent.redaction`)."""
AGENT_UID = 1000


def _rig(town: Town, name: str | None) -> Rig | None:
    return next((rig for rig in town.spec.rigs if rig.name == name), None)


def _env(town: Town, agent: Agent, generation: int, bead: str | None, rig: Rig | None) -> list[Any]:
    env: list[dict[str, Any]] = [
        {"name": "GASTOWN_TOWN", "value": town.name},
        {
            "name": "GASTOWN_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        {"name": "GASTOWN_AGENT", "value": agent.name},
        {"name": "GASTOWN_ROLE", "value": agent.spec.role.value},
        {"name": "GASTOWN_GENERATION", "value": str(generation)},
        {"name": "GASTOWN_WORKDIR", "value": WORKSPACE},
        {"name": "GASTOWN_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "HOME", "value": HOME},
    ]
    if agent.spec.rig:
        env.append({"name": "GASTOWN_RIG", "value": agent.spec.rig})
    if bead:
        env.append({"name": "GASTOWN_BEAD", "value": bead})
    if rig and rig.credentials_secret:
        env.append({"name": "GASTOWN_GIT_CREDENTIALS_DIR", "value": GIT_CREDENTIALS_DIR})
    if _needs_pr_token(agent, rig):
        env.append({"name": "GASTOWN_PR_TOKEN_FILE", "value": f"{PR_TOKEN_DIR}/token"})
    env.extend({"name": var.name, "value": var.value} for var in town.spec.agent.env)
    env.extend(
        {
            "name": var.name,
            "valueFrom": {
                "secretKeyRef": {"name": var.secret_key_ref.name, "key": var.secret_key_ref.key}
            },
        }
        for var in town.spec.agent.secret_env
    )
    if town.spec.agent.secret_env:
        # Names only: the runtime reads these variables' values to redact them everywhere.
        # Last, so that a plain `env` entry of the same name cannot shorten the list.
        names = ",".join(var.name for var in town.spec.agent.secret_env)
        env.append({"name": SECRET_ENV, "value": names})
    return env


def _needs_pr_token(agent: Agent, rig: Rig | None) -> bool:
    return bool(
        agent.spec.role is AgentRole.REFINERY
        and rig is not None
        and rig.merge_strategy is MergeStrategy.PR
        and rig.pull_requests is not None
    )


def _volumes(agent: Agent, rig: Rig | None) -> tuple[list[Any], list[Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "workspace", "emptyDir": {}},
        {"name": "home", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "workspace", "mountPath": WORKSPACE},
        {"name": "home", "mountPath": HOME},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if rig and rig.credentials_secret:
        volumes.append(
            {
                "name": "git-credentials",
                "secret": {"secretName": rig.credentials_secret, "defaultMode": 0o400},
            }
        )
        mounts.append(
            {"name": "git-credentials", "mountPath": GIT_CREDENTIALS_DIR, "readOnly": True}
        )
    if _needs_pr_token(agent, rig) and rig and rig.pull_requests:
        ref = rig.pull_requests.token_secret
        volumes.append(
            {
                "name": "pr-token",
                "secret": {
                    "secretName": ref.name,
                    "defaultMode": 0o400,
                    "items": [{"key": ref.key, "path": "token"}],
                },
            }
        )
        mounts.append({"name": "pr-token", "mountPath": PR_TOKEN_DIR, "readOnly": True})
    return volumes, mounts


def _resources(town: Town) -> dict[str, Any]:
    resources = town.spec.agent.resources
    return resources.to_api() if resources else {}


def build_pod(
    town: Town,
    agent: Agent,
    agent_uid: str,
    generation: int,
    bead: str | None,
    service_account: str,
) -> dict[str, Any]:
    """The Pod of one dispatch generation of an agent, running as `service_account`."""
    rig = _rig(town, agent.spec.rig)
    volumes, mounts = _volumes(agent, rig)
    runtime = town.spec.agent
    pod_labels = {
        **labels.common(town.name),
        labels.COMPONENT: "agent",
        labels.AGENT: labels.value(agent.name),
        labels.ROLE: agent.spec.role.value,
        labels.GENERATION: str(generation),
    }
    # Label values are cut at 63 characters; the operator reads the full names from these.
    annotations = {labels.TOWN: town.name, labels.AGENT: agent.name}
    if agent.spec.rig:
        pod_labels[labels.RIG] = agent.spec.rig
    if bead:
        pod_labels[labels.BEAD] = labels.value(bead)
        annotations[labels.BEAD] = bead
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": service_account,
        "automountServiceAccountToken": True,
        "terminationGracePeriodSeconds": runtime.termination_grace_seconds,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": AGENT_UID,
            "runAsGroup": AGENT_UID,
            "fsGroup": AGENT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "agent",
                "image": runtime.image,
                "imagePullPolicy": runtime.image_pull_policy,
                "command": ["gastown", "agent", "run"],
                "workingDir": WORKSPACE,
                "env": _env(town, agent, generation, bead, rig),
                "resources": _resources(town),
                "volumeMounts": mounts,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            }
        ],
        "volumes": volumes,
    }
    if runtime.node_selector:
        spec["nodeSelector"] = dict(runtime.node_selector)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(agent.name, generation),
            "labels": pod_labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference("Agent", agent.name, agent_uid)],
        },
        "spec": spec,
    }
