"""Reading a town through `gastown.kube.rest.RestClient` (the plugin's only I/O with the API).

Connection follows kubectl: `--kubeconfig`, else the first file of $KUBECONFIG, else
~/.kube/config, else the in-cluster ServiceAccount; the namespace is `-n`, else the current
context's namespace, else "default".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gastown.kube import labels
from gastown.kube.errors import NotFound
from gastown.kube.rest import SA_DIR, RestClient
from gastown.kube.store import pod_view
from gastown.plugin.state import TownState
from gastown.reconcile import names
from gastown.reconcile.snapshot import PodView

DEFAULT_NAMESPACE = "default"


class PluginError(RuntimeError):
    """A problem the user can fix; printed on stderr, exit code 1."""


def kubeconfig_path(arg: str | None, env: Mapping[str, str], home: Path) -> Path | None:
    """Which kubeconfig to use: the flag, $KUBECONFIG's first file, ~/.kube/config, or None."""
    if arg:
        return Path(arg).expanduser()
    first = env.get("KUBECONFIG", "").split(os.pathsep)[0]
    if first:
        return Path(first).expanduser()
    default = home / ".kube" / "config"
    return default if default.exists() else None


def context_namespace(config: Mapping[str, Any]) -> str | None:
    """The namespace of the kubeconfig's current context, if it sets one."""
    current = config.get("current-context")
    for entry in config.get("contexts") or []:
        if entry.get("name") == current:
            namespace = (entry.get("context") or {}).get("namespace")
            return str(namespace) if namespace else None
    return None


@dataclass(frozen=True)
class Session:
    """A client and the namespace the command works in."""

    client: RestClient
    namespace: str


def connect(kubeconfig: str | None, namespace: str | None) -> Session:
    """Build the client from the kubeconfig (or in-cluster) and pick the namespace."""
    path = kubeconfig_path(kubeconfig, os.environ, Path.home())
    if path is not None:
        return _from_kubeconfig(path, namespace)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        client = RestClient.from_environment()  # $KUBECONFIG is empty here: in-cluster
        in_cluster = SA_DIR / "namespace"
        ns = namespace or (in_cluster.read_text().strip() if in_cluster.exists() else None)
        return Session(client, ns or DEFAULT_NAMESPACE)
    raise PluginError("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config")


def _from_kubeconfig(path: Path, namespace: str | None) -> Session:
    if not path.is_file():
        raise PluginError(f"kubeconfig {path} does not exist")
    try:
        config = yaml.safe_load(path.read_text()) or {}
        client = RestClient.from_kubeconfig_path(path)
    except (OSError, yaml.YAMLError, KeyError, StopIteration, IndexError, TypeError) as err:
        raise PluginError(f"cannot use kubeconfig {path}: {type(err).__name__} {err}") from None
    except RuntimeError as err:
        raise PluginError(f"cannot use kubeconfig {path}: {err}") from None
    return Session(client, namespace or context_namespace(config) or DEFAULT_NAMESPACE)


def find_town(session: Session, name: str | None) -> dict[str, Any]:
    """The Town named `name`, or the only Town of the namespace."""
    if name is not None:
        try:
            return session.client.get("Town", session.namespace, name)
        except NotFound:
            raise PluginError(f"town {name!r} not found in namespace {session.namespace}") from None
    towns = session.client.list_objects("Town", session.namespace)
    if len(towns) == 1:
        return towns[0]
    if not towns:
        raise PluginError(f"no Town in namespace {session.namespace} (use -n to pick another)")
    names = ", ".join(sorted(t["metadata"]["name"] for t in towns))
    raise PluginError(f"namespace {session.namespace} has several towns ({names}): pass --town")


def get_bead(session: Session, name: str) -> dict[str, Any]:
    """One Bead, or a clear error."""
    try:
        return session.client.get("Bead", session.namespace, name)
    except NotFound:
        raise PluginError(f"bead {name!r} not found in namespace {session.namespace}") from None


def convoy_materialising(session: Session, bead: str) -> str | None:
    """The convoy one of whose tasks becomes bead `bead`, if any (task beads are named
    `<convoy>-<key>`)."""
    for convoy in session.client.list_objects("Convoy", session.namespace):
        name = convoy["metadata"]["name"]
        for task in (convoy.get("spec") or {}).get("tasks") or []:
            if names.task_bead_name(name, str(task.get("key", ""))) == bead:
                return str(name)
    return None


def load_state(session: Session, town: Mapping[str, Any]) -> TownState:
    """Everything that belongs to one town: four LIST calls for our kinds, one for pods."""
    client, ns = session.client, session.namespace
    return TownState.parse(
        town,
        client.list_objects("Bead", ns),
        client.list_objects("Convoy", ns),
        client.list_objects("Agent", ns),
        agent_pods(client.list_pods(ns, labels.AGENT)),
    )


def agent_pods(pods: list[dict[str, Any]]) -> list[PodView]:
    """The reconciler's view of the agent pods among `pods`."""
    views = (pod_view(p) for p in pods)
    return [v for v in views if v is not None]
