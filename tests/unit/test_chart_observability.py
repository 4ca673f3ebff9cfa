"""The chart's Grafana dashboard and PrometheusRule: off by default, and only real metrics.

Every metric name the dashboard's queries and the alert rules use must be one the operator's
`/metrics` serves: the families registered by `gastown.kube.metrics`, with the sample suffixes
Prometheus gives each type (`_total` for counters, `_bucket`/`_sum`/`_count` for histograms).
The golden render with both on is in tests/unit/test_chart.py (case `observability`).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from prometheus_client import REGISTRY

import gastown.kube.metrics  # noqa: F401  (registers every family of the operator)
from tests.unit.test_chart import (
    CHART,
    OBSERVABILITY_VALUES,
    documents,
    find,
    helm,
    render,
)

METRIC = re.compile(r"\bgastown_[a-z0-9_]+")
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
ALERTS = {
    "GastownTownStalled",
    "GastownInvariantViolations",
    "GastownInvariantRepaired",
    "GastownCircuitBreakerOpen",
    "GastownLandingFailing",
    "GastownAgentStalled",
}


def served_names() -> set[str]:
    """Sample names the operator's registry exposes for its gastown_ families."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("gastown_"):
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def dashboard() -> dict[str, Any]:
    """The dashboard JSON shipped in the chart."""
    data: dict[str, Any] = json.loads((CHART / "dashboards" / "gastown.json").read_text())
    return data


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard (panels and template variables)."""
    board = dashboard()
    queries = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    queries += [v["definition"] for v in board["templating"]["list"] if v.get("type") == "query"]
    return queries


def rules() -> list[dict[str, Any]]:
    """The alert rules of the PrometheusRule, rendered with the chart's defaults."""
    docs = documents(render(sets=["metrics.prometheusRule.enabled=true"]))
    (rule,) = find(docs, "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_both_are_off_by_default_and_follow_metrics_enabled() -> None:
    kinds = {d["kind"] for d in documents(render())}
    assert "PrometheusRule" not in kinds
    assert not find(documents(render()), "ConfigMap")
    both = ["metrics.grafanaDashboard.enabled=true", "metrics.prometheusRule.enabled=true"]
    without_metrics = documents(render(sets=[*both, "metrics.enabled=false"]))
    assert not find(without_metrics, "PrometheusRule")
    assert not find(without_metrics, "ConfigMap")


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar() -> None:
    docs = documents(render(sets=["metrics.grafanaDashboard.enabled=true"]))
    (config_map,) = find(docs, "ConfigMap", "gastown-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["gastown.json"]) == dashboard()
    moved = documents(
        render(
            sets=[
                "metrics.grafanaDashboard.enabled=true",
                "metrics.grafanaDashboard.namespace=monitoring",
            ]
        )
    )
    assert find(moved, "ConfigMap")[0]["metadata"]["namespace"] == "monitoring"


def test_every_dashboard_query_uses_only_served_metrics() -> None:
    served = served_names()
    queries = dashboard_queries()
    assert queries
    for query in queries:
        used = set(METRIC.findall(query))
        assert used, query  # every panel shows some operator metric
        assert used <= served, (query, used - served)


def test_every_alert_uses_only_served_metrics() -> None:
    served = served_names()
    alerts = rules()
    assert {r["alert"] for r in alerts} == ALERTS
    for alert in alerts:
        used = set(METRIC.findall(alert["expr"]))
        assert used, alert
        assert used <= served, (alert["alert"], used - served)


def test_repairs_and_violations_are_on_the_dashboard_and_alerted() -> None:
    text = " ".join(dashboard_queries())
    exprs = " ".join(r["expr"] for r in rules())
    for name in ("gastown_invariant_repairs_total", "gastown_invariant_violations"):
        assert name in text
        assert name in exprs


def test_the_check_catches_an_unknown_metric() -> None:
    """The name check is not vacuous: a misspelt family is not served."""
    served = served_names()
    assert "gastown_invariant_repairs_total" in served
    assert "gastown_pass_duration_seconds_bucket" in served
    assert "gastown_invariant_repair_total" not in served


def test_dashboard_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("metrics.prometheusRule.violationsFor=soon", "violationsFor"),
        ("metrics.grafanaDashboard.namespace=Not_A_Namespace", "namespace"),
        ("metrics.prometheusRule.severity=page", "additional properties"),
    ],
)
def test_values_schema_rejects_bad_observability_values(setting: str, message: str) -> None:
    proc = helm("template", "x", str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_helm_lint_strict_with_observability_on() -> None:
    proc = helm("lint", "--strict", str(CHART), "--values", str(OBSERVABILITY_VALUES), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout
