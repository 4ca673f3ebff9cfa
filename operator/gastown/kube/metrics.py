"""Prometheus metrics of the operator: counts and durations only, never titles or bodies."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

PASS_SECONDS = Histogram(
    "gastown_pass_duration_seconds",
    "Duration of one reconcile pass.",
    ["town"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ACTIONS = Counter("gastown_actions_total", "Actions planned, by type.", ["town", "action"])
SIDE_EFFECTS = Counter(
    "gastown_side_effects_total", "Side effects (pods, PR polls), by outcome.", ["town", "outcome"]
)
CONFLICTS = Counter(
    "gastown_write_conflicts_total", "Writes skipped because the object changed.", ["town"]
)
API_ERRORS = Counter("gastown_api_errors_total", "Failed API calls, by status.", ["status"])
DISPATCH_LATENCY = Histogram(
    "gastown_dispatch_latency_seconds",
    "From dispatch decision to the agent Pod existing.",
    ["town"],
    buckets=(0.01, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
)
GUPP_TIERS = Counter("gastown_gupp_tier_total", "GUPP tiers fired.", ["town", "tier"])
MERGES = Counter("gastown_merges_total", "Merge requests merged.", ["town"])
QUEUE = Gauge("gastown_review_queue_length", "Open merge requests per rig.", ["town", "rig"])
BEADS = Gauge("gastown_beads", "Beads by phase.", ["town", "phase"])
AGENTS = Gauge("gastown_agents", "Agents by phase.", ["town", "phase"])
VIOLATIONS = Gauge("gastown_invariant_violations", "Current invariant violations.", ["town"])
API_WRITES = Counter("gastown_api_writes_total", "API writes made, by kind.", ["town", "kind"])


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics on a background thread."""
    start_http_server(port, addr=address)
