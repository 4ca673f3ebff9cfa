"""A failed agent's own words reach the bead: `status.message` carries the report's message,
on every retry and in the final "gave up after …" once the attempts run out."""

from __future__ import annotations

from gastown.model import BeadPhase
from tests.unit.reconcile.builders import World, bead, seconds, town

# What the runtime reports for a Claude turn that ended in an API error (the reason the user
# needs: without it the bead only says "AgentFailed").
WHY = "claude: API error 401 authentication_error: invalid x-api-key"


def _fail_current_attempt(w: World, name: str, message: str) -> None:
    """The hooked agent reports `failed` with `message`; the operator applies it."""
    w.report(w.agent_on(name).name, "failed", message=message)
    w.settle(advance=seconds(1))


def _redispatch(w: World, name: str) -> None:
    """Pass the backoff until an agent is hooked to the bead again (bounded by a pass count)."""
    for _ in range(20):
        w.step(seconds(60))
        if any(a.spec.hook == name for a in w.agents.values()):
            return
    raise AssertionError(f"{name} was not dispatched again")


def test_a_failed_report_s_message_reaches_the_bead() -> None:
    w = World.of(town(), bead("a"))
    w.step()
    _fail_current_attempt(w, "a", WHY)
    status = w.bead("a").status
    assert status.phase is BeadPhase.OPEN  # retried later
    assert status.reason == "AgentFailed"
    assert status.message == WHY


def test_the_last_failure_s_message_is_kept_when_the_attempts_run_out() -> None:
    w = World.of(town(policy={"retry": {"maxAttempts": 2}}), bead("a"))
    w.step()
    _fail_current_attempt(w, "a", "first: model unreachable")
    _redispatch(w, "a")
    _fail_current_attempt(w, "a", WHY)
    status = w.bead("a").status
    assert status.phase is BeadPhase.FAILED
    assert status.message == f"gave up after 2 attempts; last: AgentFailed: {WHY}"
    assert not any(a.spec.hook == "a" for a in w.agents.values())
    warnings = [e for e in w.events if e.name == "a" and e.type == "Warning"]
    assert WHY in warnings[-1].message  # the Event says it too (`kubectl describe bead`)
