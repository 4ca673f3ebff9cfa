"""Two operator replicas with leader election: failover during a convoy loses and duplicates
nothing (real API server, operators as processes, agents played through the API).

The leader is SIGKILLed (the standby takes over within the lease duration) and later frozen
with SIGSTOP (the standby takes over; the frozen one, resumed, finds itself fenced and writes
nothing). The convoy lands with one pod per agent generation, one merged MR per source and no
invariant violation.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from gastown.devtools.controlplane import ControlPlane
from gastown.model import ConvoyPhase
from tests.e2e.test_operator_flow import DIAMOND, assert_no_duplicates, drive
from tests.support.api import Api, eventually
from tests.support.chaos import LEASE_SECONDS, holder, new_holder
from tests.support.procs import Process, operator, wait_started
from tests.support.town import AgentPlayer, TownView, convoy, town

pytestmark = pytest.mark.cluster

SHARD = "gastown.dev/shard"


@pytest.fixture
def replicas(
    request: pytest.FixtureRequest, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> Iterator[dict[str, Process]]:
    """Two replicas of the operator sharing one Lease in the test's namespace."""
    procs: dict[str, Process] = {}
    for index in range(2):
        identity = f"replica-{index}"
        log_dir = tmp_path / identity
        log_dir.mkdir()
        procs[identity] = operator(
            control_plane,
            namespace,
            log_dir,
            GASTOWN_LEASE_IDENTITY=identity,
            GASTOWN_LEASE_NAMESPACE=namespace,
            **LEASE_SECONDS,
        )
    for proc in procs.values():
        proc.start()
    for proc in procs.values():
        wait_started(proc, "Initial authentication has finished")
    yield procs
    for proc in procs.values():
        if proc.proc is not None and proc.proc.poll() is None:
            os.killpg(proc.proc.pid, signal.SIGCONT)
        proc.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for identity, proc in procs.items():
            print(f"--- {identity} log ---\n{proc.tail(120)}")


def test_leader_killed_and_frozen_during_a_convoy_loses_and_duplicates_nothing(
    api: Api,
    namespace: str,
    replicas: dict[str, Process],
    view: TownView,
    player: AgentPlayer,
) -> None:
    first = eventually(lambda: holder(api, namespace), 30, "a replica to take the lease")
    assert api.create(namespace, town(git_url=player.git_url)).status == 201
    assert api.create(namespace, convoy("feat", DIAMOND)).status == 201
    faults: list[str] = []

    def chaos() -> None:
        leader = holder(api, namespace)
        if leader is None:
            return
        if not faults and len(player.played) >= 1:
            # SIGKILL: no release; the standby waits out the lease duration.
            replicas[leader].kill()
            faults.append(f"killed {leader}")
            taken = new_holder(api, namespace, leader)
            replicas[leader].start()  # back as a standby
            wait_started(replicas[leader], "Initial authentication has finished")
            assert holder(api, namespace) == taken
        elif len(faults) == 1 and len(player.played) >= 3:
            frozen = replicas[leader]
            assert frozen.proc is not None
            os.killpg(frozen.proc.pid, signal.SIGSTOP)
            faults.append(f"froze {leader}")
            new_holder(api, namespace, leader)
            marks = frozen.log.read_text(errors="replace").count("not leading any more")
            os.killpg(frozen.proc.pid, signal.SIGCONT)
            # Resumed, it finds its fence down before it writes anything.
            eventually(
                lambda: (
                    frozen.log.read_text(errors="replace").count("not leading any more") > marks
                ),
                15,
                f"{leader} to notice it lost the lead",
            )

    drive(view, player, "feat", timeout=240, between=chaos)
    assert [fault.split()[0] for fault in faults] == ["killed", "froze"], faults
    assert first is not None
    landed = view.convoy("feat")
    assert landed.status.phase is ConvoyPhase.LANDED
    assert_no_duplicates(view)
    # The town's status, written by the leader of the end, names it and has no violation.
    status = view.town()["status"]
    assert status.get("violations", []) == []
    leader_condition = next(c for c in status["conditions"] if c["type"] == "Leader")
    assert leader_condition["message"] == f"reconciled by {holder(api, namespace)}"


def test_two_releases_shard_towns_by_namespace_each_with_its_own_lease(
    api: Api, namespace: str, control_plane: ControlPlane, tmp_path: Path
) -> None:
    """The sharding path: one release per set of namespaces, each with its own Lease; neither
    ever reconciles the other's towns."""
    other = f"{namespace}-b"
    assert api.call("POST", "/api/v1/namespaces", {"metadata": {"name": other}}).status == 201
    shards: dict[str, Process] = {}
    try:
        for shard, watched in (("shard-a", namespace), ("shard-b", other)):
            log_dir = tmp_path / shard
            log_dir.mkdir()
            shards[shard] = operator(
                control_plane,
                watched,
                log_dir,
                GASTOWN_LEASE_NAME=shard,
                GASTOWN_LEASE_IDENTITY=f"{shard}-0",
                GASTOWN_LEASE_NAMESPACE=watched,
                **LEASE_SECONDS,
            )
            shards[shard].start()
        for proc in shards.values():
            wait_started(proc, "Initial authentication has finished")
        for watched in (namespace, other):
            assert api.create(watched, town()).status == 201

        def leaders() -> dict[str, str] | None:
            found = {}
            for watched in (namespace, other):
                status = api.get("Town", watched, "demo").body.get("status") or {}
                condition = next(
                    (c for c in status.get("conditions", []) if c["type"] == "Leader"), None
                )
                if condition is None:
                    return None
                found[watched] = condition["message"]
            return found

        found = eventually(leaders, 60, "both towns to be reconciled")
        assert found == {namespace: "reconciled by shard-a-0", other: "reconciled by shard-b-0"}
        for shard, watched in (("shard-a", namespace), ("shard-b", other)):
            path = f"/apis/coordination.k8s.io/v1/namespaces/{watched}/leases/{shard}"
            lease = api.call("GET", path)
            assert lease.status == 200, lease.body
            assert lease.body["spec"]["holderIdentity"] == f"{shard}-0"
    finally:
        for proc in shards.values():
            proc.stop()
        api.call("DELETE", f"/api/v1/namespaces/{other}")


def test_two_releases_shard_the_towns_of_one_namespace_by_label(
    api: Api, namespace: str, control_plane: ControlPlane, tmp_path: Path
) -> None:
    """The sharding path inside one namespace: each release reconciles the Towns its
    --town-selector matches, with its own Lease; a Town relabelled to the other shard is handed
    over (the old shard stops its loop, the new one starts one)."""
    shards: dict[str, Process] = {}
    try:
        for shard in ("a", "b"):
            log_dir = tmp_path / shard
            log_dir.mkdir()
            shards[shard] = operator(
                control_plane,
                namespace,
                log_dir,
                GASTOWN_TOWN_SELECTOR=f"{SHARD}={shard}",
                GASTOWN_LEASE_NAME=f"shard-{shard}",
                GASTOWN_LEASE_IDENTITY=f"shard-{shard}-0",
                GASTOWN_LEASE_NAMESPACE=namespace,
                **LEASE_SECONDS,
            )
            shards[shard].start()
        for proc in shards.values():
            wait_started(proc, "Initial authentication has finished")
        for shard in ("a", "b"):
            body = town(f"town-{shard}")
            body["metadata"]["labels"] = {SHARD: shard}
            assert api.create(namespace, body).status == 201

        def reconciled_by(name: str) -> str | None:
            status = api.get("Town", namespace, name).body.get("status") or {}
            found = [c for c in status.get("conditions", []) if c["type"] == "Leader"]
            return found[0]["message"] if found else None

        for shard in ("a", "b"):
            eventually(
                lambda s=shard: reconciled_by(f"town-{s}") == f"reconciled by shard-{s}-0",
                60,
                f"town-{shard} to be reconciled by shard {shard}",
            )
        assert f"town {namespace}/town-b" not in shards["a"].log.read_text()
        assert f"town {namespace}/town-a" not in shards["b"].log.read_text()

        patch = {"metadata": {"labels": {SHARD: "b"}}}
        assert api.merge_patch("Town", namespace, "town-a", patch).status == 200
        eventually(
            lambda: f"stopped reconciling town {namespace}/town-a" in shards["a"].log.read_text(),
            30,
            "shard a to stop reconciling town-a",
        )
        eventually(
            lambda: reconciled_by("town-a") == "reconciled by shard-b-0",
            60,
            "town-a to be reconciled by shard b",
        )
        started = f"started reconciling town {namespace}/town-a"
        assert shards["a"].log.read_text().count(started) == 1
    finally:
        for proc in shards.values():
            proc.stop()
