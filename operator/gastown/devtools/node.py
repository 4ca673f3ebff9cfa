"""A real local node next to a `ControlPlane`: containerd + runc + a CNI bridge, a kubelet and
kube-scheduler.

Pods run in real containers: containerd (Debian's, with its own config, root, state and socket
in the node's directory) runs them with runc; a CNI bridge gives each pod an address; the kubelet
and kube-scheduler are built from the same Kubernetes modules as the control plane
(`hack/build-node.sh`). The kubelet is a node as in a real cluster: it authenticates with a node
token (user `system:node:<name>`, group `system:nodes`, so the Node authorizer and
NodeRestriction judge it), serves TLS on the node IP only, and sends every request it receives
to the API server for authentication and authorization (no anonymous access).

Pods reach the API server through its in-cluster address: the first IP of the Service CIDR
(the `kubernetes` Service, already in the serving certificate) is NAT'ed on the bridge to the
loopback API server, as kube-proxy would route it.

No cluster DNS: nothing the product runs resolves Service names (in-cluster clients use the
`KUBERNETES_SERVICE_HOST` address, git and model servers are given by address), so pods use the
host's resolver and the kubelet warns `MissingClusterDNS`.

Images: none can be pulled. The sandbox ("pause") image and a small probe image for tests are
packed here as OCI archives from static binaries and imported into containerd's `k8s.io`
namespace; other images are imported with `import_image` (or `gastown cluster import-image`).

Linux and root only (`unsupported_reason` says why not, elsewhere). Everything the node creates
is removed by `stop`: processes (by PID), containers and sandboxes (through CRI, so CNI removes
their NAT rules), mounts under the node directory, cgroups, the bridge and our NAT rule; and
`leftovers` lists whatever would still be there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import gzip
import hashlib
import io
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gastown.devtools.controlplane import (
    REPO_ROOT,
    SERVICE_CIDR,
    ControlPlane,
    free_port,
    wait_until,
)

BUILD_SCRIPT = REPO_ROOT / "hack" / "build-node.sh"
INSTALL_SCRIPT = REPO_ROOT / "hack" / "install-node-deps.sh"
NODE_NAME = "gastown-node"
CONTAINERD_NAMESPACE = "k8s.io"  # the namespace containerd's CRI plugin (and so the kubelet) uses
CNI_BIN_DIR = Path("/usr/lib/cni")
# Where libcni (inside containerd) caches each attachment's result; not configurable in the
# containerd we use. A CNI DEL removes an entry; after a crash, stop removes ours by name.
CNI_CACHE = Path("/var/lib/cni/results")
# Paths the kubelet and the containerd shims use whatever their configuration says: removed
# by the last node to stop, only if they did not exist before and are empty by then.
SHARED_HOST_PATHS = (
    Path("/var/lib/kubelet/device-plugins/kubelet.sock"),
    Path("/var/lib/kubelet/device-plugins"),
    Path("/var/lib/kubelet"),
    Path("/run/containerd/s"),
    Path("/run/containerd"),
)
# One node of a name per machine: its bridge, cgroup root and NAT rules are named after it.
# Here a claim file says which node directory holds the name (see `Node._claim`), and a folder
# of the node's name holds containerd's sockets: unix socket paths are limited to 108 bytes, too
# few for a node directory deep in a checkout or a test's temporary directory.
RUN_DIR = Path("/run/gastown")
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0


class NodeError(RuntimeError):
    """The node could not be installed, built, started or stopped cleanly."""


# -- where it can run ------------------------------------------------------------------------


def unsupported_reason() -> str | None:
    """Why a local node cannot run on this machine (None when it can)."""
    if sys.platform != "linux":
        return f"a local node needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "a local node needs root (containerd, runc, CNI and NAT rules)"
    return None


def install_dependencies() -> None:
    """Install containerd, runc, the CNI plugins and iptables if missing (idempotent)."""
    proc = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise NodeError(
            f"installing the node's dependencies failed (exit {proc.returncode}): "
            f"{proc.stderr.strip()}"
        )


@dataclass(frozen=True)
class NodeBinaries:
    """The node's built programs."""

    kubenode: Path  # multi-call: kubelet, kube-scheduler, cri-clean
    pause: Path  # the pod sandbox program
    probe: Path  # the test workload


def build_binaries() -> NodeBinaries:
    """Build the node's programs if needed (cached outside the repository); fail loudly."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False
    )
    if proc.returncode != 0:
        raise NodeError(
            f"building the local node failed (exit {proc.returncode}); "
            f"run `bash {BUILD_SCRIPT.relative_to(REPO_ROOT)}` to see why"
        )
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return NodeBinaries(
        kubenode=Path(paths["kubenode"]), pause=Path(paths["pause"]), probe=Path(paths["probe"])
    )


# -- images without a registry ---------------------------------------------------------------


def _blob(blobs: dict[str, bytes], data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": digest, "size": len(data)}


def pack_binary_image(binary: Path, ref: str, archive: Path) -> None:
    """Write an OCI archive of image `ref` holding only `binary` as `/<name>`, its entrypoint.

    The layer is deterministic (fixed owner and times), so the same binary gives the same image
    digest and re-importing it changes nothing.
    """
    name = binary.name
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = binary.stat().st_size
        info.mode = 0o755
        with binary.open("rb") as handle:
            tar.addfile(info, handle)
    layer = layer_tar.getvalue()
    blobs: dict[str, bytes] = {}
    layer_desc = _blob(blobs, gzip.compress(layer, mtime=0))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": [f"/{name}"], "Env": ["PATH=/"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    config_desc = _blob(blobs, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer_desc}],
    }
    manifest_desc = _blob(blobs, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_desc,
                "platform": {"architecture": "amd64", "os": "linux"},
                # containerd names the imported image after this annotation.
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1],
                },
            }
        ],
    }
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True).encode(),
    }
    files.update({f"blobs/sha256/{d.split(':', 1)[1]}": data for d, data in blobs.items()})
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, mode="w") as out:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


def import_image(
    archive: Path, containerd_address: Path | str, namespace: str = CONTAINERD_NAMESPACE
) -> None:
    """Import an OCI (or docker) image archive into the containerd at `containerd_address`.

    Images in the `k8s.io` namespace are what the kubelet sees; pods use them with
    `imagePullPolicy: IfNotPresent` (or `Never`) and a tag other than `latest`.
    """
    proc = subprocess.run(
        [
            "ctr",
            f"--address={containerd_address}",
            f"--namespace={namespace}",
            "images",
            "import",
            str(archive),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise NodeError(f"importing {archive} failed: {proc.stderr.strip() or proc.stdout}")


def _image_ref(name: str, binary: Path) -> str:
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()[:12]
    return f"localhost/gastown/{name}:{digest}"


# -- host network ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HostInterface:
    """The machine's primary interface: the one the default route leaves through."""

    name: str
    address: str
    mtu: int


def primary_interface() -> HostInterface:
    """Find the primary interface, its IPv4 address and MTU (from `ip`, no traffic sent)."""
    routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "default"]))
    if not routes:
        raise NodeError("no default route: the node needs a primary interface address")
    dev = routes[0]["dev"]
    links = json.loads(_run(["ip", "-j", "-4", "addr", "show", "dev", dev]))
    addresses = [a["local"] for a in links[0].get("addr_info", []) if a.get("family") == "inet"]
    if not addresses:
        raise NodeError(f"the primary interface {dev} has no IPv4 address")
    return HostInterface(name=dev, address=addresses[0], mtu=int(links[0]["mtu"]))


def _run(argv: list[str], check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _cgroup_files(root: Path, name: str) -> list[Path]:
    """Files `name` under a cgroup tree; cgroups vanish while it is walked (a dying container),
    so a walk that loses a directory is walked again."""
    for _ in range(5):
        if not root.exists():
            return []
        try:
            return list(root.rglob(name))
        except FileNotFoundError:
            continue
    return []


def _epoch(stamp: object) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp of the API (0 if absent)."""
    if not isinstance(stamp, str) or not stamp:
        return 0.0
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _cgroup_mounts() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 controllers and the unified one)."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ")
        if len(fields) == 2 and fields[1].split()[0] in ("cgroup", "cgroup2"):
            mounts.append(Path(fields[0].split()[4]))
    return mounts


def _mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below `directory`, deepest last (as mounted)."""
    prefix = str(directory.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(Path(point))
    return found


def _pids_with_arg(needle: str) -> list[int]:
    """PIDs of processes whose command line contains `needle` (containerd shims of a node)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
    return pids


def _read_claim(path: Path) -> dict[str, str] | None:
    """A node-name claim (directory, pid), or None when there is none or it is unreadable."""
    try:
        claim = json.loads(path.read_text())
        return {"directory": str(claim["directory"]), "pid": str(int(claim["pid"]))}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _claim_alive(claim: dict[str, str]) -> bool:
    """Whether a claim's node may still run: its starting process lives, or some process runs
    with its directory on the command line (containerd, kubelet and shims all do)."""
    return _alive(int(claim["pid"])) or bool(_pids_with_arg(claim["directory"] + "/"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    # A zombie that is not our child is gone for every purpose but the process table.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _terminate(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, SIGKILL after `timeout`; returns once the process is gone."""
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(NodeError, RuntimeError):
        _wait(lambda: not _alive(pid), timeout, f"process {pid} to exit", interval=0.05)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait(lambda: not _alive(pid), timeout, f"process {pid} to exit after SIGKILL", interval=0.05)


def _wait(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    try:
        wait_until(predicate, timeout, what, interval)
    except RuntimeError as err:
        raise NodeError(str(err)) from None


# -- the node --------------------------------------------------------------------------------


@dataclass
class Node:
    """A local node (containerd, kubelet, and by default kube-scheduler) joined to `plane`.

    `bridge` and `pod_cidr` must be unique per node on the machine; the defaults suit one node.
    """

    plane: ControlPlane
    directory: Path
    name: str = NODE_NAME
    bridge: str = "gastown0"
    pod_cidr: str = "10.244.0.0/24"
    with_scheduler: bool = True
    binaries: NodeBinaries | None = None
    pids: dict[str, int] = field(default_factory=dict)
    node_ip: str = ""
    kubelet_port: int = 0
    api_port: int = 0
    pause_image: str = ""
    probe_image: str = ""
    startup_seconds: float = 0.0
    ip_forward_before: str = ""
    host_paths_before: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Sockets and config files carry this path: make it absolute once.
        self.directory = self.directory.resolve()

    # -- names -----------------------------------------------------------------------------

    @property
    def containerd_address(self) -> Path:
        """containerd's gRPC socket (for `ctr --address`, CRI clients and image imports)."""
        return self.socket_dir / "containerd.sock"

    @property
    def socket_dir(self) -> Path:
        """The node's folder of sockets (short and machine-wide: the node's name is claimed)."""
        return RUN_DIR / self.name

    @property
    def containerd_namespace(self) -> str:
        """The containerd namespace the kubelet's pods and images live in."""
        return CONTAINERD_NAMESPACE

    @property
    def cri_endpoint(self) -> str:
        """The CRI endpoint the kubelet uses."""
        return f"unix://{self.containerd_address}"

    @property
    def logs(self) -> Path:
        """One log file per process."""
        return self.directory / "logs"

    @property
    def network_name(self) -> str:
        """The CNI network name (CNI tags the NAT rules it makes with it)."""
        return f"gastown-{self.name}"

    @property
    def cgroup_root(self) -> str:
        """The cgroup under which the kubelet puts every pod (one per node)."""
        return f"/gastown-{self.name}"

    @property
    def gateway(self) -> str:
        """The bridge's address: pods reach host services (git, model servers) here."""
        return str(next(ipaddress.ip_network(self.pod_cidr).hosts()))

    @property
    def service_ip(self) -> str:
        """The `kubernetes` Service address that pods use to reach the API server."""
        return str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))

    def _dnat_rule(self) -> list[str]:
        return [
            "PREROUTING",
            "-i",
            self.bridge,
            "-d",
            f"{self.service_ip}/32",
            "-p",
            "tcp",
            "--dport",
            "443",
            "-m",
            "comment",
            "--comment",
            f"{self.network_name}: kubernetes service to the loopback API server",
            "-j",
            "DNAT",
            "--to-destination",
            f"127.0.0.1:{self.api_port}",
        ]

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Install, build, start containerd, network, kubelet (and scheduler); wait until Ready."""
        reason = unsupported_reason()
        if reason:
            raise NodeError(reason)
        started = time.monotonic()
        self._check_socket_paths()
        self._claim()
        install_dependencies()
        self.binaries = self.binaries or build_binaries()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.api_port = self.plane.api_port
        try:
            token = self.plane.node_token(self.name)  # fails before anything starts
        except RuntimeError as err:
            raise NodeError(str(err)) from None
        host = primary_interface()
        self.node_ip = host.address
        self.kubelet_port = free_port_on(self.node_ip)
        self.host_paths_before = [str(path) for path in SHARED_HOST_PATHS if path.exists()]
        try:
            self._start_containerd()
            self._import_own_images()
            self._setup_network(host.mtu)
            self._start_kubelet(token)
            if self.with_scheduler:
                self._start_scheduler()
            _wait(self._ready, START_TIMEOUT, f"node {self.name} to be Ready", interval=0.5)
        except BaseException:
            with contextlib.suppress(NodeError):
                self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        self._save_state()

    def lose(self) -> None:
        """The node dies with its pods (chaos tests): the kubelet is SIGKILLed and every process
        of every container is killed; containerd and its images stay (the disk survives)."""
        pid = self.pids.pop("kubelet", None)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _terminate(pid, timeout=5)
        for mount in _cgroup_mounts():
            for procs in _cgroup_files(mount / self.cgroup_root.lstrip("/"), "cgroup.procs"):
                with contextlib.suppress(OSError):
                    for process in procs.read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(process), signal.SIGKILL)
        self._save_state()

    def revive(self) -> None:
        """Start the kubelet of a lost node again (same name, address and port); wait until the
        node is Ready."""
        if "kubelet" in self.pids:
            raise NodeError(f"node {self.name} is not lost")
        revived = time.time()
        self._start_kubelet(self.plane.node_token(self.name))
        # The Node may still say Ready from before it was lost: wait for a fresh heartbeat.
        _wait(
            lambda: self._ready(heartbeat_after=revived - 1),
            START_TIMEOUT,
            f"node {self.name} to be Ready again",
            interval=0.5,
        )
        self._save_state()

    def stop(self) -> None:
        """Stop everything the node started and remove what it made; raise if anything is left."""
        for name in ("kube-scheduler", "kubelet"):
            if name in self.pids:
                _terminate(self.pids.pop(name))
        if "containerd" in self.pids and _alive(self.pids["containerd"]):
            self._remove_sandboxes()
        if "containerd" in self.pids:
            _terminate(self.pids.pop("containerd"))
        # Shims outlive containerd; after the sandboxes are gone there should be none, but a
        # failed clean-up must not leave them (or the containers under them) running.
        for pid in _pids_with_arg(str(self.containerd_address)):
            _terminate(pid, timeout=5)
        self._kill_cgroup_processes()
        for point in reversed(_mounts_under(self.directory)):
            _run(["umount", "-l", str(point)], check=False)
        self._remove_cgroups()
        self._teardown_network()
        self._remove_host_paths()
        if not _pids_with_arg(str(self.containerd_address)):
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        self._save_state()
        left = self.leftovers()
        if left:
            # The claim stays: whatever is left still holds the bridge and cgroup names.
            raise NodeError(f"node {self.name} left behind: {'; '.join(left)}")
        self._release()

    # -- one node of a name per machine ----------------------------------------------------

    def _check_socket_paths(self) -> None:
        """Refuse, before starting anything, a directory too deep for the kubelet's sockets."""
        sockets = ("device-plugins/kubelet.sock", "pod-resources/kubelet.sock")
        longest = max(len(str(self.directory / "kubelet" / s).encode()) for s in sockets)
        if longest > SOCKET_PATH_MAX:
            raise NodeError(
                f"the node directory {self.directory} is too long for the kubelet's unix "
                f"sockets under it ({longest} > {SOCKET_PATH_MAX} bytes): use a shorter one"
            )

    @property
    def claim_path(self) -> Path:
        """The machine-wide claim of this node's name."""
        return RUN_DIR / f"node-{self.name}.json"

    def _claim(self) -> None:
        """Claim the node's name on this machine, or raise naming the node that holds it.

        Two nodes of one name would share a bridge, a cgroup root and NAT rules, and each one's
        `stop` would tear down the other's. A claim whose holder is gone (its starting process
        exited and no process runs from its directory, e.g. after a reboot or a SIGKILLed test
        session that `cluster down` cleaned) is taken over. The check and the write happen under
        an exclusive lock, so two sessions starting at once cannot both win.
        """
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        with (RUN_DIR / ".lock").open("w") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            holder = _read_claim(self.claim_path)
            if holder and holder["directory"] != str(self.directory) and _claim_alive(holder):
                raise NodeError(
                    f"a node named {self.name} already runs on this machine from "
                    f"{holder['directory']} (started by process {holder['pid']}); stop it first "
                    "(`gastown cluster down` on its directory, or let its test session end)"
                )
            claim = {"directory": str(self.directory), "pid": os.getpid()}
            self.claim_path.write_text(json.dumps(claim))

    def _release(self) -> None:
        """Drop the claim if it is this node's."""
        holder = _read_claim(self.claim_path)
        if holder and holder["directory"] == str(self.directory):
            self.claim_path.unlink(missing_ok=True)

    def leftovers(self) -> list[str]:
        """Everything of this node still on the machine (empty after a clean `stop`)."""
        left = [f"process {name} ({pid})" for name, pid in self.pids.items() if _alive(pid)]
        left += [f"process {pid} (shim)" for pid in _pids_with_arg(str(self.containerd_address))]
        left += [f"mount {point}" for point in _mounts_under(self.directory)]
        if self.socket_dir.exists():
            left.append(f"socket folder {self.socket_dir}")
        left += [
            f"cgroup {mount / self.cgroup_root.lstrip('/')}"
            for mount in _cgroup_mounts()
            if (mount / self.cgroup_root.lstrip("/")).exists()
        ]
        if Path(f"/sys/class/net/{self.bridge}").exists():
            left.append(f"bridge {self.bridge}")
        if CNI_CACHE.is_dir():
            left += [
                f"CNI cache {entry}"
                for entry in CNI_CACHE.iterdir()
                if entry.name.startswith(f"{self.network_name}-")
            ]
        for table in ("nat", "filter", "mangle"):
            rules = _run(["iptables-save", "-t", table], check=False)
            left += [
                f"{table} rule {line}"
                for line in rules.splitlines()
                if self.network_name in line or f"-i {self.bridge} " in line
            ]
        return left

    # -- containerd ------------------------------------------------------------------------

    def _containerd_config(self) -> str:
        base = self.directory / "containerd"
        cri = '[plugins."io.containerd.grpc.v1.cri"]'
        return f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"

[grpc]
  address = "{self.containerd_address}"

[ttrpc]
  address = "{self.containerd_address}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"

{cri}
  sandbox_image = "{self.pause_image}"
  # Root here may lack CAP_SYS_RESOURCE: without this every sandbox fails in runc.
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Network namespaces under our state directory, so stop can find and remove them.
  netns_mounts_under_state_dir = true

  {cri[:-1]}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    {cri[:-1]}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      {cri[:-1]}.containerd.runtimes.runc.options]
        # PID 1 is not systemd here: cgroupfs, as the kubelet.
        SystemdCgroup = false
        # runc's own state in our directory, not the machine's default.
        Root = "{base / "runc"}"

  {cri[:-1]}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.directory / "cni" / "net.d"}"
    max_conf_num = 1
"""

    def _start_containerd(self) -> None:
        assert self.binaries is not None
        self.pause_image = _image_ref("pause", self.binaries.pause)
        self.probe_image = _image_ref("probe", self.binaries.probe)
        config = self.directory / "containerd" / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(self._containerd_config())
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.chmod(0o700)  # the socket is root's: containerd runs anything asked
        self._spawn("containerd", ["containerd", f"--config={config}"])
        _wait(
            lambda: (
                subprocess.run(
                    ["ctr", f"--address={self.containerd_address}", "version"],
                    capture_output=True,
                    check=False,
                ).returncode
                == 0
            ),
            START_TIMEOUT,
            "containerd",
        )

    def _import_own_images(self) -> None:
        assert self.binaries is not None
        images = self.directory / "images"
        for ref, binary in (
            (self.pause_image, self.binaries.pause),
            (self.probe_image, self.binaries.probe),
        ):
            archive = images / f"{binary.name}.oci.tar"
            pack_binary_image(binary, ref, archive)
            self.import_image(archive)

    def import_image(self, archive: Path) -> None:
        """Import an OCI image archive into this node's containerd, where the kubelet sees it."""
        import_image(archive, self.containerd_address, self.containerd_namespace)

    def _remove_sandboxes(self) -> None:
        """Stop and remove every pod sandbox through CRI: this runs each sandbox's CNI DEL."""
        self.binaries = self.binaries or build_binaries()
        proc = subprocess.run(
            [str(self.binaries.kubenode), "cri-clean", f"-endpoint={self.cri_endpoint}"],
            capture_output=True,
            text=True,
            timeout=STOP_TIMEOUT * 3,
            check=False,
        )
        (self.logs / "cri-clean.log").write_text(proc.stdout + proc.stderr)

    # -- network ---------------------------------------------------------------------------

    def _setup_network(self, mtu: int) -> None:
        """The bridge (made here so it can be set up before any pod), CNI config and the NAT."""
        prefix = ipaddress.ip_network(self.pod_cidr).prefixlen
        self.ip_forward_before = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        self._save_state()
        if not Path(f"/sys/class/net/{self.bridge}").exists():
            _run(["ip", "link", "add", "name", self.bridge, "type", "bridge"])
        _run(["ip", "link", "set", self.bridge, "mtu", str(mtu), "up"])
        _run(["ip", "addr", "replace", f"{self.gateway}/{prefix}", "dev", self.bridge])
        # DNAT to 127.0.0.1 of packets arriving on the bridge needs route_localnet on it.
        Path(f"/proc/sys/net/ipv4/conf/{self.bridge}/route_localnet").write_text("1\n")
        if (
            subprocess.run(
                ["iptables", "-t", "nat", "-C", *self._dnat_rule()], capture_output=True
            ).returncode
            != 0
        ):
            _run(["iptables", "-t", "nat", "-A", *self._dnat_rule()])
        netd = self.directory / "cni" / "net.d"
        netd.mkdir(parents=True, exist_ok=True)
        conf = {
            "cniVersion": "0.4.0",
            "name": self.network_name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "mtu": mtu,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.pod_cidr, "gateway": self.gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.directory / "cni" / "ipam"),
                    },
                }
            ],
        }
        (netd / "10-gastown.conflist").write_text(json.dumps(conf, indent=2))

    def _teardown_network(self) -> None:
        while (
            subprocess.run(
                ["iptables", "-t", "nat", "-D", *self._dnat_rule()], capture_output=True
            ).returncode
            == 0
        ):
            pass  # delete every copy (a crashed start may have added one twice)
        self._remove_cni_nat_rules()
        if Path(f"/sys/class/net/{self.bridge}").exists():
            _run(["ip", "link", "delete", self.bridge])
        # The bridge plugin turns IP forwarding on; give the machine back what it had, unless
        # another node (or kubelet) still runs and may need it.
        if self.ip_forward_before in ("0", "1") and not _pids_with_arg("kubenode\x00kubelet"):
            Path("/proc/sys/net/ipv4/ip_forward").write_text(self.ip_forward_before + "\n")

    def _remove_host_paths(self) -> None:
        """Remove our CNI cache entries, and the shared host paths once no node runs."""
        if CNI_CACHE.is_dir():
            ours = [e for e in CNI_CACHE.iterdir() if e.name.startswith(f"{self.network_name}-")]
            # Entries are `<network>-<sandbox id>-<ifname>`; the loopback entry has the same id.
            ids = {e.name[len(self.network_name) + 1 :].rsplit("-", 1)[0] for e in ours}
            for entry in ours + [CNI_CACHE / f"cni-loopback-{sid}-lo" for sid in ids]:
                with contextlib.suppress(OSError):
                    entry.unlink()
        if _pids_with_arg("kubenode\x00kubelet"):
            return  # another kubelet uses them
        for path in SHARED_HOST_PATHS:
            if str(path) in self.host_paths_before or not path.exists():
                continue
            with contextlib.suppress(OSError):
                if path.is_socket():
                    path.unlink()
                elif path.is_dir():
                    path.rmdir()  # only when empty: another containerd may be using it

    def _remove_cni_nat_rules(self) -> None:
        """Remove NAT rules and chains CNI made for this network that a CNI DEL did not."""
        rules = _run(["iptables-save", "-t", "nat"], check=False).splitlines()
        chains = set()
        for line in rules:
            if line.startswith("-A ") and self.network_name in line:
                chain = line.split()[1]
                target = line.split(" -j ")[-1].split()[0] if " -j " in line else ""
                argv = _split_rule(line[3:])
                _run(["iptables", "-t", "nat", "-D", *argv], check=False)
                if target.startswith("CNI-"):
                    chains.add(target)
                if chain.startswith("CNI-"):
                    chains.add(chain)
        for chain in chains:
            _run(["iptables", "-t", "nat", "-F", chain], check=False)
            _run(["iptables", "-t", "nat", "-X", chain], check=False)

    # -- cgroups ---------------------------------------------------------------------------

    def _create_cgroups(self) -> None:
        # The kubelet refuses a cgroup root that does not exist in every hierarchy.
        for mount in _cgroup_mounts():
            with contextlib.suppress(OSError):
                (mount / self.cgroup_root.lstrip("/")).mkdir(exist_ok=True)

    def _kill_cgroup_processes(self) -> None:
        for mount in _cgroup_mounts():
            root = mount / self.cgroup_root.lstrip("/")
            if not root.exists():
                continue
            for procs in root.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    for pid in procs.read_text().split():
                        _terminate(int(pid), timeout=5)

    def _remove_cgroups(self) -> None:
        for mount in _cgroup_mounts():
            root = mount / self.cgroup_root.lstrip("/")
            if not root.exists():
                continue
            # Deepest first: a cgroup directory can only be removed once it has no children.
            for path in sorted(
                (p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
            ):
                with contextlib.suppress(OSError):
                    path.rmdir()
            with contextlib.suppress(OSError):
                root.rmdir()

    # -- kubelet and scheduler -------------------------------------------------------------

    def _start_kubelet(self, token: str) -> None:
        kubelet_dir = self.directory / "kubelet"
        kubelet_dir.mkdir(parents=True, exist_ok=True)
        ca = self.plane.directory / "pki" / "ca.crt"
        kubeconfig = self.directory / "kubelet.kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "local",
                            "cluster": {
                                "server": self.plane.server,
                                "certificate-authority": str(ca.resolve()),
                            },
                        }
                    ],
                    "users": [{"name": self.name, "user": {"token": token}}],
                    "contexts": [
                        {"name": "local", "context": {"cluster": "local", "user": self.name}}
                    ],
                    "current-context": "local",
                }
            )
        )
        kubeconfig.chmod(0o600)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # Serve only on the node IP, TLS (self-signed in the cert dir), and let the API
            # server decide every request: x509 for the API server's client cert, webhook
            # TokenReview/SubjectAccessReview for the rest, nothing anonymous.
            "address": self.node_ip,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(ca.resolve())},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": self.cri_endpoint,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            # These machines run hybrid cgroups (v1 controllers) with swap.
            "failCgroupV1": False,
            "failSwapOn": False,
            # The kubelet's own iptables chains are for kube-proxy, which we do not run.
            "makeIPTablesUtilChains": False,
            "podLogsDir": str(self.directory / "pod-logs"),
            "volumePluginDir": str(self.directory / "volume-plugins"),
            "resolvConf": "/etc/resolv.conf",
            "serializeImagePulls": False,
            # Imported images cannot be pulled again: never garbage-collect them, and do not
            # evict pods for a fairly full development disk.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "nodeStatusReportFrequency": "10s",
            "fileCheckFrequency": "5s",
            "syncFrequency": "10s",
        }
        config_path = self.directory / "kubelet.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._create_cgroups()
        assert self.binaries is not None
        self._spawn(
            "kubelet",
            [
                str(self.binaries.kubenode),
                "kubelet",
                f"--config={config_path}",
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.node_ip}",
                f"--root-dir={kubelet_dir}",
                f"--cert-dir={self.directory / 'kubelet-pki'}",
                "-v=1",
            ],
        )

    def _start_scheduler(self) -> None:
        assert self.binaries is not None
        self._spawn(
            "kube-scheduler",
            [
                str(self.binaries.kubenode),
                "kube-scheduler",
                f"--kubeconfig={self.plane.kubeconfig.resolve()}",
                "--leader-elect=false",
                "--secure-port=0",
                "-v=1",
            ],
        )

    def _ready(self, heartbeat_after: float = 0.0) -> bool:
        node = self._get(f"/api/v1/nodes/{self.name}")
        if not node:
            return False
        status = node.get("status")
        conditions = status.get("conditions", []) if isinstance(status, dict) else []
        return any(
            c.get("type") == "Ready"
            and c.get("status") == "True"
            and _epoch(c.get("lastHeartbeatTime")) >= heartbeat_after
            for c in conditions
        )

    def _get(self, path: str) -> dict[str, object] | None:
        token = self.plane.admin_token or _admin_token(self.plane)
        context = ssl.create_default_context(cafile=str(self.plane.directory / "pki" / "ca.crt"))
        request = urllib.request.Request(
            self.plane.server + path, headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as resp:
                parsed: dict[str, object] = json.loads(resp.read())
                return parsed
        except (urllib.error.URLError, OSError, ValueError):
            return None

    # -- processes and state ---------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the launcher; stopped by PID from the state file
        )
        log.close()
        self.pids[name] = proc.pid
        self._save_state()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
            raise NodeError(f"{name} exited at start-up:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        """The last lines of a component's log."""
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _save_state(self) -> None:
        if not self.directory.exists():
            return
        state = {
            "name": self.name,
            "bridge": self.bridge,
            "podCIDR": self.pod_cidr,
            "pids": self.pids,
            "apiPort": self.api_port,
            "nodeIP": self.node_ip,
            "kubeletPort": self.kubelet_port,
            "pauseImage": self.pause_image,
            "probeImage": self.probe_image,
            "ipForwardBefore": self.ip_forward_before,
            "hostPathsBefore": self.host_paths_before,
            "containerdAddress": str(self.containerd_address),
            "kubenode": str(self.binaries.kubenode) if self.binaries else None,
            "pause": str(self.binaries.pause) if self.binaries else None,
            "probe": str(self.binaries.probe) if self.binaries else None,
        }
        (self.directory / "state.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, plane: ControlPlane, directory: Path) -> Node:
        """Re-attach to a node started earlier in `directory` (for `gastown cluster down`)."""
        state = json.loads((directory / "state.json").read_text())
        node = cls(
            plane=plane,
            directory=directory,
            name=state["name"],
            bridge=state["bridge"],
            pod_cidr=state["podCIDR"],
        )
        node.pids = {k: int(v) for k, v in state["pids"].items()}
        node.api_port = state["apiPort"]
        node.node_ip = state["nodeIP"]
        node.kubelet_port = state["kubeletPort"]
        node.pause_image = state["pauseImage"]
        node.probe_image = state["probeImage"]
        node.ip_forward_before = state["ipForwardBefore"]
        node.host_paths_before = list(state.get("hostPathsBefore", []))
        if state.get("kubenode"):
            node.binaries = NodeBinaries(
                kubenode=Path(state["kubenode"]),
                pause=Path(state["pause"]),
                probe=Path(state["probe"]),
            )
        return node


def free_port_on(address: str) -> int:
    """A currently free TCP port on `address`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


def _admin_token(plane: ControlPlane) -> str:
    for line in (plane.directory / "pki" / "tokens.csv").read_text().splitlines():
        token, user, *_ = line.split(",")
        if user == "admin":
            return token
    raise NodeError("the control plane's token file has no admin token")


def _split_rule(rule: str) -> list[str]:
    """Split an iptables-save rule into argv (quotes as iptables-save writes them)."""
    return shlex.split(rule)
