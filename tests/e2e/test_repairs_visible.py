"""A repaired impossible state shows up as a metric, a Warning Event and in the Town's status;
the served /metrics declares every metric the chart's dashboard and alerts use.

A tamperer with write access to the town's objects hooks a second agent to a bead that already
has one. The operator clears the extra hook in its next pass, before the invariant check could see
it; the repair must still be visible: `gastown_invariant_repairs_total{code="DuplicateHook"}`,
an `InvariantRepaired` Warning Event on the Town, and an entry in `status.lastRepairs`.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gastown.devtools.controlplane import ControlPlane, free_port
from gastown.model import BeadPhase
from tests.support.api import Api
from tests.support.procs import operator, wait_started
from tests.support.town import AgentPlayer, TownView, bead, town
from tests.unit.test_chart_observability import dashboard_queries, rules

pytestmark = pytest.mark.cluster


def fetch(url: str) -> str:
    """GET a local URL."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def intruder(hook: str) -> dict[str, Any]:
    """An Agent the operator never created, hooked to `hook`."""
    return {
        "apiVersion": "gastown.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "intruder"},
        "spec": {"town": "demo", "role": "polecat", "rig": "app", "hook": hook, "generation": 1},
    }


def chart_metric_names() -> set[str]:
    """Metric names the chart's dashboard and alert rules query."""
    queries = dashboard_queries() + [r["expr"] for r in rules()]
    return {n for q in queries for n in re.findall(r"\bgastown_[a-z0-9_]+", q)}


def town_events(api: Api, namespace: str) -> list[dict[str, Any]]:
    """Events about the Town `demo`."""
    path = f"/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.name=demo"
    items: list[dict[str, Any]] = api.call("GET", path).body["items"]
    return items


def test_a_duplicate_hook_is_repaired_and_reported(
    api: Api, namespace: str, control_plane: ControlPlane, tmp_path: Path, player: AgentPlayer
) -> None:
    metrics_port = free_port()
    proc = operator(control_plane, namespace, tmp_path, GASTOWN_METRICS_PORT=str(metrics_port))
    proc.start()
    try:
        wait_started(proc, "Initial authentication has finished")
        view = TownView(api, namespace)
        assert api.create(namespace, town(git_url=player.git_url)).status == 201
        assert api.create(namespace, bead("b")).status == 201

        def assigned() -> str | None:
            found = [x for x in view.beads() if x.name == "b"]
            if found and found[0].status.phase is BeadPhase.IN_PROGRESS:
                return found[0].status.assignee
            return None

        holder = view.wait(assigned, 60, "bead b to be dispatched")
        assert api.create(namespace, intruder("b")).status == 201

        def unhooked() -> bool:
            agents = {a.name: a for a in view.agents()}
            return "intruder" in agents and agents["intruder"].spec.hook is None

        view.wait(unhooked, 30, "the intruder's hook to be cleared")
        hooks = {a.name: a.spec.hook for a in view.agents()}
        assert hooks[holder] == "b", hooks  # the assignee keeps its hook

        def in_status() -> list[dict[str, Any]]:
            return [
                r
                for r in view.town()["status"].get("lastRepairs", [])
                if r["code"] == "DuplicateHook" and r["subject"] == "b"
            ]

        repairs = view.wait(in_status, 30, "the repair in the Town's status")
        assert "intruder" in repairs[0]["message"]
        assert repairs[0]["at"]

        def event() -> list[dict[str, Any]]:
            return [
                e
                for e in town_events(api, namespace)
                if e["reason"] == "InvariantRepaired" and e["message"].startswith("DuplicateHook")
            ]

        posted = view.wait(event, 30, "the InvariantRepaired Event")
        assert posted[0]["type"] == "Warning"
        assert "intruder" in posted[0]["message"]

        sample = 'gastown_invariant_repairs_total{code="DuplicateHook",town="demo"} 1.0'
        view.wait(
            lambda: sample in fetch(f"http://127.0.0.1:{metrics_port}/metrics"),
            30,
            "the repair counter",
        )
        # Every family the chart's dashboard and alerts use is declared by the served /metrics.
        served = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
        declared = set(re.findall(r"^# TYPE (gastown_[a-z0-9_]+) ", served, re.MULTILINE))
        for name in chart_metric_names():
            samples = {name} | {name.removesuffix(s) for s in ("_bucket", "_sum", "_count")}
            assert samples & declared, name
        # Repaired, so no violation is left behind.
        assert view.town()["status"].get("violations", []) == []
    except BaseException:
        print(f"--- operator log ---\n{proc.tail(200)}")
        raise
    finally:
        proc.stop()
