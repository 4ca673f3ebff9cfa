"""A town loop retries one conflict at once and backs off from a run of them (never spins)."""

from __future__ import annotations

import pytest

from gastown.kube.loop import CONFLICT_BACKOFF_SECONDS, conflict_backoff


@pytest.mark.parametrize(
    ("streak", "seconds"),
    [(0, 0.0), (1, 0.0), (2, 0.1), (3, 0.2), (4, 0.5), (5, 1.0), (6, 2.0), (7, 2.0), (1000, 2.0)],
)
def test_backoff_grows_with_the_streak_and_is_capped(streak: int, seconds: float) -> None:
    assert conflict_backoff(streak) == seconds


def test_backoff_never_shrinks_as_the_streak_grows() -> None:
    waits = [conflict_backoff(n) for n in range(20)]
    assert waits == sorted(waits)
    assert max(waits) == CONFLICT_BACKOFF_SECONDS[-1]
