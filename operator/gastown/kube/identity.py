"""Pure builders of agent pod identities, and the admission policy that scopes them.

An agent pod must be able to write its own Agent's status (its reports) and nothing else of its
kind. Two mechanisms give that guarantee; the operator picks one at start-up:

* **town identity** (the default wherever the policy below is installed): one ServiceAccount,
  Role and RoleBinding per Town, created once, owned by the Town. The Role lets the town's pods
  patch `agents/status` in the namespace; the ValidatingAdmissionPolicy `gastown-agent-own-status`
  then admits such a write only if the caller's token is bound to the Pod the Agent's status
  names as its current pod (`status.pod`, written by the operator before the pod exists). A pod
  of another agent, or an older generation of the same agent, is refused by the API server.
  A dispatch costs no identity writes at all.
* **agent identity** (fallback when the policy is absent): a ServiceAccount, Role and
  RoleBinding per Agent, owned by it, whose Role names that one Agent in `resourceNames`.
  Three extra writes for every new agent.

The policy ships beside the CRDs (`gastown crds` writes it; the chart and the install bundle
carry it) because, like them, it is cluster-scoped and installed by a cluster administrator.
"""

from __future__ import annotations

from typing import Any

from gastown.kube import labels
from gastown.model import Agent, Town
from gastown.model.common import API_VERSION, GROUP
from gastown.reconcile.names import dns_name

POLICY_NAME = "gastown-agent-own-status"
"""Name of the ValidatingAdmissionPolicy and of its binding."""

TOWN_IDENTITY_PREFIX = "gastown-agents"
"""Town identities are named `gastown-agents-<town>`; the policy matches callers by this prefix."""

POD_NAME_CLAIM = "authentication.kubernetes.io/pod-name"
"""User-info extra that the API server adds for a token bound to a Pod (the pod's name)."""

_ADMISSION_VERSION = "admissionregistration.k8s.io/v1"


def identity_name(agent: str) -> str:
    """Name of an agent's own ServiceAccount, Role and RoleBinding (agent identity mode)."""
    return dns_name("gastown-agent", agent)


def town_identity_name(town: str) -> str:
    """Name of a town's shared agent ServiceAccount, Role and RoleBinding (town identity mode)."""
    return dns_name(TOWN_IDENTITY_PREFIX, town)


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    """A controller owner reference to one of our objects."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _identity(
    name: str,
    namespace: str,
    meta_labels: dict[str, str],
    owner: dict[str, Any],
    agent_rules: list[dict[str, Any]],
    town: str,
) -> list[tuple[str, dict[str, Any]]]:
    """ServiceAccount, Role (agent rules plus reading the town's work) and RoleBinding."""
    metadata = {"name": name, "labels": meta_labels, "ownerReferences": [owner]}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata,
        "rules": [
            *agent_rules,
            {
                "apiGroups": [GROUP],
                "resources": ["towns"],
                "resourceNames": [town],
                "verbs": ["get"],
            },
            {"apiGroups": [GROUP], "resources": ["beads", "convoys"], "verbs": ["get"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}
    # Creation order matters: see `Applier._start_pod`.
    return [("ServiceAccount", account), ("Role", role), ("RoleBinding", binding)]


def build_identity(
    town: Town, agent: Agent, agent_uid: str, namespace: str
) -> list[tuple[str, dict[str, Any]]]:
    """ServiceAccount, Role and RoleBinding that let one agent's pod write only its own Agent.

    The Role names the Agent in `resourceNames`, so the pod's token can read and patch the status
    of that one Agent and nothing else of its kind; it may read beads and convoys (its work) and
    its own Town (rig settings). It cannot read Secrets: credentials arrive as mounted volumes.
    """
    meta_labels = {**labels.common(town.name), labels.AGENT: agent.name, labels.COMPONENT: "agent"}
    rules = [
        {
            "apiGroups": [GROUP],
            "resources": ["agents"],
            "resourceNames": [agent.name],
            "verbs": ["get", "watch"],
        },
        {
            "apiGroups": [GROUP],
            "resources": ["agents/status"],
            "resourceNames": [agent.name],
            "verbs": ["get", "patch", "update"],
        },
    ]
    owner = owner_reference("Agent", agent.name, agent_uid)
    return _identity(identity_name(agent.name), namespace, meta_labels, owner, rules, town.name)


def build_town_identity(
    town: Town, town_uid: str, namespace: str
) -> list[tuple[str, dict[str, Any]]]:
    """The one ServiceAccount, Role and RoleBinding shared by every agent pod of a town.

    The Role allows patching any Agent's status in the namespace; the admission policy
    (`agent_status_policy`) narrows every such write to the caller's own Agent.
    """
    meta_labels = {**labels.common(town.name), labels.COMPONENT: "agent"}
    rules = [
        {"apiGroups": [GROUP], "resources": ["agents"], "verbs": ["get", "watch"]},
        {"apiGroups": [GROUP], "resources": ["agents/status"], "verbs": ["get", "patch", "update"]},
    ]
    owner = owner_reference("Town", town.name, town_uid)
    return _identity(town_identity_name(town.name), namespace, meta_labels, owner, rules, town.name)


def agent_status_policy() -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy (and its binding) that scopes town identities.

    It applies to writes of `agents/status` by a ServiceAccount named `gastown-agents-*` and
    admits one only when the caller's token is bound to the pod named in the Agent's current
    `status.pod`, and the write leaves `status.pod` alone. Tokens not bound to a pod (e.g.
    `kubectl create token`) carry no pod name and are refused.
    """
    caller = "request.userInfo.username"
    claim = f"request.userInfo.extra['{POD_NAME_CLAIM}']"
    common = {"app.kubernetes.io/part-of": "gastown"}
    policy = {
        "apiVersion": _ADMISSION_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME, "labels": common},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": ["*"],
                        "operations": ["UPDATE"],  # a PATCH is admitted as an UPDATE
                        "resources": ["agents/status"],
                    }
                ]
            },
            "matchConditions": [
                {
                    "name": "town-agent-identity",
                    "expression": (
                        f"{caller}.startsWith('system:serviceaccount:') && "
                        f"size({caller}.split(':')) == 4 && "
                        f"{caller}.split(':')[3].startsWith('{TOWN_IDENTITY_PREFIX}-')"
                    ),
                }
            ],
            "validations": [
                {
                    "expression": (
                        "has(oldObject.status) && has(oldObject.status.pod) && "
                        f"has(request.userInfo.extra) && '{POD_NAME_CLAIM}' in "
                        f"request.userInfo.extra && {claim} == [oldObject.status.pod]"
                    ),
                    "message": "an agent pod may write only its own Agent's status",
                    "reason": "Forbidden",
                },
                {
                    "expression": (
                        "has(object.status) && has(object.status.pod) && "
                        "object.status.pod == oldObject.status.pod"
                    ),
                    "message": "status.pod is written by the operator only",
                    "reason": "Forbidden",
                },
            ],
        },
    }
    binding = {
        "apiVersion": _ADMISSION_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY_NAME, "labels": common},
        "spec": {"policyName": POLICY_NAME, "validationActions": ["Deny"]},
    }
    return [policy, binding]
