"""The real local node: kubelet + containerd + runc + CNI bridge + kube-scheduler.

Pods here are real containers. The probe image (a tiny static program packed without a
registry) prints a line, reads its service-account token and calls the API server's /version
through the in-cluster address, which only works through the node's NAT of the `kubernetes`
Service IP to the loopback API server.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from gastown.devtools.controlplane import ControlPlane
from gastown.devtools.node import Node, NodeError, primary_interface
from tests.support.api import Api, eventually

pytestmark = pytest.mark.cluster

POD_TIMEOUT = 90.0


def probe_pod(
    node: Node, name: str, args: list[str] | None = None, memory: str = "64Mi"
) -> dict[str, Any]:
    """A pod running the probe image as uid 1000 with a read-only root fs and a memory limit."""
    container: dict[str, Any] = {
        "name": "probe",
        "image": node.probe_image,
        "imagePullPolicy": "Never",  # imported, never pulled
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {"limits": {"memory": memory, "cpu": "200m"}},
    }
    if args:
        container["args"] = args
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "securityContext": {
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "runAsNonRoot": True,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
        },
    }


def create_pod(api: Api, namespace: str, pod: dict[str, Any]) -> None:
    """Create a pod (no nodeName: the scheduler must place it)."""
    created = api.call("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    assert created.status == 201, created.body


def finished_pod(api: Api, namespace: str, name: str) -> dict[str, Any]:
    """Wait (with a deadline) until the pod has Succeeded or Failed; return it."""

    def done() -> dict[str, Any] | None:
        pod = api.call("GET", f"/api/v1/namespaces/{namespace}/pods/{name}").body
        return pod if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") else None

    return eventually(done, POD_TIMEOUT, f"pod {name} to finish")


def logs(plane: ControlPlane, namespace: str, name: str) -> str:
    """`kubectl logs`: the API server fetches them from the kubelet with its client cert."""
    return plane.kubectl("logs", "-n", namespace, name).stdout


def test_node_is_ready_with_its_primary_address(real_node: Node, api: Api) -> None:
    node = api.call("GET", f"/api/v1/nodes/{real_node.name}").body
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "True"
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == primary_interface().address
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.34.")
    assert real_node.startup_seconds < 60, real_node.startup_seconds
    # The bridge carries the host interface's MTU (a larger one would drop big packets).
    bridge_mtu = int(Path(f"/sys/class/net/{real_node.bridge}/mtu").read_text())
    assert bridge_mtu == primary_interface().mtu


def test_pod_is_scheduled_runs_and_reaches_the_api_through_the_service_ip(
    real_node: Node, control_plane: ControlPlane, api: Api, namespace: str
) -> None:
    name = f"probe-{uuid.uuid4().hex[:6]}"
    create_pod(api, namespace, probe_pod(real_node, name))
    pod = finished_pod(api, namespace, name)
    assert pod["spec"]["nodeName"] == real_node.name  # bound by kube-scheduler
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    # A pod IP from the node's bridge network, not the host's.
    assert pod["status"]["podIP"].startswith(real_node.pod_cidr.rsplit(".", 2)[0])
    out = logs(control_plane, namespace, name)
    assert "gastown probe: hello from uid 1000" in out
    assert f"GET https://{real_node.service_ip}:443/version -> 200" in out, out
    assert '"gitVersion": "v1.34.' in out


def test_memory_limit_is_enforced(real_node: Node, api: Api, namespace: str) -> None:
    name = f"oom-{uuid.uuid4().hex[:6]}"
    create_pod(api, namespace, probe_pod(real_node, name, ["alloc", "256"], memory="32Mi"))
    pod = finished_pod(api, namespace, name)
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled", terminated


def test_non_root_and_read_only_root_fs(
    real_node: Node, control_plane: ControlPlane, api: Api, namespace: str
) -> None:
    name = f"ro-{uuid.uuid4().hex[:6]}"
    create_pod(api, namespace, probe_pod(real_node, name, ["write", "/written"]))
    pod = finished_pod(api, namespace, name)
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    out = logs(control_plane, namespace, name)
    assert "hello from uid 1000" in out
    assert "write refused" in out, out
    assert "read-only file system" in out, out


def test_pods_reach_host_services_on_the_bridge_gateway(
    real_node: Node, control_plane: ControlPlane, api: Api, namespace: str
) -> None:
    """Git and model servers for agent pods listen on the gateway address: pods reach it."""

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello from the host"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((real_node.gateway, 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://{real_node.gateway}:{server.server_address[1]}/"
        name = f"get-{uuid.uuid4().hex[:6]}"
        create_pod(api, namespace, probe_pod(real_node, name, ["get", url]))
        pod = finished_pod(api, namespace, name)
        out = logs(control_plane, namespace, name)
        assert pod["status"]["phase"] == "Succeeded", out
        assert f"GET {url} -> 200 hello from the host" in out, out
    finally:
        server.shutdown()
        server.server_close()


def test_kubelet_refuses_anonymous_requests(real_node: Node) -> None:
    # TLS on the node IP; anyone without credentials the API server accepts gets 401.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    url = f"https://{real_node.node_ip}:{real_node.kubelet_port}/pods"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, context=context, timeout=10)
    assert refused.value.code == 401


def test_node_credentials_are_judged_by_the_node_authorizer(
    real_node: Node, control_plane: ControlPlane, api: Api, namespace: str
) -> None:
    kubelet = api.as_token(control_plane.node_token(real_node.name))
    # Its own Node: yes. Secrets of pods not bound to it, or other nodes' objects: no.
    assert kubelet.call("GET", f"/api/v1/nodes/{real_node.name}").status == 200
    assert kubelet.call("GET", f"/api/v1/namespaces/{namespace}/secrets").status == 403
    other = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "not-this-node"}}
    refused = kubelet.call("POST", "/api/v1/nodes", other)
    assert refused.status == 403, refused.body  # NodeRestriction


def test_a_second_node_of_the_same_name_is_refused_and_disturbs_nothing(
    real_node: Node, control_plane: ControlPlane, api: Api, tmp_path: Path
) -> None:
    """Two nodes of one name would share the bridge, cgroups and NAT rules (and each one's stop
    would tear the other down): the second refuses to start, naming the first."""
    assert json.loads(real_node.claim_path.read_text())["directory"] == str(real_node.directory)
    second = Node(plane=control_plane, directory=tmp_path / "second")
    with pytest.raises(NodeError, match="already runs on this machine from"):
        second.start()
    assert second.pids == {}
    assert not (tmp_path / "second" / "containerd").exists()
    node = api.call("GET", f"/api/v1/nodes/{real_node.name}").body
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
    assert real_node.leftovers()  # still running: nothing of it was torn down


def _nat_rules() -> str:
    return subprocess.run(
        ["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize("crashed", [False, True], ids=["clean", "after-crash"])
def test_stop_leaves_nothing_behind(tmp_path: Path, crashed: bool) -> None:
    """A throwaway control plane and node, with a running pod, stopped: nothing may remain.

    After a crash (kubelet and containerd SIGKILLed, so no CRI clean-up is possible) a stop from
    the saved state (as `gastown cluster down` does) must still remove everything.
    """
    name = "gastown-throwaway"
    plane = ControlPlane(directory=tmp_path / "cp", node_names=(name,))
    plane.start(with_controller_manager=True)
    node = Node(
        plane=plane,
        directory=tmp_path / "node",
        name=name,
        bridge="gastown-t0",
        pod_cidr="10.245.0.0/24",
    )
    try:
        node.start()
        api = Api.from_kubeconfig(plane.kubeconfig, plane.directory / "pki" / "ca.crt")
        eventually(
            lambda: (
                api.call("GET", "/api/v1/namespaces/default/serviceaccounts/default").status == 200
            ),
            30,
            "the default ServiceAccount",
        )
        # A long-running pod (the pause program as its container) so that stop has a live
        # sandbox, its container, mounts and CNI NAT rules to remove.
        pod = probe_pod(node, "sleeper")
        pod["spec"]["containers"][0]["image"] = node.pause_image
        create_pod(api, "default", pod)
        eventually(
            lambda: (
                api.call("GET", "/api/v1/namespaces/default/pods/sleeper")
                .body.get("status", {})
                .get("phase")
                == "Running"
            ),
            POD_TIMEOUT,
            "the sleeper pod to run",
        )
        pids = dict(node.pids)
        # Everything stop must remove is really there first (so this test can fail).
        before = node.leftovers()
        assert any(item.startswith("mount ") for item in before), before
        assert any(item.startswith("cgroup ") for item in before), before
        assert f"bridge {node.bridge}" in before
        assert node.network_name in _nat_rules()
        shims = [item for item in before if item.endswith("(shim)")]
        assert shims, before
        if crashed:
            for component in ("kubelet", "containerd"):
                os.kill(node.pids[component], signal.SIGKILL)
            node = Node.load(plane, node.directory)
    finally:
        try:
            node.stop()
        finally:
            plane.stop()
    assert node.leftovers() == []
    for pid in pids.values():
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        ), pid
    assert not Path(f"/sys/class/net/{node.bridge}").exists()
    assert node.network_name not in _nat_rules()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path) not in mounts
    assert json.loads((node.directory / "state.json").read_text())["pids"] == {}
    assert not node.claim_path.exists()  # the name is free for the next node
