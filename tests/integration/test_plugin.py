"""`kubectl gastown` against the real API server: objects put into realistic states through the
status subresource (no operator runs), then every subcommand read back as a user sees it."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from gastown.devtools.controlplane import ControlPlane
from gastown.plugin.main import run
from tests.support.api import Api
from tests.support.town import town as town_object

pytestmark = pytest.mark.cluster

ENTRY_POINT = Path(sys.executable).parent / "kubectl-gastown"
POLECAT = "demo-polecat-app-1"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def create(api: Api, ns: str, obj: dict[str, Any], status: dict[str, Any] | None = None) -> None:
    """Create an object and (optionally) write its status through the status subresource."""
    created = api.create(ns, obj)
    assert created.status == 201, created.message
    if status is not None:
        name = obj["metadata"]["name"]
        patched = api.merge_patch(obj["kind"], ns, name, {"status": status}, sub="status")
        assert patched.status == 200, patched.message


def bead(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "gastown.dev/v1alpha1",
        "kind": "Bead",
        "metadata": {"name": name},
        "spec": {"town": "demo", "rig": "app", "title": f"Work on {name}", **spec},
    }


@pytest.fixture
def town_ns(api: Api, namespace: str) -> str:
    """A town mid-flight: a convoy with a worked bead and a dependent, a bead waiting for
    capacity, one backing off, one done (with its merged MR), a working polecat and its pod."""
    now = datetime.now(UTC)
    create(
        api,
        namespace,
        town_object(limits={"maxPolecatsPerRig": 1, "maxPolecats": 5}),
        {
            "summary": "1 working, 3 open",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Reconciled",
                    "message": "all good",
                    "lastTransitionTime": iso(now),
                },
                {
                    "type": "Degraded",
                    "status": "False",
                    "reason": "NoViolations",
                    "lastTransitionTime": iso(now),
                },
            ],
            "lastPass": {
                "finishedAt": iso(now - timedelta(seconds=3)),
                "durationMs": 7,
                "actions": {"DispatchAgent": 1},
                "sideEffectsOk": 1,
            },
        },
    )
    create(
        api,
        namespace,
        {
            "apiVersion": "gastown.dev/v1alpha1",
            "kind": "Convoy",
            "metadata": {"name": "feat"},
            "spec": {
                "town": "demo",
                "rig": "app",
                "tasks": [
                    {"key": "a", "title": "A"},
                    {"key": "b", "title": "B", "dependsOn": ["a"]},
                ],
            },
        },
        {"phase": "InProgress", "progress": "0/2", "total": 2, "reason": "InProgress"},
    )
    create(
        api,
        namespace,
        bead("feat-a", convoy="feat"),
        {
            "phase": "in_progress",
            "assignee": POLECAT,
            "attempts": 1,
            "reason": "Dispatched",
            "phaseSince": iso(now),
        },
    )
    create(api, namespace, bead("feat-b", convoy="feat", dependsOn=["feat-a"]))
    create(api, namespace, bead("loose"))
    create(
        api,
        namespace,
        bead("flaky"),
        {"attempts": 1, "lastFailureAt": iso(now), "reason": "AgentFailed", "message": "exit 3"},
    )
    create(
        api,
        namespace,
        bead("shipped"),
        {
            "phase": "closed",
            "closedAt": iso(now),
            "reason": "Merged",
            "mergeRequest": "shipped-mr-1",
        },
    )
    create(
        api,
        namespace,
        bead(
            "shipped-mr-1",
            type="merge_request",
            mergeRequest={"sourceBead": "shipped", "branch": "gt/shipped", "targetBranch": "main"},
        ),
        {"phase": "closed", "review": {"mergeCommit": "0123abcd"}},
    )
    create(
        api,
        namespace,
        {
            "apiVersion": "gastown.dev/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": POLECAT},
            "spec": {
                "town": "demo",
                "role": "polecat",
                "rig": "app",
                "hook": "feat-a",
                "generation": 1,
            },
        },
        {
            "phase": "working",
            "pod": f"{POLECAT}-g1",
            "activity": {
                "generation": 1,
                "lastHeartbeatAt": iso(now),
                "lastEventType": "tool_call",
                "lastEventAt": iso(now),
                "activeTools": ["bash"],
            },
        },
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{POLECAT}-g1",
            "labels": {
                "gastown.dev/town": "demo",
                "gastown.dev/agent": POLECAT,
                "gastown.dev/generation": "1",
                "gastown.dev/bead": "feat-a",
            },
        },
        # Bound to a node nobody runs, so it stays Pending even when the e2e tests' node runner
        # shares this control plane.
        "spec": {
            "nodeName": "nobody",
            "containers": [{"name": "agent", "image": "gastown-agent:test"}],
        },
    }
    made = api.call("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    assert made.status == 201, made.message
    return namespace


def plugin(control_plane: ControlPlane, *argv: str) -> tuple[int, str, str]:
    """Run the plugin in-process against the control plane."""
    out, err = io.StringIO(), io.StringIO()
    code = run([*argv, "--kubeconfig", str(control_plane.kubeconfig)], out, err)
    return code, out.getvalue(), err.getvalue()


def test_tree(control_plane: ControlPlane, town_ns: str) -> None:
    code, out, err = plugin(control_plane, "tree", "-n", town_ns)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "Town demo  mode=active  Ready=True"
    assert "├── Convoy feat  InProgress 0/2  (review-then-land)" in out
    assert f"│   ├── Bead feat-a  in_progress  @{POLECAT}  (Dispatched)  Work on feat-a" in out
    assert f"│   │   └── Agent {POLECAT}  polecat  working  gen 1" in out
    assert f"│   │       └── Pod {POLECAT}-g1  Pending  gen 1" in out
    assert "└── Bead shipped  closed  (Merged)  Work on shipped" in out
    assert "    └── MR shipped-mr-1  closed" in out
    assert "\033[" not in out
    code, out, _ = plugin(control_plane, "tree", "-n", town_ns, "-o", "json")
    tree = json.loads(out)
    assert [b["name"] for b in tree["convoys"][0]["beads"]] == ["feat-a", "feat-b"]
    assert [b["name"] for b in tree["beads"]] == ["flaky", "loose", "shipped"]
    assert tree["beads"][2]["mergeRequests"][0]["name"] == "shipped-mr-1"


@pytest.mark.parametrize(
    ("name", "verdict", "words"),
    [
        ("loose", "WaitingForCapacity", "rig app has 1/1 polecats busy"),
        ("feat-b", "WaitingForDependencies", "depends on feat-a: in_progress"),
        ("flaky", "BackingOff", "next attempt in 1m"),
        ("feat-a", "Working", "last event tool_call"),
        ("shipped", "Done", "merge commit 0123abcd"),
    ],
)
def test_why(
    control_plane: ControlPlane, town_ns: str, name: str, verdict: str, words: str
) -> None:
    code, out, err = plugin(control_plane, "why", name, "-n", town_ns)
    assert code == 0, err
    assert out.splitlines()[0].endswith(verdict), out
    assert words in out, out
    code, out, _ = plugin(control_plane, "why", name, "-n", town_ns, "-o", "json")
    assert json.loads(out)["verdict"] == verdict


def test_why_after_a_capacity_change(control_plane: ControlPlane, api: Api, town_ns: str) -> None:
    """Raise the cap: the same bead becomes Ready and the next pass would dispatch it."""
    patched = api.merge_patch(
        "Town", town_ns, "demo", {"spec": {"limits": {"maxPolecatsPerRig": 2}}}
    )
    assert patched.status == 200, patched.message
    code, out, err = plugin(control_plane, "why", "loose", "-n", town_ns, "-o", "json")
    assert code == 0, err
    why = json.loads(out)
    assert why["verdict"] == "Ready"
    assert any(line.startswith("DispatchAgent(loose)") for line in why["nextPass"])


def test_status(control_plane: ControlPlane, town_ns: str) -> None:
    code, out, err = plugin(control_plane, "status", "-n", town_ns)
    assert code == 0, err
    assert "Town demo  mode=active" in out
    assert "Ready      True  Reconciled — all good" in out
    assert "Degraded   False NoViolations" in out
    assert "Beads:    open 3  in_progress 1  in_review 0  closed 1  failed 0" in out
    assert "Agents:   working 1  idle 0  stalled 0" in out
    assert "app          polecats 1/1" in out
    assert "Breaker:  closed  (0/20 recent failures)" in out
    assert re.search(r"Last pass: \d+s ago, 7 ms, DispatchAgent 1; side effects 1 ok", out), out
    assert "feat                 InProgress   [----------] 0/2" in out
    code, out, _ = plugin(control_plane, "status", "-n", town_ns, "-o", "json")
    board = json.loads(out)
    assert board["beads"]["open"] == 3
    assert board["conditions"][0]["reason"] == "Reconciled"


def test_sling_bead_and_convoy(
    control_plane: ControlPlane, api: Api, town_ns: str, tmp_path: Path
) -> None:
    code, out, err = plugin(
        control_plane,
        "sling",
        "bead",
        "-n",
        town_ns,
        "--title",
        "Add login",
        "--priority",
        "high",
        "--depends-on",
        "loose",
    )
    assert code == 0, err
    assert out.startswith("bead/add-login-"), out
    assert out.endswith(" created\n"), out
    name = out.split()[0].split("/")[1]
    got = api.get("Bead", town_ns, name).body
    assert got["spec"]["priority"] == "high"
    assert got["spec"]["dependsOn"] == ["loose"]
    assert got["spec"]["rig"] == "app"

    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(yaml.safe_dump({"tasks": [{"key": "db", "title": "Schema"}], "staged": True}))
    code, out, err = plugin(
        control_plane,
        "sling",
        "convoy",
        "rel",
        "-n",
        town_ns,
        "--file",
        str(tasks),
        "--task",
        "api:api: endpoints:db",
        "-o",
        "json",
    )
    assert code == 0, err
    assert json.loads(out) == {
        "kind": "Convoy",
        "name": "rel",
        "namespace": town_ns,
        "beads": ["rel-api", "rel-db"],
    }
    code, _, err = plugin(control_plane, "why", "rel-db", "-n", town_ns)
    assert code == 1
    assert "bead rel-db does not exist yet: it is a task of convoy rel" in err
    spec = api.get("Convoy", town_ns, "rel").body["spec"]
    assert spec["staged"] is True
    assert spec["tasks"][0] == {
        "key": "api",
        "title": "api: endpoints",
        "dependsOn": ["db"],
        "description": "",
        "priority": "medium",
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ("sling", "bead", "--title", "x", "--name", "selfish", "--depends-on", "selfish"),
            "a bead cannot depend on itself",
        ),
        (
            ("sling", "convoy", "c2", "--task", "a:A:zz"),
            "every dependsOn must name a task key of this convoy",
        ),
        (("sling", "bead", "--title", "x", "--name", "loose"), 'beads.gastown.dev "loose" already'),
    ],
)
def test_sling_shows_the_api_servers_message(
    control_plane: ControlPlane, town_ns: str, argv: tuple[str, ...], message: str
) -> None:
    code, out, err = plugin(control_plane, *argv, "-n", town_ns)
    assert (code, out) == (1, "")
    assert err.startswith("error: the API server refused (4"), err
    assert message in err, err


def test_clear_errors(control_plane: ControlPlane, api: Api, town_ns: str, namespace: str) -> None:
    code, _, err = plugin(control_plane, "why", "nope", "-n", town_ns)
    assert (code, err) == (1, f"error: bead 'nope' not found in namespace {town_ns}\n")
    code, _, err = plugin(control_plane, "status", "-n", town_ns, "--town", "ghost")
    assert (code, err) == (1, f"error: town 'ghost' not found in namespace {town_ns}\n")
    create(api, town_ns, bead("stray") | {"spec": {"town": "ghost", "rig": "app", "title": "s"}})
    code, _, err = plugin(control_plane, "why", "stray", "-n", town_ns)
    assert code == 1
    assert "belongs to town 'ghost', which does not exist" in err
    code, _, err = plugin(control_plane, "tree", "-n", "empty-" + town_ns[2:])
    assert code == 1
    assert "no Town in namespace" in err
    create(api, town_ns, town_object("second"))
    code, _, err = plugin(control_plane, "tree", "-n", town_ns)
    assert code == 1
    assert "several towns (demo, second): pass --town" in err
    code, out, _ = plugin(control_plane, "tree", "-n", town_ns, "--town", "second")
    assert (code, out) == (0, "Town second  mode=active\n  (no convoys, beads or agents)\n")


def test_installed_entry_point(control_plane: ControlPlane, town_ns: str, tmp_path: Path) -> None:
    """The console script, piped (no colour), namespace from the kubeconfig's context."""
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    for context in config["contexts"]:
        context["context"]["namespace"] = town_ns
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("NO_COLOR", None)
    started = time.monotonic()
    done = subprocess.run(
        [str(ENTRY_POINT), "status", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["town"] == "demo"
    piped = subprocess.run(
        [str(ENTRY_POINT), "why", "loose"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert "WaitingForCapacity" in piped.stdout
    assert "\033[" not in piped.stdout
    assert time.monotonic() - started < 60
