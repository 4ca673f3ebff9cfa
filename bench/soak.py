"""Soak: a town with several rigs and hundreds of beads, faults injected at random from a seed.

Two operator replicas with leader election run on a control plane of their own, each behind a
proxy the run can cut (tests/support/chaos.py). Convoys of random dependency graphs are
submitted over the run; agents are played through the API (instant, honest git work on a real
bare remote). Every `--fault-interval` seconds (jittered from the seed) one fault is injected:

- kill: SIGKILL the leader (it comes back as a standby);
- freeze: SIGSTOP the leader for 8 s, then SIGCONT;
- apiserver: restart the API server (SIGKILL, 2 s down);
- etcd: restart etcd (SIGKILL, 2 s down);
- partition: cut the leader off from the API server for `--partition-seconds`.

The Town deletes finished convoys `--retention-seconds` after they land (as a long-lived town
would, `policy.retention`), so the live set stays bounded and memory can settle; landings,
closed beads and merged merge requests are therefore counted as they are seen, not at the end.

At the end every convoy must have landed; the run reports landed beads, duplicates (pods per
agent generation, merged MRs per source, hooks per bead, merges per MR on the remote: all must
be 0), the invariant violations on the Town at the end, once it had up to 60 s to settle after
the last fault (must be 0) and the most any Town status
showed during the run, with their codes (a fault between two writes of one action can leave a
state the next pass repairs), faults injected, the
time from each fault to the next bead closing (recovery p50 / max), the operator API writes
(both replicas, over every restart) and the replicas' RSS over time: per operator process that
lived long enough, its RSS after warm-up, at its end, and the least-squares growth after
warm-up in MB per minute.

Run: `.venv/bin/python bench/soak.py` (20 minutes, 500 beads; `make soak`), or e.g.
`--minutes 2 --beads 40` for a short run (the test suite runs one: tests/e2e/test_soak.py).
Exits 1 if anything was lost, duplicated or violated.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.chaos import Cluster, Replica, chaos_cluster  # noqa: E402
from tests.support.git import git  # noqa: E402
from tests.support.town import convoy, town  # noqa: E402

from gastown.model import BeadPhase, Convoy, ConvoyPhase  # noqa: E402

RIGS = ("app", "api", "web")
FAULTS = ("kill", "freeze", "apiserver", "etcd", "partition")
FREEZE_SECONDS = 8.0
TRANSIENT_SECONDS = 120.0
WARMUP_SECONDS = 180.0
"""RSS samples of a process this young are warm-up (caches and pools filling)."""
MIN_LIFETIME_SECONDS = 300.0
"""A process whose samples after warm-up span less than this gives no growth figure."""
SETTLE_SECONDS = 60.0
"""At the end, how long the Town may take to clear violations a fault just before left (a new
leader's watches reconnecting); what is still there then is reported as at the end."""
GRACE_SECONDS = 600.0
"""How long after the last submission every convoy may take to land."""


@dataclass
class Soak:
    """The run's state and measurements."""

    cluster: Cluster
    rng: random.Random
    partition_seconds: float
    kinds: tuple[str, ...] = FAULTS
    """The fault kinds to inject (all by default)."""
    faults: Counter[str] = field(default_factory=Counter)
    fault_times: list[float] = field(default_factory=list)
    recoveries: list[float] = field(default_factory=list)
    pending: list[tuple[float, str, Replica]] = field(default_factory=list)
    """Scheduled ends of faults: (when, what, replica)."""
    writes_by_start: dict[tuple[str, int], float] = field(default_factory=dict)
    rss: list[tuple[str, int, float, int]] = field(default_factory=list)
    """(replica, process start number, seconds since that process started, MB)."""
    landed: dict[str, int] = field(default_factory=dict)
    """Convoys seen landed: name -> member beads."""
    closed: set[str] = field(default_factory=set)
    """Beads seen closed (they may be deleted later by retention)."""
    merged: dict[str, set[str]] = field(default_factory=dict)
    """Source bead -> closed merge requests seen for it."""
    failed_convoys: set[str] = field(default_factory=set)
    vanished: set[str] = field(default_factory=set)
    """Convoys deleted (finished) before a look saw them landed or failed."""
    seen: set[str] = field(default_factory=set)
    most_violations: int = 0
    violations_now: int = 0
    violation_codes: set[str] = field(default_factory=set)
    failing_since: float | None = None
    born: dict[tuple[str, int], float] = field(default_factory=dict)
    round: list[str] = field(default_factory=list)

    def tolerate(self, step: Callable[[], object], now: float) -> None:
        """Run a step of the outside world (agents, observation), which a restarting API
        server may refuse for a moment (503 "storage is (re)initializing", a reset
        connection); failures that last longer than `TRANSIENT_SECONDS` end the run."""
        try:
            step()
        except (AssertionError, OSError) as err:
            self.failing_since = self.failing_since or now
            if now - self.failing_since > TRANSIENT_SECONDS:
                raise AssertionError(f"the API kept failing: {err}") from err
            return
        self.failing_since = None

    # -- faults ----------------------------------------------------------------------------

    def inject(self, now: float) -> str:
        """One fault, chosen by the seed: every kind once in a shuffled round, round after round
        (so that even a short run meets each kind)."""
        if not self.round:
            self.round = self.rng.sample(self.kinds, k=len(self.kinds))
        kind = self.round.pop()
        leader = self.cluster.leader()
        self.scrape(leader)  # its counters die with it
        if kind == "kill":
            leader.signal(signal.SIGKILL)
            assert leader.proc.proc is not None
            leader.proc.proc.wait(timeout=10)
            leader.restart()
        elif kind == "freeze":
            leader.signal(signal.SIGSTOP)
            self.pending.append((now + FREEZE_SECONDS, "thaw", leader))
        elif kind == "apiserver":
            self.cluster.plane.restart("kube-apiserver", down_seconds=2.0, kill=True)
        elif kind == "etcd":
            self.cluster.plane.restart("etcd", down_seconds=2.0, kill=True)
        else:
            leader.proxy.cut()
            self.pending.append((now + self.partition_seconds, "restore", leader))
        self.faults[kind] += 1
        self.fault_times.append(now)
        return kind

    def end_faults(self, now: float) -> None:
        """Thaw frozen replicas and restore cut ones whose time has come."""
        due = [p for p in self.pending if p[0] <= now]
        self.pending = [p for p in self.pending if p[0] > now]
        for _, what, replica in due:
            if what == "thaw":
                replica.signal(signal.SIGCONT)
            else:
                replica.proxy.restore()

    # -- measurements ----------------------------------------------------------------------

    def scrape(self, replica: Replica) -> None:
        """Remember the replica's API write counter for its current process."""
        if replica.proc.proc is None or replica.proc.proc.poll() is not None:
            return
        url = f"http://127.0.0.1:{replica.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return  # frozen or starting: the last figure stands
        total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("gastown_api_writes_total{")
        )
        self.writes_by_start[(replica.name, replica.proc.starts)] = total

    def sample_rss(self, now: float) -> None:
        """One RSS sample of every running replica, keyed by its process."""
        for replica in self.cluster.replicas.values():
            proc = replica.proc.proc
            if proc is None or proc.poll() is not None:
                continue
            status = Path(f"/proc/{proc.pid}/status").read_text()
            kib = next(
                int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")
            )
            born = self.born.setdefault((replica.name, replica.proc.starts), now)
            self.rss.append((replica.name, replica.proc.starts, now - born, kib // 1024))

    def settle(self, limit: float) -> float:
        """Observe until the Town shows no violation or `limit` seconds passed; how long."""
        started = time.monotonic()
        while True:
            now = time.monotonic()
            self.tolerate(functools.partial(self.observe, now), now)
            if self.violations_now == 0 or now - started >= limit:
                return round(now - started, 1)
            time.sleep(1.0)  # the run's observation interval, not a synchronisation

    def observe(self, now: float) -> None:
        """Violations on the Town, and recovery: the first bead closed after each fault."""
        found = self.cluster.api.get("Town", self.cluster.namespace, "demo")
        if found.status == 200:
            status = found.body.get("status") or {}
            violations = status.get("violations") or []
            self.most_violations = max(self.most_violations, len(violations))
            self.violation_codes.update(v.get("code", "?") for v in violations)
            self.violations_now = len(violations)
        present = _convoys(self.cluster)
        names = {c.metadata.name for c in present}
        self.vanished |= self.seen - names - set(self.landed) - self.failed_convoys
        self.seen |= names
        for c in present:
            if c.status.phase is ConvoyPhase.LANDED:
                self.landed[c.metadata.name] = c.status.total
            elif c.status.phase is ConvoyPhase.FAILED:
                self.failed_convoys.add(c.metadata.name)
        closed_before = len(self.closed)
        for b in self.cluster.view.beads():
            if b.status.phase is not BeadPhase.CLOSED:
                continue
            self.closed.add(b.metadata.name)
            if b.spec.merge_request is not None:
                source = b.spec.merge_request.source_bead
                self.merged.setdefault(source, set()).add(b.metadata.name)
        if len(self.closed) > closed_before:
            for fault_at in self.fault_times[len(self.recoveries) :]:
                self.recoveries.append(now - fault_at)


def random_convoy(rng: random.Random, index: int, size: int) -> dict[str, Any]:
    """A convoy of `size` tasks on a random rig with a random dependency DAG."""
    tasks: list[dict[str, Any]] = []
    for position in range(size):
        earlier = [f"t{j}" for j in range(position)]
        deps = rng.sample(earlier, k=min(len(earlier), rng.choice((0, 0, 1, 2))))
        task: dict[str, Any] = {"key": f"t{position}", "title": f"Task {index}.{position}"}
        if deps:
            task["dependsOn"] = deps
        tasks.append(task)
    return convoy(f"c{index:03d}", tasks, mode="review-and-merge", rig=rng.choice(RIGS))


def duplicates(cluster: Cluster, merged_seen: dict[str, set[str]]) -> dict[str, int]:
    """Everything that exists (or existed, for merged MRs) more than once but must exist once."""
    view = cluster.view
    pods = Counter(
        (
            p["metadata"]["labels"]["gastown.dev/agent"],
            p["metadata"]["labels"]["gastown.dev/generation"],
        )
        for p in view.pods()
    )
    hooks = Counter(a.spec.hook for a in view.agents() if a.spec.hook)
    log = git("log", "--format=%s", "main", cwd=cluster.player.repo)
    merges = Counter(line for line in log.splitlines() if line.startswith("Merge "))
    return {
        "pods per agent generation": sum(n - 1 for n in pods.values()),
        "merged MRs per source": sum(len(mrs) - 1 for mrs in merged_seen.values()),
        "hooks per bead": sum(n - 1 for n in hooks.values()),
        "merges per MR on the remote": sum(n - 1 for n in merges.values()),
    }


def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    with chaos_cluster(directory) as cluster:
        rigs = [{"name": r, "gitUrl": cluster.player.git_url} for r in RIGS]
        body = town(git_url=cluster.player.git_url)
        body["spec"]["rigs"] = rigs
        body["spec"]["limits"] = {"maxPolecatsPerRig": 4, "maxPolecats": 12}
        if args.retention_seconds is not None:
            retention = {"ttlSecondsAfterFinished": args.retention_seconds}
            body["spec"].setdefault("policy", {})["retention"] = retention
        assert cluster.api.create(cluster.namespace, body).status == 201
        soak = Soak(cluster, rng, args.partition_seconds, tuple(args.faults.split(",")))
        started = time.monotonic()
        end_submitting = started + args.minutes * 60
        per_convoy = 10
        convoys = -(-args.beads // per_convoy)
        submit_every = (args.minutes * 60 * 0.8) / convoys
        submitted, next_submit = 0, started
        next_fault = started + rng.uniform(args.fault_interval / 2, args.fault_interval)
        next_sample = next_observe = started
        deadline = end_submitting + GRACE_SECONDS
        while True:
            now = time.monotonic()
            assert now < deadline, f"convoys did not land within the grace period\n{cluster.logs()}"
            if submitted < convoys and now >= next_submit:
                size = min(per_convoy, args.beads - submitted * per_convoy)
                made = cluster.api.create(cluster.namespace, random_convoy(rng, submitted, size))
                assert made.status == 201, made.body
                submitted += 1
                next_submit = now + submit_every
            soak.tolerate(cluster.player.step, now)
            soak.end_faults(now)
            if now >= next_fault and now < end_submitting:
                kind = soak.inject(now)
                print(f"[{now - started:6.1f}s] fault: {kind}", flush=True)
                next_fault = time.monotonic() + rng.uniform(
                    args.fault_interval / 2, args.fault_interval
                )
            if now >= next_observe:
                soak.tolerate(functools.partial(soak.observe, now), now)
                next_observe = now + 1
            if now >= next_sample:
                soak.sample_rss(now - started)
                for replica in cluster.replicas.values():
                    soak.scrape(replica)
                next_sample = now + 10
            failed = soak.failed_convoys
            assert not failed, f"convoys failed: {sorted(failed)}\n{cluster.logs()}"
            finished = len(soak.landed) + len(soak.vanished)
            done = submitted == convoys and now >= end_submitting and not soak.pending
            if done and finished == convoys:
                break
        for replica in cluster.replicas.values():
            soak.scrape(replica)
        settled = soak.settle(SETTLE_SECONDS)
        wall = time.monotonic() - started
        return {
            "seed": args.seed,
            "minutes": round(wall / 60, 1),
            "beads": args.beads,
            "landed": sum(soak.landed.values()),
            "convoys_finished_unseen": len(soak.vanished),
            "faults": dict(soak.faults),
            "recovery_s": {
                "p50": round(statistics.median(soak.recoveries), 1) if soak.recoveries else None,
                "max": round(max(soak.recoveries), 1) if soak.recoveries else None,
            },
            "duplicates": duplicates(cluster, soak.merged),
            "violations_at_end": soak.violations_now,
            "settle_s": settled,
            "max_violations_seen": soak.most_violations,
            "violation_codes_seen": sorted(soak.violation_codes),
            "operator_restarts": sum(r.proc.starts - 1 for r in cluster.replicas.values()),
            "api_writes": int(sum(soak.writes_by_start.values())),
            "rss_mb": rss_report(soak.rss),
        }


def rss_report(samples: list[tuple[str, int, float, int]]) -> dict[str, Any]:
    """RSS of every operator process: the largest seen, and for each process that lived long
    enough after warm-up, its first and last RSS after warm-up and its growth per minute
    (least squares, so one noisy sample does not decide it)."""
    lives: dict[tuple[str, int], list[tuple[float, int]]] = {}
    for name, start, age, mb in samples:
        lives.setdefault((name, start), []).append((age, mb))
    long_lived = []
    for (name, start), points in sorted(lives.items()):
        warm = [(age, mb) for age, mb in points if age >= WARMUP_SECONDS]
        if len(warm) < 3 or warm[-1][0] - warm[0][0] < MIN_LIFETIME_SECONDS:
            continue
        ages = [age / 60 for age, _ in warm]
        sizes = [float(mb) for _, mb in warm]
        slope = statistics.linear_regression(ages, sizes).slope
        long_lived.append(
            {
                "process": f"{name}#{start}",
                "minutes_after_warmup": round(ages[-1] - ages[0], 1),
                "after_warmup": warm[0][1],
                "last": warm[-1][1],
                "growth_mb_per_min": round(slope, 2),
            }
        )
    return {
        "max": max((mb for *_, mb in samples), default=None),
        "processes": long_lived,
    }


def _convoys(cluster: Cluster) -> list[Convoy]:
    items = cluster.api.call(
        "GET", f"/apis/gastown.dev/v1alpha1/namespaces/{cluster.namespace}/convoys"
    ).body["items"]
    return [Convoy.from_api(item) for item in items]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="how long faults are injected")
    parser.add_argument("--beads", type=int, default=500)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--fault-interval", type=float, default=45.0, help="mean seconds between faults"
    )
    parser.add_argument("--partition-seconds", type=float, default=30.0)
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help="comma-separated fault kinds to inject (e.g. leave out kill to keep both operator "
        "processes alive for the whole run and watch their memory)",
    )
    parser.add_argument(
        "--retention-seconds",
        type=int,
        default=60,
        help="the Town's policy.retention.ttlSecondsAfterFinished (-1: keep everything)",
    )
    parser.add_argument("--dir", type=Path, default=None, help="keep logs here")
    args = parser.parse_args()
    unknown = set(args.faults.split(",")) - set(FAULTS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULTS)}")
    if args.retention_seconds < 0:
        args.retention_seconds = None
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        report = run(args, args.dir)
    else:
        with tempfile.TemporaryDirectory(prefix="gastown-soak-") as tmp:
            report = run(args, Path(tmp))
    print(json.dumps(report, indent=2))
    ok = (
        report["landed"] == report["beads"] == args.beads
        and not any(report["duplicates"].values())
        and report["violations_at_end"] == 0
        and report["convoys_finished_unseen"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
