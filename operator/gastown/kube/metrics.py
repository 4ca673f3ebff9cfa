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
TOKENS = Counter(
    "gastown_tokens_total",
    "Tokens the town's agents used (input, cached and output), counted once per report.",
    ["town", "rig", "role", "model"],
)
COST = Counter(
    "gastown_cost_usd_total",
    "US dollars the town's agents spent (reported, or priced from the Town's price table).",
    ["town", "rig", "role", "model"],
)
API_WRITES = Counter("gastown_api_writes_total", "API writes made, by kind.", ["town", "kind"])
WRITE_CAUSES = Counter(
    "gastown_api_write_causes_total",
    "API writes made, by kind, by the type of action that made them and by its reason "
    "(action TownStatus: the Town's status summary; Events are counted in gastown_events_total).",
    ["town", "kind", "action", "reason"],
)
EVENTS = Counter(
    "gastown_events_total",
    "Events written, by involved kind, type and reason; verb create (a new Event) or patch (a "
    "repeat folded into an earlier Event's count).",
    ["town", "kind", "type", "reason", "verb"],
)
LEADER = Gauge(
    "gastown_leader",
    "1 on the replica that holds the leader Lease and reconciles, 0 on a standby.",
)
BREAKER_OPEN = Gauge(
    "gastown_circuit_breaker_open", "1 while the town's dispatch circuit breaker is open.", ["town"]
)
LANDING_ATTEMPTS = Gauge(
    "gastown_landing_attempts",
    "Most landing merge requests any convoy still waiting to land has needed (above 1: a "
    "landing failed and is retried).",
    ["town"],
)
REPAIRS = Counter(
    "gastown_invariant_repairs_total",
    "States that should never exist, found and repaired by a pass, by code.",
    ["town", "code"],
)


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics on a background thread."""
    start_http_server(port, addr=address)
