"""Issue 10, observation 3: a secret of the Town's `secretEnv` never leaks out of the agent pod.

A refinery gate prints the value of ANTHROPIC_API_KEY (plain and base64) and fails. Before the
fix the value landed in the refinery Agent's reports, the rework Bead's spec and the Events.
Now no API object of the namespace, no Event, no operator log line and no pod log holds it.
The agents are real containers on the local node; their logs are read as `kubectl logs` serves
them while the pods exist, and from the kubelet's log files on the node.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest

from gastown.devtools.node import Node
from gastown.model import BeadType
from tests.support.api import Api
from tests.support.git import HttpRig
from tests.support.node import PodWatch, assert_ran_on_the_node, node_town
from tests.support.procs import Process
from tests.support.town import TownView, bead

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

MARKER = "leak-check:"
GATE = f'echo "{MARKER} $ANTHROPIC_API_KEY"; printf %s "$ANTHROPIC_API_KEY" | base64; exit 1'


def leak_forms(value: str) -> list[str]:
    """What a leak would look like: the value, and its base64 as the gate prints it."""
    return [value, base64.b64encode(value.encode()).decode()]


def namespace_dump(api: Api, namespace: str) -> dict[str, list[dict[str, Any]]]:
    """Every object of our kinds and every Event of the namespace, as the API serves them."""
    dump: dict[str, list[dict[str, Any]]] = {}
    for kind in ("Town", "Bead", "Convoy", "Agent"):
        listed = api.call("GET", Api.path(kind, namespace))
        assert listed.status == 200, listed.message
        dump[kind] = listed.body["items"]
    for name, path in (
        ("Event", f"/api/v1/namespaces/{namespace}/events"),
        ("events.k8s.io", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
    ):
        listed = api.call("GET", path)
        assert listed.status == 200, listed.message
        dump[name] = listed.body["items"]
    return dump


def copies(text: str, forms: list[str]) -> dict[str, int]:
    """How many times each leak form occurs in `text` (only the ones that do)."""
    return {form[:6] + "…": text.count(form) for form in forms if form in text}


def test_gate_printing_a_secret_leaks_it_nowhere(
    real_node: Node,
    lean_agent_image: str,
    api: Api,
    namespace: str,
    node_rig: HttpRig,
    pod_watch: PodWatch,
    operator_proc: Process,
    view: TownView,
) -> None:
    secret_value = f"sk-ant-api03-{secrets.token_hex(20)}"
    key = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "model-keys", "labels": {"gastown.dev/town": "demo"}},
        "stringData": {"anthropic": secret_value},
    }
    assert api.call("POST", f"/api/v1/namespaces/{namespace}/secrets", key).status == 201
    body = node_town(lean_agent_image, node_rig, refinery={"gates": [GATE]})
    body["spec"]["agent"]["secretEnv"] = [
        {"name": "ANTHROPIC_API_KEY", "secretKeyRef": {"name": "model-keys", "key": "anthropic"}}
    ]
    assert api.create(namespace, body).status == 201
    assert api.create(namespace, bead("leaky")).status == 201

    def gate_failure_copied() -> bool:
        """The operator turned the failed gate into a rework bead and an Event."""
        dump = namespace_dump(api, namespace)
        reworks = [
            b
            for b in dump["Bead"]
            if b["spec"].get("type") == BeadType.REWORK.value
            and MARKER in b["spec"].get("rework", {}).get("feedback", "")
        ]
        events = [e for e in dump["Event"] if MARKER in e.get("message", "")]
        return bool(reworks and events)

    view.wait(gate_failure_copied, 240, "the failed gate's output in a rework bead and an Event")

    forms = leak_forms(secret_value)
    dump = namespace_dump(api, namespace)
    found = {kind: copies(json.dumps(items), forms) for kind, items in dump.items()}
    assert not any(found.values()), f"secret copies in API objects: {found}"
    # The gate's output did arrive, redacted: the test looked at the right text.
    feedback = [b["spec"]["rework"]["feedback"] for b in dump["Bead"] if "rework" in b["spec"]]
    assert any(f"{MARKER} ***" in text for text in feedback), feedback

    operator_log = operator_proc.log.read_text(errors="replace")
    assert not copies(operator_log, forms), "secret in the operator's log"
    # The pods' logs: as `kubectl logs` served them, and the kubelet's files still on the node.
    ran = assert_ran_on_the_node(pod_watch, real_node, at_least=2)
    assert any(pod.logs for pod in ran), "no pod log was read"
    for pod in ran:
        assert not copies(pod.logs, forms), f"secret in the log of pod {pod.name}"
    files = sorted((real_node.directory / "pod-logs").glob(f"{namespace}_*/*/*.log"))
    for path in files:
        assert not copies(path.read_text(errors="replace"), forms), f"secret in {path}"
