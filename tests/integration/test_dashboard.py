"""`kubectl gastown dashboard` on the real API server, as a user who may read one namespace only.

The user's kubeconfig holds a ServiceAccount token bound to a Role in namespace A (read our
kinds, agent pods and Events). The dashboard shows A's town, never namespace B's, not even
when pointed at B (the API server refuses, and the page says so). Changes reach an open page
through the server-sent events fed by the watches, and a bead's timeline lists its dispatches
(with generation and pod) and reports. A Role without pods and Events still gets every page,
saying what it could not read. The `kubectl-gastown dashboard` command itself serves as that
user and exits cleanly on Ctrl-C. No operator runs: states are written as it would.
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gastown.devtools.controlplane import ControlPlane
from gastown.plugin import fetch, web
from tests.support.api import Api, eventually
from tests.support.town import town as town_object

pytestmark = pytest.mark.cluster
G = "gastown.dev"
CONVOY_TASKS = [
    {"key": "base", "title": "Base"},
    {"key": "left", "title": "Left", "dependsOn": ["base"]},
    {"key": "top", "title": "Top", "dependsOn": ["left"]},
]
POLECAT = "demo-polecat-app-1"
ENTRY_POINT = Path(sys.executable).parent / "kubectl-gastown"
DEADLINE = 30.0


def create(api: Api, ns: str, obj: dict[str, Any], status: dict[str, Any] | None = None) -> None:
    """Create an object and (optionally) write its status through the status subresource."""
    created = api.create(ns, obj)
    assert created.status == 201, created.message
    if status is not None:
        name = obj["metadata"]["name"]
        patched = api.merge_patch(obj["kind"], ns, name, {"status": status}, sub="status")
        assert patched.status == 200, patched.message


def bead(name: str, **spec: Any) -> dict[str, Any]:
    """A Bead of town demo on rig app."""
    return {
        "apiVersion": f"{G}/v1alpha1",
        "kind": "Bead",
        "metadata": {"name": name},
        "spec": {"town": "demo", "rig": "app", "title": f"Work on {name}", **spec},
    }


def restricted_kubeconfig(
    api: Api, plane: ControlPlane, namespace: str, path: Path, *, pods_and_events: bool = True
) -> Path:
    """A kubeconfig whose token may only read the town's objects in `namespace` (and, if
    `pods_and_events`, its pods and Events)."""
    core = f"/api/v1/namespaces/{namespace}"
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    account = {"metadata": {"name": "viewer"}}
    assert api.call("POST", f"{core}/serviceaccounts", account).status == 201
    role: dict[str, Any] = {
        "metadata": {"name": "gastown-reader"},
        "rules": [
            {
                "apiGroups": [G],
                "resources": ["towns", "beads", "convoys", "agents"],
                "verbs": ["get", "list", "watch"],
            },
        ],
    }
    if pods_and_events:
        role["rules"].append(
            {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list", "watch"]}
        )
    assert api.call("POST", f"{rbac}/roles", role).status == 201
    binding = {
        "metadata": {"name": "gastown-reader"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        },
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": namespace}],
    }
    assert api.call("POST", f"{rbac}/rolebindings", binding).status == 201
    minted = api.call(
        "POST",
        f"{core}/serviceaccounts/viewer/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    assert minted.status == 201, minted.body
    config = yaml.safe_load(plane.kubeconfig.read_text())
    config["users"] = [{"name": "viewer", "user": {"token": minted.body["status"]["token"]}}]
    for context in config["contexts"]:
        context["context"]["user"] = "viewer"
        context["context"]["namespace"] = namespace
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


@pytest.fixture
def other_namespace(api: Api) -> Iterator[str]:
    """A second namespace with a town the restricted user must never see."""
    name = f"t-secret-{uuid.uuid4().hex[:8]}"
    assert api.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}}).status == 201
    create(api, name, town_object(name="secret-town"))
    yield name
    api.call("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture
def town_ns(api: Api, namespace: str) -> str:
    """Town demo with a convoy mid-flight: base closed, left in progress, top waiting."""
    create(api, namespace, town_object())
    convoy = {
        "apiVersion": f"{G}/v1alpha1",
        "kind": "Convoy",
        "metadata": {"name": "feat"},
        "spec": {"town": "demo", "rig": "app", "tasks": CONVOY_TASKS},
    }
    create(
        api, namespace, convoy, {"phase": "InProgress", "progress": "1/3", "total": 3, "closed": 1}
    )
    create(api, namespace, bead("feat-base", convoy="feat"), {"phase": "closed"})
    create(
        api,
        namespace,
        bead("feat-left", convoy="feat", dependsOn=["feat-base"]),
        {"phase": "in_progress", "assignee": POLECAT, "attempts": 1},
    )
    create(
        api, namespace, bead("feat-top", convoy="feat", dependsOn=["feat-left"]), {"phase": "open"}
    )
    agent = {
        "apiVersion": f"{G}/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": POLECAT},
        "spec": {
            "town": "demo",
            "role": "polecat",
            "rig": "app",
            "hook": "feat-left",
            "generation": 1,
        },
    }
    create(
        api,
        namespace,
        agent,
        {
            "phase": "working",
            "reports": [
                {
                    "seq": 1,
                    "generation": 1,
                    "type": "escalate",
                    "at": "2026-01-01T00:00:00Z",
                    "bead": "feat-left",
                    "message": "need a hand",
                }
            ],
        },
    )
    event = {
        "metadata": {"name": "feat-left.dispatch"},
        "involvedObject": {
            "apiVersion": f"{G}/v1alpha1",
            "kind": "Bead",
            "name": "feat-left",
            "namespace": namespace,
        },
        "type": "Normal",
        "reason": "Dispatched",
        "message": f"polecat {POLECAT} dispatched (attempt 1, pod {POLECAT}-g1)",
        "firstTimestamp": "2026-01-01T00:00:00Z",
        "lastTimestamp": "2026-01-01T00:00:00Z",
        "count": 1,
        "source": {"component": "gastown-operator"},
    }
    assert api.call("POST", f"/api/v1/namespaces/{namespace}/events", event).status == 201
    return namespace


class Running:
    """A dashboard server on a thread."""

    def __init__(self, kubeconfig: Path, namespace: str | None) -> None:
        session = fetch.connect(str(kubeconfig), namespace)
        self.server = web.serve(session.client, session.namespace, watch_seconds=5)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        eventually(self.server.views.mirror.ready, 30, "the dashboard's first lists")

    def get(self, path: str) -> tuple[int, str]:
        """GET a page."""
        try:
            with urllib.request.urlopen(self.server.url.rstrip("/") + path, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def stop(self) -> None:
        """Stop serving."""
        self.server.close()
        self.thread.join(timeout=10)


@pytest.fixture
def viewer(api: Api, control_plane: ControlPlane, town_ns: str, tmp_path: Path) -> Path:
    """The restricted user's kubeconfig."""
    return restricted_kubeconfig(api, control_plane, town_ns, tmp_path / "viewer.kubeconfig")


def test_dashboard_shows_only_what_the_user_may_read(
    viewer: Path, other_namespace: str, town_ns: str
) -> None:
    mine = Running(viewer, None)  # the context's namespace: the town's
    try:
        status, html = mine.get("/")
        assert status == 200
        assert 'href="/town/demo"' in html
        assert "secret-town" not in html
        assert mine.get("/town/secret-town")[0] == 404
        assert "Not readable" not in html
    finally:
        mine.stop()
    theirs = Running(viewer, other_namespace)
    try:
        status, html = theirs.get("/")
        assert status == 200
        assert "Not readable with your credentials" in html
        assert "forbidden" in html.lower()
        assert "secret-town" not in html
        assert theirs.get("/town/secret-town")[0] == 404
    finally:
        theirs.stop()


def test_convoy_page_updates_live_and_bead_timeline_lists_dispatches(
    api: Api, viewer: Path, town_ns: str
) -> None:
    running = Running(viewer, None)
    try:
        status, html = running.get("/convoy/feat")
        assert status == 200
        assert 'data-node="feat-left" data-phase="in_progress"' in html
        assert 'data-from="feat-base" data-to="feat-left"' in html
        with urllib.request.urlopen(running.server.url + "events", timeout=30) as stream:
            stream.readline()  # the current version
            stream.readline()
            patched = api.merge_patch(
                "Bead", town_ns, "feat-left", {"status": {"phase": "in_review"}}, sub="status"
            )
            assert patched.status == 200
            line = stream.readline().decode()  # the socket timeout bounds the wait
            assert line.startswith("data: "), line
        eventually(
            lambda: (
                'data-node="feat-left" data-phase="in_review"'
                in running.get("/convoy/feat?fragment=1")[1]
            ),
            10,
            "the convoy page to show the move",
        )
        status, timeline = running.get("/bead/feat-left")
        assert status == 200
        assert 'data-kind="dispatch"' in timeline
        assert f"pod {POLECAT}-g1" in timeline
        assert "generation 1" in timeline
        assert "need a hand" in timeline
    finally:
        running.stop()


def test_without_pods_and_events_the_pages_say_so_and_still_render(
    api: Api, control_plane: ControlPlane, town_ns: str, tmp_path: Path
) -> None:
    """A Role without pods and events: the town page names the Pod kind as not readable (403),
    and a bead's timeline shows what was readable, without the Events (which exist)."""
    config = restricted_kubeconfig(
        api, control_plane, town_ns, tmp_path / "no-core.kubeconfig", pods_and_events=False
    )
    running = Running(config, None)
    try:
        status, html = running.get("/town/demo")
        assert status == 200
        assert "Not readable with your credentials" in html
        assert "<li>Pod: 403: " in html
        assert 'href="/convoy/feat"' in html  # the town itself is still there
        status, timeline = running.get("/bead/feat-left")
        assert status == 200, timeline
        assert 'data-kind="dispatch"' not in timeline
        assert 'data-kind="event"' not in timeline
        assert "need a hand" in timeline  # the agent's report: readable, so shown
    finally:
        running.stop()
    listed = api.call("GET", f"/api/v1/namespaces/{town_ns}/events")
    assert any(e["reason"] == "Dispatched" for e in listed.body["items"])  # hidden, not absent


def test_the_dashboard_command_serves_until_interrupted(viewer: Path) -> None:
    """`kubectl-gastown dashboard --port 0` as the restricted user: it prints its URL, serves
    the town, and exits 0 on Ctrl-C (SIGINT)."""
    proc = subprocess.Popen(
        [str(ENTRY_POINT), "dashboard", "--port", "0", "--kubeconfig", str(viewer)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As in a terminal: a test runner started in the background may ignore SIGINT, and
        # exec would pass that on.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        stdout = proc.stdout

        def pump() -> None:
            for printed in stdout:
                lines.put(printed)

        threading.Thread(target=pump, daemon=True).start()
        try:
            line = lines.get(timeout=DEADLINE)
        except queue.Empty:
            pytest.fail(f"the dashboard printed no URL within {DEADLINE}s", pytrace=False)
        match = re.search(r"(http://127\.0\.0\.1:\d+/)$", line.strip())
        assert match is not None, line
        url = match.group(1)

        def town_listed() -> bool:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status == 200 and 'href="/town/demo"' in response.read().decode()

        eventually(town_listed, DEADLINE, "the dashboard to list town demo")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=DEADLINE)
        assert proc.stderr is not None
        err = proc.stderr.read()  # the process has exited: read to the end at once
        assert code == 0, err
        assert "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=DEADLINE)
