"""The runtime end to end: a real runtime process, the scripted agent, real git, FileChannel."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest

from gastown.agent.channel import AgentView, FileChannel, WorkOrder
from gastown.agent.identity import Identity
from gastown.model.agent import Nudge
from gastown.model.enums import AgentRole, CodingAgentKind, ReportType
from gastown.model.town import CodingAgent
from tests.unit.agent.conftest import (
    NOW,
    ChannelFactory,
    Remote,
    git,
    issue_order,
    make_identity,
    mr_order,
)

T = TypeVar("T")
SCRIPTED = [sys.executable, "-m", "gastown.agent.scripted"]
COMMAND = CodingAgent(kind=CodingAgentKind.COMMAND, command=SCRIPTED)
CLAUDE = CodingAgent(kind=CodingAgentKind.CLAUDE_CODE, command=SCRIPTED)
DEADLINE = 60.0


def eventually(check: Callable[[], T | None], timeout: float = DEADLINE) -> T:
    """Poll until `check` returns something truthy, or fail at the deadline."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.05)


class Agent:
    """A runtime process under test."""

    def __init__(self, identity: Identity, channel: Path, tmp: Path, env: dict[str, str]) -> None:
        self.channel = channel
        self.nudge_log = tmp / "nudges.log"
        self.out = (tmp / "runtime.out").open("w+")
        full = dict(os.environ)
        full.update(identity.to_env())
        full["GASTOWN_SCRIPTED_NUDGE_LOG"] = str(self.nudge_log)
        full["GASTOWN_SCRIPTED_STATE"] = str(tmp / "state")
        full.update(env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gastown.agent"],
            env=full,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )

    def wait(self, timeout: float = DEADLINE) -> int:
        return self.proc.wait(timeout=timeout)

    def view(self) -> AgentView:
        return FileChannel.load(self.channel)

    def output(self) -> str:
        self.out.flush()
        return Path(self.out.name).read_text()

    def nudges_received(self) -> list[str]:
        return self.nudge_log.read_text().splitlines() if self.nudge_log.exists() else []

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.out.close()


@pytest.fixture
def start(tmp_path: Path, channel_file: ChannelFactory) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def launch(
        order: WorkOrder,
        role: AgentRole = AgentRole.POLECAT,
        generation: int = 1,
        identity_generation: int | None = None,
        env: dict[str, str] | None = None,
        **identity_kw: object,
    ) -> Agent:
        path = tmp_path / "agent.json"
        if not path.exists():
            path = channel_file(order, role=role, generation=generation)
        ident = make_identity(
            tmp_path / "w",
            role=role,
            agent="refinery" if role is AgentRole.REFINERY else "polecat-1",
            bead=order.bead,
            generation=identity_generation or generation,
            channel=path,
        )
        ident = replace(ident, **identity_kw)  # type: ignore[arg-type]
        agent = Agent(ident, path, tmp_path, env or {})
        agents.append(agent)
        return agent

    yield launch
    for agent in agents:
        agent.kill()


def report_types(agent: Agent) -> list[ReportType]:
    return [r.type for r in agent.view().status.reports]


@pytest.mark.parametrize("coding_agent", [COMMAND, CLAUDE], ids=["command", "claude-stream"])
def test_polecat_does_the_work_and_reports_done(
    start: Callable[..., Agent], remote: Remote, coding_agent: CodingAgent
) -> None:
    agent = start(issue_order(remote, coding_agent=coding_agent))
    assert agent.wait() == 0, agent.output()
    [report] = agent.view().status.reports
    assert report.type is ReportType.DONE
    assert report.branch == "gt/polecat-1/bead-a"
    assert remote.show("gt/polecat-1/bead-a", "beads/bead-a.md") == "bead-a: Do bead-a"
    activity = agent.view().status.activity
    assert activity.generation == 1
    assert activity.last_heartbeat_at is not None
    assert activity.last_event_type == "result.success"
    assert activity.active_tools == []


@pytest.mark.parametrize("coding_agent", [COMMAND, CLAUDE], ids=["command", "claude-idle"])
def test_exit_without_done_reports_exited(
    start: Callable[..., Agent], remote: Remote, coding_agent: CodingAgent
) -> None:
    # For the streaming CLI the session sits idle after its turn; the runtime closes its input.
    order = issue_order(remote, coding_agent=coding_agent, description="[scripted: no-done]")
    agent = start(order)
    assert agent.wait() == 0, agent.output()
    [report] = agent.view().status.reports
    assert report.type is ReportType.EXITED
    assert report.exit_code == 0


def test_failing_agent_reports_failed(start: Callable[..., Agent], remote: Remote) -> None:
    agent = start(issue_order(remote, coding_agent=COMMAND, description="[scripted: fail]"))
    assert agent.wait() == 3
    [report] = agent.view().status.reports
    assert report.type is ReportType.FAILED
    assert report.exit_code == 3


def test_missing_program_reports_failed(start: Callable[..., Agent], remote: Remote) -> None:
    missing = CodingAgent(kind=CodingAgentKind.COMMAND, command=["/nonexistent/agent"])
    agent = start(issue_order(remote, coding_agent=missing))
    assert agent.wait() == 127
    assert report_types(agent) == [ReportType.FAILED]


def test_stale_generation_does_nothing(start: Callable[..., Agent], remote: Remote) -> None:
    agent = start(issue_order(remote, coding_agent=COMMAND), generation=2, identity_generation=1)
    assert agent.wait() == 3
    assert agent.view().status.reports == []
    assert remote.sha("gt/polecat-1/bead-a") is None


def test_sigterm_stops_the_agent_and_reports_exited(
    start: Callable[..., Agent], remote: Remote
) -> None:
    agent = start(issue_order(remote, coding_agent=COMMAND, description="[scripted: hang]"))
    # Heartbeats keep coming while the agent hangs: wait for two different ones.
    first = eventually(lambda: agent.view().status.activity.last_heartbeat_at)
    eventually(lambda: agent.view().status.activity.last_heartbeat_at != first)
    eventually(lambda: agent.view().status.activity.last_event_type == "assistant.text")
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 143
    [report] = agent.view().status.reports
    assert report.type is ReportType.EXITED
    assert report.message == "stopped by SIGTERM"
    assert eventually(lambda: not processes_with_env(str(agent.nudge_log)), timeout=10)


def processes_with_env(needle: str) -> list[int]:
    """Pids whose environment mentions `needle` (the coding agent and its children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def nudge(path: Path, nudge_id: str, message: str) -> None:
    FileChannel.post_nudge(
        path, Nudge(id=nudge_id, message=message, source="gupp-warn", created_at=NOW)
    )


@pytest.mark.parametrize("coding_agent", [CLAUDE, COMMAND], ids=["live", "restart"])
def test_nudge_is_delivered_exactly_once(
    start: Callable[..., Agent], remote: Remote, coding_agent: CodingAgent
) -> None:
    agent = start(issue_order(remote, coding_agent=coding_agent, description="[scripted: hang]"))
    eventually(lambda: agent.view().status.activity.last_event_type == "assistant.text")
    nudge(agent.channel, "n1", "wake up [scripted: finish]")
    assert agent.wait() == 0, agent.output()
    assert agent.nudges_received() == ["wake up [scripted: finish]"]
    status = agent.view().status
    assert status.delivered_nudges == ["n1"]
    assert [r.type for r in status.reports] == [ReportType.DONE]


def test_acknowledged_nudge_is_not_redelivered(start: Callable[..., Agent], remote: Remote) -> None:
    agent = start(issue_order(remote, coding_agent=CLAUDE, description="[scripted: hang]"))
    eventually(lambda: agent.view().status.activity.last_event_type == "assistant.text")
    nudge(agent.channel, "n1", "still there?")
    eventually(lambda: agent.view().status.delivered_nudges == ["n1"])
    # Let several more nudge polls pass (observed through fresh heartbeats), then check.
    seen = agent.view().status.activity.last_heartbeat_at
    eventually(lambda: agent.view().status.activity.last_heartbeat_at != seen)
    nudge(agent.channel, "n2", "finish now [scripted: finish]")
    assert agent.wait() == 0, agent.output()
    assert agent.nudges_received() == ["still there?", "finish now [scripted: finish]"]
    assert agent.view().status.delivered_nudges == ["n1", "n2"]


def test_re_dispatch_stops_a_stale_runtime(start: Callable[..., Agent], remote: Remote) -> None:
    agent = start(issue_order(remote, coding_agent=COMMAND, description="[scripted: hang]"))
    eventually(lambda: agent.view().status.activity.last_event_type == "assistant.text")
    FileChannel.update_spec(agent.channel, lambda s: s.model_copy(update={"generation": 2}))
    assert agent.wait() == 3
    assert agent.view().status.reports == []


def test_refinery_merges_directly(start: Callable[..., Agent], remote: Remote) -> None:
    remote.commit("gt/polecat-1/bead-a", "beads/bead-a.md", "work\n")
    order = mr_order(remote, "gt/polecat-1/bead-a", gates=("test -f beads/bead-a.md",))
    agent = start(order, role=AgentRole.REFINERY)
    assert agent.wait() == 0, agent.output()
    [report] = agent.view().status.reports
    assert report.type is ReportType.MERGED
    assert report.merge_commit == remote.sha("main")
    assert remote.sha("gt/polecat-1/bead-a") is None


def test_refinery_gate_failure_is_reported(start: Callable[..., Agent], remote: Remote) -> None:
    remote.commit("gt/polecat-1/bead-a", "beads/bead-a.md", "work\n")
    main = remote.sha("main")
    order = mr_order(remote, "gt/polecat-1/bead-a", gates=("echo tests-broke; exit 1",))
    agent = start(order, role=AgentRole.REFINERY)
    assert agent.wait() == 0, agent.output()
    [report] = agent.view().status.reports
    assert report.type is ReportType.GATE_FAILED
    assert report.message is not None
    assert "tests-broke" in report.message
    assert remote.sha("main") == main


@pytest.mark.parametrize("coding_agent", [COMMAND, CLAUDE], ids=["command", "claude-stream"])
def test_refinery_review_requests_changes_once(
    start: Callable[..., Agent], remote: Remote, coding_agent: CodingAgent, tmp_path: Path
) -> None:
    branch = "gt/polecat-1/bead-a"
    remote.commit(branch, "beads/bead-a.md", "work\n")
    main = remote.sha("main")
    order = mr_order(
        remote,
        branch,
        review=True,
        coding_agent=coding_agent,
        source_description="do it [scripted: request-changes-once]",
    )
    agent = start(order, role=AgentRole.REFINERY)
    assert agent.wait() == 0, agent.output()
    [report] = agent.view().status.reports
    assert report.type is ReportType.REQUEST_CHANGES
    assert report.files == ["beads/bead-a.md"]
    assert remote.sha("main") == main

    # The rework lands on the branch; the next dispatch of the refinery merges it.
    remote.commit(branch, "beads/bead-a.md", "work\nfixed\n", message="rework: bead-a")
    FileChannel.update_spec(agent.channel, lambda s: s.model_copy(update={"generation": 2}))
    again = start(order, role=AgentRole.REFINERY, generation=2)
    assert again.wait() == 0, again.output()
    reports = again.view().status.reports
    assert [r.type for r in reports] == [
        ReportType.REQUEST_CHANGES,
        ReportType.DONE,
        ReportType.MERGED,
    ]
    assert remote.show("main", "beads/bead-a.md") == "work\nfixed"


def test_secrets_never_reach_output_or_reports(
    start: Callable[..., Agent], remote: Remote, tmp_path: Path
) -> None:
    token = "tok-very-secret-0123456789"
    secret_dir = tmp_path / "git-secret"
    secret_dir.mkdir()
    (secret_dir / "token").write_text(token)
    order = issue_order(remote, coding_agent=COMMAND)
    order = replace(
        order,
        rig=order.rig.model_copy(update={"git_url": f"http://bot:{token}@127.0.0.1:9/repo.git"}),
    )
    agent = start(order, git_credentials_dir=secret_dir)
    assert agent.wait() == 1
    [report] = agent.view().status.reports
    assert report.type is ReportType.FAILED
    assert token not in (report.message or "")
    assert token not in agent.output()
    assert token not in agent.view().status.model_dump_json()


def test_secret_env_printed_by_a_gate_is_redacted_from_reports_and_output(
    start: Callable[..., Agent], remote: Remote
) -> None:
    key = "sk-ant-api03-GateLeak0123456789abcdef"
    remote.commit("gt/polecat-1/bead-a", "beads/bead-a.md", "work\n")
    gate = 'echo "key: $ANTHROPIC_API_KEY"; printf %s "$ANTHROPIC_API_KEY" | base64; exit 1'
    order = mr_order(remote, "gt/polecat-1/bead-a", gates=(gate,))
    env = {"GASTOWN_SECRET_ENV": "ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY": key}
    agent = start(order, role=AgentRole.REFINERY, env=env)
    assert agent.wait() == 0, agent.output()
    [report] = agent.view().status.reports
    assert report.type is ReportType.GATE_FAILED
    assert "key: ***" in (report.message or "")
    encoded = base64.b64encode(key.encode()).decode()
    for form in (key, encoded):
        assert form not in agent.view().status.model_dump_json()
        assert form not in agent.output()


def test_conflict_rework_by_scripted_agent_resolves(
    start: Callable[..., Agent], remote: Remote, tmp_path: Path
) -> None:
    """A rework of a conflicting branch merges the base in, so the refinery can merge."""
    branch = "gt/polecat-9/bead-a"
    remote.commit(branch, "README.md", "bead-a was here\n")
    remote.commit("main", "README.md", "someone else\n")
    from tests.unit.agent.conftest import rework_order

    order = replace(rework_order(remote, branch), coding_agent=COMMAND)
    agent = start(order)
    assert agent.wait() == 0, agent.output()
    assert report_types(agent) == [ReportType.DONE]
    log = git(remote.bare, "log", "--format=%s", branch)
    assert log.splitlines()[0].startswith("rework:")
    # main is now an ancestor of the branch: the refinery's merge cannot conflict any more.
    git(remote.bare, "merge-base", "--is-ancestor", "main", branch)


def test_refinery_pr_strategy_reports_pr_opened(
    start: Callable[..., Agent], remote: Remote, tmp_path: Path
) -> None:
    from gastown.model.common import SecretKeyRef
    from gastown.model.enums import GitProvider, MergeStrategy
    from gastown.model.town import PullRequestProvider
    from tests.unit.agent.fake_provider import FakeProvider, start_fake

    token = "ghp_RuntimeSecretToken987"
    token_file = tmp_path / "pr-token"
    token_file.write_text(token)
    fake = FakeProvider()
    server = start_fake(fake)
    try:
        remote.commit("gt/polecat-1/bead-a", "beads/bead-a.md", "work\n")
        order = mr_order(remote, "gt/polecat-1/bead-a")
        provider = PullRequestProvider(
            kind=GitProvider.GITHUB,
            api_url=f"{fake.base}/gh",
            repository="o/r",
            token_secret=SecretKeyRef(name="pr", key="token"),
        )
        rig = order.rig.model_copy(
            update={"merge_strategy": MergeStrategy.PR, "pull_requests": provider}
        )
        agent = start(replace(order, rig=rig), role=AgentRole.REFINERY, pr_token_file=token_file)
        assert agent.wait() == 0, agent.output()
        [report] = agent.view().status.reports
        assert report.type is ReportType.PR_OPENED
        assert report.pr_url == "https://github.example/o/r/pull/1"
        assert fake.prs[0].base == "main"
        assert token not in agent.output()
        assert token not in agent.view().status.model_dump_json()
    finally:
        server.shutdown()
        server.server_close()
