"""Start and stop a real local Kubernetes control plane: etcd, kube-apiserver, controller-manager.

All three run as separate processes of the one multi-call binary built by `hack/build-kube.sh`.
The control plane lives in one directory (PKI, etcd data, logs, kubeconfig, `state.json` with
the PIDs), so `gastown cluster down` can stop exactly what `gastown cluster up` started.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import functools
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gastown.devtools import pki

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-kube.sh"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0
# The Service CIDR; its first address is the `kubernetes` Service, which pods on a local node
# reach through a NAT to the loopback API server (see devtools/node.py).
SERVICE_CIDR = "10.0.0.0/24"
# With `ControlPlane(audit_reads=True)` the API server records every list and watch (who, what,
# when; no bodies) so tests can count the reads a client makes, e.g. relists after a restart.
AUDIT_READS_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "verbs": ["list", "watch"]}, {"level": "None"}],
}


@dataclass(frozen=True)
class AuditedRequest:
    """One request the API server's audit log recorded."""

    verb: str
    resource: str
    user_agent: str
    code: int
    received: float  # seconds since the epoch


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or stopped."""


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def build_binary() -> Path:
    """Build the multi-call binary if needed (cached) and return its path; fail loudly."""
    override = os.environ.get("GASTOWN_KUBE_BIN")
    if override:
        return Path(override)
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False
    )
    if proc.returncode != 0:
        raise ControlPlaneError(
            f"building the local control plane failed (exit {proc.returncode}); "
            f"run `bash {BUILD_SCRIPT.relative_to(REPO_ROOT)}` to see why"
        )
    return Path(proc.stdout.strip().splitlines()[-1])


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
) -> None:
    """Poll `predicate` until it is true or `timeout` seconds pass (then raise)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class ControlPlane:
    """A running (or stopped) local control plane rooted at `directory`."""

    directory: Path
    binary: Path | None = None
    api_port: int = 0
    etcd_port: int = 0
    admin_token: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    startup_seconds: float = 0.0
    # Kubelets that may join (each gets a node token); fixed before start, see pki.generate.
    node_names: tuple[str, ...] = ()
    # Record every list and watch in `logs/audit.log` (see `audited`); off by default.
    audit_reads: bool = False
    _keys: pki.Pki | None = field(default=None, repr=False)
    _crds_installed: bool = False

    @property
    def kubeconfig(self) -> Path:
        """Path of the admin kubeconfig."""
        return self.directory / "kubeconfig"

    @property
    def server(self) -> str:
        """HTTPS URL of the API server."""
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def logs(self) -> Path:
        """Directory with one log file per component."""
        return self.directory / "logs"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, with_controller_manager: bool = True) -> None:
        """Start etcd, the API server and (by default) kube-controller-manager; wait until ready."""
        started = time.monotonic()
        self.binary = self.binary or build_binary()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        keys = pki.generate(self.directory / "pki", self.node_names)
        self._keys = keys
        self.admin_token = keys.admin_token
        try:
            self._start_etcd()
            self._start_apiserver(keys)
            self._write_kubeconfig(keys)
            wait_until(self._ready, START_TIMEOUT, "kube-apiserver /readyz")
            wait_until(
                lambda: self._get("/api/v1/namespaces/default") is not None,
                START_TIMEOUT,
                "the default namespace",
            )
            if with_controller_manager:
                self._start_controller_manager(keys)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        self._save_state()

    def restart(self, component: str, down_seconds: float = 0.0, *, kill: bool = False) -> None:
        """Stop one component and start it again on the same port and data (chaos tests).

        `component` is "etcd" or "kube-apiserver"; it stays down for `down_seconds` (the
        outage being simulated), is stopped with SIGKILL if `kill` (a crash) and SIGTERM
        otherwise, and this returns once the API server is ready again.
        """
        keys = self._keys
        if keys is None or component not in self.pids:
            raise ControlPlaneError(f"{component} was not started by this control plane")
        pid = self.pids.pop(component)
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _terminate(pid)
        time.sleep(down_seconds)  # the outage itself, not a synchronisation
        if component == "etcd":
            self._start_etcd(port=self.etcd_port)
        elif component == "kube-apiserver":
            self._start_apiserver(keys, port=self.api_port)
        else:
            raise ControlPlaneError(f"cannot restart {component}")
        wait_until(self._ready, START_TIMEOUT, "kube-apiserver /readyz after a restart")
        if self._crds_installed:
            # /readyz answers before the storage of custom resources is ready again (their
            # requests get 503 "storage is (re)initializing" for a moment).
            for plural in ("towns", "beads", "convoys", "agents"):
                path = f"/apis/gastown.dev/v1alpha1/{plural}"
                wait_until(
                    functools.partial(self._served, path),
                    START_TIMEOUT,
                    f"{plural} to be served after a restart",
                )

    def stop(self) -> None:
        """Stop every process this control plane started (by PID), newest first."""
        for name in reversed(list(self.pids)):
            _terminate(self.pids[name])
        self.pids.clear()
        self._save_state()

    # -- components ------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        assert self.binary is not None
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [str(self.binary), name, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the launcher; stopped by PID from state.json
        )
        log.close()
        self.pids[name] = proc.pid
        self._save_state()
        # Fail fast with the component's own words if it dies at start-up.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
            raise ControlPlaneError(f"{name} exited at start-up:\n{self._tail(name)}")

    def _tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _start_etcd(self, port: int = 0) -> None:
        self.etcd_port = port or free_port()
        peer = free_port()
        self._spawn(
            "etcd",
            [
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-url=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-url=http://127.0.0.1:{peer}",
            ],
        )
        wait_until(
            lambda: _http_ok(f"http://127.0.0.1:{self.etcd_port}/health"), START_TIMEOUT, "etcd"
        )

    def _start_apiserver(self, keys: pki.Pki, port: int = 0) -> None:
        self.api_port = port or free_port()
        self._spawn(
            "kube-apiserver",
            [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",  # no default route in sandboxes
                f"--secure-port={self.api_port}",
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--tls-cert-file={keys.serving_cert}",
                f"--tls-private-key-file={keys.serving_key}",
                f"--client-ca-file={keys.ca_cert}",
                f"--token-auth-file={keys.tokens}",
                f"--service-account-issuer=https://127.0.0.1:{self.api_port}",
                f"--service-account-key-file={keys.sa_pub}",
                f"--service-account-signing-key-file={keys.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                # Kubelets are judged as in a real cluster: they may only change their own Node
                # and the pods bound to it. The API server reaches a kubelet (logs, exec) at its
                # node IP (node names need not resolve) with a client certificate.
                "--enable-admission-plugins=NodeRestriction",
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={keys.kubelet_client_cert}",
                f"--kubelet-client-key={keys.kubelet_client_key}",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                f"--cert-dir={self.directory / 'certs'}",
                *self._audit_arguments(),
                "-v=1",
            ],
        )

    def _audit_arguments(self) -> list[str]:
        if not self.audit_reads:
            return []
        policy = self.directory / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_READS_POLICY))
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.logs / 'audit.log'}"]

    def audited(self) -> list[AuditedRequest]:
        """The requests recorded so far (a restarted API server appends to the same log)."""
        path = self.logs / "audit.log"
        if not path.exists():
            return []
        found = []
        for line in path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # the line being written
            received = datetime.datetime.fromisoformat(event["requestReceivedTimestamp"])
            found.append(
                AuditedRequest(
                    verb=event["verb"],
                    resource=event.get("objectRef", {}).get("resource", ""),
                    user_agent=event.get("userAgent", ""),
                    code=int(event.get("responseStatus", {}).get("code", 0)),
                    received=received.timestamp(),
                )
            )
        return found

    def _start_controller_manager(self, keys: pki.Pki) -> None:
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--use-service-account-credentials=false",
                f"--root-ca-file={keys.ca_cert}",
                f"--service-account-private-key-file={keys.sa_key}",
                "--kube-api-qps=1000",
                "--kube-api-burst=1000",
                # The garbage collector re-discovers new CRDs on this period.
                "--concurrent-gc-syncs=10",
                "-v=1",
            ],
        )

    # -- readiness -------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.directory / "pki" / "ca.crt"))

    def _get(self, path: str) -> dict[str, object] | None:
        request = urllib.request.Request(
            self.server + path, headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        try:
            with urllib.request.urlopen(request, context=self._ssl_context(), timeout=5) as resp:
                body = resp.read()
        except (urllib.error.URLError, OSError):
            return None
        try:
            parsed: dict[str, object] = json.loads(body)
        except ValueError:
            return {}
        return parsed

    def node_token(self, node: str) -> str:
        """The static token of kubelet `node`, read back from the API server's token file."""
        for line in (self.directory / "pki" / "tokens.csv").read_text().splitlines():
            token, user, *_ = line.split(",")
            if user == f"system:node:{node}":
                return token
        raise ControlPlaneError(
            f"the control plane has no token for node {node!r}: "
            "start it with that name in `node_names`"
        )

    def _served(self, path: str) -> bool:
        return self._get(path) is not None

    def _ready(self) -> bool:
        return self._get("/readyz") is not None

    def _write_kubeconfig(self, keys: pki.Pki) -> None:
        ca = base64.b64encode(keys.ca_cert.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "gastown-local",
                    "cluster": {"server": self.server, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": "admin", "user": {"token": keys.admin_token}}],
            "contexts": [
                {
                    "name": "gastown-local",
                    "context": {
                        "cluster": "gastown-local",
                        "user": "admin",
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "gastown-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    # -- state file ------------------------------------------------------------------------

    def _save_state(self) -> None:
        if not self.directory.exists():
            return
        state = {
            "binary": str(self.binary) if self.binary else None,
            "apiPort": self.api_port,
            "etcdPort": self.etcd_port,
            "pids": self.pids,
            "kubeconfig": str(self.kubeconfig),
        }
        (self.directory / "state.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, directory: Path) -> ControlPlane:
        """Re-attach to a control plane started earlier in `directory`."""
        state = json.loads((directory / "state.json").read_text())
        plane = cls(directory=directory, binary=Path(state["binary"]) if state["binary"] else None)
        plane.api_port = state["apiPort"]
        plane.etcd_port = state["etcdPort"]
        plane.pids = {k: int(v) for k, v in state["pids"].items()}
        return plane

    def install_crds(self, crd_dir: Path, timeout: float = 60.0) -> None:
        """Apply our CRDs and wait until they are Established and discoverable by category."""
        self._crds_installed = True
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd_dir))
        self.kubectl(
            "wait",
            "--for=condition=Established",
            f"--timeout={int(timeout)}s",
            "crd",
            "-l",
            "app.kubernetes.io/part-of=gastown",
        )
        # Discovery (and so `kubectl get gastown`) lags establishment by a moment.
        wait_until(
            lambda: self.kubectl("get", "gastown", "-A", check=False).returncode == 0,
            timeout,
            "the gastown category in discovery",
            interval=0.5,
        )

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this control plane."""
        self.binary = self.binary or build_binary()
        proc = subprocess.run(
            [
                str(self.binary),
                "kubectl",
                f"--kubeconfig={self.kubeconfig}",
                f"--cache-dir={self.directory / 'kubectl-cache'}",
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return proc


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone once reaped.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _terminate(pid: int) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; returns when the process is gone."""
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not _alive(pid), STOP_TIMEOUT, f"process {pid} to exit")
