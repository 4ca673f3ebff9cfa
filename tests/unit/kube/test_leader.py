"""The pure part of leader election: the move a candidate makes on the Lease it read."""

from __future__ import annotations

from typing import Any

import pytest

from gastown.kube.leader import LeaseSettings, Move, Observation, decide

DURATION = 15.0


def lease(holder: str | None, renew: str = "2026-12-02T10:00:00.000000Z") -> dict[str, Any]:
    return {
        "metadata": {"resourceVersion": "7"},
        "spec": {"holderIdentity": holder, "renewTime": renew},
    }


@pytest.mark.parametrize(
    ("read", "seen", "now", "move"),
    [
        pytest.param(None, Observation(), 0.0, Move.CREATE, id="no lease yet"),
        pytest.param(lease("me"), Observation(), 0.0, Move.RENEW, id="ours: renew"),
        pytest.param(lease(None), Observation(), 0.0, Move.TAKE, id="released: take"),
        pytest.param(
            lease("other"), Observation(), 100.0, Move.WAIT, id="first sight of a holder: wait"
        ),
        pytest.param(
            lease("other"),
            Observation("other", "2026-12-02T10:00:00.000000Z", 90.0),
            100.0,
            Move.WAIT,
            id="unchanged for less than the duration: wait",
        ),
        pytest.param(
            lease("other"),
            Observation("other", "2026-12-02T10:00:00.000000Z", 85.0),
            100.0,
            Move.TAKE,
            id="unchanged for the duration: take",
        ),
        pytest.param(
            lease("other", renew="2026-12-02T10:00:02.000000Z"),
            Observation("other", "2026-12-02T10:00:00.000000Z", 0.0),
            100.0,
            Move.WAIT,
            id="renewed since: wait (the clock restarts)",
        ),
        pytest.param(
            lease("third"),
            Observation("other", "2026-12-02T10:00:00.000000Z", 0.0),
            100.0,
            Move.WAIT,
            id="a new holder: wait",
        ),
    ],
)
def test_decide(read: dict[str, Any] | None, seen: Observation, now: float, move: Move) -> None:
    assert decide(read, "me", seen, now, DURATION) is move


def test_a_holder_is_judged_on_our_clock_not_its_timestamps() -> None:
    # A renewTime far in the past (the holder's wall clock is behind) is no reason to take
    # over: only how long we have seen the same record counts.
    stale_looking = lease("other", renew="2020-01-01T00:00:00.000000Z")
    assert decide(stale_looking, "me", Observation(), 1000.0, DURATION) is Move.WAIT


@pytest.mark.parametrize(
    ("duration", "deadline", "retry"),
    [(15, 15, 2), (15, 10, 10), (10, 15, 2), (15, 10, 0)],
)
def test_timings_must_leave_room_for_the_fence(
    duration: float, deadline: float, retry: float
) -> None:
    with pytest.raises(ValueError, match="retryPeriod < renewDeadline < leaseDuration"):
        LeaseSettings("l", "ns", "me", duration, deadline, retry)


def test_settings_from_the_environment() -> None:
    env = {
        "GASTOWN_LEASE_NAME": "gastown-shard-a",
        "GASTOWN_LEASE_NAMESPACE": "gastown-system",
        "GASTOWN_LEASE_IDENTITY": "pod-1",
        "GASTOWN_LEASE_DURATION_SECONDS": "30",
        "GASTOWN_LEASE_RENEW_DEADLINE_SECONDS": "20",
        "GASTOWN_LEASE_RETRY_PERIOD_SECONDS": "4",
    }
    assert LeaseSettings.from_env("default", env) == LeaseSettings(
        "gastown-shard-a", "gastown-system", "pod-1", 30, 20, 4
    )
    defaults = LeaseSettings.from_env("default", {})
    assert (defaults.name, defaults.namespace) == ("gastown-operator", "default")
    assert (defaults.lease_duration, defaults.renew_deadline, defaults.retry_period) == (15, 10, 2)
    assert defaults.identity != LeaseSettings.from_env("default", {}).identity  # per process
