"""The Helm chart without a cluster: lint, golden renders, RBAC shape, values, install bundle.

helm is built from its Go module (hack/build-helm.sh, cached outside the repository) when
missing; if it cannot be built these tests fail with the reason, they are never skipped. Set
GASTOWN_HELM_BIN to use another helm binary.

Refresh the golden renders after an intended chart change with `make chart-golden` (or
`GASTOWN_UPDATE_GOLDEN=1 pytest tests/unit/test_chart.py -k golden`) and review the diff.

The helpers at the top (`helm`, `render`, `documents`) are shared with the chart's integration
and end-to-end tests.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gastown.devtools.controlplane import REPO_ROOT

CHART = REPO_ROOT / "charts" / "gastown"
DATA = REPO_ROOT / "tests" / "data" / "chart"
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-helm.sh"
BUNDLE_SCRIPT = REPO_ROOT / "hack" / "render-bundle.sh"
BUNDLE = REPO_ROOT / "manifests" / "install" / "gastown.yaml"
NAMESPACED_VALUES = DATA / "values-namespaced.yaml"
OBSERVABILITY_VALUES = DATA / "values-observability.yaml"
RBAC_KINDS = ("Role", "ClusterRole")


# -- helpers shared with tests/integration/test_chart_install.py and tests/e2e/test_chart_rbac.py


@functools.cache
def helm_binary() -> Path:
    """Path of helm: $GASTOWN_HELM_BIN, else built (once, cached) by hack/build-helm.sh."""
    override = os.environ.get("GASTOWN_HELM_BIN")
    if override:
        return Path(override)
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False, timeout=1800
    )
    if proc.returncode != 0:
        pytest.fail(
            f"building helm failed (exit {proc.returncode}); run `bash hack/build-helm.sh`:\n"
            f"{proc.stderr[-3000:]}",
            pytrace=False,
        )
    return Path(proc.stdout.strip().splitlines()[-1])


@functools.cache
def _helm_home() -> Path:
    return Path(tempfile.mkdtemp(prefix="gastown-helm-"))


def helm(
    *args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run helm with its own scratch config/cache/data directories (never the user's)."""
    home = _helm_home()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG"))}
    env |= {
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    argv = [str(helm_binary()), *args]
    if kubeconfig is not None:
        argv.append(f"--kubeconfig={kubeconfig}")
    proc = subprocess.run(
        argv, capture_output=True, text=True, check=False, env=env, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def render(
    *,
    values: Iterable[Path] = (),
    sets: Iterable[str] = (),
    release: str = "gastown",
    namespace: str = "gastown-system",
) -> str:
    """`helm template` of the chart (templates only, no CRDs)."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    for path in values:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    return helm(*args).stdout


def documents(text: str) -> list[dict[str, Any]]:
    """The YAML documents of a multi-document string (empty ones dropped)."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """Documents of one kind (and name)."""
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def permissions(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples a list of RBAC rules grants."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


# -- what the operator may do: the whole table, so any widening shows up as a test failure --

G = "gastown.dev"
RBAC = "rbac.authorization.k8s.io"
NAMESPACED_PERMISSIONS = {
    *((G, "towns", v) for v in ("get", "list", "watch", "patch")),
    *((G, "beads", v) for v in ("get", "list", "watch", "create")),
    *((G, "convoys", v) for v in ("get", "list", "watch")),
    *((G, "agents", v) for v in ("get", "list", "watch", "create", "patch", "delete")),
    *((G, f"{k}/status", "patch") for k in ("towns", "beads", "convoys")),
    (G, "agents/status", "patch"),
    *((G, f"{k}/finalizers", "update") for k in ("towns", "beads", "convoys", "agents")),
    *(("", "pods", v) for v in ("list", "watch", "create", "delete")),
    *(("", "serviceaccounts", v) for v in ("create", "get")),
    (RBAC, "roles", "create"),
    (RBAC, "roles", "patch"),
    (RBAC, "rolebindings", "create"),
    ("", "events", "create"),
    ("", "events", "patch"),
    ("", "secrets", "get"),
}
CRD_DISCOVERY = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicies", "get"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings", "get"),
}
NAMESPACE_DISCOVERY = {("", "namespaces", "list"), ("", "namespaces", "watch")}
LEASES = ("coordination.k8s.io", "leases")
LEASE_ROLE = "gastown-leader-election"


# -- lint and schema -------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, NAMESPACED_VALUES], ids=["default", "namespaced"])
def test_helm_lint_strict_is_clean(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["--values", str(values)] if values else [])
    proc = helm(*args, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout
    assert "[ERROR]" not in proc.stdout


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("operator.logFormat=xml", "logFormat"),
        ("operator.watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
        ("metrics.port=0", "port"),
        ("replicas=2", "additional properties"),
        ("image.digest=latest", "digest"),
        ("replicaCount=0", "replicaCount"),
        ("leaderElection.leaseName=Not_A_Name", "leaseName"),
        ("leaderElection.retryPeriodSeconds=0", "retryPeriodSeconds"),
        ("podDisruptionBudget.maxUnavailable=some", "maxUnavailable"),
        ("podAntiAffinity.preset=sometimes", "preset"),
    ],
)
def test_values_schema_rejects_bad_values(setting: str, message: str) -> None:
    proc = helm("template", "x", str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_every_values_key_has_a_comment() -> None:
    """Each key of values.yaml has a comment line right above it (free-form Kubernetes objects
    such as securityContext are documented as a whole, not key by key)."""
    free_form = ("podSecurityContext", "securityContext", "resources")
    lines = (CHART / "values.yaml").read_text().splitlines()
    missing: list[str] = []
    inside_free_form = False
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        if indent == 0:
            inside_free_form = key in free_form
        elif inside_free_form:
            continue
        previous = lines[index - 1].strip() if index else ""
        if not previous.startswith("#"):
            missing.append(key)
    assert missing == []


def test_chart_version_is_semver_and_app_version_is_the_image_tag() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", chart["version"])
    deployment = find(documents(render()), "Deployment")[0]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(f":{chart['appVersion']}")


# -- golden renders ----------------------------------------------------------------------------

GOLDEN = {
    "default": ((), DATA / "default.yaml"),
    "namespaced": ((NAMESPACED_VALUES,), DATA / "namespaced.yaml"),
    "observability": ((OBSERVABILITY_VALUES,), DATA / "observability.yaml"),
}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_golden_render(case: str) -> None:
    values, golden = GOLDEN[case]
    rendered = render(values=values)
    if os.environ.get("GASTOWN_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert golden.exists(), f"{golden} is missing: run `make chart-golden`"
    assert rendered == golden.read_text(), (
        f"the chart renders differently from {golden.relative_to(REPO_ROOT)}; if the change is "
        "intended, run `make chart-golden` and review the diff"
    )


def test_install_bundle_is_up_to_date() -> None:
    env = {**os.environ, "GASTOWN_HELM_BIN": str(helm_binary())}
    proc = subprocess.run(
        ["bash", str(BUNDLE_SCRIPT)], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == BUNDLE.read_text(), (
        "manifests/install/gastown.yaml drifted from the chart: run `make bundle`"
    )


def test_install_bundle_is_complete_and_namespaced() -> None:
    docs = documents(BUNDLE.read_text())
    kinds = [d["kind"] for d in docs]
    assert kinds[0] == "Namespace"
    crds = {d["metadata"]["name"] for d in find(docs, "CustomResourceDefinition")}
    shipped = [yaml.safe_load(p.read_text()) for p in (CHART / "crds").glob("*.yaml")]
    chart_crds = {d["metadata"]["name"] for d in shipped if d["kind"] == "CustomResourceDefinition"}
    assert crds == chart_crds
    # The agent status admission policy ships with the CRDs, and so in the bundle.
    policies = {(d["kind"], d["metadata"]["name"]) for d in shipped} - {
        ("CustomResourceDefinition", name) for name in chart_crds
    }
    assert policies == {
        ("ValidatingAdmissionPolicy", "gastown-agent-own-status"),
        ("ValidatingAdmissionPolicyBinding", "gastown-agent-own-status"),
    }
    assert policies <= {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment"} <= set(kinds)
    for doc in docs:
        if doc["kind"] in ("ServiceAccount", "Deployment", "Service"):
            assert doc["metadata"]["namespace"] == "gastown-system", doc["metadata"]


# -- RBAC --------------------------------------------------------------------------------------

VARIANTS = {
    "default": {"values": ()},
    "namespaced": {"values": (NAMESPACED_VALUES,)},
    "peering-cluster": {"sets": ("operator.peering=gastown",)},
    "peering-namespaced": {"values": (NAMESPACED_VALUES,), "sets": ("operator.peering=gastown",)},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_wildcard_and_no_escalation_verbs_in_any_rbac_rule(variant: str) -> None:
    docs = documents(render(**VARIANTS[variant]))  # type: ignore[arg-type]
    roles = [d for d in docs if d["kind"] in RBAC_KINDS]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                for item in rule.get(field, []):
                    assert "*" not in item, (role["metadata"]["name"], rule)
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
    # Also in the template sources, in case a branch not rendered here had one.
    for path in (CHART / "templates").iterdir():
        source = path.read_text()
        assert '"*"' not in source, path
        assert "'*'" not in source, path


def test_cluster_wide_operator_permissions_are_exactly_the_table() -> None:
    docs = documents(render())
    role = find(docs, "ClusterRole", "gastown")[0]
    assert permissions(role["rules"]) == NAMESPACED_PERMISSIONS | CRD_DISCOVERY
    assert [r["metadata"]["name"] for r in find(docs, "Role")] == [LEASE_ROLE]
    binding = find(docs, "ClusterRoleBinding", "gastown")[0]
    assert binding["roleRef"]["name"] == "gastown"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "gastown", "namespace": "gastown-system"}
    ]


def test_namespaced_operator_gets_a_role_per_namespace_and_only_discovery_cluster_wide() -> None:
    watched = yaml.safe_load(NAMESPACED_VALUES.read_text())["operator"]["watchNamespaces"]
    docs = documents(render(values=[NAMESPACED_VALUES]))
    cluster_role = find(docs, "ClusterRole", "gastown")[0]
    assert permissions(cluster_role["rules"]) == CRD_DISCOVERY | NAMESPACE_DISCOVERY
    roles = find(docs, "Role", "gastown")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(watched)
    for role in roles:
        assert permissions(role["rules"]) == NAMESPACED_PERMISSIONS
    bindings = find(docs, "RoleBinding", "gastown")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(watched)
    for binding in bindings:
        assert binding["subjects"][0]["namespace"] == "gastown-system"
    args = find(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace=")] == [
        f"--namespace={ns}" for ns in watched
    ]


def test_secrets_are_readable_by_name_only() -> None:
    for variant in VARIANTS.values():
        docs = documents(render(**variant))  # type: ignore[arg-type]
        for role in (d for d in docs if d["kind"] in RBAC_KINDS):
            verbs = {v for g, r, v in permissions(role["rules"]) if r == "secrets"}
            assert verbs <= {"get"}, (role["metadata"]["name"], verbs)


def test_peering_rules_follow_the_mode() -> None:
    cluster = documents(render(sets=["operator.peering=p"]))
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in permissions(
        find(cluster, "ClusterRole", "gastown")[0]["rules"]
    )
    namespaced = documents(render(values=[NAMESPACED_VALUES], sets=["operator.peering=p"]))
    for role in find(namespaced, "Role", "gastown"):
        assert ("kopf.dev", "kopfpeerings", "patch") in permissions(role["rules"])
    assert not any(
        r == "clusterkopfpeerings"
        for _, r, _ in permissions(find(namespaced, "ClusterRole", "gastown")[0]["rules"])
    )


def test_people_roles_aggregate_and_cannot_write_agents_or_status() -> None:
    docs = documents(render())
    viewer = find(docs, "ClusterRole", "gastown-viewer")[0]
    editor = find(docs, "ClusterRole", "gastown-editor")[0]
    assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert editor["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert {v for _, _, v in permissions(viewer["rules"])} == {"get", "list", "watch"}
    for _, resource, verb in permissions(editor["rules"]):
        assert "/" not in resource
        if resource == "agents":
            assert verb in ("get", "list", "watch")
    assert find(documents(render(sets=["rbac.aggregateToDefaultRoles=false"])), "ClusterRole") == [
        find(docs, "ClusterRole", "gastown")[0]
    ]


def test_rbac_create_false_renders_no_rbac() -> None:
    docs = documents(render(sets=["rbac.create=false", "rbac.aggregateToDefaultRoles=false"]))
    assert not [d for d in docs if d["kind"] in (*RBAC_KINDS, "RoleBinding", "ClusterRoleBinding")]


# -- the Deployment and the rest -------------------------------------------------------------


def test_deployment_is_one_restricted_leader_electing_operator_with_liveness() -> None:
    docs = documents(render())
    spec = find(docs, "Deployment")[0]["spec"]
    assert spec["replicas"] == 1
    # Leader election is on by default, also with one replica: a rollout starts the new pod as
    # a standby before the old leader is stopped (and releases the Lease).
    assert spec["strategy"] == ROLLING_UPDATE
    assert find(docs, "PodDisruptionBudget") == []
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "gastown"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert container["command"] == ["gastown", "run"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert "--metrics-port=9090" in container["args"]
    assert not any(a.startswith("--namespace") for a in container["args"])
    probe = container["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert "readinessProbe" not in container
    assert leader_env(container) == {
        "GASTOWN_LEADER_ELECT": "1",
        "GASTOWN_LEASE_NAME": "gastown",
        "GASTOWN_LEASE_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        # A restarted container of the same pod takes its Lease back at once.
        "GASTOWN_LEASE_IDENTITY": {"fieldRef": {"fieldPath": "metadata.name"}},
        "GASTOWN_LEASE_DURATION_SECONDS": "15",
        "GASTOWN_LEASE_RENEW_DEADLINE_SECONDS": "10",
        "GASTOWN_LEASE_RETRY_PERIOD_SECONDS": "2",
    }
    # One replica: no anti-affinity of its own, nothing to spread.
    assert "affinity" not in pod
    assert "topologySpreadConstraints" not in pod


def test_operator_settings_reach_the_command_line_and_environment() -> None:
    docs = documents(
        render(
            sets=[
                "operator.logFormat=plain",
                "operator.peering=main",
                "operator.verbose=true",
                "operator.resyncSeconds=5",
                "liveness.enabled=false",
                "metrics.enabled=false",
            ]
        )
    )
    container = find(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--log-format=plain", "--peering=main", "--verbose"]
    assert {"name": "GASTOWN_RESYNC_SECONDS", "value": "5"} in container["env"]
    assert "livenessProbe" not in container
    assert "ports" not in container
    assert find(docs, "Service") == []


def test_service_monitor_is_optional() -> None:
    assert find(documents(render()), "ServiceMonitor") == []
    docs = documents(
        render(sets=["metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.a=b"])
    )
    monitor = find(docs, "ServiceMonitor")[0]
    assert monitor["metadata"]["labels"]["a"] == "b"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    service = find(docs, "Service")[0]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_templates_hardcode_no_namespace() -> None:
    for path in (CHART / "templates").glob("*.yaml"):
        for line in path.read_text().splitlines():
            if re.match(r"^\s*namespace:", line):
                assert "{{" in line, f"{path.name}: {line.strip()}"


def test_image_digest_overrides_the_tag() -> None:
    digest = "sha256:" + "a" * 64
    deployment = find(documents(render(sets=[f"image.digest={digest}"])), "Deployment")[0]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"gastown/operator@{digest}"


# -- several replicas and leader election ----------------------------------------------------

ROLLING_UPDATE = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def leader_env(container: dict[str, Any]) -> dict[str, Any]:
    """The leader election variables of the operator container (value, or valueFrom)."""
    return {
        e["name"]: e.get("value", e.get("valueFrom"))
        for e in container.get("env", [])
        if e["name"] == "GASTOWN_LEADER_ELECT" or e["name"].startswith("GASTOWN_LEASE_")
    }


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator Deployment's Pod spec."""
    spec: dict[str, Any] = find(docs, "Deployment")[0]["spec"]["template"]["spec"]
    return spec


SELECTOR = {
    "app.kubernetes.io/name": "gastown",
    "app.kubernetes.io/instance": "gastown",
    "app.kubernetes.io/component": "operator",
}


def test_two_replicas_get_a_disruption_budget_and_soft_anti_affinity() -> None:
    docs = documents(render(sets=["replicaCount=2"]))
    spec = find(docs, "Deployment")[0]["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == ROLLING_UPDATE
    assert spec["selector"]["matchLabels"] == SELECTOR
    (budget,) = find(docs, "PodDisruptionBudget", "gastown")
    assert budget["apiVersion"] == "policy/v1"
    assert budget["metadata"]["namespace"] == "gastown-system"
    assert budget["spec"] == {"minAvailable": 1, "selector": {"matchLabels": SELECTOR}}
    affinity = pod_spec(docs)["affinity"]
    assert affinity == {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": SELECTOR},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    }
    assert leader_env(pod_spec(docs)["containers"][0])["GASTOWN_LEADER_ELECT"] == "1"


def test_disruption_budget_and_anti_affinity_presets() -> None:
    budget = find(
        documents(render(sets=["replicaCount=3", "podDisruptionBudget.maxUnavailable=1"])),
        "PodDisruptionBudget",
    )[0]
    assert budget["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in budget["spec"]
    percent = find(
        documents(render(sets=["replicaCount=3", "podDisruptionBudget.minAvailable=50%"])),
        "PodDisruptionBudget",
    )[0]
    assert percent["spec"]["minAvailable"] == "50%"
    off = documents(render(sets=["replicaCount=2", "podDisruptionBudget.enabled=false"]))
    assert find(off, "PodDisruptionBudget") == []

    hard = pod_spec(
        documents(
            render(
                sets=[
                    "replicaCount=2",
                    "podAntiAffinity.preset=hard",
                    "podAntiAffinity.topologyKey=topology.kubernetes.io/zone",
                ]
            )
        )
    )
    assert hard["affinity"]["podAntiAffinity"] == {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {
                "labelSelector": {"matchLabels": SELECTOR},
                "topologyKey": "topology.kubernetes.io/zone",
            }
        ]
    }
    none = pod_spec(documents(render(sets=["replicaCount=2", "podAntiAffinity.preset=none"])))
    assert "affinity" not in none
    # A user's own affinity replaces the preset entirely.
    own = pod_spec(documents(render(sets=["replicaCount=2", "affinity.nodeAffinity.x=y"])))
    assert own["affinity"] == {"nodeAffinity": {"x": "y"}}


def test_topology_spread_constraints_default_to_the_operator_pods() -> None:
    sets = [
        "topologySpreadConstraints[0].maxSkew=1",
        "topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
        "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        "topologySpreadConstraints[1].maxSkew=2",
        "topologySpreadConstraints[1].topologyKey=kubernetes.io/hostname",
        "topologySpreadConstraints[1].whenUnsatisfiable=DoNotSchedule",
        "topologySpreadConstraints[1].labelSelector.matchLabels.team=a",
    ]
    first, second = pod_spec(documents(render(sets=sets)))["topologySpreadConstraints"]
    assert first == {
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": SELECTOR},
    }
    assert second["labelSelector"] == {"matchLabels": {"team": "a"}}


def test_several_replicas_without_leader_election_refuse_to_render() -> None:
    sets = ["--set", "replicaCount=2", "--set", "leaderElection.enabled=false"]
    proc = helm("template", "x", str(CHART), *sets, check=False)
    assert proc.returncode != 0
    assert "replicaCount=2 needs leaderElection.enabled=true" in proc.stderr, proc.stderr
    # One replica without leader election: the old shape, Recreate and no Lease anywhere.
    docs = documents(render(sets=["leaderElection.enabled=false"]))
    spec = find(docs, "Deployment")[0]["spec"]
    assert spec["strategy"] == {"type": "Recreate"}
    assert leader_env(spec["template"]["spec"]["containers"][0]) == {}
    assert find(docs, "Role") == []
    assert find(docs, "RoleBinding") == []


@pytest.mark.parametrize(
    ("timings", "message"),
    [
        (
            {"renewDeadlineSeconds": 15},
            "renewDeadlineSeconds (15) must be less than leaderElection.leaseDurationSeconds (15)",
        ),
        (
            {"leaseDurationSeconds": 8, "renewDeadlineSeconds": 9.5},
            "renewDeadlineSeconds (9.5) must be less than leaderElection.leaseDurationSeconds (8)",
        ),
        (
            {"retryPeriodSeconds": 10},
            "retryPeriodSeconds (10) must be less than leaderElection.renewDeadlineSeconds (10)",
        ),
    ],
)
def test_inconsistent_lease_timings_refuse_to_render(
    timings: dict[str, float], message: str, tmp_path: Path
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"leaderElection": timings}))
    proc = helm("template", "x", str(CHART), "--values", str(values), check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_fractional_lease_timings_reach_the_environment(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    timings = {"leaseDurationSeconds": 4, "renewDeadlineSeconds": 3, "retryPeriodSeconds": 0.5}
    values.write_text(yaml.safe_dump({"leaderElection": timings}))
    env = leader_env(pod_spec(documents(render(values=[values])))["containers"][0])
    assert env["GASTOWN_LEASE_DURATION_SECONDS"] == "4"
    assert env["GASTOWN_LEASE_RENEW_DEADLINE_SECONDS"] == "3"
    assert env["GASTOWN_LEASE_RETRY_PERIOD_SECONDS"] == "0.5"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_lease_rbac_names_the_lease_and_nothing_more(variant: str) -> None:
    docs = documents(render(**VARIANTS[variant]))  # type: ignore[arg-type]
    (role,) = find(docs, "Role", LEASE_ROLE)
    assert role["metadata"]["namespace"] == "gastown-system"
    by_name, create = role["rules"]
    assert by_name == {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["gastown"],
        "verbs": ["get", "update"],
    }
    # create cannot be limited by name in RBAC; it comes alone.
    assert create == {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["create"],
    }
    (binding,) = find(docs, "RoleBinding", LEASE_ROLE)
    assert binding["metadata"]["namespace"] == "gastown-system"
    assert binding["roleRef"] == {"apiGroup": RBAC, "kind": "Role", "name": LEASE_ROLE}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "gastown", "namespace": "gastown-system"}
    ]
    # No other role of the operator touches Leases.
    for other in (d for d in docs if d["kind"] in RBAC_KINDS and d is not role):
        assert not [p for p in permissions(other["rules"]) if p[:2] == LEASES], other["metadata"]


def test_two_releases_never_share_a_lease() -> None:
    names = {}
    for release in ("team-a", "team-b"):
        docs = documents(render(release=release))
        env = leader_env(pod_spec(docs)["containers"][0])
        (role,) = find(docs, "Role", f"{release}-gastown-leader-election")
        assert role["rules"][0]["resourceNames"] == [env["GASTOWN_LEASE_NAME"]]
        names[release] = env["GASTOWN_LEASE_NAME"]
    assert names == {"team-a": "team-a-gastown", "team-b": "team-b-gastown"}
    # An explicit name reaches both the operator and its Role.
    docs = documents(render(sets=["leaderElection.leaseName=shard-1"]))
    assert leader_env(pod_spec(docs)["containers"][0])["GASTOWN_LEASE_NAME"] == "shard-1"
    assert find(docs, "Role", LEASE_ROLE)[0]["rules"][0]["resourceNames"] == ["shard-1"]
