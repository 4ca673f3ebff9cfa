"""Helpers for end-to-end tests: objects, waiting on phases, and playing agents through the API.

Agents are played exactly as the in-pod runtime does it: through `KubeAgentChannel`, which
stamps each report with the next seq and the agent's current generation and writes it into the
Agent's status with compare-and-set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gastown.agent.channel import ReportDraft, StaleGenerationError
from gastown.agent.identity import Identity
from gastown.kube.agent_channel import KubeAgentChannel
from gastown.kube.rest import RestClient
from gastown.model import Agent, AgentRole, Bead, Convoy, ConvoyPhase, ReportType
from gastown.model.spend import Usage
from gastown.reconcile.names import work_branch
from tests.support.api import Api, eventually
from tests.support.git import git, run_git

NO_NODE = {"gastown.dev/test-no-node": "true"}
"""The default nodeSelector of test towns: no node carries it, so their agent pods are created
but never run. Tests that play the agents through the API (`AgentPlayer`) need exactly that: a
node runner or a real node of the session would otherwise start real runtimes that race the
player (merging, deleting branches). Towns whose pods must run replace it (`scripted_town` for
the node runner, `tests.support.node.node_town` for the real node)."""


def town(name: str = "demo", git_url: str = "/srv/git/app.git", **spec: Any) -> dict[str, Any]:
    """A Town object with one rig `app`."""
    body: dict[str, Any] = {
        "rigs": [{"name": "app", "gitUrl": git_url}],
        "agent": {"image": "gastown-agent:test", "nodeSelector": dict(NO_NODE)},
        "limits": {"maxPolecatsPerRig": 3, "maxPolecats": 5},
    }
    body.update(spec)
    return {
        "apiVersion": "gastown.dev/v1alpha1",
        "kind": "Town",
        "metadata": {"name": name},
        "spec": body,
    }


SCRIPTED = {"kind": "command", "command": ["python", "-m", "gastown.agent.scripted"]}
"""The scripted coding agent (`gastown.agent.scripted`), as a Town's `codingAgent`."""


def scripted_town(repo: Path | str, **spec: Any) -> dict[str, Any]:
    """A town whose agents run the scripted coding agent against `repo` (a local bare
    repository, or a URL)."""
    spec.setdefault("policy", {})
    spec["policy"].setdefault("retry", {"backoffSeconds": [1]})
    body = town(git_url=str(repo), **spec)
    del body["spec"]["agent"]["nodeSelector"]  # its pods run (on the node runner)
    body["spec"]["agent"]["codingAgent"] = SCRIPTED
    body["spec"]["agent"]["env"] = [{"name": "GASTOWN_HEARTBEAT_SECONDS", "value": "2"}]
    return body


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


def landed(view: TownView, name: str, timeout: float = 240) -> Convoy:
    """Wait until the convoy is terminal (Landed or Failed); return it."""

    def done() -> Convoy | None:
        found = view.convoy(name)
        return found if found.status.phase in (ConvoyPhase.LANDED, ConvoyPhase.FAILED) else None

    result: Convoy = view.wait(done, timeout, f"convoy {name} to land")
    return result


def town_state(view: TownView) -> str:
    """Every bead and agent in one line each (for failure messages)."""
    lines = [
        f"bead {b.name} {b.spec.type.value} {b.status.phase.value} attempts={b.status.attempts} "
        f"assignee={b.status.assignee} reason={b.status.reason!r}"
        for b in view.beads()
    ]
    lines += [
        f"agent {a.name} {a.status.phase} hook={a.spec.hook} pod={a.status.pod}"
        for a in view.agents()
    ]
    return "\n".join(lines)


class AgentPlayer:
    """Plays every hooked agent once per generation: polecats finish, refineries merge."""

    def __init__(
        self, api: Api, kubeconfig: Path, namespace: str, repo: Path, town_name: str = "demo"
    ) -> None:
        self.repo = repo
        self.hands = GitHands(repo)
        self.view = TownView(api, namespace)
        self.client = RestClient.from_kubeconfig_path(kubeconfig)
        self.ns = namespace
        self.town = town_name
        self.played: set[tuple[str, int]] = set()
        self.request_changes_once: set[str] = set()
        self.fail_beads: set[str] = set()
        self.leave: set[str] = set()
        """Beads whose agents the player never plays (the test reports for them itself)."""
        self.usage: dict[str, Usage] = {}
        """Per bead: the session usage its polecat's `done` report carries."""

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
            try:
                self.channel(agent).append_report(draft)
            except StaleGenerationError:
                # The operator re-dispatched the agent meanwhile: this generation's pod would
                # find itself stale and exit; the next generation is played on a later step.
                continue
            self.played.add(key)
            done += 1
        return done

    @property
    def git_url(self) -> str:
        """The rig's remote: what the Town's `gitUrl` must name for the operator to verify."""
        return str(self.repo)

    def decide(self, agent: Agent, bead: Bead) -> ReportDraft | None:
        """What a fair agent reports for its hooked bead, after doing the git work for real
        (the operator verifies every push and merge against the remote)."""
        if bead.name in self.leave:
            return None
        if agent.spec.role is AgentRole.REFINERY:
            spec = bead.spec.merge_request
            assert spec is not None, f"{bead.name} is not a merge request"
            if spec.source_bead in self.request_changes_once:
                self.request_changes_once.discard(spec.source_bead)
                return ReportDraft(
                    type=ReportType.REQUEST_CHANGES,
                    bead=bead.name,
                    feedback="rename the function",
                    files=("app.py",),
                )
            merge = self.hands.merge(spec.branch, spec.target_branch, bead.name)
            return ReportDraft(type=ReportType.MERGED, bead=bead.name, merge_commit=merge)
        if bead.name in self.fail_beads:
            return ReportDraft(type=ReportType.FAILED, bead=bead.name, message="tests do not pass")
        if bead.spec.rework is not None:
            branch = bead.spec.rework.branch
        else:
            branch = work_branch(agent.name, bead.name, bead.metadata.uid)
        head = self.hands.push_work(branch, bead.name, agent.spec.generation)
        return ReportDraft(
            type=ReportType.DONE,
            bead=bead.name,
            branch=branch,
            head_sha=head,
            summary=f"did {bead.spec.title}",
            usage=self.usage.get(bead.name),
        )


class GitHands:
    """Honest git work on the rig's remote, as a polecat and a refinery would do it."""

    def __init__(self, remote: Path) -> None:
        self.remote = remote
        self.clone = remote.parent / f"{remote.name}-player"

    def _fresh(self) -> None:
        if not (self.clone / ".git").exists():
            git("clone", "-q", str(self.remote), str(self.clone))
        # Whatever an earlier step left behind (a failed merge, stray files) must not leak in.
        run_git("merge", "--abort", cwd=self.clone)
        git("reset", "-q", "--hard", cwd=self.clone)
        git("clean", "-q", "-fdx", cwd=self.clone)
        git("fetch", "-q", "--prune", "origin", cwd=self.clone)

    def _checkout(self, branch: str, start: str = "main") -> None:
        remote_refs = git("branch", "-r", "--list", f"origin/{branch}", cwd=self.clone).strip()
        origin = f"origin/{branch}" if remote_refs else f"origin/{start}"
        git("checkout", "-q", "-B", branch, origin, cwd=self.clone)

    def push_work(self, branch: str, bead: str, generation: int) -> str:
        """Commit a file for `bead` on `branch` and push it; the pushed commit."""
        self._fresh()
        self._checkout(branch)
        path = self.clone / "beads" / f"{bead}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{bead} (generation {generation})\n")
        git("add", "-A", cwd=self.clone)
        git("commit", "-q", "--allow-empty", "-m", f"work on {bead}", cwd=self.clone)
        git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=self.clone)
        return git("rev-parse", "HEAD", cwd=self.clone).strip()

    def merge(self, source: str, target: str, what: str) -> str:
        """Merge `source` into `target` with --no-ff and push it; the merge commit."""
        self._fresh()
        self._checkout(target)
        merged = run_git(
            "merge", "-q", "--no-ff", "-X", "theirs", "-m", f"Merge {source} ({what})",
            f"origin/{source}", cwd=self.clone,
        )  # fmt: skip
        if merged.returncode != 0:
            # A conflict `-X theirs` cannot settle (add/add, modify/delete): a fair refinery
            # would resolve it; the player takes the source's side of every conflicted path.
            conflicted = git("diff", "--name-only", "--diff-filter=U", cwd=self.clone).split()
            assert conflicted, f"merge of {source} failed: {merged.stdout}{merged.stderr}"
            for path in conflicted:
                if run_git("checkout", "--theirs", "--", path, cwd=self.clone).returncode:
                    git("rm", "-q", "--", path, cwd=self.clone)
            git("add", "-A", cwd=self.clone)
            git("commit", "-q", "--no-edit", cwd=self.clone)
        git("push", "-q", "origin", f"HEAD:refs/heads/{target}", cwd=self.clone)
        return git("rev-parse", "HEAD", cwd=self.clone).strip()
