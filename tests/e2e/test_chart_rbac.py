"""The chart's RBAC is enough to run a town, and not broader than that.

The chart is `helm install`ed into the real control plane (CRDs are already there). Its
Deployment cannot run here (no image, no kubelet), so the operator runs out of cluster, as a
process of `gastown run`, with a kubeconfig holding a token minted (TokenRequest) for the chart's
ServiceAccount: every API call it makes is authorised by the chart's rules alone. A convoy must
land, each agent must get its own ServiceAccount/Role/RoleBinding (which the operator can only
create because it holds every permission it grants), the operator's log must show no permission
error, and the same token must be refused everything the operator does not need.

Both modes are covered: cluster-wide (the default values) and namespaced
(operator.watchNamespaces, a Role per namespace). The operator runs with the leader election
settings of the chart's Deployment, so it must also take and renew its Lease with the chart's
Lease Role alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gastown.devtools.controlplane import ControlPlane
from gastown.kube.identity import town_identity_name
from gastown.model import ConvoyPhase
from tests.e2e.test_operator_flow import DIAMOND, assert_no_duplicates, drive
from tests.support.api import Api
from tests.support.procs import Process, operator, wait_started
from tests.support.town import AgentPlayer, TownView, convoy, town
from tests.unit.test_chart import CHART, helm

pytestmark = pytest.mark.cluster

MODES = ("cluster-wide", "namespaced")
PERMISSION_ERRORS = ("forbidden", "not enough permissions", "side effect failed", " 403")


@dataclass
class ChartOperator:
    """The chart's release and the operator process running with its ServiceAccount's token."""

    mode: str
    release: str
    release_namespace: str
    service_account: str
    token: str
    process: Process


def _create_namespace(api: Api, name: str) -> None:
    created = api.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert created.status == 201, created.body


def _token_kubeconfig(plane: ControlPlane, token: str, path: Path) -> Path:
    """The admin kubeconfig with its user's token replaced by `token`."""
    config = yaml.safe_load(plane.kubeconfig.read_text())
    config["users"] = [{"name": "gastown-operator", "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = "gastown-operator"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def _chart_leader_env(api: Api, namespace: str, deployment: str) -> dict[str, str]:
    """The leader election variables of the chart's Deployment, as its Pod would get them (the
    Lease namespace and the identity come from the downward API: the Pod's namespace and
    name)."""
    found = api.call("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}")
    assert found.status == 200, found.body
    env: dict[str, str] = {}
    for item in found.body["spec"]["template"]["spec"]["containers"][0].get("env", []):
        name = item["name"]
        if name != "GASTOWN_LEADER_ELECT" and not name.startswith("GASTOWN_LEASE_"):
            continue
        if "value" in item:
            env[name] = item["value"]
            continue
        field = item["valueFrom"]["fieldRef"]["fieldPath"]
        if field == "metadata.name":
            env[name] = "gastown-operator-pod"  # the Pod's name (this operator runs outside)
        else:
            assert field == "metadata.namespace", item
            env[name] = namespace
    assert env["GASTOWN_LEADER_ELECT"] == "1", env
    return env


def _lease_holder(api: Api, namespace: str, name: str) -> str | None:
    """holderIdentity of a Lease (None if it is free or missing)."""
    found = api.call("GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}")
    if found.status != 200:
        return None
    holder: str | None = (found.body.get("spec") or {}).get("holderIdentity")
    return holder


def _mint_token(api: Api, namespace: str, service_account: str) -> str:
    """A short-lived token of a ServiceAccount (TokenRequest), as the kubelet would mount."""
    resp = api.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    assert resp.status == 201, resp.body
    token: str = resp.body["status"]["token"]
    return token


@pytest.fixture(params=MODES)
def chart_operator(
    request: pytest.FixtureRequest,
    api: Api,
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
) -> Iterator[ChartOperator]:
    """Install the chart, then run the operator with its ServiceAccount's token."""
    mode: str = request.param
    suffix = uuid.uuid4().hex[:8]
    release, release_namespace = f"gt-{suffix}", f"gastown-{suffix}"
    _create_namespace(api, release_namespace)
    args = ["install", release, str(CHART), "--namespace", release_namespace, "--skip-crds"]
    if mode == "namespaced":
        args += ["--set", f"operator.watchNamespaces={{{namespace}}}"]
    helm(*args, kubeconfig=control_plane.kubeconfig)
    service_account = f"{release}-gastown"
    token = _mint_token(api, release_namespace, service_account)
    kubeconfig = _token_kubeconfig(control_plane, token, tmp_path / "operator.kubeconfig")
    leader_env = _chart_leader_env(api, release_namespace, service_account)
    process = operator(control_plane, namespace, tmp_path, KUBECONFIG=str(kubeconfig), **leader_env)
    if mode == "cluster-wide":
        at = process.argv.index("--namespace")
        del process.argv[at : at + 2]
    process.start()
    try:
        wait_started(process, "Initial authentication has finished")
        yield ChartOperator(mode, release, release_namespace, service_account, token, process)
    finally:
        process.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"--- operator log ({mode}) ---\n{process.tail(200)}")
        helm(
            "uninstall",
            release,
            "--namespace",
            release_namespace,
            check=False,
            kubeconfig=control_plane.kubeconfig,
        )
        api.call("DELETE", f"/api/v1/namespaces/{release_namespace}")


def _peak_rss_bytes(process: Process) -> int:
    """The operator's peak resident memory so far (VmHWM)."""
    assert process.proc is not None
    for line in Path(f"/proc/{process.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def _land_convoy(api: Api, namespace: str, view: TownView, player: AgentPlayer) -> None:
    assert api.create(namespace, town(git_url=player.git_url)).status == 201
    assert api.create(namespace, convoy("feat", DIAMOND)).status == 201
    pods_seen: set[str] = set()

    def check_pods() -> None:
        # Each agent pod runs under the town's agent ServiceAccount (not the namespace default),
        # scoped to its own Agent by the admission policy.
        for pod in view.pods():
            assert pod["spec"]["serviceAccountName"] == town_identity_name("demo")
            pods_seen.add(pod["metadata"]["name"])

    drive(view, player, "feat", between=check_pods)
    result = view.convoy("feat")
    assert result.status.phase is ConvoyPhase.LANDED, result.status
    assert result.status.progress == "4/4"
    assert_no_duplicates(view)
    assert pods_seen


def _identity_status(api: Api, namespace: str, name: str) -> dict[str, int]:
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    paths = {
        "ServiceAccount": f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}",
        "Role": f"{rbac}/roles/{name}",
        "RoleBinding": f"{rbac}/rolebindings/{name}",
    }
    return {kind: api.call("GET", path).status for kind, path in paths.items()}


def test_chart_rbac_is_sufficient_to_land_a_convoy(
    api: Api,
    namespace: str,
    chart_operator: ChartOperator,
    view: TownView,
    player: AgentPlayer,
) -> None:
    _land_convoy(api, namespace, view, player)
    # The town got its agent ServiceAccount and Role: the operator could create the Role only
    # because the chart lets it hold every permission that Role grants.
    assert view.agents()
    found = _identity_status(api, namespace, town_identity_name("demo"))
    assert (found["ServiceAccount"], found["Role"]) == (200, 200), found
    # Events (the operator's own) were posted.
    events = api.call("GET", f"/api/v1/namespaces/{namespace}/events").body["items"]
    assert any(e["involvedObject"]["kind"] in ("Town", "Convoy", "Bead") for e in events)
    # The Town's status was written (towns/status patch) and kopf kept its finalizer (patch).
    town_obj = view.town()
    assert "gastown.dev/finalizer" in town_obj["metadata"].get("finalizers", [])
    assert town_obj.get("status", {}).get("conditions")
    # The operator holds its Lease (created and renewed with the chart's Lease Role alone), and
    # the Town's Leader condition names it.
    holder = _lease_holder(api, chart_operator.release_namespace, chart_operator.service_account)
    assert holder, "the operator does not hold the chart's Lease"
    leader = next(c for c in town_obj["status"]["conditions"] if c["type"] == "Leader")
    assert leader["message"] == f"reconciled by {holder}"

    log = chart_operator.process.log.read_text(errors="replace")
    if chart_operator.mode == "namespaced":
        # Nothing else runs in this operator's namespaces: its whole log must be clean.
        problems = [
            line for line in log.splitlines() if any(p in line.lower() for p in PERMISSION_ERRORS)
        ]
        assert problems == [], "\n".join(problems)
    else:
        # Cluster-wide, the operator also sees objects left in other tests' terminating
        # namespaces (where writes are refused); its own discovery must still be fully allowed.
        assert "not enough permissions" not in log.lower()
        mine = [line for line in log.splitlines() if f"[{namespace}/" in line]
        assert not [line for line in mine if "forbidden" in line.lower()]

    # The chart's default memory limit covers what the operator used (measured, not guessed).
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    peak = _peak_rss_bytes(chart_operator.process)
    print(f"operator peak RSS ({chart_operator.mode}): {peak / 2**20:.0f} MiB")
    assert peak < _bytes(values["resources"]["limits"]["memory"])


def test_the_town_identity_gets_its_role_binding(
    api: Api,
    namespace: str,
    chart_operator: ChartOperator,
    view: TownView,
    player: AgentPlayer,
) -> None:
    _land_convoy(api, namespace, view, player)
    assert _identity_status(api, namespace, town_identity_name("demo"))["RoleBinding"] == 200
    log = chart_operator.process.log.read_text(errors="replace")
    assert "side effect failed" not in log


def _allowed(api: Api, **attributes: str) -> bool:
    """SelfSubjectAccessReview: may this identity do that?"""
    resp = api.call(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        },
    )
    assert resp.status == 201, resp.body
    return bool(resp.body["status"].get("allowed"))


DENIED_IN_NAMESPACE: list[dict[str, str]] = [
    {"verb": "list", "resource": "secrets"},
    {"verb": "watch", "resource": "secrets"},
    {"verb": "create", "resource": "secrets"},
    {"verb": "update", "resource": "secrets"},
    {"verb": "list", "resource": "configmaps"},
    {"verb": "update", "resource": "pods"},
    {"verb": "patch", "resource": "pods"},
    {"verb": "get", "resource": "pods"},
    {"verb": "create", "resource": "pods", "subresource": "exec"},
    {"verb": "get", "resource": "pods", "subresource": "log"},
    {"verb": "delete", "resource": "serviceaccounts"},
    {"verb": "create", "resource": "serviceaccounts", "subresource": "token"},
    {"verb": "update", "group": "rbac.authorization.k8s.io", "resource": "roles"},
    {"verb": "delete", "group": "rbac.authorization.k8s.io", "resource": "rolebindings"},
    {"verb": "escalate", "group": "rbac.authorization.k8s.io", "resource": "roles"},
    {"verb": "bind", "group": "rbac.authorization.k8s.io", "resource": "roles"},
    {"verb": "bind", "group": "rbac.authorization.k8s.io", "resource": "clusterroles"},
    {"verb": "impersonate", "resource": "serviceaccounts"},
    {"verb": "create", "group": "apps", "resource": "deployments"},
    {"verb": "create", "group": "gastown.dev", "resource": "towns"},
    {"verb": "delete", "group": "gastown.dev", "resource": "beads"},
    {"verb": "delete", "group": "gastown.dev", "resource": "convoys"},
    {"verb": "update", "group": "gastown.dev", "resource": "towns"},
]
DENIED_CLUSTER: list[dict[str, str]] = [
    {"verb": "delete", "resource": "namespaces"},
    {"verb": "create", "resource": "namespaces"},
    {"verb": "list", "resource": "secrets"},
    {"verb": "create", "group": "rbac.authorization.k8s.io", "resource": "clusterroles"},
    {"verb": "create", "group": "rbac.authorization.k8s.io", "resource": "clusterrolebindings"},
    {"verb": "patch", "group": "apiextensions.k8s.io", "resource": "customresourcedefinitions"},
    {"verb": "delete", "group": "apiextensions.k8s.io", "resource": "customresourcedefinitions"},
    {"verb": "get", "group": "apiextensions.k8s.io", "resource": "customresourcedefinitions"},
    {"verb": "list", "resource": "nodes"},
    {"verb": "create", "group": "certificates.k8s.io", "resource": "certificatesigningrequests"},
    {"verb": "impersonate", "resource": "users"},
]
ALLOWED_IN_NAMESPACE: list[dict[str, str]] = [
    {"verb": "get", "resource": "secrets"},
    {"verb": "create", "resource": "pods"},
    {"verb": "delete", "resource": "pods"},
    {"verb": "create", "group": "rbac.authorization.k8s.io", "resource": "roles"},
    {"verb": "patch", "group": "rbac.authorization.k8s.io", "resource": "roles"},
    {"verb": "patch", "group": "gastown.dev", "resource": "agents", "subresource": "status"},
]


LEASES = {"group": "coordination.k8s.io", "resource": "leases"}


def test_chart_rbac_is_not_broader_than_needed(
    api: Api, control_plane: ControlPlane, namespace: str, chart_operator: ChartOperator
) -> None:
    operator_api = api.as_token(chart_operator.token)
    elsewhere = chart_operator.release_namespace  # a namespace the operator does not work in
    # A Secret in the watched namespace and one elsewhere.
    for ns in (namespace, elsewhere):
        created = api.call(
            "POST",
            f"/api/v1/namespaces/{ns}/secrets",
            {"metadata": {"name": "pr-token"}, "stringData": {"token": "s3cret"}},
        )
        assert created.status == 201, created.body

    # Sanity: the review API answers "allowed" for what the operator does need.
    for attributes in ALLOWED_IN_NAMESPACE:
        assert _allowed(operator_api, namespace=namespace, **attributes), attributes
    # The PR poller can read a token Secret by name in a watched namespace...
    assert (
        operator_api.call("GET", f"/api/v1/namespaces/{namespace}/secrets/pr-token").status == 200
    )
    # ...but can never enumerate Secrets, here or anywhere.
    assert operator_api.call("GET", f"/api/v1/namespaces/{namespace}/secrets").status == 403
    assert operator_api.call("GET", "/api/v1/secrets").status == 403
    assert operator_api.call("GET", f"/api/v1/namespaces/{namespace}/secrets?watch=1").status == 403
    for attributes in DENIED_IN_NAMESPACE:
        assert not _allowed(operator_api, namespace=namespace, **attributes), attributes
    for attributes in DENIED_CLUSTER:
        assert not _allowed(operator_api, **attributes), attributes
    # It cannot hand out more than it holds (RBAC escalation prevention, for real).
    escalation = operator_api.call(
        "POST",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        {
            "metadata": {"name": "grab-admin"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
        },
    )
    assert escalation.status == 403, escalation.body
    wider_role = operator_api.call(
        "POST",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
        {
            "metadata": {"name": "wider"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}],
        },
    )
    assert wider_role.status == 403, wider_role.body

    # Without `bind`, it can bind only a Role that exists and whose rules it holds.
    dangling = operator_api.call(
        "POST",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        {
            "metadata": {"name": "dangling"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "nope"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
        },
    )
    assert dangling.status == 404, dangling.body

    secret_elsewhere = f"/api/v1/namespaces/{elsewhere}/secrets/pr-token"
    if chart_operator.mode == "namespaced":
        # Outside its watched namespaces it can do nothing of its own work.
        assert operator_api.call("GET", secret_elsewhere).status == 403
        for attributes in ALLOWED_IN_NAMESPACE:
            assert not _allowed(operator_api, namespace=elsewhere, **attributes), attributes
        assert not _allowed(operator_api, verb="list", group="gastown.dev", resource="towns")
        assert operator_api.call("GET", "/apis/gastown.dev/v1alpha1/towns").status == 403
    else:
        # Cluster-wide it reads a named token Secret anywhere (a Town may be in any namespace),
        # still without listing.
        assert operator_api.call("GET", secret_elsewhere).status == 200
        assert operator_api.call("GET", f"/api/v1/namespaces/{elsewhere}/secrets").status == 403
    # Leases: its own by name (get, update) and create, in the release namespace only.
    lease = chart_operator.service_account  # the release's full name
    own = {"namespace": chart_operator.release_namespace, **LEASES}
    for verb in ("get", "update"):
        assert _allowed(operator_api, verb=verb, name=lease, **own), verb
        assert not _allowed(operator_api, verb=verb, name="kube-scheduler", **own), verb
    assert _allowed(operator_api, verb="create", **own)
    for verb in ("list", "watch", "delete", "patch"):
        assert not _allowed(operator_api, verb=verb, name=lease, **own), verb
    for verb in ("get", "update", "create"):
        assert not _allowed(operator_api, verb=verb, name=lease, namespace=namespace, **LEASES)
    # The operator is still healthy after all this (refusals do not crash it).
    assert chart_operator.process.alive(), chart_operator.process.tail()
