"""Adapters and runtime on output recorded from the real CLIs against the scripted model server.

The fixtures in data/ were recorded by running each real CLI (versions in
images/cli-versions.env) against `gastown.devtools.modelserver` (paths replaced by /workspace):
`*-ok` a whole polecat session (write a file, commit, `gt done`), `*-401` a model API that
refuses the key, `claude-nudge` a nudge sent during the last turn (queued as a second turn).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from gastown.agent.adapters import AgentEvent, Watermark, adapter_for
from gastown.agent.channel import FileChannel
from gastown.agent.runtime import ensure_home, exclude_leftovers
from gastown.model.enums import CodingAgentKind, ReportType
from gastown.model.town import CodingAgent
from tests.unit.agent.conftest import (
    NOW,
    ChannelFactory,
    Remote,
    git,
    issue_order,
    make_identity,
)
from tests.unit.agent.test_runtime import Agent, start  # noqa: F401 - the fixture

DATA = Path(__file__).parent / "data"
REPLAY = str(Path(__file__).parent / "replay_cli.py")


def events(kind: CodingAgentKind, fixture: str) -> list[AgentEvent]:
    adapter = adapter_for(CodingAgent(kind=kind))
    return [e for line in (DATA / fixture).read_text().splitlines() for e in adapter.parse(line)]


def fold(found: list[AgentEvent]) -> tuple[Watermark, list[set[str]]]:
    """Fold events one second apart; also return the tools in flight after each event."""
    mark = Watermark()
    in_flight = []
    for i, event in enumerate(found):
        mark.observe(event, NOW + timedelta(seconds=i))
        in_flight.append(set(mark.tools.values()))
    return mark, in_flight


# --- Claude Code ---------------------------------------------------------------------------


def test_claude_session_tools_and_result() -> None:
    found = events(CodingAgentKind.CLAUDE_CODE, "claude-ok.jsonl")
    mark, in_flight = fold(found)
    assert {"Write"} in in_flight
    assert {"Bash"} in in_flight
    assert mark.last_event_type == "result.success"
    assert mark.tools == {}
    assert [e.turn_done for e in found].count(True) == 1
    assert not any(e.error for e in found)


def test_claude_api_error_is_a_failure_and_retries_are_not_progress() -> None:
    # Mismatch 2: the result says subtype "success" with is_error and api_error_status 401.
    found = events(CodingAgentKind.CLAUDE_CODE, "claude-401.jsonl")
    retries = [e for e in found if e.type == "system.api_retry"]
    assert len(retries) == 2
    assert all(not e.progress and e.error and "status 401" in e.error for e in retries)
    final = found[-1]
    assert final.fatal
    assert final.turn_done
    assert not final.progress
    assert final.error is not None
    assert "401" in final.error
    assert "authentication_error" in final.error
    mark, _ = fold(found)
    # Only the init (and the synthetic assistant text) moved the watermark: the retry storm
    # and the failed result leave it where it was, so the agent does not look active.
    assert mark.last_event_type == "assistant.text"
    assert mark.last_event_at == NOW + timedelta(seconds=3)


def test_claude_refuses_root_unless_sandboxed() -> None:
    # Mismatch 1: the CLI exits 1 with this line as root; the runtime says why before that.
    adapter = adapter_for(CodingAgent(kind=CodingAgentKind.CLAUDE_CODE))
    problem = adapter.preflight({}, uid=0)
    assert problem is not None
    assert "root" in problem
    assert "IS_SANDBOX=1" in problem
    assert adapter.preflight({"IS_SANDBOX": "1"}, uid=0) is None
    assert adapter.preflight({}, uid=1000) is None
    line = "--dangerously-skip-permissions cannot be used with root/sudo privileges for security"
    [event] = adapter.parse(line)
    assert event.fatal
    assert event.error is not None
    assert "root" in event.error


def test_claude_as_root_fails_with_the_reason_before_starting(
    start: Callable[..., Agent],  # noqa: F811 - the imported fixture
    remote: Remote,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Mismatch 1 through the runtime: the real `claude` program (no command override) as root
    # without IS_SANDBOX ends in one FAILED report that says why, not the CLI's bare exit 1.
    # The runtime is a separate process: a sitecustomize on its path makes it see uid 0, so
    # this holds when the tests do not run as root too.
    shim = tmp_path / "as-root"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import os\nos.getuid = lambda: 0\n")
    monkeypatch.delenv("IS_SANDBOX", raising=False)
    path = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH", "")) if p)
    coding = CodingAgent(kind=CodingAgentKind.CLAUDE_CODE)
    agent = start(issue_order(remote, coding_agent=coding), env={"PYTHONPATH": path})
    assert agent.wait() == 126, agent.output()
    [report] = agent.view().status.reports
    assert report.type is ReportType.FAILED
    assert report.message is not None
    assert "root" in report.message
    assert "IS_SANDBOX=1" in report.message


def test_claude_queued_turn_keeps_the_session_open(
    start: Callable[..., Agent],  # noqa: F811 - the imported fixture
    remote: Remote,
    tmp_path: Path,
) -> None:
    # Mismatch 5: a nudge during the last turn is queued as a second turn (recorded: result,
    # then the second turn's init). The idle timer (2 s here) must not close stdin while that
    # turn runs (3 s), or later nudges are never delivered.
    log = tmp_path / "stdin.log"
    command = [sys.executable, REPLAY, str(DATA / "claude-nudge.jsonl"), "--pause", "3"]
    command += ["--stdin-log", str(log)]
    coding = CodingAgent(kind=CodingAgentKind.CLAUDE_CODE, command=command)
    agent = start(issue_order(remote, coding_agent=coding))
    assert agent.wait() == 0, agent.output()
    assert log.read_text() == "open"


def test_claude_api_error_reaches_the_failed_report(
    start: Callable[..., Agent],  # noqa: F811 - the imported fixture
    remote: Remote,
) -> None:
    command = [sys.executable, REPLAY, str(DATA / "claude-401.jsonl"), "--exit", "1"]
    coding = CodingAgent(kind=CodingAgentKind.CLAUDE_CODE, command=command)
    agent = start(issue_order(remote, coding_agent=coding))
    assert agent.wait() == 1, agent.output()
    [report] = agent.view().status.reports
    assert report.type is ReportType.FAILED
    assert report.message is not None
    assert "model API error 401" in report.message
    assert agent.view().status.activity.last_event_type != "system.api_retry"


# --- Codex ---------------------------------------------------------------------------------


def test_codex_session_and_flags() -> None:
    # Mismatch 3: a login shell resets PATH and loses `gt`; allow_login_shell=false keeps it.
    found = events(CodingAgentKind.CODEX, "codex-ok.jsonl")
    mark, in_flight = fold(found)
    assert {"command_execution"} in in_flight
    assert mark.tools == {}
    assert found[-1].turn_done
    adapter = adapter_for(CodingAgent(kind=CodingAgentKind.CODEX, model="gpt-5"))
    argv = adapter.argv({"OPENAI_BASE_URL": "http://models.test/v1"})
    assert argv[argv.index("allow_login_shell=false") - 1] == "-c"
    assert "model_provider=gastown" in argv
    provider = next(a for a in argv if a.startswith("model_providers.gastown="))
    assert 'base_url="http://models.test/v1"' in provider
    assert "wire_api" in provider
    assert "model_provider=gastown" not in adapter.argv({})
    assert argv[-3:] == ["--model", "gpt-5", "-"]


def test_codex_api_errors() -> None:
    found = events(CodingAgentKind.CODEX, "codex-401.jsonl")
    errors = [e for e in found if e.error]
    assert errors
    assert all(not e.progress for e in errors)
    assert found[-1].type == "turn.failed"
    assert found[-1].fatal
    assert found[-1].error is not None
    assert "401" in found[-1].error


# --- OpenCode ------------------------------------------------------------------------------


def test_opencode_tools_only_show_once_finished() -> None:
    # Mismatch 4 (documented limit): tool_use is printed when the tool has completed, so no
    # tool is ever in flight; the watermark still moves at each step and tool.
    found = events(CodingAgentKind.OPENCODE, "opencode-ok.jsonl")
    mark, in_flight = fold(found)
    assert all(tools == set() for tools in in_flight)
    assert [e.type for e in found].count("tool_use") == 3
    assert found[-1].turn_done
    assert mark.last_event_type == "step_finish"


def test_opencode_api_error() -> None:
    [event] = events(CodingAgentKind.OPENCODE, "opencode-401.jsonl")
    assert event.fatal
    assert not event.progress
    assert event.error == "model API error 401: scripted failure 401"


# --- Aider ---------------------------------------------------------------------------------


def test_aider_output_and_api_error() -> None:
    ok = events(CodingAgentKind.AIDER, "aider-ok.txt")
    assert ok
    assert all(e.progress and e.error is None for e in ok)
    [error] = [e for e in events(CodingAgentKind.AIDER, "aider-401.txt") if e.error]
    assert error.error is not None
    assert error.error.startswith("litellm.BadRequestError")
    assert "--no-gitignore" in adapter_for(CodingAgent(kind=CodingAgentKind.AIDER)).argv({})


def test_aider_leftovers_are_excluded(remote: Remote, tmp_path: Path) -> None:
    # Mismatch 6: Aider's files must not make `gt done` refuse a dirty tree.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", remote.url, str(clone))
    adapter = adapter_for(CodingAgent(kind=CodingAgentKind.AIDER))
    exclude_leftovers(clone, adapter.leftovers)
    exclude_leftovers(clone, adapter.leftovers)  # idempotent
    for name in (".aider.chat.history.md", ".aider.input.history"):
        (clone / name).write_text("x\n")
    (clone / ".aider.tags.cache.v4").mkdir()
    (clone / ".aider.tags.cache.v4" / "cache.db").write_text("x")
    assert git(clone, "status", "--porcelain") == ""
    assert (clone / ".git" / "info" / "exclude").read_text().count(".aider*") == 1


def test_aider_session_is_reported_done_by_the_runtime(
    start: Callable[..., Agent],  # noqa: F811 - the imported fixture
    remote: Remote,
) -> None:
    # Aider cannot run `gt done` unattended; it commits and exits 0, the runtime reports done.
    command = [sys.executable, REPLAY, str(DATA / "aider-ok.txt"), "--aider"]
    coding = CodingAgent(kind=CodingAgentKind.AIDER, command=command)
    agent = start(issue_order(remote, coding_agent=coding))
    assert agent.wait() == 0, agent.output()
    [report] = agent.view().status.reports
    assert report.type is ReportType.DONE, agent.output()
    assert remote.show("gt/polecat-1/bead-a", "beads/bead-a.md") == "bead-a: aider edit"


# --- start-up ------------------------------------------------------------------------------


def test_home_is_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "workspace" / ".home"
    monkeypatch.setenv("HOME", str(home))
    ensure_home()
    assert home.is_dir()
    (home / ".gitconfig").write_text("[user]\n")


def test_first_api_calls_are_retried(
    remote: Remote, tmp_path: Path, channel_file: ChannelFactory
) -> None:
    # The channel is unreachable when the runtime starts and comes back later: the run goes on
    # instead of failing (a brief API outage at start costs the bead no attempt).
    scripted = [sys.executable, "-m", "gastown.agent.scripted"]
    order = issue_order(
        remote, coding_agent=CodingAgent(kind=CodingAgentKind.COMMAND, command=scripted)
    )
    path = channel_file(order)
    saved = path.read_bytes()
    path.unlink()
    home = tmp_path / "home"
    identity = make_identity(tmp_path / "w", bead=order.bead, channel=path)
    agent = Agent(identity, path, tmp_path, {"HOME": str(home)})
    try:
        deadline = time.monotonic() + 30
        while "retrying" not in agent.output():
            assert time.monotonic() < deadline, agent.output()
            assert agent.proc.poll() is None, agent.output()
            time.sleep(0.05)
        path.write_bytes(saved)
        assert agent.wait() == 0, agent.output()
        assert [r.type for r in FileChannel.load(path).status.reports] == [ReportType.DONE]
        assert home.is_dir()  # created by the runtime before anything ran
    finally:
        agent.kill()


def test_the_runtime_waits_until_its_dispatch_is_recorded(
    remote: Remote, tmp_path: Path, channel_file: ChannelFactory
) -> None:
    # The operator creates the pod right after the agent's claim and records the dispatch (the
    # Agent status naming the pod) right after that: a runtime that starts first waits for the
    # record instead of writing a status the agent token may not write yet.
    scripted = [sys.executable, "-m", "gastown.agent.scripted"]
    order = issue_order(
        remote, coding_agent=CodingAgent(kind=CodingAgentKind.COMMAND, command=scripted)
    )
    path = channel_file(order)
    identity = dataclasses.replace(
        make_identity(tmp_path / "w", bead=order.bead, channel=path), pod="polecat-1-g1"
    )
    agent = Agent(identity, path, tmp_path, {"HOME": str(tmp_path / "home")})
    try:
        deadline = time.monotonic() + 30
        while "not recorded" not in agent.output():
            assert time.monotonic() < deadline, agent.output()
            assert agent.proc.poll() is None, agent.output()
            time.sleep(0.05)
        assert FileChannel.load(path).status.reports == []  # nothing written meanwhile
        doc = json.loads(path.read_text())
        doc["agent"]["status"]["pod"] = "polecat-1-g1"
        path.write_text(json.dumps(doc))
        assert agent.wait() == 0, agent.output()
        assert [r.type for r in FileChannel.load(path).status.reports] == [ReportType.DONE]
    finally:
        agent.kill()
