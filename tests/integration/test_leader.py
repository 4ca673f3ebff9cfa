"""Leader election on a real Lease: one holder, hand-over, take-over, and the fence.

Two `Leadership` contenders (as two operator replicas run them) share a Lease on the real API
server, with short timings. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gastown.devtools.controlplane import ControlPlane
from gastown.kube.client import Kube, NotLeading, connect
from gastown.kube.leader import Leadership, LeaseSettings
from tests.support.api import Api
from tests.support.town import town

pytestmark = pytest.mark.cluster

DURATION, RENEW, RETRY = 3.0, 2.0, 0.25


@pytest.fixture
async def kubes(
    control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Kube, Kube]]:
    """Two clients, one per replica."""
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    first, second = Kube(await connect()), Kube(await connect())
    yield first, second
    await first.close()
    await second.close()


def _settings(namespace: str, identity: str) -> LeaseSettings:
    return LeaseSettings(
        name="gastown-operator",
        namespace=namespace,
        identity=identity,
        lease_duration=DURATION,
        renew_deadline=RENEW,
        retry_period=RETRY,
    )


def _lease(api: Api, namespace: str) -> dict[str, Any]:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/gastown-operator"
    spec: dict[str, Any] = api.call("GET", path).body["spec"]
    return spec


async def _until(check: Any, within: float, what: str) -> float:
    """Poll `check` until true; return the monotonic time it became true."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return time.monotonic()


async def test_one_holder_and_a_clean_hand_over(
    api: Api, namespace: str, kubes: tuple[Kube, Kube]
) -> None:
    a = Leadership(kubes[0], _settings(namespace, "replica-a"))
    b = Leadership(kubes[1], _settings(namespace, "replica-b"))
    assert await a.try_once()
    assert not await b.try_once()
    assert (a.leading(), b.leading()) == (True, False)
    assert b.holder == "replica-a"
    spec = _lease(api, namespace)
    assert spec["holderIdentity"] == "replica-a"
    assert spec["leaseDurationSeconds"] == 3
    assert spec["leaseTransitions"] == 0

    runs = [asyncio.create_task(x.run()) for x in (a, b)]
    try:
        await asyncio.sleep(DURATION + 1)  # a renews; b never takes over a live holder
        assert (a.leading(), b.leading()) == (True, False)
        # A clean stop releases the Lease: b takes over in about one retry period, not after
        # the lease duration.
        stopped = time.monotonic()
        runs[0].cancel()
        await asyncio.gather(runs[0], return_exceptions=True)
        assert not a.leading()
        took = await _until(b.leading, DURATION, "b to take over")
        assert took - stopped < DURATION / 2
    finally:
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
    spec = _lease(api, namespace)
    assert spec.get("holderIdentity") in (None, "replica-b")  # released when b stopped


async def test_a_frozen_holder_is_fenced_before_anyone_takes_over(
    api: Api, namespace: str, kubes: tuple[Kube, Kube]
) -> None:
    a = Leadership(kubes[0], _settings(namespace, "replica-a"))
    b = Leadership(kubes[1], _settings(namespace, "replica-b"))
    kubes[0].fence = a.leading
    renewed = time.monotonic()
    assert await a.try_once()
    # a freezes (SIGSTOP, a lost network): it never renews again. b keeps trying.
    contender = asyncio.create_task(b.run())
    try:
        fenced = await _until(lambda: not a.leading(), DURATION + 1, "a's fence to run out")
        took = await _until(b.leading, 2 * DURATION + 1, "b to take over")
        spec = _lease(api, namespace)
    finally:
        contender.cancel()
        await asyncio.gather(contender, return_exceptions=True)
    # The fence fell at least (duration - renew deadline) before b could start, less the
    # polling granularity of this test.
    assert took - fenced >= DURATION - RENEW - 0.1, took - fenced
    assert fenced - renewed <= RENEW + 0.1
    assert took - renewed <= DURATION + 2 * RETRY + 1.0
    assert spec["holderIdentity"] == "replica-b"
    assert spec["leaseTransitions"] == 1
    # The fenced replica's writes never reach the API server.
    with pytest.raises(NotLeading):
        await kubes[0].create("Town", namespace, town())
    assert api.get("Town", namespace, "demo").status == 404
    # Reads still work: a standby keeps its caches warm.
    assert await kubes[0].get_lease(namespace, "gastown-operator") is not None
