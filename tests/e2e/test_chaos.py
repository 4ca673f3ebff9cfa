"""Chaos on the real control plane: the API server, etcd and the network fail mid-convoy.

Each test runs two operator replicas with leader election (as the chart runs them) on a
control plane of its own (so a restart disturbs no other test), each replica reaching the API
server through a proxy the test can cut. Agents are played through the API. After every fault
the convoy must land with nothing lost and nothing duplicated: one pod per agent generation,
one merged merge request per source, one hook per bead, and no invariant violation.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gastown.kube.client import USER_AGENT
from gastown.model import ConvoyPhase
from tests.e2e.test_operator_flow import DIAMOND, assert_no_duplicates, drive
from tests.support.api import eventually
from tests.support.chaos import Cluster, chaos_cluster, holder, new_holder
from tests.support.town import convoy, town

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

PARTITION_SECONDS = 30.0


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """Two replicas, each behind its own proxy, on a control plane of the test's own."""
    with chaos_cluster(tmp_path) as built:
        yield built
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(built.logs())


def run_convoy_with(cluster: Cluster, fault: Callable[[Cluster], None], after: int = 2) -> None:
    """Land a 4-bead convoy, injecting `fault` once `after` agents have been played."""
    assert cluster.api.create(cluster.namespace, town(git_url=cluster.player.git_url)).status == 201
    assert cluster.api.create(cluster.namespace, convoy("feat", DIAMOND)).status == 201
    injected: list[bool] = []

    def chaos() -> None:
        if not injected and len(cluster.player.played) >= after:
            injected.append(True)
            fault(cluster)

    drive(cluster.view, cluster.player, "feat", timeout=300, between=chaos)
    assert injected == [True]
    assert cluster.view.convoy("feat").status.phase is ConvoyPhase.LANDED
    assert_no_duplicates(cluster.view)
    status = cluster.view.town()["status"]
    assert status.get("violations", []) == []


def test_api_server_restart_mid_convoy(cluster: Cluster) -> None:
    restarted: list[float] = []

    def restart(c: Cluster) -> None:
        restarted.append(time.time())
        c.plane.restart("kube-apiserver", down_seconds=2.0, kill=True)

    run_convoy_with(cluster, restart)
    # Watches resume without a relist storm: each replica re-lists each kind it watches once
    # (a second time at most, should a resumed watch be told its version is gone), and no town
    # is primed again (the operator's own client lists only when a town's loop starts).
    lists = Counter(
        (r.user_agent.split("/")[0], r.resource)
        for r in cluster.plane.audited()
        if r.verb == "list" and r.code == 200 and r.received >= restarted[0]
    )
    print("LISTs after the API server restart:", dict(sorted(lists.items())))
    relists = {resource: n for (client, resource), n in lists.items() if client == "kopf"}
    assert set(relists) >= {"towns", "beads", "convoys", "agents", "pods"}, relists
    assert max(relists.values()) <= 2 * len(cluster.replicas), relists
    assert not [key for key in lists if key[0] == USER_AGENT.split("/")[0]], lists


def test_etcd_restart_mid_convoy(cluster: Cluster) -> None:
    def restart(c: Cluster) -> None:
        c.plane.restart("etcd", down_seconds=2.0, kill=True)

    run_convoy_with(cluster, restart)


def test_leader_cut_off_from_the_api_server_for_30s(cluster: Cluster) -> None:
    def partition(c: Cluster) -> None:
        leader = c.leader()
        cut_at = time.monotonic()
        leader.proxy.cut()
        # The standby takes over within the lease duration; the cut-off one stops writing.
        new_holder(c.api, c.namespace, leader.name)
        eventually(
            lambda: "not leading any more" in leader.proc.log.read_text(errors="replace"),
            PARTITION_SECONDS,
            f"{leader.name} to notice it lost the lead",
        )
        passes = leader.proc.log.read_text(errors="replace").count("pass:")
        played = len(c.player.played)

        def outage_over() -> bool:
            c.player.step()  # the work goes on under the new leader meanwhile
            return time.monotonic() - cut_at >= PARTITION_SECONDS

        eventually(outage_over, PARTITION_SECONDS + 10, "the end of the partition")
        assert len(c.player.played) > played, "nothing was dispatched during the partition"
        leader.proxy.restore()
        # Restored, it stands by: no pass of its own while the other leads.
        eventually(lambda: _renewing(c), 10, "the new leader to keep the lease")
        assert leader.proc.log.read_text(errors="replace").count("pass:") == passes
        assert holder(c.api, c.namespace) != leader.name

    run_convoy_with(cluster, partition, after=1)


def _renewing(cluster: Cluster) -> bool:
    """The Lease is held and renewed (its renewTime moves)."""
    path = f"/apis/coordination.k8s.io/v1/namespaces/{cluster.namespace}/leases/gastown-operator"
    first = cluster.api.call("GET", path).body["spec"].get("renewTime")
    eventually(
        lambda: cluster.api.call("GET", path).body["spec"].get("renewTime") != first,
        5,
        "a renew",
    )
    return True
