"""Benchmarks of the operator on a real local control plane.

Measures, with the operator running as a process (`gastown run`) as in production:

1. dispatch latency: a paused town holding N ready beads is switched to active; the time from
   that write to each bead's agent Pod being observed through a watch (p50, p99, max), with the
   CPU seconds the operator and each control-plane process spent meanwhile; then its floor: the
   same Pods created bare by the same client at the same concurrency, timed the same way;
2. API writes per bead over a whole convoy life (operator writes, from its own metrics), by
   kind and by the action and reason that caused each (`gastown_api_write_causes_total`), with
   the Events it wrote by involved kind, type and reason, new ones apart from repeats folded
   into an earlier Event's count (`gastown_events_total`, verb create or patch), and the
   actions it planned;
3. API writes per minute by an idle town (after everything landed);
4. operator peak RSS with 10,000 beads in its store.

Run: `.venv/bin/python bench/bench_operator.py` (starts its own control plane; about 5 min).
`--only dispatch|writes|memory` runs one; `--log-dir DIR` keeps the operator logs;
`--operator-source OTHER/operator` runs another checkout's operator (before/after comparisons).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.api import Api, eventually  # noqa: E402
from tests.support.git import make_bare_repo  # noqa: E402
from tests.support.procs import operator, wait_started  # noqa: E402
from tests.support.town import AgentPlayer, TownView, convoy  # noqa: E402

from gastown.devtools.controlplane import ControlPlane, free_port  # noqa: E402
from gastown.kube.apply import CONCURRENCY  # noqa: E402
from gastown.kube.client import Kube, connect  # noqa: E402

RIGS = [f"r{i}" for i in range(5)]


def town_body(mode: str, per_rig: int, total: int) -> dict[str, Any]:
    """A town with five rigs and generous caps."""
    return {
        "apiVersion": "gastown.dev/v1alpha1",
        "kind": "Town",
        "metadata": {"name": "demo"},
        "spec": {
            "rigs": [{"name": r, "gitUrl": f"/srv/{r}.git"} for r in RIGS],
            "agent": {"image": "gastown-agent:bench"},
            "limits": {"maxPolecatsPerRig": per_rig, "maxPolecats": total},
            "policy": {"agents": {"startupGraceSeconds": 3600, "podPendingTimeoutSeconds": 3600}},
            "mode": mode,
        },
    }


def bead_body(name: str, rig: str) -> dict[str, Any]:
    """One issue bead."""
    return {
        "apiVersion": "gastown.dev/v1alpha1",
        "kind": "Bead",
        "metadata": {"name": name},
        "spec": {"town": "demo", "rig": rig, "title": name},
    }


def new_namespace(api: Api, name: str) -> str:
    """Create a namespace and wait for its default ServiceAccount."""
    assert api.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}}).status == 201
    eventually(
        lambda: api.call("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default").status == 200,
        60,
        "default ServiceAccount",
    )
    return name


def create_many(api: Api, namespace: str, bodies: list[dict[str, Any]]) -> None:
    """Create objects with a few parallel clients."""

    def create(body: dict[str, Any]) -> None:
        response = api.create(namespace, body)
        assert response.status == 201, response.message

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, bodies))


class PodWatch(threading.Thread):
    """Records the monotonic time each pod is first seen through a watch.

    The API server closes a watch whose reader falls behind (this process also creates pods in
    the floor run); the watch then resumes from the last resourceVersion it saw, and if that is
    too old, from a fresh listing (pods first seen there are timed then: late, never early).
    """

    def __init__(self, api: Api, namespace: str) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.ns = namespace
        self.seen: dict[str, float] = {}
        self.rv = self._list()

    def _list(self) -> str:
        listing = self.api.call("GET", f"/api/v1/namespaces/{self.ns}/pods")
        now = time.monotonic()
        for pod in listing.body["items"]:
            self.seen.setdefault(pod["metadata"]["name"], now)
        return str(listing.body["metadata"]["resourceVersion"])

    def run(self) -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            url = (
                f"{self.api.server}/api/v1/namespaces/{self.ns}/pods?watch=1"
                f"&resourceVersion={self.rv}&timeoutSeconds=600&allowWatchBookmarks=true"
            )
            headers = {"Authorization": f"Bearer {self.api.token}"}
            request = urllib.request.Request(url, headers=headers)
            try:
                with urllib.request.urlopen(request, context=self.api._ssl, timeout=620) as stream:
                    for line in stream:
                        self._event(json.loads(line))
            except (OSError, ValueError):
                pass  # closed under us: resume below
            except _Expired:
                self.rv = self._list()

    def _event(self, event: dict[str, Any]) -> None:
        if event["type"] == "ERROR":
            raise _Expired()
        metadata = event["object"]["metadata"]
        self.rv = metadata["resourceVersion"]
        if event["type"] == "ADDED":
            self.seen.setdefault(metadata["name"], time.monotonic())


class _Expired(Exception):
    """The watch's resourceVersion is too old (410): list again."""


def metric_sum(port: int, name: str, **labels: str) -> float:
    """Sum of a Prometheus counter's samples matching the labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_split(plane: ControlPlane, operator_pid: int) -> dict[str, float]:
    """CPU seconds so far of the operator and of each control-plane process."""
    return {"operator": cpu_seconds(operator_pid)} | {
        name: cpu_seconds(pid) for name, pid in plane.pids.items()
    }


def metric_by_label(port: int, name: str, label: str) -> dict[str, int]:
    """A Prometheus counter's samples summed per value of one label."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    totals: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith(name + "{") or f'{label}="' not in line:
            continue
        value = line.split(f'{label}="', 1)[1].split('"', 1)[0]
        totals[value] = totals.get(value, 0) + int(float(line.rsplit(" ", 1)[1]))
    return dict(sorted(totals.items()))


def metric_by_labels(port: int, name: str, *labels: str) -> dict[str, int]:
    """A Prometheus counter's samples summed per combination of labels ("a/b/c" keys)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    totals: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        values = []
        for label in labels:
            part = line.split(f'{label}="', 1)
            values.append(part[1].split('"', 1)[0] if len(part) == 2 else "")
        key = "/".join(values)
        totals[key] = totals.get(key, 0) + int(float(line.rsplit(" ", 1)[1]))
    return dict(sorted(totals.items(), key=lambda item: (-item[1], item[0])))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


OPERATOR_ENV: dict[str, str] = {}
"""Extra environment of the operator process (`--operator-source` sets PYTHONPATH)."""


def bench_dispatch(plane: ControlPlane, api: Api, log_dir: Path, count: int) -> dict[str, Any]:
    """Latency from 'ready' to Pod for `count` beads at once."""
    ns = new_namespace(api, "bench-dispatch")
    proc = operator(plane, ns, log_dir, **OPERATOR_ENV)
    proc.start()
    wait_started(proc, "Initial authentication has finished")
    try:
        per_rig = -(-count // len(RIGS))
        assert api.create(ns, town_body("paused", min(per_rig, 100), count)).status == 201
        create_many(api, ns, [bead_body(f"b{i:04d}", RIGS[i % len(RIGS)]) for i in range(count)])
        view = TownView(api, ns)
        eventually(
            lambda: view.town().get("status", {}).get("beads", {}).get("open") == count,
            120,
            "the operator to see every bead",
        )
        watch = PodWatch(api, ns)
        watch.start()
        assert proc.proc is not None
        cpu_before = cpu_split(plane, proc.proc.pid)
        t0 = time.monotonic()
        assert api.merge_patch("Town", ns, "demo", {"spec": {"mode": "active"}}).status == 200
        eventually(lambda: len(watch.seen) >= count, 300, f"{count} pods", interval=0.05)
        wall = time.monotonic() - t0
        cpu_after = cpu_split(plane, proc.proc.pid)
        latencies = [watch.seen[name] - t0 for name in watch.seen]
        template = api.call("GET", f"/api/v1/namespaces/{ns}/pods").body["items"][0]
        return {
            "beads": count,
            "pod_template": template,
            "wall_s": round(wall, 2),
            # Where the machine's CPU went while the pods were being created.
            "cpu_s": {k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_after},
            "min_ms": round(min(latencies) * 1000),
            "p50_ms": round(percentile(latencies, 0.50) * 1000),
            "p99_ms": round(percentile(latencies, 0.99) * 1000),
            "max_ms": round(max(latencies) * 1000),
        }
    finally:
        proc.stop()


def bench_floor(
    plane: ControlPlane, api: Api, template: dict[str, Any], count: int
) -> dict[str, Any]:
    """The same latency for `count` bare pod creations: no operator, no state written first.

    The yardstick for the dispatch figures on this machine: the same pods (the spec of an agent
    pod the operator made), created by the operator's own HTTP path at the same concurrency,
    timed by the same watch. Nothing can create them faster here.
    """
    ns = new_namespace(api, "bench-floor")
    spec = dict(template["spec"])
    spec["serviceAccountName"] = "default"
    for key in ("nodeName", "serviceAccount"):
        spec.pop(key, None)
    bodies = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"floor-{i:04d}", "labels": template["metadata"]["labels"]},
            "spec": spec,
        }
        for i in range(count)
    ]
    watch = PodWatch(api, ns)
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

    t0 = time.monotonic()
    asyncio.run(create_all())
    eventually(lambda: len(watch.seen) >= count, 300, f"{count} pods", interval=0.05)
    latencies = [watch.seen[name] - t0 for name in watch.seen]
    return {
        "pods": count,
        "p50_ms": round(percentile(latencies, 0.50) * 1000),
        "p99_ms": round(percentile(latencies, 0.99) * 1000),
        "max_ms": round(max(latencies) * 1000),
    }


def bench_writes(plane: ControlPlane, api: Api, log_dir: Path) -> dict[str, Any]:
    """Operator API writes per bead over a convoy's life, then writes per idle minute."""
    ns = new_namespace(api, "bench-writes")
    port = free_port()
    proc = operator(plane, ns, log_dir, GASTOWN_METRICS_PORT=str(port), **OPERATOR_ENV)
    proc.start()
    wait_started(proc, "Initial authentication has finished")
    try:
        body = town_body("active", 3, 5)
        # Agents are played honestly on a real remote: the operator verifies every claim.
        remote = make_bare_repo(Path(tempfile.mkdtemp(prefix="bench-remote-")) / "app.git")
        body["spec"]["rigs"] = [{"name": "app", "gitUrl": str(remote)}]
        assert api.create(ns, body).status == 201
        tasks = [
            {"key": f"t{i}", "title": f"T{i}", "dependsOn": [f"t{i - 1}"] if i % 4 else []}
            for i in range(20)
        ]
        spec_convoy = convoy("bench", tasks)
        assert api.create(ns, spec_convoy).status == 201
        view = TownView(api, ns)
        player = AgentPlayer(api, plane.kubeconfig, ns, remote)

        def landed() -> bool:
            player.step()
            return view.convoy("bench").status.phase is not None and view.convoy(
                "bench"
            ).status.phase.value in ("Landed", "Failed")

        eventually(landed, 300, "the convoy to land", interval=0.2)
        phase = view.convoy("bench").status.phase
        # Let the last writes settle, then count.
        time.sleep(3)
        by_kind = metric_by_label(port, "gastown_api_writes_total", "kind")
        events = by_kind.pop("Event", 0)
        writes = sum(by_kind.values())
        actions = metric_by_label(port, "gastown_actions_total", "action")
        # Which rule caused each write, and which Events were new or folded into a count.
        causes = metric_by_labels(
            port, "gastown_api_write_causes_total", "kind", "action", "reason"
        )
        event_rows = metric_by_labels(
            port, "gastown_events_total", "kind", "type", "reason", "verb"
        )
        # An operator without that counter (`--operator-source` of an older one) only creates.
        events_created = (
            sum(v for k, v in event_rows.items() if k.endswith("/create")) if event_rows else events
        )
        agent_reports = len(player.played)
        time.sleep(60)  # the idle window itself is what is measured
        idle = metric_sum(port, "gastown_api_writes_total", town="demo") - writes - events
        return {
            "convoy": phase.value if phase else None,
            "beads": len(tasks),
            "operator_writes": int(writes),
            "writes_per_bead": round(writes / len(tasks), 1),
            "agent_reports": agent_reports,
            "idle_writes_per_minute": int(idle),
            "writes_by_kind": by_kind,
            # Events are API writes too, counted apart: one per transition worth a human's eye;
            # a repeat raises an earlier Event's count (a PATCH) instead of creating another.
            "events": events_created,
            "events_per_bead": round(events_created / len(tasks), 1),
            "event_patches": events - events_created,
            "events_by_kind_type_reason_verb": event_rows,
            "writes_by_kind_action_reason": causes,
            "actions_by_type": actions,
        }
    finally:
        proc.stop()


def bench_memory(plane: ControlPlane, api: Api, log_dir: Path, count: int) -> dict[str, Any]:
    """Operator RSS with `count` beads in a paused town."""
    ns = new_namespace(api, "bench-memory")
    proc = operator(plane, ns, log_dir, **OPERATOR_ENV)
    proc.start()
    wait_started(proc, "Initial authentication has finished")
    try:
        assert api.create(ns, town_body("paused", 100, 500)).status == 201
        create_many(api, ns, [bead_body(f"m{i:05d}", RIGS[i % len(RIGS)]) for i in range(count)])
        view = TownView(api, ns)
        eventually(
            lambda: view.town().get("status", {}).get("beads", {}).get("open") == count,
            300,
            "the operator to hold every bead",
        )
        assert proc.proc is not None
        status = Path(f"/proc/{proc.proc.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return {
            "beads": count,
            "rss_mb": int(fields["VmRSS"].split()[0]) // 1024,
            "peak_rss_mb": int(fields["VmHWM"].split()[0]) // 1024,
        }
    finally:
        proc.stop()


def main() -> int:
    """Run the benchmarks and print a JSON summary and a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dispatch", type=int, default=500)
    parser.add_argument("--memory-beads", type=int, default=10000)
    parser.add_argument(
        "--only",
        choices=["dispatch", "writes", "memory"],  # dispatch includes its floor
        default=None,
        help="run one benchmark only",
    )
    parser.add_argument(
        "--log-dir", type=Path, default=None, help="keep the operator logs in this directory"
    )
    parser.add_argument(
        "--operator-source",
        type=Path,
        default=None,
        help="run the operator from another checkout's operator/ folder (before/after runs)",
    )
    args = parser.parse_args()
    if args.operator_source:
        OPERATOR_ENV["PYTHONPATH"] = str(args.operator_source.resolve())
    with tempfile.TemporaryDirectory() as scratch:
        tmp = str(args.log_dir or scratch)
        Path(tmp).mkdir(parents=True, exist_ok=True)
        plane = ControlPlane(directory=Path(tmp) / "cp")
        plane.start()
        try:
            plane.install_crds(REPO / "crds")
            api = Api.from_kubeconfig(plane.kubeconfig, plane.directory / "pki" / "ca.crt")
            runs = {
                "dispatch": lambda: bench_dispatch(plane, api, Path(tmp), args.dispatch),
                "floor": lambda: bench_floor(
                    plane, api, results["dispatch"].pop("pod_template"), args.dispatch
                ),
                "writes": lambda: bench_writes(plane, api, Path(tmp)),
                "memory": lambda: bench_memory(plane, api, Path(tmp), args.memory_beads),
            }
            results: dict[str, Any] = {}
            for name, run in runs.items():
                # The floor reuses the dispatch run's pods as its template.
                wanted = args.only in (None, name) or (name == "floor" and args.only == "dispatch")
                if wanted:
                    results[name] = run()
        finally:
            plane.stop()
    print(json.dumps(results, indent=2))
    if "dispatch" in results:
        d = results["dispatch"]
        print(
            f"| dispatch latency, {d['beads']} beads ready at once | p50 {d['p50_ms']} ms, "
            f"p99 {d['p99_ms']} ms, max {d['max_ms']} ms |"
        )
    if "floor" in results:
        f = results["floor"]
        print(
            f"| floor: {f['pods']} bare pod creations, same client and watch | "
            f"p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms, max {f['max_ms']} ms |"
        )
    if "writes" in results:
        w = results["writes"]
        print(f"| operator API writes per bead (convoy of {w['beads']}) | {w['writes_per_bead']} |")
        print(
            f"| Events per bead | {w['events_per_bead']} ({w['events']} Events, "
            f"{w['event_patches']} repeats patched into their count) |"
        )
        print(f"| API writes per minute, idle town | {w['idle_writes_per_minute']} |")
    if "memory" in results:
        m = results["memory"]
        print(
            f"| operator RSS with {m['beads']} beads | {m['rss_mb']} MB "
            f"(peak {m['peak_rss_mb']} MB) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
