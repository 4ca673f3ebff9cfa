"""End-to-end flows on the real node: agent pods are real containers (kubelet, containerd, runc).

The agent image is built locally (`gastown.devtools.images`, cached by content hash) and
imported into the node's containerd; Towns name it with `imagePullPolicy: Never`, so nothing is
ever pulled. Pods reach the rig's remote over authenticated smart HTTP and the scripted model
server on the node's bridge gateway, as they would reach hosted git and a model provider. The
operator runs on the host.

- the scripted coding agent lands a 3-bead review-then-land convoy and goes through one rework
  (the lean agent image: the runtime, `gt` and git, no coding-agent CLIs);
- the real Claude Code CLI (the full agent image) lands a bead, polecat and reviewing refinery
  both, as uid 1000 (Claude Code refuses its permission mode as root: no sandbox setting helps).

A background watcher records, for every pod, when it was first seen and first ran (pod created
-> Running latency), the node it was bound to, and its logs while it exists (the operator deletes
finished pods). These tests use the `real_node` fixture, so they run after every other test of
the session (see tests/conftest.py): the node's scheduler binds every pending pod.
"""

from __future__ import annotations

import re
import secrets
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gastown.devtools import images
from gastown.devtools.controlplane import ControlPlane
from gastown.devtools.gitserver import GitServer
from gastown.devtools.modelserver import ModelServer
from gastown.devtools.node import NODE_NAME, Node
from gastown.kube.labels import ROLE as ROLE_LABEL
from gastown.kube.pods import AGENT_UID
from gastown.model import BeadPhase, BeadType, ConvoyPhase
from tests.e2e.test_git_flow import scripted_town
from tests.support.api import Api
from tests.support.git import HttpRig, files_on, git, log, make_bare_repo
from tests.support.procs import Process
from tests.support.town import TownView, bead, convoy

# Cold, the first test also builds an agent image (minutes); warm, each flow takes seconds.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

LEAN = {"WITH_CLAUDE": "0", "WITH_CODEX": "0", "WITH_OPENCODE": "0", "WITH_AIDER": "0"}
LAND_TIMEOUT = 240.0
CLI_LAND_TIMEOUT = 360.0
TOWN = "demo"
THREE: list[dict[str, Any]] = [
    {"key": "base", "title": "Base"},
    {"key": "left", "title": "Left", "dependsOn": ["base"]},
    {"key": "right", "title": "Right", "dependsOn": ["base"]},
]


# -- fixtures ----------------------------------------------------------------------------------


def _agent_image(node: Node, directory: Path, build_args: dict[str, str]) -> str:
    """Build (or take from the cache) an agent image variant, import it into the node's
    containerd under its content-keyed ref only (the stable alias stays where it is); its ref."""
    manifest, _ = images.build(
        ["agent"], {"agent": build_args}, manifest_path=directory / "manifest.json"
    )
    record = manifest.images["agent"]
    node.import_image(Path(record.archive))
    return record.ref


@pytest.fixture(scope="module")
def lean_agent_image(real_node: Node, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The agent image without coding-agent CLIs, in the node's runtime."""
    return _agent_image(real_node, tmp_path_factory.mktemp("lean-image"), LEAN)


@pytest.fixture(scope="module")
def full_agent_image(real_node: Node, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The agent image with every coding-agent CLI, in the node's runtime."""
    return _agent_image(real_node, tmp_path_factory.mktemp("full-image"), {})


@pytest.fixture(scope="module")
def node_git_server(
    real_node: Node, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GitServer]:
    """Smart-HTTP git with basic auth on the node's bridge gateway: pods and the operator
    (on the host) both reach it there."""
    root = tmp_path_factory.mktemp("node-git")
    password = secrets.token_urlsafe(18)
    with GitServer(root, "gastown-node", password, host=real_node.gateway) as server:
        yield server


@pytest.fixture
def node_rig(node_git_server: GitServer, api: Api, namespace: str) -> HttpRig:
    """A bare repository with one commit on main served by `node_git_server`, and its
    credentials Secret (labelled for the town) in the test's namespace."""
    name = f"{namespace}/app.git"
    path = make_bare_repo(node_git_server.root / name)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "git-credentials", "labels": {"gastown.dev/town": TOWN}},
        "stringData": {
            "username": node_git_server.username,
            "password": node_git_server.password,
        },
    }
    created = api.call("POST", f"/api/v1/namespaces/{namespace}/secrets", secret)
    assert created.status == 201, created.message
    return HttpRig(path=path, url=node_git_server.url(name), secret="git-credentials")


@pytest.fixture
def node_model_server(real_node: Node) -> Iterator[ModelServer]:
    """The scripted model server on the node's bridge gateway, for one test."""
    with ModelServer(host=real_node.gateway) as server:
        yield server


# -- watching pods -----------------------------------------------------------------------------


@dataclass
class SeenPod:
    """What the watcher saw of one pod."""

    name: str
    first_seen: float
    started: float | None = None
    node: str | None = None
    phase: str = ""
    role: str = ""
    run_as_user: int | None = None
    logs: str = ""
    version: str = ""


class PodWatch:
    """Polls a namespace's pods in the background (every `interval` seconds).

    Records when each pod was first seen (within one interval of its creation: the watcher starts
    before anything creates pods) and when its container first ran, its node, and its logs
    (`kubectl logs`) each time its status changed after it started: the operator deletes a
    finished agent pod, so logs must be read while it exists.
    """

    def __init__(
        self, api: Api, plane: ControlPlane, namespace: str, interval: float = 0.1
    ) -> None:
        self.api, self.plane, self.namespace, self.interval = api, plane, namespace, interval
        self.pods: dict[str, SeenPod] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)

    def __enter__(self) -> PodWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
            except Exception as err:
                self.errors.append(repr(err))
            self._stop.wait(self.interval)

    def _poll(self) -> None:
        listed = self.api.call("GET", f"/api/v1/namespaces/{self.namespace}/pods")
        now = time.monotonic()
        for pod in listed.body.get("items", []):
            name = pod["metadata"]["name"]
            seen = self.pods.setdefault(name, SeenPod(name=name, first_seen=now))
            status = pod.get("status", {})
            seen.phase = status.get("phase", "")
            seen.node = pod["spec"].get("nodeName") or seen.node
            seen.role = pod["metadata"].get("labels", {}).get(ROLE_LABEL, "")
            seen.run_as_user = pod["spec"].get("securityContext", {}).get("runAsUser")
            states = [c.get("state", {}) for c in status.get("containerStatuses", [])]
            if seen.started is None and any("running" in s or "terminated" in s for s in states):
                seen.started = now
            version = pod["metadata"].get("resourceVersion", "")
            if seen.started is not None and version != seen.version:
                seen.version = version
                out = self.plane.kubectl("logs", "-n", self.namespace, name, check=False)
                if out.returncode == 0 and len(out.stdout) >= len(seen.logs):
                    seen.logs = out.stdout

    def latencies(self) -> list[float]:
        """Seconds from first seen to first running, for every pod that ran."""
        return [p.started - p.first_seen for p in self.pods.values() if p.started is not None]

    def report(self, what: str) -> str:
        """One line of figures for the test's output."""
        values = sorted(self.latencies())
        if not values:
            return f"{what}: no pod ran"
        return (
            f"{what}: {len(values)} pods, created -> Running median "
            f"{statistics.median(values):.2f} s, max {values[-1]:.2f} s"
        )


@pytest.fixture
def pod_watch(
    request: pytest.FixtureRequest, api: Api, control_plane: ControlPlane, namespace: str
) -> Iterator[PodWatch]:
    """A `PodWatch` of the test's namespace; prints every pod's logs if the test failed."""
    with PodWatch(api, control_plane, namespace) as watch:
        yield watch
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for pod in watch.pods.values():
            print(f"--- pod {pod.name} ({pod.role}, {pod.phase}) ---\n{pod.logs[-3000:]}")


# -- helpers -----------------------------------------------------------------------------------


def node_town(image: str, rig: HttpRig, **spec: Any) -> dict[str, Any]:
    """A scripted-agent town whose agent pods run `image` (imported, never pulled) and whose
    rig is `rig`, reached over authenticated smart HTTP."""
    body = scripted_town(rig.url, **spec)
    body["spec"]["agent"].update({"image": image, "imagePullPolicy": "Never"})
    # The node runner of the session's other tests may still be binding agent pods: the
    # selector keeps these for the real node (the runner honours nodeSelector, as a scheduler).
    body["spec"]["agent"]["nodeSelector"] = {"kubernetes.io/hostname": NODE_NAME}
    body["spec"]["rigs"][0]["credentialsSecret"] = rig.secret
    return body


def landed(view: TownView, name: str, timeout: float) -> Any:
    """Wait until the convoy is terminal; return it."""

    def done() -> Any:
        found = view.convoy(name)
        return found if found.status.phase in (ConvoyPhase.LANDED, ConvoyPhase.FAILED) else None

    return view.wait(done, timeout, f"convoy {name} to land")


def town_state(view: TownView) -> str:
    """Every bead and agent in one line each (for failure messages)."""
    lines = [
        f"bead {b.name} {b.spec.type.value} {b.status.phase.value} attempts={b.status.attempts} "
        f"assignee={b.status.assignee} reason={b.status.reason!r}"
        for b in view.beads()
    ]
    lines += [
        f"agent {a.name} {a.status.phase} hook={a.spec.hook} pod={a.status.pod}"
        for a in view.agents()
    ]
    return "\n".join(lines)


def assert_ran_on_the_node(watch: PodWatch, node: Node, at_least: int) -> list[SeenPod]:
    """Every agent pod was bound to the real node, ran, as uid 1000; returns the pods."""
    assert not watch.errors, watch.errors
    ran = [p for p in watch.pods.values() if p.started is not None]
    assert len(ran) >= at_least, watch.pods
    for pod in watch.pods.values():
        assert pod.node == node.name, pod
        assert pod.run_as_user == AGENT_UID, pod
    return ran


def session_logs(watch: PodWatch, pattern: str) -> list[SeenPod]:
    """Pods whose `kubectl logs` show the runtime starting the coding agent and a session line
    matching `pattern`."""
    return [
        p
        for p in watch.pods.values()
        if "starting coding agent" in p.logs and re.search(pattern, p.logs)
    ]


# -- the flows ---------------------------------------------------------------------------------


def test_review_then_land_convoy_lands_from_real_containers(
    real_node: Node,
    lean_agent_image: str,
    api: Api,
    namespace: str,
    node_rig: HttpRig,
    node_git_server: GitServer,
    pod_watch: PodWatch,
    operator_proc: Process,
    view: TownView,
) -> None:
    started = time.monotonic()
    assert api.create(namespace, node_town(lean_agent_image, node_rig)).status == 201
    assert api.create(namespace, convoy("feat", THREE)).status == 201
    result = landed(view, "feat", LAND_TIMEOUT)
    seconds = time.monotonic() - started
    assert result.status.phase is ConvoyPhase.LANDED, f"{result.status}\n{town_state(view)}"
    main_files = files_on(node_rig.path)
    for task in THREE:
        assert f"beads/feat-{task['key']}.md" in main_files, log(node_rig.path)
    # One landing merge of the feature branch into main.
    feature = result.status.feature_branch
    assert feature
    merges = git("log", "--merges", "--first-parent", "--format=%s", "main", cwd=node_rig.path)
    assert len([m for m in merges.splitlines() if feature in m]) == 1, merges
    # The pods were real containers on the node: 3 polecats and the refinery at least.
    assert_ran_on_the_node(pod_watch, real_node, at_least=4)
    # `kubectl logs` (API server -> kubelet) shows the coding agent's session.
    shown = session_logs(pod_watch, r'"subtype": "init"')
    assert shown, {p.name: p.logs[-500:] for p in pod_watch.pods.values()}
    assert any('"type": "result"' in p.logs for p in shown), shown[0].logs[-2000:]
    # Every clone, fetch and push went through the authenticated server.
    pushes = [r for r in node_git_server.requests if r.path.endswith("/git-receive-pack")]
    assert pushes
    assert all(r.user == node_git_server.username for r in pushes), pushes
    print(f"3-bead review-then-land convoy landed in {seconds:.1f} s")
    print(pod_watch.report("scripted convoy"))


def test_request_changes_once_goes_through_rework_on_the_node(
    real_node: Node,
    lean_agent_image: str,
    api: Api,
    namespace: str,
    node_rig: HttpRig,
    pod_watch: PodWatch,
    operator_proc: Process,
    view: TownView,
) -> None:
    started = time.monotonic()
    body = node_town(lean_agent_image, node_rig, refinery={"review": True})
    assert api.create(namespace, body).status == 201
    tasks = [{"key": "fix", "title": "Fix", "description": "[scripted: request-changes-once]"}]
    assert api.create(namespace, convoy("rw", tasks, mode="review-and-merge")).status == 201
    result = landed(view, "rw", LAND_TIMEOUT)
    seconds = time.monotonic() - started
    assert result.status.phase is ConvoyPhase.LANDED, f"{result.status}\n{town_state(view)}"
    reworks = [b for b in view.beads() if b.spec.type is BeadType.REWORK]
    assert len(reworks) == 1
    assert reworks[0].status.phase is BeadPhase.CLOSED
    assert "rework: " in git("log", "--format=%s", "main", cwd=node_rig.path)
    assert "beads/rw-fix.md" in files_on(node_rig.path)
    # A polecat, the reviewing refinery, the rework polecat, the second review.
    assert_ran_on_the_node(pod_watch, real_node, at_least=3)
    print(f"rework flow landed in {seconds:.1f} s")
    print(pod_watch.report("scripted rework"))


def test_claude_code_lands_a_bead_reviewed_by_claude_code_on_the_node(
    real_node: Node,
    full_agent_image: str,
    api: Api,
    namespace: str,
    node_rig: HttpRig,
    node_model_server: ModelServer,
    pod_watch: PodWatch,
    operator_proc: Process,
    view: TownView,
) -> None:
    started = time.monotonic()
    body = node_town(full_agent_image, node_rig, refinery={"review": True})
    agent = body["spec"]["agent"]
    # `claude` from the image's PATH; no IS_SANDBOX: the pod runs it as uid 1000.
    agent["codingAgent"] = {"kind": "claude-code"}
    env = {**node_model_server.env(), "GASTOWN_HEARTBEAT_SECONDS": "2"}
    agent["env"] = [{"name": k, "value": v} for k, v in env.items()]
    assert api.create(namespace, body).status == 201
    assert api.create(namespace, bead("hello", description="Add a greeting.")).status == 201

    def closed() -> Any:
        found = [b for b in view.beads() if b.name == "hello"]
        if found and found[0].status.phase in (BeadPhase.CLOSED, BeadPhase.FAILED):
            return found[0]
        return None

    result = view.wait(closed, CLI_LAND_TIMEOUT, "bead hello to be merged")
    seconds = time.monotonic() - started
    assert result.status.phase is BeadPhase.CLOSED, (result.status, node_model_server.requests)
    assert "beads/hello.md" in files_on(node_rig.path), log(node_rig.path)
    assert "hello: hello" in git("log", "--format=%s", "main", cwd=node_rig.path)
    calls = node_model_server.model_calls("anthropic")
    assert calls, "Claude Code never called the model server"
    # The polecat wrote and committed, the refinery reviewed: two Claude Code sessions.
    sessions = {c.headers.get("x-claude-code-session-id") for c in calls}
    assert len(sessions) >= 2, sessions
    ran = assert_ran_on_the_node(pod_watch, real_node, at_least=2)
    assert {p.role for p in ran} >= {"polecat", "refinery"}, ran
    # `kubectl logs` shows Claude Code's own stream-json session.
    shown = session_logs(pod_watch, r'"type":\s*"system",\s*"subtype":\s*"init"')
    assert shown, {p.name: p.logs[-500:] for p in pod_watch.pods.values()}
    assert any("claude" in p.logs for p in shown)
    print(f"claude-code bead landed on the node in {seconds:.1f} s")
    print(pod_watch.report("claude-code"))
