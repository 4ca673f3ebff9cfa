"""Issue 10, observations 7 and 8 in the adapter's pure parts.

Long names never make an invalid pod (labels hashed, full names in annotations, read back by
the store); the references a Town makes to Secrets and ServiceAccounts are found, judged against
the opt-in label, and insecure provider URLs are refused unless explicitly allowed; faults and
loop failures show on the Town.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from gastown.kube import labels
from gastown.kube.apply import refused
from gastown.kube.client import ApiError, Conflict, Forbidden, Invalid, NotFound
from gastown.kube.deputy import (
    Lookup,
    Reference,
    insecure_url_faults,
    opt_in_fault,
    references,
)
from gastown.kube.events import event_name
from gastown.kube.pods import build_pod
from gastown.kube.status import build_town_status
from gastown.kube.store import Store, pod_view
from gastown.model import Agent, Town
from gastown.model.town import PassMetrics
from gastown.reconcile import names
from gastown.reconcile.snapshot import Fault, Snapshot
from tests.unit.kube.test_pods import TOWN

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def town(name: str = "demo", **agent: Any) -> Town:
    """A town with one direct rig, one PR rig and the given agent runtime fields."""
    body = TOWN.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["metadata"]["name"] = name
    body["spec"]["agent"].update(agent)
    result: Town = Town.from_api(body)
    return result


def polecat(town_name: str, bead: str) -> Agent:
    name = names.polecat_name(town_name, "app", 1)
    result: Agent = Agent.from_api(
        {
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"town": town_name, "role": "polecat", "rig": "app", "hook": bead},
        }
    )
    return result


def test_long_names_make_valid_labels_and_the_full_names_are_read_back() -> None:
    town_name = "t" * 63
    bead = "b" * 200
    agent = polecat(town_name, bead)
    pod = build_pod(town(town_name), agent, "uid", 7, bead, "sa")
    pod["metadata"]["resourceVersion"] = "5"
    pod["metadata"]["namespace"] = "ns"
    for key, value in pod["metadata"]["labels"].items():
        assert len(value) <= 63, (key, value)
        assert LABEL_VALUE.match(value), (key, value)
    assert pod["metadata"]["annotations"][labels.BEAD] == bead
    view = pod_view(pod)
    assert view is not None
    assert (view.agent, view.bead, view.generation) == (agent.name, bead, 7)
    store = Store()
    held = store.observe("Pod", pod)
    assert held is not None
    assert held.name == town_name
    assert set(held.pods) == {pod["metadata"]["name"]}


def test_short_names_stay_as_they_are_in_labels() -> None:
    pod = build_pod(town(), polecat("demo", "b1"), "uid", 1, "b1", "sa")
    assert pod["metadata"]["labels"][labels.BEAD] == "b1"
    assert pod["metadata"]["labels"][labels.TOWN] == "demo"
    assert labels.town_selector("demo") == "gastown.dev/town=demo"


def test_pods_of_older_operators_without_annotations_are_still_read() -> None:
    pod = build_pod(town(), polecat("demo", "b1"), "uid", 1, "b1", "sa")
    del pod["metadata"]["annotations"]
    view = pod_view(pod)
    assert view is not None
    assert view.bead == "b1"


def test_every_secret_and_service_account_a_town_names_is_a_reference() -> None:
    found = references(town(serviceAccountName="runner"))
    assert {(r.kind, r.name) for r in found} == {
        ("ServiceAccount", "runner"),
        ("Secret", "keys"),
        ("Secret", "git-creds"),
        ("Secret", "gh"),
    }
    assert references(Town.from_api({**_minimal(), "metadata": {"name": "x"}})) == []


def _minimal() -> dict[str, Any]:
    return {
        "spec": {
            "rigs": [{"name": "app", "gitUrl": "/srv/app.git"}],
            "agent": {"image": "agent:1"},
        }
    }


def test_only_an_exact_opt_in_label_lets_a_town_use_an_object() -> None:
    ref = Reference("Secret", "keys", "spec.agent.secretEnv[0]")
    assert opt_in_fault(ref, Lookup(labels={labels.TOWN: "demo"}), "demo") is None
    for lookup, reason in (
        (Lookup(labels={}), "SecretNotOptedIn"),
        (Lookup(labels={labels.TOWN: "other"}), "SecretNotOptedIn"),
        (Lookup(labels={labels.TOWN: "*"}), "SecretNotOptedIn"),
        (Lookup(labels=None), "SecretNotFound"),
        (Lookup(labels=None, error="forbidden"), "SecretUnreadable"),
    ):
        fault = opt_in_fault(ref, lookup, "demo")
        assert fault is not None, lookup
        assert fault.reason == reason, lookup
        assert '"keys"' in fault.message
    sa = Reference("ServiceAccount", "runner", "spec.agent")
    fault = opt_in_fault(sa, Lookup(labels={}), "demo")
    assert fault is not None
    assert fault.reason == "ServiceAccountNotOptedIn"
    assert "gastown.dev/town=demo" in fault.message


def test_provider_urls_must_be_https_unless_explicitly_allowed() -> None:
    assert insecure_url_faults(town(), allow_insecure=False) == []
    body = town().model_dump(mode="json", by_alias=True, exclude_none=True)
    body["spec"]["rigs"][1]["pullRequests"]["apiUrl"] = "http://github.internal/api"
    insecure = Town.from_api(body)
    faults = insecure_url_faults(insecure, allow_insecure=False)
    assert [f.reason for f in faults] == ["InsecureProviderUrl"]
    assert "rig lib" in faults[0].message
    assert insecure_url_faults(insecure, allow_insecure=True) == []


def test_a_fault_makes_the_town_degraded_with_its_reason() -> None:
    fault = Fault("SecretNotOptedIn", 'Secret "keys" is not labelled')
    snap = Snapshot(town=town(), beads={}, convoys={}, agents={}, pods={}, faults=(fault,))
    status = build_town_status(snap, [], PassMetrics(), [], NOW)
    by_type = {c.type: c for c in status.conditions}
    assert by_type["Degraded"].status.value == "True"
    assert by_type["Degraded"].reason == "SecretNotOptedIn"
    assert by_type["Ready"].status.value == "False"
    assert 'Secret "keys"' in by_type["Ready"].message
    assert status.summary == "dispatch held: SecretNotOptedIn"


def test_only_refusals_of_the_request_itself_count_as_a_refused_pod() -> None:
    assert refused(Invalid(422, "spec.containers[0].image: Invalid value"))
    assert refused(Forbidden(403, "exceeded quota"))
    assert refused(ApiError(400, "bad request"))
    for transient in (Conflict(409, "exists"), NotFound(404, "no agent"), ApiError(429, "slow")):
        assert not refused(transient)
    assert not refused(ApiError(500, "etcd"))


def test_events_about_objects_with_the_longest_names_have_valid_names() -> None:
    name = event_name("b" * 253)
    assert len(name) <= 253
    assert event_name("b1").startswith("b1.")
    assert event_name("b1") != event_name("b1")
