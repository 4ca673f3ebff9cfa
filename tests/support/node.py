"""Helpers for end-to-end flows on the real node (kubelet, containerd, runc).

Towns name a locally built agent image (imported into the node's containerd, never pulled) and
select the node by hostname; a background `PodWatch` records every pod's start latency, node and
`kubectl logs` while it exists (the operator deletes finished agent pods).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gastown.devtools import images
from gastown.devtools.controlplane import ControlPlane
from gastown.devtools.node import NODE_NAME, Node
from gastown.kube.labels import ROLE as ROLE_LABEL
from gastown.kube.pods import AGENT_UID
from tests.support.api import Api
from tests.support.git import HttpRig
from tests.support.town import scripted_town
from tests.unit.agent.fake_provider import FakeProvider

PR_TOKEN = "s3cr3t-token"
"""The fake GitHub token of `pr_town` (tests check it never leaks)."""

LEAN = {"WITH_CLAUDE": "0", "WITH_CODEX": "0", "WITH_OPENCODE": "0", "WITH_AIDER": "0"}
"""Build arguments of the agent image without coding-agent CLIs (the runtime, `gt` and git)."""


def agent_image(node: Node, directory: Path, build_args: dict[str, str]) -> str:
    """Build (or take from the cache) an agent image variant and import it into the node's
    containerd under its content-keyed ref only (the stable alias stays where it is); its ref."""
    manifest, _ = images.build(
        ["agent"], {"agent": build_args}, manifest_path=directory / "manifest.json"
    )
    record = manifest.images["agent"]
    node.import_image(Path(record.archive))
    return record.ref


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


def pr_town(api: Api, namespace: str, image: str, rig: HttpRig, fake: FakeProvider) -> None:
    """Create a town on the node whose rig merges through pull requests on the fake GitHub
    `fake` (its token in the Secret `gh`, value `PR_TOKEN`, opted in to the town)."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "gh", "labels": {"gastown.dev/town": "demo"}},
        "stringData": {"token": PR_TOKEN},
    }
    assert api.call("POST", f"/api/v1/namespaces/{namespace}/secrets", secret).status == 201
    body = node_town(image, rig, policy={"review": {"prPollIntervalSeconds": 1}})
    body["spec"]["rigs"][0].update(
        {
            "mergeStrategy": "pr",
            "pullRequests": {
                "kind": "github",
                "apiUrl": f"{fake.base}/gh",
                "repository": "o/r",
                "tokenSecret": {"name": "gh", "key": "token"},
            },
        }
    )
    assert api.create(namespace, body).status == 201


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


def _ctr(node: Node, *args: str) -> str:
    """`ctr` against the node's containerd, in the kubelet's namespace."""
    return subprocess.run(
        [
            "ctr",
            "--address",
            str(node.containerd_address),
            "--namespace",
            node.containerd_namespace,
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout


def running_containers(node: Node) -> set[str]:
    """Ids of the containers whose task runs in the node's containerd."""
    rows = _ctr(node, "tasks", "list").splitlines()[1:]  # TASK PID STATUS
    return {row.split()[0] for row in rows if row.split()[2:3] == ["RUNNING"]}


def kill_container(node: Node, pod: dict[str, Any], sig: str = "SIGKILL") -> None:
    """Signal the pod's (first) container's main process through containerd, as an OOM kill
    or a crash would end it: the kubelet only sees the container exit."""
    statuses = pod.get("status", {}).get("containerStatuses", [])
    assert statuses, pod.get("status")
    assert statuses[0].get("containerID"), statuses
    container = statuses[0]["containerID"].split("://", 1)[1]
    _ctr(node, "tasks", "kill", "--signal", sig, container)


def empty_dir(node: Node, pod: dict[str, Any], volume: str) -> Path:
    """Where the kubelet keeps a pod's emptyDir volume on the node (readable from the host)."""
    uid = pod["metadata"]["uid"]
    pod_dir = node.directory / "kubelet" / "pods" / uid
    return pod_dir / "volumes" / "kubernetes.io~empty-dir" / volume
