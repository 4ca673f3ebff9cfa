"""Helpers for end-to-end tests: objects, waiting on phases, and playing agents through the API.

Agents are played exactly as the in-pod runtime does it: through `KubeAgentChannel`, which
stamps each report with the next seq and the agent's current generation and writes it into the
Agent's status with compare-and-set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gastown.agent.channel import ReportDraft
from gastown.agent.identity import Identity
from gastown.kube.agent_channel import KubeAgentChannel
from gastown.kube.rest import RestClient
from gastown.model import Agent, AgentRole, Bead, Convoy, ReportType
from tests.support.api import Api, eventually


def town(name: str = "demo", git_url: str = "/srv/git/app.git", **spec: Any) -> dict[str, Any]:
    """A Town object with one rig `app`."""
    body: dict[str, Any] = {
        "rigs": [{"name": "app", "gitUrl": git_url}],
        "agent": {"image": "gastown-agent:test"},
        "limits": {"maxPolecatsPerRig": 3, "maxPolecats": 5},
    }
    body.update(spec)
    return {
        "apiVersion": "gastown.dev/v1alpha1",
        "kind": "Town",
        "metadata": {"name": name},
        "spec": body,
    }


def convoy(
    name: str,
    tasks: list[dict[str, Any]],
    mode: str = "review-then-land",
    town_name: str = "demo",
    **spec: Any,
) -> dict[str, Any]:
    """A Convoy object on rig `app`."""
    return {
        "apiVersion": "gastown.dev/v1alpha1",
        "kind": "Convoy",
        "metadata": {"name": name},
        "spec": {"town": town_name, "rig": "app", "mergeMode": mode, "tasks": tasks, **spec},
    }


def bead(name: str, town_name: str = "demo", **spec: Any) -> dict[str, Any]:
    """A Bead of a town on rig `app` (title defaults to the name)."""
    body = {"town": town_name, "rig": "app", "title": name, **spec}
    return {
        "apiVersion": "gastown.dev/v1alpha1",
        "kind": "Bead",
        "metadata": {"name": name},
        "spec": body,
    }


class TownView:
    """Typed reads of one namespace."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.api = api
        self.ns = namespace

    def _list(self, kind: str) -> list[dict[str, Any]]:
        resp = self.api.call("GET", Api.path(kind, self.ns))
        assert resp.status == 200, resp.message
        items: list[dict[str, Any]] = resp.body["items"]
        return items

    def beads(self) -> list[Bead]:
        """All beads."""
        return [Bead.from_api(b) for b in self._list("Bead")]

    def agents(self) -> list[Agent]:
        """All agents."""
        return [Agent.from_api(a) for a in self._list("Agent")]

    def convoy(self, name: str) -> Convoy:
        """One convoy."""
        result: Convoy = Convoy.from_api(self.api.get("Convoy", self.ns, name).body)
        return result

    def town(self, name: str = "demo") -> dict[str, Any]:
        """The raw Town."""
        return self.api.get("Town", self.ns, name).body

    def pods(self) -> list[dict[str, Any]]:
        """Agent pods (including terminating ones)."""
        resp = self.api.call("GET", f"/api/v1/namespaces/{self.ns}/pods")
        pods: list[dict[str, Any]] = resp.body["items"]
        return pods

    def wait(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll until `check` is truthy."""
        return eventually(check, timeout, what, interval=0.2)


class AgentPlayer:
    """Plays every hooked agent once per generation: polecats finish, refineries merge."""

    def __init__(self, api: Api, kubeconfig: Path, namespace: str, town_name: str = "demo") -> None:
        self.view = TownView(api, namespace)
        self.client = RestClient.from_kubeconfig_path(kubeconfig)
        self.ns = namespace
        self.town = town_name
        self.played: set[tuple[str, int]] = set()
        self.request_changes_once: set[str] = set()
        self.fail_beads: set[str] = set()

    def channel(self, agent: Agent) -> KubeAgentChannel:
        """The channel the agent's pod would use at its current generation."""
        identity = Identity(
            town=self.town,
            namespace=self.ns,
            agent=agent.name,
            role=agent.spec.role,
            generation=agent.spec.generation,
            rig=agent.spec.rig,
            bead=agent.spec.hook,
        )
        return KubeAgentChannel(identity, self.client)

    def step(self) -> int:
        """Report for every agent that has work and has not reported in this generation."""
        done = 0
        beads = {b.name: b for b in self.view.beads()}
        for agent in self.view.agents():
            key = (agent.name, agent.spec.generation)
            if not agent.spec.hook or key in self.played:
                continue
            bead = beads.get(agent.spec.hook)
            if bead is None:
                continue
            draft = self.decide(agent, bead)
            if draft is None:
                continue
            self.channel(agent).append_report(draft)
            self.played.add(key)
            done += 1
        return done

    def decide(self, agent: Agent, bead: Bead) -> ReportDraft | None:
        """What a fair agent reports for its hooked bead."""
        if agent.spec.role is AgentRole.REFINERY:
            source = bead.spec.merge_request.source_bead if bead.spec.merge_request else ""
            if source in self.request_changes_once:
                self.request_changes_once.discard(source)
                return ReportDraft(
                    type=ReportType.REQUEST_CHANGES,
                    bead=bead.name,
                    feedback="rename the function",
                    files=("app.py",),
                )
            return ReportDraft(
                type=ReportType.MERGED,
                bead=bead.name,
                merge_commit=f"{abs(hash(bead.name)):040x}"[:40],
            )
        if bead.name in self.fail_beads:
            return ReportDraft(type=ReportType.FAILED, bead=bead.name, message="tests do not pass")
        branch = f"gt/{agent.name}/{bead.name}"
        if bead.spec.rework is not None:
            branch = bead.spec.rework.branch
        return ReportDraft(
            type=ReportType.DONE, bead=bead.name, branch=branch, summary=f"did {bead.spec.title}"
        )
