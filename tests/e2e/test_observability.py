"""Metrics carry counts only, the liveness endpoint answers, logs are JSON with the town key."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from gastown.devtools.controlplane import ControlPlane, free_port
from gastown.model import BeadPhase
from tests.support.api import Api
from tests.support.procs import operator, wait_started
from tests.support.town import AgentPlayer, TownView, town

pytestmark = pytest.mark.cluster
SECRET_TITLE = "Rotate the launch codes"


def fetch(url: str) -> str:
    """GET a local URL."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def test_metrics_liveness_and_json_logs(
    api: Api, namespace: str, control_plane: ControlPlane, tmp_path: Path, player: AgentPlayer
) -> None:
    metrics_port, live_port = free_port(), free_port()
    proc = operator(control_plane, namespace, tmp_path, GASTOWN_METRICS_PORT=str(metrics_port))
    proc.argv[proc.argv.index("plain")] = "json"
    proc.argv += ["--liveness", f"http://127.0.0.1:{live_port}/healthz"]
    proc.start()
    try:
        wait_started(proc, "Initial authentication has finished")
        view = TownView(api, namespace)
        assert api.create(namespace, town(git_url=player.git_url)).status == 201
        bead = {
            "apiVersion": "gastown.dev/v1alpha1",
            "kind": "Bead",
            "metadata": {"name": "b"},
            "spec": {
                "town": "demo",
                "rig": "app",
                "title": SECRET_TITLE,
                "description": "top secret body",
            },
        }
        assert api.create(namespace, bead).status == 201

        def merged() -> bool:
            player.step()
            return any(b.status.phase is BeadPhase.CLOSED for b in view.beads() if b.name == "b")

        view.wait(merged, 60, "the bead to be merged")
        text = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
        for name in (
            "gastown_pass_duration_seconds",
            "gastown_actions_total",
            "gastown_dispatch_latency_seconds",
            "gastown_api_writes_total",
            "gastown_beads",
            "gastown_invariant_violations",
        ):
            assert name in text, name
        assert 'gastown_actions_total{action="DispatchAgent",town="demo"}' in text
        assert SECRET_TITLE not in text
        assert "top secret" not in text
        view.wait(
            lambda: fetch(f"http://127.0.0.1:{live_port}/healthz") is not None,
            10,
            "the liveness endpoint",
        )
        lines = [line for line in proc.log.read_text().splitlines() if line.startswith("{")]
        records = [json.loads(line) for line in lines]
        assert records, proc.tail()
        passes = [r for r in records if str(r.get("message", "")).startswith("pass:")]
        assert passes, proc.tail()
        assert all(r.get("town") == "demo" for r in passes)
        assert not any(SECRET_TITLE in line for line in lines)
    finally:
        proc.stop()
