"""`gastown cluster up` and `gastown cluster down` as a user runs them (`make cluster-up`).

`up` starts a control plane and, on Linux as root, the real node next to it; it must answer
through the kubeconfig it wrote, with the node Ready. `down` must leave nothing behind: no
process it started, no bridge, no NAT rule.

Like `test_demo.py`, this test starts its own control plane and a node of the default name and
bridge (`gastown-node`, `gastown0`): it does not use the `real_node` fixture, so the collection
order (see tests/conftest.py) runs it before the session's own real node starts, as one node of
a name can run per machine. Where the real node cannot run (not Linux, not root) it fails with
the reason, never skips.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gastown.devtools import node as local_node
from gastown.devtools.controlplane import ControlPlane
from tests.support.api import Api, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

UP_TIMEOUT = 1800  # a cold run installs the node's packages and builds kubelet and scheduler
DOWN_TIMEOUT = 300
GONE_TIMEOUT = 30.0


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: the kubelet keeps unix sockets under it, and a socket
    path may not exceed 107 bytes (pytest's own temporary paths come close)."""
    path = Path(tempfile.mkdtemp(prefix="cl-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def gastown(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run the `gastown` command line (the console script's entry point) as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "gastown.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def api_from(kubeconfig: Path, directory: Path) -> Api:
    """A client built from the kubeconfig alone (its server, token and embedded CA)."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    ca = directory / "kubeconfig-ca.crt"
    ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    return Api(cluster["server"], config["users"][0]["user"]["token"], ca)


def start_time(pid: int) -> str | None:
    """The process's start time (so a reused PID is not mistaken for it); None if it is gone
    or a zombie (gone for every purpose but the process table)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def still_running(started: dict[int, str | None]) -> list[int]:
    """The processes (recorded at `up`) that still run."""
    return [pid for pid, at in started.items() if at is not None and start_time(pid) == at]


def nat_rules() -> str:
    """The NAT table as `iptables-save -t nat` prints it."""
    return subprocess.run(
        ["iptables-save", "-t", "nat"], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def node_rules(node: dict[str, Any]) -> list[str]:
    """NAT rules naming the node's network or coming in on its bridge."""
    network = f"gastown-{node['name']}"  # Node.network_name
    return [
        line
        for line in nat_rules().splitlines()
        if network in line or f"-i {node['bridge']} " in line
    ]


def test_cluster_up_then_down_leaves_nothing_behind(short_dir: Path) -> None:
    reason = local_node.unsupported_reason()
    if reason:
        pytest.fail(f"the real node cannot run here: {reason}")
    directory = short_dir / "cluster"
    down_done = False
    try:
        up = gastown("cluster", "up", "--dir", str(directory), timeout=UP_TIMEOUT)
        assert up.returncode == 0, up.stderr[-4000:]
        kubeconfig = Path(up.stdout.strip().removeprefix("export KUBECONFIG="))
        assert kubeconfig == (directory / "kubeconfig").resolve(), up.stdout
        assert f"node {local_node.NODE_NAME} Ready" in up.stderr, up.stderr[-4000:]

        # The control plane answers through the kubeconfig `up` wrote, and the node is Ready.
        api = api_from(kubeconfig, short_dir)
        version = eventually(
            lambda: api.call("GET", "/version").body.get("gitVersion"), 30, "/version"
        )
        assert version.startswith("v1."), version

        def ready() -> bool:
            found = api.call("GET", f"/api/v1/nodes/{local_node.NODE_NAME}")
            conditions = found.body.get("status", {}).get("conditions", [])
            return found.status == 200 and any(
                c["type"] == "Ready" and c["status"] == "True" for c in conditions
            )

        eventually(ready, 60, f"node {local_node.NODE_NAME} to be Ready")

        # What `down` must remove is really there first (so this test can fail).
        plane_state = json.loads((directory / "state.json").read_text())
        node_state = json.loads((directory / "node" / "state.json").read_text())
        pids = [*plane_state["pids"].values(), *node_state["pids"].values()]
        assert {"kubelet", "containerd", "kube-scheduler"} <= set(node_state["pids"])
        started = {int(pid): start_time(int(pid)) for pid in pids}
        assert sorted(still_running(started)) == sorted(started), started
        bridge = Path(f"/sys/class/net/{node_state['bridge']}")
        assert bridge.exists(), bridge
        assert node_rules(node_state), "no NAT rule of the node after `cluster up`"

        down = gastown("cluster", "down", "--dir", str(directory), timeout=DOWN_TIMEOUT)
        down_done = True
        assert down.returncode == 0, down.stderr[-4000:]
        assert "node stopped" in down.stderr
        assert "control plane stopped" in down.stderr

        eventually(
            lambda: not still_running(started),
            GONE_TIMEOUT,
            "every process `cluster up` started to be gone",
        )
        assert not bridge.exists(), f"bridge {bridge.name} left behind"
        assert node_rules(node_state) == []
        plane = ControlPlane.load(directory)
        node = local_node.Node.load(plane, directory / "node")
        assert node.leftovers() == []
        assert not node.claim_path.exists()  # the name is free for the next node
        assert plane.pids == {}
        assert node.pids == {}
    finally:
        if not down_done and (directory / "state.json").exists():
            # A failed check must not leave a node holding the name for the rest of the session.
            gastown("cluster", "down", "--dir", str(directory), timeout=DOWN_TIMEOUT)
