"""Benchmark of the real local node: start time and pod start latency.

Starts its own control plane and node (Linux, root; installs and builds what is missing), then:

1. node start: from `Node.start()` to the Node being Ready (install and build already cached);
2. pod created -> Running: N pods (default 100) of a small image (the node's sandbox program as
   the container, uid 1000, read-only root fs, memory limit, scheduled by kube-scheduler), each
   timed from the create call to the first read that shows it Running (polled every 20 ms);
   `--concurrency C` creates C at a time. Prints p50, p90, p99 and max; the first pod pays for
   the CNI bridge's first sandbox and is reported separately too;
3. node stop: `Node.stop()` with nothing left behind.

Run: `.venv/bin/python bench/bench_node.py [--pods 100] [--concurrency 1]` (about 3 min).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.api import Api, eventually  # noqa: E402

from gastown.devtools.controlplane import ControlPlane  # noqa: E402
from gastown.devtools.node import NODE_NAME, Node, unsupported_reason  # noqa: E402

NAMESPACE = "default"


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
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
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
            names = [f"bench-{i:03d}" for i in range(args.pods)]
            with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                latencies = list(pool.map(lambda n: start_one(api, n, node.pause_image), names))
            rest = latencies[1:] or latencies
            print(
                f"pod created -> Running over {len(latencies)} pods, concurrency "
                f"{args.concurrency}: p50 {percentile(latencies, 0.5):.2f} s, "
                f"p90 {percentile(latencies, 0.9):.2f} s, p99 {percentile(latencies, 0.99):.2f} s, "
                f"max {max(latencies):.2f} s, mean {statistics.fmean(latencies):.2f} s"
            )
            print(
                f"  first pod {latencies[0]:.2f} s; without it: p50 {percentile(rest, 0.5):.2f} s, "
                f"p99 {percentile(rest, 0.99):.2f} s"
            )
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
