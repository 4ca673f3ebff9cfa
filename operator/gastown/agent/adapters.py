"""Coding-agent adapters: how to start each CLI and how to read progress from its output.

Each adapter builds the argv, encodes the prompt for standard input, and turns output lines into
`AgentEvent`s that move the activity watermark (last event type and time, tools in flight).

| kind        | argv (program replaceable by `codingAgent.command`)                  | input  |
|-------------|----------------------------------------------------------------------|--------|
| claude-code | claude -p --output-format stream-json --input-format stream-json     | stream |
|             |   --verbose --permission-mode bypassPermissions [--model M]          |        |
| codex       | codex exec --json --dangerously-bypass-approvals-and-sandbox         | once   |
|             |   [--model M] -                                                      |        |
| opencode    | opencode run --format json [--model M]                               | once   |
| aider       | aider --yes-always --no-pretty --no-stream --no-check-update         | once   |
|             |   --message-file /dev/stdin [--model M]                              |        |
| command     | exactly `codingAgent.command`                                        | once   |

The pod is the sandbox, which is why the CLIs' own permission prompts are turned off: nobody is
there to answer them, and `gt done` must be able to push. Claude Code keeps reading stream-json
user messages on stdin, so nudges are delivered into the live session; every other CLI gets its
prompt once (stdin is then closed) and a nudge means a checkpointed restart.

Output parsing: Claude Code's stream-json, Codex's `exec --json` JSONL and OpenCode's
`run --format json` events are understood; for `command`, JSON lines with a "type" field are read
like Claude Code's, and anything else (and Aider's plain text) counts as "one line = activity".
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from gastown.model.agent import Activity
from gastown.model.enums import CodingAgentKind
from gastown.model.town import CodingAgent

MAX_EVENT_TYPE = 64
MAX_TOOLS = 32


@dataclass(frozen=True)
class AgentEvent:
    """One progress event parsed from the coding agent's output."""

    type: str
    tool_started: tuple[str, str] | None = None
    """(call id, tool name) of a tool call that began."""
    tool_finished: str | None = None
    """Call id of a tool call that ended."""
    turn_done: bool = False
    """The agent finished a turn and waits for input (streaming CLIs)."""


@dataclass
class Watermark:
    """The activity watermark the runtime heartbeats (seed §8)."""

    last_event_type: str | None = None
    last_event_at: datetime | None = None
    tools: dict[str, str] = field(default_factory=dict)

    def observe(self, event: AgentEvent, now: datetime) -> None:
        """Fold one event into the watermark."""
        self.last_event_type = event.type[:MAX_EVENT_TYPE]
        self.last_event_at = now
        if event.tool_started is not None:
            call_id, name = event.tool_started
            if len(self.tools) < MAX_TOOLS:
                self.tools[call_id] = name[:128]
        if event.tool_finished is not None:
            self.tools.pop(event.tool_finished, None)
        if event.turn_done:
            self.tools.clear()  # a finished turn has no tool calls left in flight

    def activity(self, generation: int, heartbeat_at: datetime) -> Activity:
        """The Activity to write with a heartbeat."""
        return Activity(
            generation=generation,
            last_heartbeat_at=heartbeat_at,
            last_event_type=self.last_event_type,
            last_event_at=self.last_event_at,
            active_tools=sorted(set(self.tools.values())),
        )


class Adapter(ABC):
    """How to drive one coding-agent CLI."""

    kind: ClassVar[CodingAgentKind]
    program: ClassVar[tuple[str, ...]] = ()
    streams_input: ClassVar[bool] = False

    def __init__(self, config: CodingAgent) -> None:
        self.config = config

    def argv(self) -> list[str]:
        """The command line: the program (or its override) followed by the adapter's flags."""
        base = list(self.config.command) if self.config.command else list(self.program)
        return base + self.flags()

    @abstractmethod
    def flags(self) -> list[str]:
        """Flags the adapter needs (output format, non-interactive mode, model)."""

    def initial_input(self, prompt: str) -> bytes:
        """What to write to stdin at start."""
        return prompt.encode()

    def nudge_input(self, message: str) -> bytes:
        """What to write to stdin to deliver a nudge into the live session."""
        raise NotImplementedError(f"{self.kind.value} does not take input while running")

    def parse(self, line: str) -> list[AgentEvent]:
        """Events in one output line (default: any non-blank line is activity)."""
        return [AgentEvent("output")] if line.strip() else []

    def _model(self) -> list[str]:
        return ["--model", self.config.model] if self.config.model else []


class ClaudeCodeAdapter(Adapter):
    """Claude Code in print mode with stream-json in and out."""

    kind = CodingAgentKind.CLAUDE_CODE
    program = ("claude",)
    streams_input = True

    def flags(self) -> list[str]:
        """stream-json both ways, so nudges can be sent into the session."""
        return [
            "-p",
            "--output-format",
            "stream-json",
            "--input-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            "bypassPermissions",
            *self._model(),
        ]

    def initial_input(self, prompt: str) -> bytes:
        """The prompt as the first stream-json user message."""
        return user_message(prompt)

    def nudge_input(self, message: str) -> bytes:
        """A nudge is one more user message in the same session."""
        return user_message(message)

    def parse(self, line: str) -> list[AgentEvent]:
        """Parse a stream-json line."""
        doc = _json_object(line)
        return parse_claude_event(doc) if doc is not None else super().parse(line)


class CodexAdapter(Adapter):
    """OpenAI Codex CLI, `codex exec --json`, prompt from stdin."""

    kind = CodingAgentKind.CODEX
    program = ("codex",)

    def flags(self) -> list[str]:
        """JSONL output; the pod is the sandbox."""
        return ["exec", "--json", "--dangerously-bypass-approvals-and-sandbox", *self._model(), "-"]

    def parse(self, line: str) -> list[AgentEvent]:
        """Parse an `exec --json` event."""
        doc = _json_object(line)
        return parse_codex_event(doc) if doc is not None else super().parse(line)


class OpenCodeAdapter(Adapter):
    """OpenCode, `opencode run --format json`, prompt from stdin."""

    kind = CodingAgentKind.OPENCODE
    program = ("opencode",)

    def flags(self) -> list[str]:
        """JSON event output."""
        return ["run", "--format", "json", *self._model()]

    def parse(self, line: str) -> list[AgentEvent]:
        """Parse a `run --format json` event."""
        doc = _json_object(line)
        return parse_opencode_event(doc) if doc is not None else super().parse(line)


class AiderAdapter(Adapter):
    """Aider with one message read from stdin; plain-text output."""

    kind = CodingAgentKind.AIDER
    program = ("aider",)

    def flags(self) -> list[str]:
        """Non-interactive, no terminal effects."""
        return [
            "--yes-always",
            "--no-pretty",
            "--no-stream",
            "--no-check-update",
            "--message-file",
            "/dev/stdin",
            *self._model(),
        ]


class CommandAdapter(Adapter):
    """Any program: prompt on stdin; JSON lines with "type" are understood, else line=activity."""

    kind = CodingAgentKind.COMMAND

    def argv(self) -> list[str]:
        """Exactly the configured command."""
        if not self.config.command:
            raise ValueError("codingAgent.kind command needs codingAgent.command")
        return list(self.config.command)

    def flags(self) -> list[str]:
        """None: the command is used as given."""
        return []

    def parse(self, line: str) -> list[AgentEvent]:
        """Claude-like JSON events if the program prints them, otherwise line = activity."""
        doc = _json_object(line)
        if doc is not None and isinstance(doc.get("type"), str):
            return parse_claude_event(doc)
        return super().parse(line)


_ADAPTERS: dict[CodingAgentKind, type[Adapter]] = {
    a.kind: a
    for a in (ClaudeCodeAdapter, CodexAdapter, OpenCodeAdapter, AiderAdapter, CommandAdapter)
}


def adapter_for(config: CodingAgent) -> Adapter:
    """The adapter for a Town's codingAgent settings."""
    return _ADAPTERS[config.kind](config)


def user_message(text: str) -> bytes:
    """One Claude Code stream-json input line carrying a user message."""
    doc = {"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": text}]}}
    return (json.dumps(doc) + "\n").encode()


# --- parsers ----------------------------------------------------------------------------------


def parse_claude_event(doc: dict[str, Any]) -> list[AgentEvent]:
    """Claude Code stream-json: system, assistant, user, result (and partial stream events)."""
    kind = str(doc.get("type", "unknown"))
    if kind == "result":
        return [AgentEvent(_join("result", doc.get("subtype")), turn_done=True)]
    if kind == "system":
        return [AgentEvent(_join("system", doc.get("subtype")))]
    if kind in ("assistant", "user"):
        events = [_content_event(kind, block) for block in _content(doc)]
        return events or [AgentEvent(kind)]
    if kind == "stream_event":
        inner = doc.get("event")
        inner_type = inner.get("type") if isinstance(inner, dict) else None
        return [AgentEvent(_join("stream", inner_type))]
    return [AgentEvent(kind)]


def parse_codex_event(doc: dict[str, Any]) -> list[AgentEvent]:
    """Codex `exec --json`: thread/turn/item events; command and tool items are tools."""
    kind = str(doc.get("type", "unknown"))
    item = doc.get("item") if isinstance(doc.get("item"), dict) else None
    if item is None:
        return [AgentEvent(kind, turn_done=kind in ("turn.completed", "turn.failed"))]
    item_type = str(item.get("type") or item.get("item_type") or "item")
    item_id = str(item.get("id", ""))
    is_tool = item_type in ("command_execution", "mcp_tool_call", "file_change", "web_search")
    event_type = _join(kind, item_type)
    if is_tool and kind == "item.started" and item_id:
        return [AgentEvent(event_type, tool_started=(item_id, item_type))]
    if is_tool and kind == "item.completed" and item_id:
        return [AgentEvent(event_type, tool_finished=item_id)]
    return [AgentEvent(event_type)]


def parse_opencode_event(doc: dict[str, Any]) -> list[AgentEvent]:
    """OpenCode `run --format json`: step_start, text, tool_use, step_finish, error."""
    kind = str(doc.get("type", "unknown"))
    part = doc.get("part") if isinstance(doc.get("part"), dict) else {}
    assert isinstance(part, dict)
    if kind == "tool_use":
        call_id = str(part.get("callID", ""))
        state = part.get("state") if isinstance(part.get("state"), dict) else {}
        status = str(state.get("status", "")) if isinstance(state, dict) else ""
        name = str(part.get("tool", "tool"))
        if call_id and status in ("pending", "running"):
            return [AgentEvent("tool_use", tool_started=(call_id, name))]
        return [AgentEvent("tool_use", tool_finished=call_id or None)]
    if kind == "step_finish":
        return [AgentEvent(kind, turn_done=part.get("reason") != "tool-calls")]
    return [AgentEvent(kind)]


def _content(doc: dict[str, Any]) -> list[dict[str, Any]]:
    message = doc.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return []
    return [block for block in content if isinstance(block, dict)]


def _content_event(kind: str, block: dict[str, Any]) -> AgentEvent:
    block_type = str(block.get("type", "content"))
    event_type = _join(kind, block_type)
    if block_type == "tool_use" and block.get("id"):
        return AgentEvent(event_type, tool_started=(str(block["id"]), str(block.get("name", ""))))
    if block_type == "tool_result" and block.get("tool_use_id"):
        return AgentEvent(event_type, tool_finished=str(block["tool_use_id"]))
    return AgentEvent(event_type)


def _join(kind: str, sub: object) -> str:
    return f"{kind}.{sub}"[:MAX_EVENT_TYPE] if isinstance(sub, str) and sub else kind


def _json_object(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None
