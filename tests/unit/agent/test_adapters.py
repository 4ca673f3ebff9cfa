"""Adapters: argv and output parsing into the activity watermark (samples written by hand)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from gastown.agent.adapters import (
    AgentEvent,
    Watermark,
    adapter_for,
    user_message,
)
from gastown.model.enums import CodingAgentKind
from gastown.model.town import CodingAgent

T0 = datetime(2025, 1, 1, tzinfo=UTC)

# A Claude Code stream-json session: init, a text block, two tool calls in flight, results.
CLAUDE_SESSION = [
    {"type": "system", "subtype": "init", "session_id": "s1", "tools": ["Bash", "Edit"]},
    {"type": "assistant", "message": {"content": [{"type": "text", "text": "Looking."}]}},
    {
        "type": "assistant",
        "message": {
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
                {"type": "tool_use", "id": "toolu_2", "name": "Read", "input": {"path": "a"}},
            ]
        },
    },
    {
        "type": "user",
        "message": {"content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}]},
    },
]


def feed(kind: CodingAgentKind, lines: list[str]) -> Watermark:
    adapter = adapter_for(CodingAgent(kind=kind, command=["prog"]))
    mark = Watermark()
    for i, line in enumerate(lines):
        for event in adapter.parse(line):
            mark.observe(event, T0 + timedelta(seconds=i))
    return mark


def test_claude_tool_use_is_in_flight_until_its_result() -> None:
    lines = [json.dumps(d) for d in CLAUDE_SESSION]
    mark = feed(CodingAgentKind.CLAUDE_CODE, lines)
    assert mark.last_event_type == "user.tool_result"
    assert mark.last_event_at == T0 + timedelta(seconds=3)
    assert mark.tools == {"toolu_2": "Read"}
    activity = mark.activity(4, T0)
    assert activity.active_tools == ["Read"]
    assert activity.generation == 4


def test_claude_result_ends_the_turn_and_clears_tools() -> None:
    lines = [json.dumps(d) for d in CLAUDE_SESSION]
    lines.append(json.dumps({"type": "result", "subtype": "success", "is_error": False}))
    adapter = adapter_for(CodingAgent(kind=CodingAgentKind.CLAUDE_CODE))
    assert adapter.parse(lines[-1]) == [AgentEvent("result.success", turn_done=True)]
    mark = feed(CodingAgentKind.CLAUDE_CODE, lines)
    assert mark.tools == {}
    assert mark.last_event_type == "result.success"


def test_claude_non_json_and_partial_events() -> None:
    adapter = adapter_for(CodingAgent(kind=CodingAgentKind.CLAUDE_CODE))
    assert adapter.parse("plain warning text") == [AgentEvent("output")]
    assert adapter.parse("   ") == []
    partial = {"type": "stream_event", "event": {"type": "content_block_delta"}}
    assert adapter.parse(json.dumps(partial)) == [AgentEvent("stream.content_block_delta")]
    assert adapter.parse('{"type": "assistant", "message": {}}') == [AgentEvent("assistant")]


def test_claude_argv_and_stream_input() -> None:
    adapter = adapter_for(CodingAgent(kind=CodingAgentKind.CLAUDE_CODE, model="opus"))
    argv = adapter.argv()
    assert argv[:2] == ["claude", "-p"]
    for flag in ("--output-format", "--input-format"):
        assert argv[argv.index(flag) + 1] == "stream-json"
    assert "--verbose" in argv
    assert argv[-2:] == ["--model", "opus"]
    assert adapter.streams_input
    doc = json.loads(adapter.nudge_input("hi"))
    assert doc == {
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": "hi"}]},
    }
    assert adapter.initial_input("task") == user_message("task")


def test_codex_items_are_tools() -> None:
    lines = [
        json.dumps({"type": "thread.started", "thread_id": "t"}),
        json.dumps({"type": "turn.started"}),
        json.dumps({"type": "item.started", "item": {"id": "i1", "type": "command_execution"}}),
        json.dumps({"type": "item.completed", "item": {"id": "i0", "type": "agent_message"}}),
    ]
    mark = feed(CodingAgentKind.CODEX, lines)
    assert mark.tools == {"i1": "command_execution"}
    assert mark.last_event_type == "item.completed.agent_message"
    lines.append(
        json.dumps({"type": "item.completed", "item": {"id": "i1", "type": "command_execution"}})
    )
    assert feed(CodingAgentKind.CODEX, lines).tools == {}
    argv = adapter_for(CodingAgent(kind=CodingAgentKind.CODEX)).argv()
    assert argv[:3] == ["codex", "exec", "--json"]
    assert argv[-1] == "-"


def test_opencode_events() -> None:
    adapter = adapter_for(CodingAgent(kind=CodingAgentKind.OPENCODE))
    running = {
        "type": "tool_use",
        "part": {"callID": "c1", "tool": "bash", "state": {"status": "running"}},
    }
    finished = {
        "type": "tool_use",
        "part": {"callID": "c1", "tool": "bash", "state": {"status": "completed"}},
    }
    step = {"type": "step_finish", "part": {"reason": "stop"}}
    more = {"type": "step_finish", "part": {"reason": "tool-calls"}}
    assert adapter.parse(json.dumps(running)) == [
        AgentEvent("tool_use", tool_started=("c1", "bash"))
    ]
    assert adapter.parse(json.dumps(finished)) == [AgentEvent("tool_use", tool_finished="c1")]
    assert adapter.parse(json.dumps(step))[0].turn_done
    assert not adapter.parse(json.dumps(more))[0].turn_done
    assert adapter.argv()[:4] == ["opencode", "run", "--format", "json"]


def test_aider_and_unknown_output_count_lines_as_activity() -> None:
    mark = feed(CodingAgentKind.AIDER, ["Applied edit to a.py", "", "Commit 1234 done"])
    assert mark.last_event_type == "output"
    assert mark.last_event_at == T0 + timedelta(seconds=2)
    assert "--message-file" in adapter_for(CodingAgent(kind=CodingAgentKind.AIDER)).argv()


def test_command_adapter_reads_typed_json_and_plain_lines() -> None:
    adapter = adapter_for(CodingAgent(kind=CodingAgentKind.COMMAND, command=["my-agent", "-x"]))
    assert adapter.argv() == ["my-agent", "-x"]
    assert not adapter.streams_input
    assert adapter.parse('{"type": "result", "subtype": "success"}')[0].turn_done
    assert adapter.parse('{"no": "type"}') == [AgentEvent("output")]
    assert adapter.parse("hello") == [AgentEvent("output")]
    with pytest.raises(NotImplementedError):
        adapter.nudge_input("x")


def test_command_override_replaces_the_program_only() -> None:
    config = CodingAgent(kind=CodingAgentKind.CLAUDE_CODE, command=["/opt/claude", "--debug"])
    argv = adapter_for(config).argv()
    assert argv[:3] == ["/opt/claude", "--debug", "-p"]


def test_watermark_bounds_event_types_and_tools() -> None:
    mark = Watermark()
    mark.observe(AgentEvent("x" * 200), T0)
    assert mark.last_event_type is not None
    assert len(mark.last_event_type) == 64
    for i in range(50):
        mark.observe(AgentEvent("t", tool_started=(str(i), f"tool{i}")), T0)
    assert len(mark.activity(1, T0).active_tools) == 32
