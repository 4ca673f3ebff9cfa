"""The alerting gauges: circuit breaker and landing retries, set from a pass's snapshot."""

from __future__ import annotations

from prometheus_client import REGISTRY

from gastown.kube.gauges import export_alert_gauges, landing_attempts
from gastown.model.town import CircuitBreakerStatus, TownStatus
from tests.unit.reconcile.builders import convoy, snapshot, task


def test_landing_attempts_count_only_convoys_waiting_to_land() -> None:
    waiting = convoy("a", [task("x")], phase="Landing", landing={"attempts": 2})
    landed = convoy("b", [task("y")], phase="Landed", landing={"attempts": 5})
    assert landing_attempts(snapshot(objects=[waiting, landed])) == 2
    assert landing_attempts(snapshot(objects=[landed])) == 0


def test_gauges_follow_the_breaker_and_the_landings() -> None:
    waiting = convoy("a", [task("x")], phase="ReadyToLand", landing={"attempts": 3})
    status = TownStatus(circuit_breaker=CircuitBreakerStatus(open=True))
    export_alert_gauges("gauge-town", snapshot(objects=[waiting]), status)

    def value(name: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"town": "gauge-town"})

    assert value("gastown_circuit_breaker_open") == 1
    assert value("gastown_landing_attempts") == 3
    export_alert_gauges("gauge-town", snapshot(), TownStatus())
    assert value("gastown_circuit_breaker_open") == 0
    assert value("gastown_landing_attempts") == 0
