"""The local control plane launcher: version, start-up, and a clean stop by PID."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from gastown.devtools.controlplane import ControlPlane
from tests.support.api import Api

pytestmark = pytest.mark.cluster


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def _port_free(port: int) -> bool:
    """Nothing listens on the port (connections in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_version_reports_the_real_release(api: Api) -> None:
    version = api.call("GET", "/version").body
    assert version["gitVersion"].startswith("v1.34.")
    assert version["major"] == "1"


def test_a_second_control_plane_starts_and_stops_without_leftovers(tmp_path: Path) -> None:
    plane = ControlPlane(directory=tmp_path / "cp")
    plane.start()
    pids = dict(plane.pids)
    ports = [plane.api_port, plane.etcd_port]
    try:
        assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager"}
        assert all(_alive(pid) for pid in pids.values())
        assert plane.kubectl("get", "namespace", "default").returncode == 0
    finally:
        plane.stop()
    assert not any(_alive(pid) for pid in pids.values()), pids
    assert all(_port_free(port) for port in ports), ports
    assert plane.pids == {}
