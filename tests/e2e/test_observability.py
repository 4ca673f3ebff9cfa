"""Metrics carry counts only (and the agents' reported spend), the liveness endpoint answers,
logs are JSON with the town key."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gastown.devtools.controlplane import ControlPlane, free_port
from gastown.model import BeadPhase
from gastown.model.spend import Usage
from tests.support.api import Api
from tests.support.procs import operator, wait_started
from tests.support.town import AgentPlayer, TownView, town

pytestmark = pytest.mark.cluster
SECRET_TITLE = "Rotate the launch codes"
# What the polecat's `done` report says its session used (a Claude Code session's figures).
USAGE = Usage(
    input_tokens=1200,
    output_tokens=300,
    cache_read_tokens=5000,
    cache_write_tokens=800,
    cost_usd=0.0632,
    cost_reported=True,
    turns=4,
    model="claude-opus-5-5",
)
SPEND_LABELS = {"town": "demo", "rig": "app", "role": "polecat", "model": "claude-opus-5-5"}


def fetch(url: str) -> str:
    """GET a local URL."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def sample(text: str, name: str, labels: dict[str, str]) -> float | None:
    """The value of the sample `name` with exactly `labels` in a /metrics page, if any."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


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
        player.usage["b"] = USAGE
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

        # The usage of the done report is counted once, by town, rig, role and model.
        def spend_counted() -> str | None:
            page = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
            found = sample(page, "gastown_tokens_total", SPEND_LABELS)
            return page if found is not None else None

        text = view.wait(spend_counted, 30, "the spend counters")
        assert sample(text, "gastown_tokens_total", SPEND_LABELS) == USAGE.tokens == 7300
        cost = sample(text, "gastown_cost_usd_total", SPEND_LABELS)
        assert cost == pytest.approx(0.0632)
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
