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

from collections.abc import Iterable
from typing import Any

from gastown.kube import labels
from gastown.model import Agent, Town
from gastown.model.agent import MAX_REPORTS, RUNTIME_STATUS_FIELDS, AgentStatus
from gastown.model.common import API_VERSION, GROUP
from gastown.reconcile.names import dns_name

POLICY_NAME = "gastown-agent-own-status"
"""Name of the ValidatingAdmissionPolicy and of its binding."""

TOWN_IDENTITY_PREFIX = "gastown-agents"
"""Town identities are named `gastown-agents-<town>`; the policy matches callers by this prefix."""

AGENT_IDENTITY_PREFIX = "gastown-agent"
"""Per-agent identities are named `gastown-agent-<agent>` (note: no `s`; distinct prefixes)."""

POD_NAME_CLAIM = "authentication.kubernetes.io/pod-name"
"""User-info extra that the API server adds for a token bound to a Pod (the pod's name)."""

_ADMISSION_VERSION = "admissionregistration.k8s.io/v1"


def identity_name(agent: str) -> str:
    """Name of an agent's own ServiceAccount, Role and RoleBinding (agent identity mode)."""
    return dns_name(AGENT_IDENTITY_PREFIX, agent)


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


def _role_rules(agent_rules: list[dict[str, Any]], town: str) -> list[dict[str, Any]]:
    """The agent rules plus what every agent reads: its Town (by name), beads and convoys.

    Beads and convoys are readable by name only (`get`, never `list` or `watch`): their names
    are chosen by people and cannot be listed in advance (see docs/helm.md, "Agent identities").
    """
    return [
        *agent_rules,
        {"apiGroups": [GROUP], "resources": ["towns"], "resourceNames": [town], "verbs": ["get"]},
        {"apiGroups": [GROUP], "resources": ["beads", "convoys"], "verbs": ["get"]},
    ]


def _agent_rules(agents: list[str]) -> list[dict[str, Any]]:
    """Read and status-patch exactly the named Agents (what the runtime calls; no watch).

    Never called with an empty list: an empty `resourceNames` would mean every Agent.
    """
    assert agents, "an agent rule must name its Agents"
    return [
        {"apiGroups": [GROUP], "resources": ["agents"], "resourceNames": agents, "verbs": ["get"]},
        {
            "apiGroups": [GROUP],
            "resources": ["agents/status"],
            "resourceNames": agents,
            "verbs": ["patch"],
        },
    ]


def town_role_rules(town: str, agents: Iterable[str]) -> list[dict[str, Any]]:
    """Rules of a town's shared agent Role: the town's own Agents by name, and its work.

    The operator keeps `agents` equal to the town's Agents (see `Applier._allow_agents`), so a
    town's pods cannot read or write the Agents of another town in the same namespace. Which
    Agent of its own town a pod may write is then decided by the admission policy.
    """
    return _role_rules(_agent_rules(sorted(set(agents))), town)


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
        "rules": _role_rules(agent_rules, town),
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
    meta_labels = {
        **labels.common(town.name),
        labels.AGENT: labels.value(agent.name),
        labels.COMPONENT: "agent",
    }
    rules = _agent_rules([agent.name])
    owner = owner_reference("Agent", agent.name, agent_uid)
    return _identity(identity_name(agent.name), namespace, meta_labels, owner, rules, town.name)


def build_town_identity(
    town: Town, town_uid: str, namespace: str, agents: Iterable[str]
) -> list[tuple[str, dict[str, Any]]]:
    """The one ServiceAccount, Role and RoleBinding shared by every agent pod of a town.

    The Role allows reading and patching the status of the town's own Agents (`agents`, kept
    up to date by the operator); the admission policy (`agent_status_policy`) narrows every
    write to the caller's own Agent and to the fields an agent owns.
    """
    meta_labels = {**labels.common(town.name), labels.COMPONENT: "agent"}
    rules = _agent_rules(sorted(set(agents)))
    owner = owner_reference("Town", town.name, town_uid)
    return _identity(town_identity_name(town.name), namespace, meta_labels, owner, rules, town.name)


def operator_owned_status_fields() -> list[str]:
    """API names of the Agent status fields only the operator writes (all but the runtime's)."""
    names = (field.alias or name for name, field in AgentStatus.model_fields.items())
    return [name for name in names if name not in RUNTIME_STATUS_FIELDS]


def _present(obj: str, field: str) -> str:
    """CEL: `obj.status.<field>` exists."""
    return f"(has({obj}.status) && has({obj}.status.{field}))"


def _unchanged(field: str) -> str:
    """CEL: the write leaves `status.<field>` as it was (present and equal, or absent in both)."""
    new, old = _present("object", field), _present("oldObject", field)
    return f"{new} ? ({old} && object.status.{field} == oldObject.status.{field}) : !{old}"


def _policy_variables() -> list[dict[str, str]]:
    """Named CEL expressions the validations share."""
    caller = "request.userInfo.username"
    return [
        {"name": "account", "expression": f"{caller}.split(':')[3]"},
        {
            "name": "townIdentity",
            "expression": f"variables.account.startsWith('{TOWN_IDENTITY_PREFIX}-')",
        },
        {
            "name": "applied",
            "expression": f"{_present('oldObject', 'appliedReportSeq')} ? "
            "oldObject.status.appliedReportSeq : 0",
        },
        {
            "name": "oldReports",
            "expression": f"{_present('oldObject', 'reports')} ? oldObject.status.reports : []",
        },
        {
            "name": "newReports",
            "expression": f"{_present('object', 'reports')} ? object.status.reports : []",
        },
    ]


def _policy_validations() -> list[dict[str, str]]:
    """What an agent token's write of `agents/status` must satisfy, each with its message."""
    claim = f"request.userInfo.extra['{POD_NAME_CLAIM}']"
    validations = [
        {
            # The operator writes the status when it dispatches, before any pod exists; until
            # then there is nothing an agent may write (and nothing to compare a write with:
            # the defaults of a status that does not exist yet are not applied).
            "expression": "has(oldObject.status)",
            "message": "an agent may write its Agent's status only after it was dispatched",
            "reason": "Forbidden",
        },
        {
            # Town identity: one ServiceAccount for every pod of the town, so the pod the token
            # is bound to must be the one the Agent's status names (written before the pod).
            "expression": (
                "!variables.townIdentity || ("
                f"{_present('oldObject', 'pod')} && has(request.userInfo.extra) && "
                f"'{POD_NAME_CLAIM}' in request.userInfo.extra && "
                f"{claim} == [oldObject.status.pod])"
            ),
            "message": "an agent pod may write only its own Agent's status",
            "reason": "Forbidden",
        },
    ]
    validations += [
        {
            "expression": _unchanged(field),
            "message": f"status.{field} is written by the operator only",
            "reason": "Forbidden",
        }
        for field in operator_owned_status_fields()
    ]
    validations += [
        {
            # A report the operator has applied is history: it may not be rewritten, nor may a
            # report be slipped in below appliedReportSeq (new reports are appended above it).
            "expression": (
                "variables.newReports.all(r, r.seq > variables.applied || "
                "variables.oldReports.exists(o, o.seq == r.seq && o == r))"
            ),
            "message": "reports up to status.appliedReportSeq are applied and cannot be changed "
            "or added",
            "reason": "Forbidden",
        },
        {
            # Applied reports leave the list only to make room (the runtime's `add_report`).
            "expression": (
                f"size(variables.newReports) >= {MAX_REPORTS} || "
                "variables.oldReports.all(o, o.seq > variables.applied || "
                "variables.newReports.exists(r, r.seq == o.seq))"
            ),
            "message": f"applied reports may be removed only when the list is full "
            f"({MAX_REPORTS} reports)",
            "reason": "Forbidden",
        },
    ]
    return validations


def agent_status_policy() -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy (and its binding) that scopes agent identities.

    It applies to every write of `agents/status` by an agent ServiceAccount of either identity
    mode (`gastown-agents-<town>`, `gastown-agent-<agent>`) and admits it only if:

    * town identity: the caller's token is bound to the pod named in the Agent's current
      `status.pod` (tokens not bound to a pod, e.g. `kubectl create token`, carry no pod name
      and are refused); per-agent identity: RBAC already names the one Agent;
    * every operator-owned status field is left as it was (one validation per field, so the
      403 names the field);
    * reports the operator has applied (seq <= appliedReportSeq) are neither changed nor added,
      and leave the list only when it is full (trimming the oldest to make room).
    """
    caller = "request.userInfo.username"
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
                    "name": "agent-identity",
                    "expression": (
                        f"{caller}.startsWith('system:serviceaccount:') && "
                        f"size({caller}.split(':')) == 4 && "
                        f"({caller}.split(':')[3].startsWith('{TOWN_IDENTITY_PREFIX}-') || "
                        f"{caller}.split(':')[3].startsWith('{AGENT_IDENTITY_PREFIX}-'))"
                    ),
                }
            ],
            "variables": _policy_variables(),
            "validations": _policy_validations(),
        },
    }
    binding = {
        "apiVersion": _ADMISSION_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY_NAME, "labels": common},
        "spec": {"policyName": POLICY_NAME, "validationActions": ["Deny"]},
    }
    return [policy, binding]


def policy_weakness(policy: dict[str, Any] | None, binding: dict[str, Any] | None) -> str | None:
    """Why the installed policy and binding do not protect agent status writes, or None.

    Compares what the API server holds with what `agent_status_policy` builds: both objects
    present, the binding denying (`Deny`) for every namespace and object, and the policy failing
    closed, matching the same requests under the same conditions and carrying every validation.
    Extra validations only make it stricter and are accepted.
    """
    expected_policy, expected_binding = (obj["spec"] for obj in agent_status_policy())
    if policy is None:
        return f"ValidatingAdmissionPolicy {POLICY_NAME} is missing"
    if binding is None:
        return f"ValidatingAdmissionPolicyBinding {POLICY_NAME} is missing"
    spec, bound = policy.get("spec") or {}, binding.get("spec") or {}
    problems = [
        *_binding_problems(bound, expected_binding),
        *_policy_problems(spec, expected_policy),
    ]
    return "; ".join(problems) or None


def _binding_problems(bound: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    problems = []
    if bound.get("policyName") != expected["policyName"]:
        problems.append(f"the binding points at policy {bound.get('policyName')!r}")
    if "Deny" not in (bound.get("validationActions") or []):
        problems.append("the binding's validationActions do not include Deny")
    if bound.get("paramRef") or not _selects_everything(bound.get("matchResources") or {}):
        problems.append("the binding is narrowed by matchResources or paramRef")
    return problems


def _policy_problems(spec: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    problems = []
    if spec.get("failurePolicy", "Fail") != "Fail":
        problems.append("the policy's failurePolicy is not Fail")
    constraints = spec.get("matchConstraints") or {}
    rules = expected["matchConstraints"]["resourceRules"]
    if not _contains(constraints.get("resourceRules"), rules) or not _selects_everything(
        constraints
    ):
        problems.append("the policy's matchConstraints differ")
    if not _contains(spec.get("matchConditions"), expected["matchConditions"]):
        problems.append("the policy's matchConditions differ")
    if not _contains(spec.get("variables"), expected["variables"]):
        problems.append("the policy's variables differ")
    held = {(v.get("expression"), v.get("message")) for v in spec.get("validations") or []}
    missing = [v for v in expected["validations"] if (v["expression"], v["message"]) not in held]
    if missing:
        problems.append(f"the policy lacks {len(missing)} of its validations")
    return problems


def _contains(held: Any, wanted: Any) -> bool:
    """True if `held` is `wanted` plus only what the API server adds (defaults such as a rule's
    `scope`): every key of a wanted object is held with a matching value, lists pairwise."""
    if isinstance(wanted, dict):
        return isinstance(held, dict) and all(
            key in held and _contains(held[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(held, list)
            and len(held) == len(wanted)
            and all(_contains(h, w) for h, w in zip(held, wanted, strict=True))
        )
    return bool(held == wanted)


def _selects_everything(match: dict[str, Any]) -> bool:
    """True if match resources/constraints select every namespace and object (the default)."""
    return (
        not (match.get("namespaceSelector") or {})
        and not (match.get("objectSelector") or {})
        and not match.get("excludeResourceRules")
        and all(key in _MATCH_KEYS for key in match)
    )


_MATCH_KEYS = {
    "namespaceSelector",
    "objectSelector",
    "excludeResourceRules",
    "resourceRules",
    "matchPolicy",
}
