"""The agent status admission policy, how the operator judges the installed copy, and the mode."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gastown.kube.agent_channel import RUNTIME_FIELDS
from gastown.kube.identity import (
    agent_status_policy,
    operator_owned_status_fields,
    policy_weakness,
    town_role_rules,
)
from gastown.kube.identity_guard import UNPROTECTED, IdentityMode, choose_mode, unprotected_fault
from gastown.model.agent import RUNTIME_STATUS_FIELDS, AgentStatus


def _installed() -> tuple[dict[str, Any], dict[str, Any]]:
    """The policy and binding as the API server returns them (defaults filled in)."""
    policy, binding = copy.deepcopy(agent_status_policy())
    policy["spec"]["matchConstraints"].update(
        {"matchPolicy": "Equivalent", "namespaceSelector": {}, "objectSelector": {}}
    )
    policy["spec"]["matchConstraints"]["resourceRules"][0]["scope"] = "*"
    policy["metadata"]["resourceVersion"] = "7"
    return policy, binding


def test_every_status_field_is_owned_by_exactly_one_writer() -> None:
    aliases = {f.alias for f in AgentStatus.model_fields.values()}
    owned = set(operator_owned_status_fields())
    assert owned | set(RUNTIME_STATUS_FIELDS) == aliases
    assert not owned & set(RUNTIME_STATUS_FIELDS)
    assert {"appliedReportSeq", "gupp", "dispatchedAt", "phase", "conditions", "pod"} <= owned
    assert RUNTIME_FIELDS == RUNTIME_STATUS_FIELDS  # what the runtime patches


def test_the_policy_names_each_operator_field_in_its_own_refusal() -> None:
    policy = agent_status_policy()[0]["spec"]
    messages = [v["message"] for v in policy["validations"]]
    for field in operator_owned_status_fields():
        assert f"status.{field} is written by the operator only" in messages
    assert all(v["reason"] == "Forbidden" for v in policy["validations"])
    condition = policy["matchConditions"][0]["expression"]
    assert "'gastown-agents-'" in condition
    assert "'gastown-agent-'" in condition


def test_an_intact_installed_policy_is_not_weak() -> None:
    assert policy_weakness(*_installed()) is None


def test_a_stricter_policy_is_not_weak() -> None:
    policy, binding = _installed()
    policy["spec"]["validations"].append({"expression": "false", "message": "stricter"})
    binding["spec"]["validationActions"] = ["Deny", "Audit"]
    assert policy_weakness(policy, binding) is None


def _weaken_binding_actions(policy: dict[str, Any], binding: dict[str, Any]) -> None:
    binding["spec"]["validationActions"] = ["Warn"]


def _narrow_binding(policy: dict[str, Any], binding: dict[str, Any]) -> None:
    binding["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {"x": "y"}}}


def _ignore_failures(policy: dict[str, Any], binding: dict[str, Any]) -> None:
    policy["spec"]["failurePolicy"] = "Ignore"


def _drop_a_validation(policy: dict[str, Any], binding: dict[str, Any]) -> None:
    policy["spec"]["validations"] = policy["spec"]["validations"][:-1]


def _loosen_a_validation(policy: dict[str, Any], binding: dict[str, Any]) -> None:
    policy["spec"]["validations"][0]["expression"] = "true"


def _match_less(policy: dict[str, Any], binding: dict[str, Any]) -> None:
    policy["spec"]["matchConditions"][0]["expression"] = "false"


def _other_policy(policy: dict[str, Any], binding: dict[str, Any]) -> None:
    binding["spec"]["policyName"] = "something-else"


def _exclude_objects(policy: dict[str, Any], binding: dict[str, Any]) -> None:
    policy["spec"]["matchConstraints"]["objectSelector"] = {"matchLabels": {"x": "y"}}


def _match_fewer_operations(policy: dict[str, Any], binding: dict[str, Any]) -> None:
    policy["spec"]["matchConstraints"]["resourceRules"][0]["operations"] = ["DELETE"]


@pytest.mark.parametrize(
    ("weaken", "says"),
    [
        (_weaken_binding_actions, "Deny"),
        (_narrow_binding, "matchResources"),
        (_ignore_failures, "failurePolicy"),
        (_drop_a_validation, "validations"),
        (_loosen_a_validation, "validations"),
        (_match_less, "matchConditions"),
        (_other_policy, "points at policy"),
        (_exclude_objects, "matchConstraints"),
        (_match_fewer_operations, "matchConstraints"),
    ],
)
def test_a_weakened_policy_or_binding_is_named(weaken: Any, says: str) -> None:
    policy, binding = _installed()
    weaken(policy, binding)
    weakness = policy_weakness(policy, binding)
    assert weakness is not None
    assert says in weakness


def test_missing_objects_are_named() -> None:
    policy, binding = _installed()
    assert "ValidatingAdmissionPolicyBinding" in (policy_weakness(policy, None) or "")
    assert "ValidatingAdmissionPolicy " in (policy_weakness(None, binding) or "")


def test_modes() -> None:
    town = IdentityMode(town_identity=True, policy_required=True)
    agent = IdentityMode(town_identity=False, policy_required=False)
    assert choose_mode("auto", None) == town
    assert choose_mode("auto", "binding missing") == agent  # the fallback, for this process
    assert choose_mode("town", "binding missing") == town  # required from the start
    assert choose_mode("agent", None) == agent
    with pytest.raises(ValueError, match="GASTOWN_AGENT_IDENTITY"):
        choose_mode("none", None)


def test_the_fault_says_what_is_wrong() -> None:
    fault = unprotected_fault(
        "ValidatingAdmissionPolicyBinding gastown-agent-own-status is missing"
    )
    assert fault.reason == UNPROTECTED
    assert "binding" in fault.message.lower()
    assert "gastown-agent-own-status" in fault.message


def test_town_role_rules_name_the_agents_sorted_and_never_empty() -> None:
    rules = town_role_rules("demo", ["b", "a", "b"])
    agent_rules = [r for r in rules if r["resources"][0].startswith("agents")]
    assert [r["resourceNames"] for r in agent_rules] == [["a", "b"], ["a", "b"]]
    with pytest.raises(AssertionError):
        town_role_rules("demo", [])
