"""Two operator replicas with leader election on a control plane of their own, each behind a
proxy that can be cut: what the chaos tests and the soak run act on."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gastown.devtools.controlplane import ControlPlane, free_port
from tests.support.api import Api, eventually
from tests.support.git import make_bare_repo
from tests.support.procs import Process, operator, wait_started
from tests.support.proxy import CuttableProxy
from tests.support.town import AgentPlayer, TownView

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
LEASE_NAME = "gastown-operator"
LEASE_SECONDS = {
    "GASTOWN_LEADER_ELECT": "1",
    "GASTOWN_LEASE_DURATION_SECONDS": "4",
    "GASTOWN_LEASE_RENEW_DEADLINE_SECONDS": "3",
    "GASTOWN_LEASE_RETRY_PERIOD_SECONDS": "0.5",
}
"""Short lease timings: a take-over within seconds keeps the tests short."""
TAKEOVER_DEADLINE = 4 + 0.5 + 10  # lease duration, a retry period, and a generous margin


def holder(api: Api, namespace: str) -> str | None:
    """The Lease's holder, if any."""
    found = api.call(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{LEASE_NAME}"
    )
    if found.status != 200:
        return None
    spec: dict[str, Any] = found.body.get("spec") or {}
    name: str | None = spec.get("holderIdentity")
    return name


def new_holder(api: Api, namespace: str, other_than: str) -> str:
    """Wait until somebody other than `other_than` holds the Lease."""
    found: str = eventually(
        lambda: h if (h := holder(api, namespace)) not in (None, other_than) else None,
        TAKEOVER_DEADLINE,
        f"a replica other than {other_than} to take the lease",
    )
    return found


@dataclass
class Replica:
    """One operator replica and the proxy it reaches the API server through."""

    name: str
    proc: Process
    proxy: CuttableProxy
    metrics_port: int

    def signal(self, number: signal.Signals) -> None:
        """Send a signal to the replica's process group."""
        if self.proc.proc is not None and self.proc.proc.poll() is None:
            os.killpg(self.proc.proc.pid, number)

    def restart(self) -> None:
        """Start it again after a kill (it comes back as a standby)."""
        self.proc.start()
        wait_started(self.proc, "Initial authentication has finished")


@dataclass
class Cluster:
    """A control plane, two replicas, a namespace, a rig remote and an agent player."""

    plane: ControlPlane
    api: Api
    namespace: str
    replicas: dict[str, Replica]
    view: TownView
    player: AgentPlayer

    def leader(self) -> Replica:
        """The replica holding the Lease (waits until one does)."""
        name: str = eventually(lambda: holder(self.api, self.namespace), 30, "a leader")
        return self.replicas[name]

    def logs(self, lines: int = 120) -> str:
        """The tail of every replica's log."""
        return "\n".join(
            f"--- {r.name} log ---\n{r.proc.tail(lines)}" for r in self.replicas.values()
        )


def _kubeconfig_through(plane: ControlPlane, proxy: CuttableProxy, path: Path) -> Path:
    config: dict[str, Any] = yaml.safe_load(plane.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def chaos_cluster(
    directory: Path, replicas: int = 2, namespace: str = "chaos"
) -> Iterator[Cluster]:
    """Start everything under `directory`; stop everything on the way out."""
    plane = ControlPlane(directory=directory / "control-plane", audit_reads=True)
    plane.start()
    started: dict[str, Replica] = {}
    try:
        plane.install_crds(CRD_DIR)
        api = Api.from_kubeconfig(plane.kubeconfig, plane.directory / "pki" / "ca.crt")
        created = api.call("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
        assert created.status == 201, created.body
        for index in range(replicas):
            name = f"replica-{index}"
            proxy = CuttableProxy(target=plane.api_port)
            proxy.start()
            home = directory / name
            home.mkdir()
            port = free_port()
            proc = operator(
                plane,
                namespace,
                home,
                KUBECONFIG=str(_kubeconfig_through(plane, proxy, home / "kubeconfig")),
                GASTOWN_LEASE_IDENTITY=name,
                GASTOWN_LEASE_NAMESPACE=namespace,
                GASTOWN_METRICS_PORT=str(port),
                GASTOWN_METRICS_ADDRESS="127.0.0.1",
                **LEASE_SECONDS,
            )
            started[name] = Replica(name, proc, proxy, port)
        for replica in started.values():
            replica.proc.start()
        for replica in started.values():
            wait_started(replica.proc, "Initial authentication has finished")
        repo = make_bare_repo(directory / "remote" / "app.git")
        player = AgentPlayer(api, plane.kubeconfig, namespace, repo)
        yield Cluster(plane, api, namespace, started, TownView(api, namespace), player)
    finally:
        for replica in started.values():
            replica.signal(signal.SIGCONT)  # a frozen replica must be able to stop
            replica.proc.stop()
            replica.proxy.stop()
        plane.stop()
