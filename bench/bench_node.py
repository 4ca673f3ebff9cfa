"""Benchmark of the real local node: start time, pod start latency, dispatch to Running.

Starts its own control plane and node (Linux, root; installs and builds what is missing), then:

1. node start: from `Node.start()` to the Node being Ready (install and build already cached);
2. pod created -> Running: N pods (default 100) of a small image (the node's sandbox program as
   the container, uid 1000, read-only root fs, memory limit, scheduled by kube-scheduler), each
   timed from the create call to the first read that shows it Running (polled every 20 ms);
   `--concurrency C` creates C at a time. Prints p50, p90, p99 and max; the first pod pays for
   the CNI bridge's first sandbox and is reported separately too;
3. dispatch on the node (`--dispatch N`, default 100, at most 100: one rig's polecat cap, and
   the node's maxPods is 110): the lean agent image (built or taken from the cache) is imported
   into the node's containerd; the operator runs as `gastown run` on a paused town whose agents
   run the scripted coding agent (no model) on a rig served by smart HTTP on the bridge; N beads
   marked `[scripted: hang]` (so each container stays Running) are created, and once the
   operator holds them all the town is switched to active. Each bead is timed from that write to
   the first watch event showing its agent container running (millisecond resolution; the
   container's `startedAt` is printed too, but the API gives it in whole seconds). Then its
   floor: the same N Pods (the spec of an agent pod the operator made, under the namespace's
   default ServiceAccount) created bare by one client at the operator's concurrency
   (`gastown.kube.apply.CONCURRENCY`), no record written first, timed by the same watch. Both
   print p50 / p99 / max, the time to the Pod's creation, and the CPU seconds each process
   (and the node's pods) spent in the burst; pods are deleted and gone from the node between
   bursts, and each burst starts once the cluster is quiet. `--runs R` repeats the pair, in
   alternating order (odd runs dispatch first), and prints the ranges over the runs;
4. node stop: `Node.stop()` with nothing left behind.

Run: `.venv/bin/python bench/bench_node.py [--pods 100] [--concurrency 1] [--dispatch 100]
[--runs 1]` (about 2 min plus 4 min per run with a cached agent image; `--pods 0` or
`--dispatch 0` skips one; `--log-dir DIR` keeps the operator logs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.api import Api, eventually  # noqa: E402
from tests.support.git import HttpRig, make_bare_repo  # noqa: E402
from tests.support.node import LEAN, agent_image, node_town, running_containers  # noqa: E402
from tests.support.procs import operator, wait_started  # noqa: E402
from tests.support.town import bead  # noqa: E402

from gastown.devtools.controlplane import ControlPlane  # noqa: E402
from gastown.devtools.gitserver import GitServer  # noqa: E402
from gastown.devtools.node import NODE_NAME, Node, unsupported_reason  # noqa: E402
from gastown.kube.apply import CONCURRENCY  # noqa: E402
from gastown.kube.client import Kube, connect  # noqa: E402

NAMESPACE = "default"
MAX_DISPATCH = 100
"""One rig's polecat cap (the Town schema's maximum); the node's maxPods (110) fits it."""
BURST_TIMEOUT = 600.0


def pod(name: str, image: str) -> dict[str, Any]:
    """A pod that runs until deleted, with the restrictions agent pods have."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "node"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "securityContext": {"runAsUser": 1000, "runAsNonRoot": True},
            "containers": [
                {
                    "name": "c",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "securityContext": {"readOnlyRootFilesystem": True},
                    "resources": {"limits": {"memory": "32Mi"}},
                }
            ],
        },
    }


def start_one(api: Api, name: str, image: str, timeout: float = 120.0) -> float:
    """Create one pod and return seconds until it is seen Running; then delete it."""
    path = f"/api/v1/namespaces/{NAMESPACE}/pods"
    started = time.monotonic()
    created = api.call("POST", path, pod(name, image))
    if created.status != 201:
        raise RuntimeError(f"creating {name}: {created.status} {created.message}")

    def running() -> bool:
        phase = api.call("GET", f"{path}/{name}").body.get("status", {}).get("phase")
        if phase in ("Failed", "Succeeded"):
            raise RuntimeError(f"pod {name} ended ({phase}) instead of running")
        return bool(phase == "Running")

    eventually(running, timeout, f"pod {name} Running", interval=0.02)
    latency = time.monotonic() - started
    api.call("DELETE", f"{path}/{name}", {"gracePeriodSeconds": 0})
    return latency


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `q` of them at or below it
    (p99 of 100 values is the 99th, not the maximum)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered) - 1e-9) - 1))]


def bench_pods(api: Api, node: Node, count: int, concurrency: int) -> None:
    """Pod created -> Running for `count` pods of the sandbox image (measurement 2)."""
    names = [f"bench-{i:03d}" for i in range(count)]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = list(pool.map(lambda n: start_one(api, n, node.pause_image), names))
    rest = latencies[1:] or latencies
    print(
        f"pod created -> Running over {len(latencies)} pods, concurrency "
        f"{concurrency}: p50 {percentile(latencies, 0.5):.2f} s, "
        f"p90 {percentile(latencies, 0.9):.2f} s, p99 {percentile(latencies, 0.99):.2f} s, "
        f"max {max(latencies):.2f} s, mean {statistics.fmean(latencies):.2f} s"
    )
    print(
        f"  first pod {latencies[0]:.2f} s; without it: p50 {percentile(rest, 0.5):.2f} s, "
        f"p99 {percentile(rest, 0.99):.2f} s"
    )


# -- dispatch on the node (measurement 3) ---------------------------------------------------


@dataclass
class Seen:
    """What the watch saw of one pod (monotonic seconds; `started_at` is the epoch second the
    kubelet gave as the container's start)."""

    created: float
    bead: str = ""
    running: float | None = None
    started_at: float | None = None


class StartWatch(threading.Thread):
    """Watches a namespace's pods: when each was first seen and first seen with its container
    running (or already terminated: a container that ran and stopped between two status writes
    still started).

    The API server closes a watch whose reader falls behind; it then resumes from the last
    resourceVersion seen, or from a fresh listing if that is too old (what it first sees there is
    timed then: late, never early).
    """

    def __init__(self, api: Api, namespace: str) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.ns = namespace
        self.pods: dict[str, Seen] = {}
        self.done = threading.Event()
        self.rv = self._list()

    def _list(self) -> str:
        listing = self.api.call("GET", f"/api/v1/namespaces/{self.ns}/pods")
        for item in listing.body["items"]:
            self._record(item)
        return str(listing.body["metadata"]["resourceVersion"])

    def run(self) -> None:
        """Follow the watch until `done` is set (or the burst's deadline passed)."""
        deadline = time.monotonic() + BURST_TIMEOUT
        while not self.done.is_set() and time.monotonic() < deadline:
            url = (
                f"{self.api.server}/api/v1/namespaces/{self.ns}/pods?watch=1"
                f"&resourceVersion={self.rv}&timeoutSeconds=60&allowWatchBookmarks=true"
            )
            request = urllib.request.Request(
                url, headers={"Authorization": f"Bearer {self.api.token}"}
            )
            try:
                with urllib.request.urlopen(request, context=self.api._ssl, timeout=90) as stream:
                    for line in stream:
                        self._event(json.loads(line))
                        if self.done.is_set():
                            return
            except (OSError, ValueError):
                pass  # closed under us: resume below
            except _Expired:
                self.rv = self._list()

    def _event(self, event: dict[str, Any]) -> None:
        if event["type"] == "ERROR":
            raise _Expired()
        self.rv = event["object"]["metadata"]["resourceVersion"]
        if event["type"] in ("ADDED", "MODIFIED"):
            self._record(event["object"])

    def _record(self, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        metadata = obj["metadata"]
        seen = self.pods.setdefault(metadata["name"], Seen(created=now))
        seen.bead = metadata.get("annotations", {}).get("gastown.dev/bead", "")
        if seen.running is not None:
            return
        for status in obj.get("status", {}).get("containerStatuses", []):
            state = status.get("state", {})
            started = (state.get("running") or state.get("terminated") or {}).get("startedAt")
            if started:
                seen.running = now
                seen.started_at = datetime.fromisoformat(started).timestamp()
                return

    def started(self) -> list[Seen]:
        """The pods whose container was seen started."""
        return [p for p in list(self.pods.values()) if p.running is not None]


class _Expired(Exception):
    """The watch's resourceVersion is too old (410): list again."""


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time so far of a process and of its children it has reaped (the
    CNI plugins containerd runs, the runc calls of a shim); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def shims_cpu_seconds() -> float:
    """CPU seconds so far of every containerd shim on the machine (with the runc calls each
    reaped): shims leave containerd's process tree, one per pod."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()
            if "(containerd-shim" in text:
                total += sum(int(v) for v in text.rsplit(")", 1)[1].split()[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (every core, every process)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def pods_cpu_seconds(node: Node) -> float:
    """CPU seconds of every container (and sandbox) on the node so far: its cgroup root."""
    usage = Path("/sys/fs/cgroup/cpuacct") / node.cgroup_root.lstrip("/") / "cpuacct.usage"
    try:
        return int(usage.read_text()) / 1e9
    except (OSError, ValueError):
        return 0.0


def cpu_split(plane: ControlPlane, node: Node, operator_pid: int | None) -> dict[str, float]:
    """CPU seconds so far: operator, control plane, node processes, shims, pods, this bench
    (with its git server), and `rest`: the machine's busy time that none of those account for
    (other processes on the machine, the kernel's own work)."""
    split = {"operator": cpu_seconds(operator_pid)} if operator_pid else {}
    split |= {name: cpu_seconds(pid) for name, pid in plane.pids.items()}
    split |= {name: cpu_seconds(pid) for name, pid in node.pids.items()}
    split["shims"] = shims_cpu_seconds()
    # This process: the watch, the creates of the floor, the git server and its git children.
    split["bench"] = cpu_seconds(os.getpid())
    split["pods"] = pods_cpu_seconds(node)
    split["rest"] = machine_busy_seconds() - sum(split.values())
    return split


QUIET_CORES = 0.3
"""Below this CPU use (in cores) the cluster's own processes count as idle before a burst."""


def settle(
    plane: ControlPlane, node: Node, operator_pid: int | None, timeout: float = 60.0
) -> float | None:
    """Wait until the operator, control plane, node, shims and pods together use under
    `QUIET_CORES` over one second: the previous burst's teardown and the operator's start must
    not run into the next burst. Returns the seconds waited, or None if the deadline passed
    (the burst then starts anyway; other processes on the machine are not waited for)."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        before = cpu_split(plane, node, operator_pid)
        time.sleep(1.0)  # the measurement window, not a synchronisation
        after = cpu_split(plane, node, operator_pid)
        used = sum(after[k] - before[k] for k in after if k not in ("rest", "bench"))
        if used < QUIET_CORES:
            return round(time.monotonic() - started, 1)
    return None


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent between two `cpu_split`s."""
    return {name: round(after[name] - before[name], 1) for name in after}


def figures(values: list[float]) -> dict[str, int]:
    """p50 / p99 / max in milliseconds."""
    return {
        "p50_ms": round(percentile(values, 0.50) * 1000),
        "p99_ms": round(percentile(values, 0.99) * 1000),
        "max_ms": round(max(values) * 1000),
    }


def burst_result(watch: StartWatch, t0: float, t0_wall: float, count: int) -> dict[str, Any]:
    """Figures of one burst, from its start `t0` (monotonic) / `t0_wall` (epoch)."""
    # Per bead (or bare pod) the first of its pods that started: a retried dispatch is late.
    first: dict[str, Seen] = {}
    for name, seen in list(watch.pods.items()):
        key = seen.bead or name
        if seen.running is not None and (
            key not in first or seen.running < (first[key].running or 0.0)
        ):
            first[key] = seen
    pods = list(first.values())
    assert len(pods) == count, f"{len(pods)} of {count} started"
    return {
        "running": figures([(p.running or 0.0) - t0 for p in pods]),
        # The container start as the kubelet recorded it, truncated to the second by the API.
        "started_at": figures([(p.started_at or 0.0) - t0_wall for p in pods]),
        "pod_created": figures([p.created - t0 for p in pods]),
    }


def wait_started_count(watch: StartWatch, count: int, beads: bool) -> None:
    """Wait until `count` beads (or pods) have a started container."""

    def enough() -> bool:
        keys = {p.bead if beads else id(p) for p in watch.started() if p.bead or not beads}
        return len(keys) >= count

    eventually(enough, BURST_TIMEOUT, f"{count} containers running", interval=0.05)


def clear_pods(api: Api, node: Node, ns: str) -> None:
    """Delete every pod of the namespace and wait until the node runs none (a short grace
    period: the API object goes only once the kubelet has stopped the containers)."""
    path = f"/api/v1/namespaces/{ns}/pods"
    assert api.call("DELETE", path, {"gracePeriodSeconds": 1}).status == 200
    eventually(lambda: not api.call("GET", path).body["items"], 300, f"the pods of {ns} gone")
    eventually(lambda: not running_containers(node), 300, "no container running on the node")


def new_namespace(api: Api, name: str) -> None:
    """Create a namespace and wait for its default ServiceAccount."""
    assert api.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}}).status == 201
    eventually(
        lambda: api.call("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default").status == 200,
        60,
        "the default ServiceAccount",
    )


def served_rig(server: GitServer, api: Api, ns: str) -> HttpRig:
    """A bare repository served by `server` for the namespace, and its credentials Secret
    (labelled for the town `demo`)."""
    path = make_bare_repo(server.root / ns / "app.git")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "git-credentials", "labels": {"gastown.dev/town": "demo"}},
        "stringData": {"username": server.username, "password": server.password},
    }
    created = api.call("POST", f"/api/v1/namespaces/{ns}/secrets", secret)
    assert created.status == 201, created.message
    return HttpRig(path=path, url=server.url(f"{ns}/app.git"), secret="git-credentials")


def create_beads(api: Api, ns: str, count: int) -> None:
    """`count` beads whose scripted agent hangs once started (so its container stays Running)."""

    def create(i: int) -> None:
        body = bead(f"b{i:03d}", description="[scripted: hang]")
        response = api.create(ns, body)
        assert response.status == 201, response.message

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(count)))


def bench_dispatch(
    plane: ControlPlane,
    node: Node,
    api: Api,
    image: str,
    rig: HttpRig,
    ns: str,
    count: int,
    log_dir: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ready beads -> agent containers Running through the operator; returns the figures and
    one agent pod (the floor's template). Leaves the namespace without pods."""
    proc = operator(plane, ns, log_dir)
    proc.start()
    try:
        wait_started(proc, "Initial authentication has finished")
        body = node_town(
            image,
            rig,
            mode="paused",
            limits={"maxPolecatsPerRig": count, "maxPolecats": count},
            policy={"agents": {"startupGraceSeconds": 3600, "podPendingTimeoutSeconds": 3600}},
        )
        body["spec"]["agent"]["env"] = []  # the default heartbeat period, as in production
        assert api.create(ns, body).status == 201
        create_beads(api, ns, count)
        eventually(
            lambda: (
                api.get("Town", ns, "demo").body.get("status", {}).get("beads", {}).get("open")
                == count
            ),
            120,
            "the operator to hold every bead",
        )
        watch = StartWatch(api, ns)
        watch.start()
        assert proc.proc is not None
        quiet = settle(plane, node, proc.proc.pid)
        before = cpu_split(plane, node, proc.proc.pid)
        t0, t0_wall = time.monotonic(), time.time()
        assert api.merge_patch("Town", ns, "demo", {"spec": {"mode": "active"}}).status == 200
        wait_started_count(watch, count, beads=True)
        wall = time.monotonic() - t0
        after = cpu_split(plane, node, proc.proc.pid)
        watch.done.set()
        result = burst_result(watch, t0, t0_wall, count)
        result |= {"wall_s": round(wall, 2), "settled_s": quiet, "cpu_s": spent(before, after)}
        template = api.call("GET", f"/api/v1/namespaces/{ns}/pods").body["items"][0]
    finally:
        proc.stop()
    clear_pods(api, node, ns)
    return result, template


def bench_floor(
    plane: ControlPlane, node: Node, api: Api, ns: str, template: dict[str, Any], count: int
) -> dict[str, Any]:
    """The same containers as bare Pods: no operator, no record written first; the same
    watch, one client at the operator's concurrency. Leaves the namespace without pods."""
    spec = dict(template["spec"])
    spec["serviceAccountName"] = "default"
    for key in ("nodeName", "serviceAccount"):
        spec.pop(key, None)
    bodies = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"floor-{i:03d}", "labels": {"bench": "floor"}},
            "spec": spec,
        }
        for i in range(count)
    ]
    watch = StartWatch(api, ns)
    watch.start()

    async def create_all() -> None:
        os.environ["KUBECONFIG"] = str(plane.kubeconfig)
        kube = Kube(await connect())
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(body: dict[str, Any]) -> None:
            async with limit:
                await kube.create_pod(ns, body)

        try:
            await asyncio.gather(*(one(body) for body in bodies))
        finally:
            await kube.close()

    quiet = settle(plane, node, None)
    before = cpu_split(plane, node, None)
    t0, t0_wall = time.monotonic(), time.time()
    asyncio.run(create_all())
    wait_started_count(watch, count, beads=False)
    wall = time.monotonic() - t0
    after = cpu_split(plane, node, None)
    watch.done.set()
    result = burst_result(watch, t0, t0_wall, count)
    result |= {"wall_s": round(wall, 2), "settled_s": quiet, "cpu_s": spent(before, after)}
    clear_pods(api, node, ns)
    return result


def report(run: int, dispatch: dict[str, Any], floor: dict[str, Any]) -> None:
    """Print one run's figures and ratios."""

    def line(what: str, f: dict[str, int]) -> str:
        return (
            f"{what}: p50 {f['p50_ms'] / 1000:.2f} s, p99 {f['p99_ms'] / 1000:.2f} s, "
            f"max {f['max_ms'] / 1000:.2f} s"
        )

    for name, result in (("dispatch", dispatch), ("floor", floor)):
        print(
            f"run {run} {name} (wall {result['wall_s']:.2f} s; cluster quiet after "
            f"{result['settled_s']} s):"
        )
        print("  " + line("-> container Running (watch)", result["running"]))
        print("  " + line("-> container startedAt (whole seconds)", result["started_at"]))
        print("  " + line("-> pod created", result["pod_created"]))
        print(f"  CPU seconds in the burst: {result['cpu_s']}")
    d, f = dispatch["running"], floor["running"]
    print(
        f"run {run} ratio dispatch / floor: p50 {d['p50_ms'] / f['p50_ms']:.2f}, "
        f"p99 {d['p99_ms'] / f['p99_ms']:.2f}, max {d['max_ms'] / f['max_ms']:.2f} "
        "(target: at most 1.20)"
    )


def dispatch_runs(
    plane: ControlPlane, node: Node, api: Api, count: int, runs: int, log_dir: Path
) -> None:
    """Measurement 3, `runs` times: a dispatch burst and its floor each time, in alternating
    order (odd runs dispatch first, even runs the floor first: the second burst of a pair must
    not always be the one that follows a teardown)."""
    plane.install_crds(REPO / "crds")
    # The node's first sandbox also sets up the CNI bridge: take it out of the first burst.
    start_one(api, "warm-up", node.pause_image)
    started = time.monotonic()
    image = agent_image(node, node.directory.parent / "lean-image", LEAN)
    print(
        f"lean agent image in the node's runtime (built or cached, imported): "
        f"{time.monotonic() - started:.1f} s"
    )
    root = node.directory.parent / "git"
    template: dict[str, Any] | None = None
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    with GitServer(root, "bench", secrets.token_urlsafe(18), host=node.gateway) as server:
        for run in range(1, runs + 1):
            ns = f"bench-dispatch-{run}"
            new_namespace(api, ns)
            rig = served_rig(server, api, ns)
            eventually(lambda: not running_containers(node), 300, "an idle node")
            floor: dict[str, Any] | None = None
            print(f"run {run}: {'the floor' if run % 2 == 0 else 'dispatch'} first", flush=True)
            if run % 2 == 0 and template is not None:
                floor = bench_floor(plane, node, api, ns, template, count)
            dispatch, template = bench_dispatch(plane, node, api, image, rig, ns, count, log_dir)
            if floor is None:
                floor = bench_floor(plane, node, api, ns, template, count)
            report(run, dispatch, floor)
            print(json.dumps({"run": run, "dispatch": dispatch, "floor": floor}), flush=True)
            pairs.append((dispatch, floor))
    summary(pairs)


def summary(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """Ranges over the runs: the figures of both bursts and their ratios."""

    def span(values: list[float], unit: str = " s") -> str:
        return f"{min(values):.2f}-{max(values):.2f}{unit}"

    for i, name in enumerate(("dispatch", "floor")):
        runs = [pair[i]["running"] for pair in pairs]
        created = [pair[i]["pod_created"]["p50_ms"] / 1000 for pair in pairs]
        print(
            f"{name} over {len(pairs)} runs, -> container Running: "
            f"p50 {span([r['p50_ms'] / 1000 for r in runs])}, "
            f"p99 {span([r['p99_ms'] / 1000 for r in runs])}, "
            f"max {span([r['max_ms'] / 1000 for r in runs])}; pod created p50 {span(created)}"
        )
    for q in ("p50_ms", "p99_ms"):
        ratios = [d["running"][q] / f["running"][q] for d, f in pairs]
        print(f"ratio dispatch / floor, {q[:3]}: {span(ratios, '')} (target: at most 1.20)")


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--dispatch", type=int, default=MAX_DISPATCH)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--log-dir", type=Path, default=None, help="keep the operator logs in this directory"
    )
    args = parser.parse_args()
    if not 0 <= args.dispatch <= MAX_DISPATCH:
        parser.error(f"--dispatch must be between 0 and {MAX_DISPATCH}")
    reason = unsupported_reason()
    if reason:
        print(f"bench_node: {reason}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="gastown-bench-node-") as tmp:
        plane = ControlPlane(directory=Path(tmp) / "cp", node_names=(NODE_NAME,))
        plane.start()
        node = Node(plane=plane, directory=Path(tmp) / "node")
        try:
            node.start()
            print(f"node start (to Ready, build cached): {node.startup_seconds:.2f} s")
            api = Api.from_kubeconfig(plane.kubeconfig, plane.directory / "pki" / "ca.crt")
            eventually(
                lambda: (
                    api.call(
                        "GET", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"
                    ).status
                    == 200
                ),
                60,
                "the default ServiceAccount",
            )
            if args.pods:
                bench_pods(api, node, args.pods, args.concurrency)
            if args.dispatch:
                log_dir = args.log_dir or Path(tmp)
                log_dir.mkdir(parents=True, exist_ok=True)
                dispatch_runs(plane, node, api, args.dispatch, args.runs, log_dir)
        finally:
            stopped = time.monotonic()
            try:
                node.stop()
                print(f"node stop (nothing left behind): {time.monotonic() - stopped:.2f} s")
            finally:
                plane.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
