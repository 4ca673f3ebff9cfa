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
    ("", "secrets", "get"),
}
CRD_DISCOVERY = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicies", "get"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings", "get"),
}
NAMESPACE_DISCOVERY = {("", "namespaces", "list"), ("", "namespaces", "watch")}


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
    assert find(docs, "Role") == []
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
    roles = find(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(watched)
    for role in roles:
        assert permissions(role["rules"]) == NAMESPACED_PERMISSIONS
    bindings = find(docs, "RoleBinding")
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
    for role in find(namespaced, "Role"):
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


def test_deployment_is_one_restricted_recreated_operator_with_liveness() -> None:
    deployment = find(documents(render()), "Deployment")[0]
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
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
