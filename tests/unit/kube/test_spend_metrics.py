"""The spend counters: tokens and dollars by town, rig, role and model, from applied writes."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY

from gastown.kube.apply import count_spend
from gastown.reconcile.actions import RecordBeadSpend


def _sample(name: str, town: str, role: str, model: str) -> float:
    labels = {"town": town, "rig": "app", "role": role, "model": model}
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _write(*delta: tuple[str, str, str, str, int, float]) -> RecordBeadSpend:
    return RecordBeadSpend(
        bead="b", set={"spend": {}}, expect={"spend": None}, reason="SpendRecorded", delta=delta
    )


def test_an_applied_spend_write_counts_its_delta_by_rig_role_and_model() -> None:
    town = f"t-{uuid.uuid4().hex[:8]}"  # counters are process-wide: a town of its own
    count_spend(town, _write(("app", "polecat", "claude-opus", "p1/1", 1200, 0.48)))
    count_spend(town, _write(("app", "polecat", "claude-opus", "p1/2", 300, 0.02)))
    count_spend(town, _write(("app", "refinery", "", "r/1", 50, 0.0)))
    assert _sample("gastown_tokens_total", town, "polecat", "claude-opus") == 1500
    assert abs(_sample("gastown_cost_usd_total", town, "polecat", "claude-opus") - 0.50) < 1e-9
    # A session without a model name, and without a cost: tokens only, model "unknown".
    assert _sample("gastown_tokens_total", town, "refinery", "unknown") == 50
    assert _sample("gastown_cost_usd_total", town, "refinery", "unknown") == 0


def test_a_write_that_adds_nothing_counts_nothing() -> None:
    town = f"t-{uuid.uuid4().hex[:8]}"
    count_spend(town, _write(("app", "polecat", "m", "p1/1", 0, 0.0)))
    count_spend(town, _write())
    assert _sample("gastown_tokens_total", town, "polecat", "m") == 0
