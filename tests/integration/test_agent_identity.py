"""Each agent pod's credentials can write its own Agent's status and nothing else of its kind.

Both mechanisms are proven on the real API server: a per-town identity scoped by the admission
policy (the default where the policy is installed, as in these tests), and the per-agent
identity the operator falls back to without it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gastown.agent.channel import ReportDraft
from gastown.agent.identity import Identity
from gastown.kube.agent_channel import KubeAgentChannel
from gastown.kube.identity import (
    POLICY_NAME,
    build_identity,
    build_town_identity,
    identity_name,
    operator_owned_status_fields,
    policy_weakness,
    town_identity_name,
)
from gastown.kube.rest import RestClient
from gastown.model import Agent, AgentRole, ReportType, Town
from gastown.model.agent import MAX_REPORTS, Activity
from tests.support.api import Api, eventually

pytestmark = pytest.mark.cluster

TOWN: dict[str, Any] = {
    "apiVersion": "gastown.dev/v1alpha1",
    "kind": "Town",
    "metadata": {"name": "demo"},
    "spec": {"rigs": [{"name": "app", "gitUrl": "/srv/app.git"}], "agent": {"image": "agent:1"}},
}


def _agent(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "gastown.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {"town": "demo", "role": "polecat", "rig": "app", "generation": 1},
    }


CORE = {"ServiceAccount": "serviceaccounts", "Role": "roles", "RoleBinding": "rolebindings"}


def _grant(api: Api, namespace: str, agent: dict[str, Any]) -> str:
    """Create the agent's identity as the operator does; return a token of its ServiceAccount."""
    town = Town.from_api(api.get("Town", namespace, "demo").body)
    model = Agent.from_api(agent)
    for kind, body in build_identity(town, model, agent["metadata"]["uid"], namespace):
        group = "/api/v1" if kind == "ServiceAccount" else "/apis/rbac.authorization.k8s.io/v1"
        created = api.call("POST", f"{group}/namespaces/{namespace}/{CORE[kind]}", body)
        assert created.status == 201, created.message
    account = identity_name(model.name)
    token = api.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {"spec": {"expirationSeconds": 600}},
    )
    assert token.status == 201, token.message
    return str(token.body["status"]["token"])


def test_per_agent_token_writes_only_its_own_agent(api: Api, namespace: str) -> None:
    assert api.create(namespace, TOWN).status == 201
    mine = api.create(namespace, _agent("demo-polecat-app-1")).body
    other = api.create(namespace, _agent("demo-polecat-app-2")).body
    agent_api = api.as_token(_grant(api, namespace, mine))
    # Before its dispatch (no status yet) an Agent takes no write from an agent token.
    early = {"status": {"statusMessage": "too early"}}
    refused = agent_api.merge_patch("Agent", namespace, "demo-polecat-app-1", early, sub="status")
    assert refused.status == 403
    assert "only after it was dispatched" in refused.message
    for name in ("demo-polecat-app-1", "demo-polecat-app-2"):
        _dispatched(api, namespace, name, 1)

    report = {"status": {"statusMessage": "working on it"}}
    own = agent_api.merge_patch("Agent", namespace, "demo-polecat-app-1", report, sub="status")
    assert own.status == 200, own.message

    foreign = agent_api.merge_patch("Agent", namespace, "demo-polecat-app-2", report, sub="status")
    assert foreign.status == 403
    assert 'cannot patch resource "agents/status"' in foreign.message
    assert (
        api.get("Agent", namespace, other["metadata"]["name"])
        .body.get("status", {})
        .get("statusMessage")
        is None
    )

    # Not its own spec either: the operator alone decides hook and generation.
    spec = agent_api.merge_patch(
        "Agent", namespace, "demo-polecat-app-1", {"spec": {"generation": 9}}
    )
    assert spec.status == 403
    # And no Secrets: credentials reach pods as mounted volumes, never through the API.
    secrets = agent_api.call("GET", f"/api/v1/namespaces/{namespace}/secrets")
    assert secrets.status == 403
    # It can read its work.
    assert agent_api.get("Town", namespace, "demo").status == 200


# -- one identity per town, scoped by the admission policy -----------------------------------


def _town_identity(api: Api, namespace: str) -> str:
    """Create the town's shared agent identity as the operator does; return its name."""
    town_obj = api.get("Town", namespace, "demo").body
    town = Town.from_api(town_obj)
    agents = [f"demo-polecat-app-{i}" for i in ("1", "2", "probe")]
    for kind, body in build_town_identity(town, town_obj["metadata"]["uid"], namespace, agents):
        group = "/api/v1" if kind == "ServiceAccount" else "/apis/rbac.authorization.k8s.io/v1"
        created = api.call("POST", f"{group}/namespaces/{namespace}/{CORE[kind]}", body)
        assert created.status == 201, created.message
    return town_identity_name("demo")


def _dispatched(api: Api, namespace: str, name: str, generation: int) -> str:
    """An Agent whose status names its current pod, as the operator writes it at dispatch."""
    pod = f"{name}-g{generation}"
    if api.get("Agent", namespace, name).status == 404:
        assert api.create(namespace, _agent(name)).status == 201
    patch = {"status": {"pod": pod}}
    assert api.merge_patch("Agent", namespace, name, patch, sub="status").status == 200
    return pod


def _pod_token(api: Api, namespace: str, account: str, pod: str) -> str:
    """Create a (never scheduled) Pod running as `account`; return a token bound to it."""
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod},
        "spec": {
            "serviceAccountName": account,
            "containers": [{"name": "agent", "image": "agent:1"}],
        },
    }
    created = api.call("POST", f"/api/v1/namespaces/{namespace}/pods", body)
    assert created.status == 201, created.message
    token = api.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {
            "spec": {
                "expirationSeconds": 600,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod,
                    "uid": created.body["metadata"]["uid"],
                },
            }
        },
    )
    assert token.status == 201, token.message
    return str(token.body["status"]["token"])


REPORT = {"status": {"statusMessage": "working on it"}}


def test_town_identity_writes_only_the_agent_whose_pod_it_is(api: Api, namespace: str) -> None:
    assert api.create(namespace, TOWN).status == 201
    account = _town_identity(api, namespace)
    mine = _dispatched(api, namespace, "demo-polecat-app-1", 1)
    _dispatched(api, namespace, "demo-polecat-app-2", 1)
    agent_api = api.as_token(_pod_token(api, namespace, account, mine))

    # The policy is enforced once the API server has loaded it; probe on a third agent.
    probe = _dispatched(api, namespace, "demo-polecat-app-probe", 1)
    assert probe
    eventually(
        lambda: (
            agent_api.merge_patch(
                "Agent", namespace, "demo-polecat-app-probe", REPORT, sub="status"
            ).status
            == 403
        ),
        30,
        "the admission policy to be enforced",
    )

    own = agent_api.merge_patch("Agent", namespace, "demo-polecat-app-1", REPORT, sub="status")
    assert own.status == 200, own.message

    foreign = agent_api.merge_patch("Agent", namespace, "demo-polecat-app-2", REPORT, sub="status")
    assert foreign.status == 403
    assert "an agent pod may write only its own Agent's status" in foreign.message
    other = api.get("Agent", namespace, "demo-polecat-app-2").body
    assert other.get("status", {}).get("statusMessage") is None

    # It cannot point its Agent at another pod, nor touch the spec (hook, generation).
    moved = agent_api.merge_patch(
        "Agent", namespace, "demo-polecat-app-1", {"status": {"pod": "x-g1"}}, sub="status"
    )
    assert moved.status == 403
    assert "status.pod is written by the operator only" in moved.message
    spec = agent_api.merge_patch(
        "Agent", namespace, "demo-polecat-app-1", {"spec": {"generation": 9}}
    )
    assert spec.status == 403

    # A new generation's pod replaces the old one: the old pod's token is refused from then on.
    _dispatched(api, namespace, "demo-polecat-app-1", 2)
    stale = agent_api.merge_patch("Agent", namespace, "demo-polecat-app-1", REPORT, sub="status")
    assert stale.status == 403

    # A token of the town identity that is bound to no pod carries no pod name: refused.
    unbound = api.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {"spec": {"expirationSeconds": 600}},
    )
    assert unbound.status == 201, unbound.message
    loose = api.as_token(str(unbound.body["status"]["token"]))
    refused = loose.merge_patch("Agent", namespace, "demo-polecat-app-2", REPORT, sub="status")
    assert refused.status == 403

    # No Secrets, and its work stays readable.
    assert agent_api.call("GET", f"/api/v1/namespaces/{namespace}/secrets").status == 403
    assert agent_api.get("Town", namespace, "demo").status == 200
    assert agent_api.get("Agent", namespace, "demo-polecat-app-1").status == 200


def test_the_operator_and_people_are_not_subject_to_the_agent_policy(
    api: Api, namespace: str
) -> None:
    """The policy matches only town agent identities: an admin's status write is admitted."""
    assert api.create(namespace, TOWN).status == 201
    _dispatched(api, namespace, "demo-polecat-app-1", 1)
    moved = api.merge_patch(
        "Agent", namespace, "demo-polecat-app-1", {"status": {"pod": "elsewhere-g3"}}, sub="status"
    )
    assert moved.status == 200, moved.message


# -- agent-owned and operator-owned status fields -------------------------------------------

NOW = "2026-01-01T00:00:00Z"
FORGED = "2030-01-01T00:00:00Z"
OPERATOR_FIELD_VALUES: dict[str, Any] = {
    "observedGeneration": 7,
    "conditions": [
        {"type": "Ready", "status": "True", "reason": "Forged", "lastTransitionTime": FORGED}
    ],
    "phase": "stalled",
    "phaseSince": FORGED,
    "pod": "demo-polecat-app-1-g9",
    "dispatchedAt": FORGED,
    "appliedReportSeq": 99,
    "gupp": {"generation": 1, "warnedAt": FORGED},
    "lastHook": "somebody-elses-bead",
    "podRejection": {"generation": 1, "message": "forged", "at": FORGED},
}
"""A schema-valid forged value for every operator-owned Agent status field."""


def _report(seq: int, summary: str = "ok") -> dict[str, Any]:
    return {"seq": seq, "generation": 1, "type": "escalate", "at": NOW, "summary": summary}


def _operator_writes(api: Api, namespace: str, name: str, status: dict[str, Any]) -> None:
    assert api.merge_patch("Agent", namespace, name, {"status": status}, sub="status").status == 200


def _town_pod_api(api: Api, namespace: str) -> Api:
    """demo-polecat-app-1 dispatched (pod g1) under the town identity, the policy enforced;
    an Api holding that pod's token."""
    assert api.create(namespace, TOWN).status == 201
    account = _town_identity(api, namespace)
    pod = _dispatched(api, namespace, "demo-polecat-app-1", 1)
    _operator_writes(api, namespace, "demo-polecat-app-1", {"dispatchedAt": NOW, "gupp": {}})
    _dispatched(api, namespace, "demo-polecat-app-probe", 1)
    agent_api = api.as_token(_pod_token(api, namespace, account, pod))
    eventually(
        lambda: (
            agent_api.merge_patch(
                "Agent", namespace, "demo-polecat-app-probe", REPORT, sub="status"
            ).status
            == 403
        ),
        30,
        "the admission policy to be enforced",
    )
    return agent_api


def test_every_operator_owned_field_is_refused_to_an_agent_token(api: Api, namespace: str) -> None:
    assert set(OPERATOR_FIELD_VALUES) == set(operator_owned_status_fields())
    agent_api = _town_pod_api(api, namespace)
    before = api.get("Agent", namespace, "demo-polecat-app-1").body["status"]
    for field, value in OPERATOR_FIELD_VALUES.items():
        forged = {"status": {field: value}}
        answer = agent_api.merge_patch(
            "Agent", namespace, "demo-polecat-app-1", forged, sub="status"
        )
        assert answer.status == 403, (field, answer.message)
        assert f"status.{field} is written by the operator only" in answer.message
    # Removing an operator field is a change too.
    for field in ("dispatchedAt", "pod"):
        gone = {"status": {field: None}}
        answer = agent_api.merge_patch("Agent", namespace, "demo-polecat-app-1", gone, sub="status")
        assert answer.status == 403, (field, answer.message)
    after = api.get("Agent", namespace, "demo-polecat-app-1").body["status"]
    assert {k: after.get(k) for k in OPERATOR_FIELD_VALUES} == {
        k: before.get(k) for k in OPERATOR_FIELD_VALUES
    }


def test_the_runtime_writes_every_agent_owned_field_through_the_policy(
    api: Api, namespace: str
) -> None:
    """The real in-pod channel, with the pod's token: heartbeat, message, checkpoint, nudge
    acknowledgement and reports (appended, and trimmed when the list is full) all pass."""
    agent_api = _town_pod_api(api, namespace)
    identity = Identity(
        town="demo",
        namespace=namespace,
        agent="demo-polecat-app-1",
        role=AgentRole.POLECAT,
        generation=1,
        rig="app",
        bead=None,
    )
    channel = KubeAgentChannel(identity, RestClient(api.server, agent_api.token, api._ssl))
    channel.write_activity(Activity(generation=1, last_heartbeat_at=datetime.now(UTC)))
    channel.set_status_message("working")
    channel.set_checkpoint('{"step": 1}')
    channel.ack_nudge("n1")
    first = channel.append_report(ReportDraft(type=ReportType.ESCALATE, message="help"))
    status = api.get("Agent", namespace, "demo-polecat-app-1").body["status"]
    assert status["statusMessage"] == "working"
    assert status["deliveredNudges"] == ["n1"]
    assert [r["seq"] for r in status["reports"]] == [first.seq]

    # A full list whose reports are all applied: the runtime trims the oldest to append.
    full = [_report(seq) for seq in range(1, MAX_REPORTS + 1)]
    _operator_writes(
        api, namespace, "demo-polecat-app-1", {"reports": full, "appliedReportSeq": MAX_REPORTS}
    )
    appended = channel.append_report(ReportDraft(type=ReportType.ESCALATE, message="again"))
    status = api.get("Agent", namespace, "demo-polecat-app-1").body["status"]
    assert appended.seq == MAX_REPORTS + 1
    assert [r["seq"] for r in status["reports"]] == list(range(2, MAX_REPORTS + 2))


def test_applied_reports_cannot_be_rewritten_slipped_in_or_wiped(api: Api, namespace: str) -> None:
    agent_api = _town_pod_api(api, namespace)
    name = "demo-polecat-app-1"
    _operator_writes(
        api,
        namespace,
        name,
        {"reports": [_report(1), _report(2), _report(3)], "appliedReportSeq": 2},
    )

    def write(reports: list[dict[str, Any]]) -> Any:
        body = {"status": {"reports": reports}}
        return agent_api.merge_patch("Agent", namespace, name, body, sub="status")

    rewritten = write([_report(1, "forged"), _report(2), _report(3)])
    assert rewritten.status == 403
    assert "reports up to status.appliedReportSeq are applied" in rewritten.message
    slipped = write([_report(1), _report(2), {**_report(2), "summary": "again"}, _report(3)])
    assert slipped.status == 403
    wiped = write([_report(3)])
    assert wiped.status == 403
    assert "applied reports may be removed only when the list is full" in wiped.message
    assert [r["seq"] for r in api.get("Agent", namespace, name).body["status"]["reports"]] == [
        1,
        2,
        3,
    ]
    # Its own reports the operator has not applied yet stay the agent's: append, retract.
    assert write([_report(1), _report(2), _report(3), _report(4)]).status == 200
    assert write([_report(1), _report(2), _report(3)]).status == 200


def test_a_per_agent_token_cannot_write_operator_owned_fields_either(
    api: Api, namespace: str
) -> None:
    assert api.create(namespace, TOWN).status == 201
    mine = api.create(namespace, _agent("demo-polecat-app-1")).body
    _dispatched(api, namespace, "demo-polecat-app-1", 1)
    agent_api = api.as_token(_grant(api, namespace, mine))
    eventually(
        lambda: (
            agent_api.merge_patch(
                "Agent",
                namespace,
                "demo-polecat-app-1",
                {"status": {"appliedReportSeq": 5}},
                sub="status",
            ).status
            == 403
        ),
        30,
        "the admission policy to be enforced",
    )
    for field in ("appliedReportSeq", "phase", "gupp", "pod"):
        forged = {"status": {field: OPERATOR_FIELD_VALUES[field]}}
        answer = agent_api.merge_patch(
            "Agent", namespace, "demo-polecat-app-1", forged, sub="status"
        )
        assert answer.status == 403, (field, answer.message)
    assert api.get("Agent", namespace, "demo-polecat-app-1").body["status"].get(
        "appliedReportSeq", 0
    ) in (0, None)
    mine_ok = agent_api.merge_patch("Agent", namespace, "demo-polecat-app-1", REPORT, sub="status")
    assert mine_ok.status == 200, mine_ok.message


# -- reads --------------------------------------------------------------------------------


def test_agent_tokens_read_only_their_own_towns_agents(api: Api, namespace: str) -> None:
    agent_api = _town_pod_api(api, namespace)
    other_town = {**TOWN, "metadata": {"name": "other"}}
    assert api.create(namespace, other_town).status == 201
    foreign = {**_agent("other-polecat-app-1"), "spec": {**_agent("x")["spec"], "town": "other"}}
    assert api.create(namespace, foreign).status == 201

    assert agent_api.get("Agent", namespace, "demo-polecat-app-1").status == 200
    assert agent_api.get("Agent", namespace, "other-polecat-app-1").status == 403
    assert agent_api.get("Town", namespace, "other").status == 403
    # No listing, no watching: the runtime reads by name only.
    agents = api.path("Agent", namespace)
    assert agent_api.call("GET", agents).status == 403
    assert agent_api.call("GET", agents + "?watch=true").status == 403
    # Nor another town's Agent's status (the status subresource returns the whole object).
    status = agent_api.call("GET", api.path("Agent", namespace, "other-polecat-app-1", "status"))
    assert status.status == 403
    # Writes to another town's Agent are refused by RBAC before the policy is even asked.
    foreign_write = agent_api.merge_patch(
        "Agent", namespace, "other-polecat-app-1", REPORT, sub="status"
    )
    assert foreign_write.status == 403
    assert 'cannot patch resource "agents/status"' in foreign_write.message


def test_per_agent_tokens_read_only_their_own_agent(api: Api, namespace: str) -> None:
    assert api.create(namespace, TOWN).status == 201
    mine = api.create(namespace, _agent("demo-polecat-app-1")).body
    assert api.create(namespace, _agent("demo-polecat-app-2")).status == 201
    agent_api = api.as_token(_grant(api, namespace, mine))
    assert agent_api.get("Agent", namespace, "demo-polecat-app-1").status == 200
    assert agent_api.get("Agent", namespace, "demo-polecat-app-2").status == 403
    assert agent_api.call("GET", api.path("Agent", namespace) + "?watch=true").status == 403


def test_the_installed_policy_is_judged_intact(api: Api) -> None:
    """What the API server returns (with its defaults) matches what the operator expects; the
    operator would otherwise hold every dispatch (or fall back to per-agent identities)."""
    admission = "/apis/admissionregistration.k8s.io/v1"
    policy = api.call("GET", f"{admission}/validatingadmissionpolicies/{POLICY_NAME}")
    binding = api.call("GET", f"{admission}/validatingadmissionpolicybindings/{POLICY_NAME}")
    assert policy.status == binding.status == 200
    assert policy_weakness(policy.body, binding.body) is None
    weakened = {**binding.body, "spec": {**binding.body["spec"], "validationActions": ["Audit"]}}
    assert "Deny" in (policy_weakness(policy.body, weakened) or "")
