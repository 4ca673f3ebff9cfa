"""Coding-agent adapters: how to start each CLI and how to read progress from its output.

Each adapter builds the argv, encodes the prompt for standard input, and turns output lines into
`AgentEvent`s that move the activity watermark (last event type and time, tools in flight).

| kind        | argv (program replaceable by `codingAgent.command`)                  | input  |
|-------------|----------------------------------------------------------------------|--------|
| claude-code | claude -p --output-format stream-json --input-format stream-json     | stream |
|             |   --verbose --permission-mode bypassPermissions [--model M]          |        |
| codex       | codex exec --json --dangerously-bypass-approvals-and-sandbox         | once   |
|             |   -c allow_login_shell=false [provider from OPENAI_BASE_URL]         |        |
|             |   [--model M] -                                                      |        |
| opencode    | opencode run --format json [--model M]                               | once   |
| aider       | aider --yes-always --no-pretty --no-stream --no-check-update         | once   |
|             |   --no-gitignore --message-file /dev/stdin [--model M]               |        |
| command     | exactly `codingAgent.command`                                        | once   |

The pod is the sandbox, which is why the CLIs' own permission prompts are turned off: nobody is
there to answer them, and `gt done` must be able to push. Claude Code keeps reading stream-json
user messages on stdin, so nudges are delivered into the live session; every other CLI gets its
prompt once (stdin is then closed) and a nudge means a checkpointed restart.

What each CLI needs (found by running the real CLIs against `gastown.devtools.modelserver`):

- Claude Code refuses `bypassPermissions` as root unless IS_SANDBOX=1 says the root is inside a
  sandbox; agent pods run as uid 1000, and a root run fails before the CLI starts with a clear
  reason (`preflight`) instead of the CLI's exit 1.
- Codex runs model commands through a login shell by default, which resets PATH (and so loses
  `gt`): `allow_login_shell=false` keeps the runtime's PATH. Codex no longer reads
  OPENAI_BASE_URL; when it is set, the adapter declares it as Codex's model provider (HTTP
  streaming, no WebSocket), so a Town's env points Codex at its endpoint like the other CLIs.
- Aider adds `.aider*` to a `.gitignore` it creates (`--no-gitignore` stops that) and leaves
  `.aider.chat.history.md`, `.aider.input.history` and `.aider.tags.cache.v4/` in the clone;
  `leftovers` are written to the clone's `.git/info/exclude` so `gt done` sees a clean tree.
  Aider cannot run commands unattended (`--yes-always` never confirms shell commands), so it
  cannot call `gt done`: the runtime reports done for it when it exits 0 with new commits
  (`runs_commands = False`).

Output parsing: Claude Code's stream-json, Codex's `exec --json` JSONL and OpenCode's
`run --format json` events are understood; for `command`, JSON lines with a "type" field are read
like Claude Code's, and anything else (and Aider's plain text) counts as "one line = activity".
Model API failures are recognised and do not move the watermark: Claude Code's
`system.api_retry` lines and its `result` with `is_error` (whose subtype still says "success"),
Codex's `error` ("Reconnecting... n/5") and `turn.failed`, OpenCode's `error`, Aider's
`litellm.*Error` lines. An agent that cannot reach its model therefore looks stalled, not busy,
and the last failure becomes the reason of its `failed` report.

Usage (tokens and cost) and rate limits, as the real CLIs print them (recorded in
tests/unit/agent/data/*-usage* and *-429*):

- Claude Code: each `result` carries `model_usage_since_last_result` (per model: inputTokens,
  outputTokens, cacheReadInputTokens, cacheCreationInputTokens, costUSD) for the turns since the
  previous result, `num_turns` (the model turns of that result) and `total_cost_usd` for the
  whole process; `usage` and `modelUsage` are cumulative and left out of some results. A rate
  limit is retried by the CLI (`system.api_retry` with `error_status` 429 and its
  `retry_delay_ms`, which honours the provider's retry-after) and then ends the turn with a
  `result` with `is_error` and `api_error_status` 429.
- Codex: `turn.completed.usage` (input_tokens includes cached_input_tokens; no cost). A rate
  limit is retried five times ("Reconnecting... n/5 (... last status: 429 ...)") and ends in
  `turn.failed` whose message names the 429; no retry-after is printed.
- OpenCode: `step_finish.part.tokens` (input, output, cache.read, cache.write) and `part.cost`
  per step. A rate limit is retried (honouring retry-after) and then printed as one `error`
  whose `data.statusCode` is 429, with `data.responseHeaders["retry-after"]`.
- Aider: `Tokens: 6.2k sent, 300 received.` (rounded, with k/M suffixes; sent includes cached
  input) and, when litellm knows the model's price, `Cost: $0.01 message, $0.02 session.`; a
  rate limit is `litellm.RateLimitError` lines between its own retries.

Limit: OpenCode prints a `tool_use` event only once the tool has finished, so its tools never
show in `activeTools` while they run; its watermark moves at each step and tool completion.
"""

from __future__ import annotations

import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from gastown.model.agent import Activity
from gastown.model.enums import CodingAgentKind
from gastown.model.spend import Usage, dollars
from gastown.model.town import CodingAgent

MAX_EVENT_TYPE = 64
MAX_TOOLS = 32
MAX_ERROR = 1000


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
    progress: bool = True
    """False for events that show no progress (API retries, errors): the watermark ignores
    them, so an agent that cannot reach its model does not look active."""
    error: str | None = None
    """A model API failure reported by the CLI (becomes the reason of a failed report)."""
    fatal: bool = False
    """The session cannot go on (the turn ended in an API error): stop waiting for it."""
    usage: UsageSample | None = None
    """Tokens and cost the CLI reported with this event."""
    rate_limited: bool = False
    """The error is the provider's rate limit (HTTP 429 or the CLI's equivalent)."""
    retry_after: float | None = None
    """Seconds the provider (or the CLI's own retry) said to wait, when it said."""


@dataclass(frozen=True)
class UsageSample:
    """Usage in one CLI event: an increment, or (`cumulative`) the process's total so far."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None
    turns: int = 0
    model: str | None = None
    cumulative: bool = False


class UsageMeter:
    """Folds a session's usage samples into the generation's cumulative `Usage`.

    Increments add up; a cumulative reading replaces the current process's share (the CLI's
    own total), and `restart()` starts a new process whose readings add to the earlier ones.
    """

    def __init__(self, model: str | None = None) -> None:
        self.model = model
        self.earlier = Usage()
        self.process = Usage()

    def restart(self) -> None:
        """A new CLI process: its cumulative readings start from zero."""
        self.earlier = self.earlier.plus(self.process)
        self.process = Usage()

    def add(self, sample: UsageSample) -> None:
        """Fold one sample in."""
        reading = Usage(
            input_tokens=max(0, sample.input_tokens),
            output_tokens=max(0, sample.output_tokens),
            cache_read_tokens=max(0, sample.cache_read_tokens),
            cache_write_tokens=max(0, sample.cache_write_tokens),
            cost_usd=dollars(sample.cost_usd or 0.0),
            cost_reported=sample.cost_usd is not None,
            turns=max(0, sample.turns),
            model=sample.model or self.model,
        )
        if sample.cumulative:
            self.process = self.process.at_least(reading)
        else:
            self.process = self.process.plus(reading)

    @property
    def total(self) -> Usage:
        """The generation's usage so far."""
        total = self.earlier.plus(self.process)
        return total if total.model else total.model_copy(update={"model": self.model})

    @property
    def empty(self) -> bool:
        """True if nothing was reported yet."""
        return self.total.tokens == 0 and self.total.cost_usd == 0


@dataclass
class Watermark:
    """The activity watermark the runtime heartbeats (seed §8)."""

    last_event_type: str | None = None
    last_event_at: datetime | None = None
    tools: dict[str, str] = field(default_factory=dict)

    def observe(self, event: AgentEvent, now: datetime) -> None:
        """Fold one event into the watermark (events without progress leave it alone)."""
        if not event.progress:
            return
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
    runs_commands: ClassVar[bool] = True
    """False: the CLI cannot run `gt` itself, the runtime reports done for it."""
    leftovers: ClassVar[tuple[str, ...]] = ()
    """Files the CLI leaves in the clone (git exclude patterns), kept out of `gt done`'s way."""

    def __init__(self, config: CodingAgent) -> None:
        self.config = config

    def argv(self, env: Mapping[str, str] | None = None) -> list[str]:
        """The command line: the program (or its override) followed by the adapter's flags."""
        base = list(self.config.command) if self.config.command else list(self.program)
        return base + self.flags(os.environ if env is None else env)

    @abstractmethod
    def flags(self, env: Mapping[str, str]) -> list[str]:
        """Flags the adapter needs (output format, non-interactive mode, model)."""

    def preflight(self, env: Mapping[str, str], uid: int | None = None) -> str | None:
        """Why the CLI cannot run here (None: it can); checked before it is started."""
        del env, uid
        return None

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

    def flags(self, env: Mapping[str, str]) -> list[str]:
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

    def preflight(self, env: Mapping[str, str], uid: int | None = None) -> str | None:
        """Claude Code refuses bypassPermissions as root outside a declared sandbox."""
        uid = os.getuid() if uid is None else uid
        if uid == 0 and env.get("IS_SANDBOX") != "1" and self.config.command is None:
            return (
                "Claude Code refuses --permission-mode bypassPermissions when run as root "
                "(uid 0): run the agent as a non-root user (agent pods run as uid 1000), or "
                "set IS_SANDBOX=1 in the Town's agent env if this root is inside a sandbox"
            )
        return None

    def initial_input(self, prompt: str) -> bytes:
        """The prompt as the first stream-json user message."""
        return user_message(prompt)

    def nudge_input(self, message: str) -> bytes:
        """A nudge is one more user message in the same session."""
        return user_message(message)

    def parse(self, line: str) -> list[AgentEvent]:
        """Parse a stream-json line (and the CLI's own refusal to run as root)."""
        doc = _json_object(line)
        if doc is not None:
            return parse_claude_event(doc)
        if "cannot be used with root/sudo privileges" in line:
            return [AgentEvent("error", progress=False, error=line.strip()[:MAX_ERROR], fatal=True)]
        return super().parse(line)


class CodexAdapter(Adapter):
    """OpenAI Codex CLI, `codex exec --json`, prompt from stdin."""

    kind = CodingAgentKind.CODEX
    program = ("codex",)

    def flags(self, env: Mapping[str, str]) -> list[str]:
        """JSONL output; the pod is the sandbox; commands keep the runtime's PATH (for `gt`)."""
        flags = ["exec", "--json", "--dangerously-bypass-approvals-and-sandbox"]
        flags += ["-c", "allow_login_shell=false"]
        base_url = env.get("OPENAI_BASE_URL")
        if base_url:
            # Codex ignores OPENAI_BASE_URL: declare the endpoint as its provider (HTTP SSE).
            provider = (
                f'{{name="OpenAI-compatible (OPENAI_BASE_URL)",base_url={json.dumps(base_url)},'
                'env_key="OPENAI_API_KEY",wire_api="responses"}'
            )
            flags += ["-c", "model_provider=gastown", "-c", f"model_providers.gastown={provider}"]
        return [*flags, *self._model(), "-"]

    def parse(self, line: str) -> list[AgentEvent]:
        """Parse an `exec --json` event."""
        doc = _json_object(line)
        return parse_codex_event(doc) if doc is not None else super().parse(line)


class OpenCodeAdapter(Adapter):
    """OpenCode, `opencode run --format json`, prompt from stdin."""

    kind = CodingAgentKind.OPENCODE
    program = ("opencode",)

    def flags(self, env: Mapping[str, str]) -> list[str]:
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
    runs_commands = False
    leftovers = (".aider*",)

    def flags(self, env: Mapping[str, str]) -> list[str]:
        """Non-interactive, no terminal effects, no .gitignore of its own."""
        return [
            "--yes-always",
            "--no-pretty",
            "--no-stream",
            "--no-check-update",
            "--no-gitignore",
            "--message-file",
            "/dev/stdin",
            *self._model(),
        ]

    def parse(self, line: str) -> list[AgentEvent]:
        """Plain text: litellm errors and retry notices are failures, anything else activity."""
        text = line.strip()
        if not text:
            return []
        if _AIDER_ERROR.match(text):
            limited = text.startswith("litellm.RateLimitError")
            return [
                AgentEvent("error", progress=False, error=text[:MAX_ERROR], rate_limited=limited)
            ]
        usage = aider_usage(text)
        if usage is not None:
            return [AgentEvent("output", usage=usage)]
        if _AIDER_RETRY.match(text):
            return [AgentEvent("retry", progress=False)]
        return [AgentEvent("output")]


class CommandAdapter(Adapter):
    """Any program: prompt on stdin; JSON lines with "type" are understood, else line=activity."""

    kind = CodingAgentKind.COMMAND

    def argv(self, env: Mapping[str, str] | None = None) -> list[str]:
        """Exactly the configured command."""
        if not self.config.command:
            raise ValueError("codingAgent.kind command needs codingAgent.command")
        return list(self.config.command)

    def flags(self, env: Mapping[str, str]) -> list[str]:
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


_AIDER_ERROR = re.compile(r"^litellm\.\w*(Error|Exception)\b")
_AIDER_RETRY = re.compile(r"^Retrying in [0-9.]+ seconds")


def parse_claude_event(doc: dict[str, Any]) -> list[AgentEvent]:
    """Claude Code stream-json: system, assistant, user, result (and partial stream events).

    A turn that ended in an API error is a `result` whose subtype still says "success" but with
    `is_error: true` (and `api_error_status`); the retries before it are `system.api_retry`.
    A result with `queued_turn_count > 0` is followed by queued turns: the session is not idle.
    """
    kind = str(doc.get("type", "unknown"))
    if kind == "result":
        queued = doc.get("queued_turn_count")
        done = not (isinstance(queued, int) and queued > 0)
        event_type = _join("result", doc.get("subtype"))
        usage = claude_usage(doc)
        if doc.get("is_error") is True:
            return [
                AgentEvent(
                    "result.error",
                    turn_done=done,
                    progress=False,
                    error=_claude_error(doc),
                    fatal=True,
                    usage=usage,
                    rate_limited=doc.get("api_error_status") == 429
                    or doc.get("api_error_type") == "rate_limit_error",
                )
            ]
        return [AgentEvent(event_type, turn_done=done, usage=usage)]
    if kind == "system" and doc.get("subtype") == "api_retry":
        limited = doc.get("error_status") == 429 or doc.get("error") == "rate_limit"
        delay = doc.get("retry_delay_ms")
        return [
            AgentEvent(
                "system.api_retry",
                progress=False,
                error=_claude_retry(doc),
                rate_limited=limited,
                retry_after=delay / 1000 if limited and isinstance(delay, int | float) else None,
            )
        ]
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
    """Codex `exec --json`: thread/turn/item events; command and tool items are tools.

    `error` events are its API retries ("Reconnecting... n/5 (...)") and final API error;
    `turn.failed` ends the turn with that error.
    """
    kind = str(doc.get("type", "unknown"))
    item = doc.get("item") if isinstance(doc.get("item"), dict) else None
    if kind == "error":
        message = _text(doc.get("message"))
        return [AgentEvent(kind, progress=False, error=message, rate_limited=_is_429(message))]
    if kind == "turn.failed":
        error = doc.get("error")
        message = _text(error.get("message") if isinstance(error, dict) else error)
        return [
            AgentEvent(
                kind,
                turn_done=True,
                progress=False,
                error=message,
                fatal=True,
                rate_limited=_is_429(message),
            )
        ]
    if kind == "turn.completed":
        return [AgentEvent(kind, turn_done=True, usage=codex_usage(doc.get("usage")))]
    if item is None:
        return [AgentEvent(kind)]
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
    if kind == "error":
        http_status, retry_after = _opencode_status(doc)
        return [
            AgentEvent(
                kind,
                progress=False,
                error=_opencode_error(doc),
                fatal=True,
                rate_limited=http_status == 429,
                retry_after=retry_after,
            )
        ]
    if kind == "tool_use":
        call_id = str(part.get("callID", ""))
        state = part.get("state") if isinstance(part.get("state"), dict) else {}
        status = str(state.get("status", "")) if isinstance(state, dict) else ""
        name = str(part.get("tool", "tool"))
        if call_id and status in ("pending", "running"):
            return [AgentEvent("tool_use", tool_started=(call_id, name))]
        return [AgentEvent("tool_use", tool_finished=call_id or None)]
    if kind == "step_finish":
        done = part.get("reason") != "tool-calls"
        return [AgentEvent(kind, turn_done=done, usage=opencode_usage(part))]
    return [AgentEvent(kind)]


def claude_usage(doc: dict[str, Any]) -> UsageSample | None:
    """Usage in a Claude Code `result`: the turns since the previous result, or the totals.

    `num_turns` counts the model turns of this result alone (4, then 1 after a nudge), like
    `model_usage_since_last_result`, so it is taken with the increment; a cumulative reading
    has no matching total of turns and reports none.
    """
    since = doc.get("model_usage_since_last_result")
    if isinstance(since, dict) and since:
        turns = _int(doc.get("num_turns")) or 1  # an older CLI without it: one result, one turn
        sample = _claude_models(since, cumulative=False, turns=turns)
        return sample if sample is not None else None
    models = doc.get("modelUsage")
    if isinstance(models, dict) and models:
        return _claude_models(models, cumulative=True)
    usage = doc.get("usage")
    cost = doc.get("total_cost_usd")
    if not isinstance(usage, dict) and not isinstance(cost, int | float):
        return None
    usage = usage if isinstance(usage, dict) else {}
    return UsageSample(
        input_tokens=_int(usage.get("input_tokens")),
        output_tokens=_int(usage.get("output_tokens")),
        cache_read_tokens=_int(usage.get("cache_read_input_tokens")),
        cache_write_tokens=_int(usage.get("cache_creation_input_tokens")),
        cost_usd=float(cost) if isinstance(cost, int | float) else None,
        cumulative=True,
    )


def _claude_models(
    models: dict[str, Any], *, cumulative: bool, turns: int = 0
) -> UsageSample | None:
    """Sum Claude Code's per-model figures (`model_usage_since_last_result`, `modelUsage`)."""
    rows = [row for row in models.values() if isinstance(row, dict)]
    if not rows:
        return None
    costs = [row.get("costUSD") for row in rows]
    return UsageSample(
        input_tokens=sum(_int(row.get("inputTokens")) for row in rows),
        output_tokens=sum(_int(row.get("outputTokens")) for row in rows),
        cache_read_tokens=sum(_int(row.get("cacheReadInputTokens")) for row in rows),
        cache_write_tokens=sum(_int(row.get("cacheCreationInputTokens")) for row in rows),
        cost_usd=sum(float(c) for c in costs if isinstance(c, int | float))
        if any(isinstance(c, int | float) for c in costs)
        else None,
        turns=0 if cumulative else turns,
        model=str(next(iter(models)))[:128],
        cumulative=cumulative,
    )


def codex_usage(usage: object) -> UsageSample | None:
    """Codex `turn.completed.usage`: input_tokens includes the cached ones; no cost."""
    if not isinstance(usage, dict):
        return None
    cached = _int(usage.get("cached_input_tokens"))
    return UsageSample(
        input_tokens=max(0, _int(usage.get("input_tokens")) - cached),
        output_tokens=_int(usage.get("output_tokens")),
        cache_read_tokens=cached,
        cache_write_tokens=_int(usage.get("cache_write_input_tokens")),
        turns=1,
    )


def opencode_usage(part: dict[str, Any]) -> UsageSample | None:
    """OpenCode `step_finish`: tokens (input, output, cache read/write) and cost of one step."""
    tokens = part.get("tokens")
    if not isinstance(tokens, dict):
        return None
    cache = tokens.get("cache") if isinstance(tokens.get("cache"), dict) else {}
    assert isinstance(cache, dict)
    cost = part.get("cost")
    return UsageSample(
        input_tokens=_int(tokens.get("input")),
        output_tokens=_int(tokens.get("output")) + _int(tokens.get("reasoning")),
        cache_read_tokens=_int(cache.get("read")),
        cache_write_tokens=_int(cache.get("write")),
        cost_usd=float(cost) if isinstance(cost, int | float) else None,
        turns=1 if part.get("reason") != "tool-calls" else 0,
    )


_AIDER_TOKENS = re.compile(
    r"^Tokens: ([0-9.]+[kM]?) sent(?:, ([0-9.]+[kM]?) cache write)?(?:, ([0-9.]+[kM]?) cache "
    r"hit)?, ([0-9.]+[kM]?) received\.(?: Cost: \$([0-9.]+) message)?"
)


def aider_usage(text: str) -> UsageSample | None:
    """Aider's `Tokens: 6.2k sent, 300 received.` line (figures rounded by Aider)."""
    match = _AIDER_TOKENS.match(text)
    if match is None:
        return None
    sent, write, hit, received, cost = match.groups()
    cached = _count(hit) + _count(write)
    return UsageSample(
        input_tokens=max(0, _count(sent) - cached),
        output_tokens=_count(received),
        cache_read_tokens=_count(hit),
        cache_write_tokens=_count(write),
        cost_usd=float(cost) if cost else None,
        turns=1,
    )


def _count(text: str | None) -> int:
    """Aider's rounded counts: 300, 6.2k, 1.5M."""
    if not text:
        return 0
    scale = {"k": 1_000, "M": 1_000_000}.get(text[-1], 1)
    number = text[:-1] if scale > 1 else text
    try:
        return round(float(number) * scale)
    except ValueError:
        return 0


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) and value > 0 else 0


def _is_429(message: str) -> bool:
    return bool(re.search(r"\b429\b|Too Many Requests|rate.?limit", message, re.IGNORECASE))


def _opencode_status(doc: dict[str, Any]) -> tuple[int | None, float | None]:
    """The HTTP status and retry-after header of an OpenCode API error."""
    error = doc.get("error")
    data = error.get("data") if isinstance(error, dict) else None
    if not isinstance(data, dict):
        return None, None
    status = data.get("statusCode")
    headers = data.get("responseHeaders")
    retry = headers.get("retry-after") if isinstance(headers, dict) else None
    try:
        retry_after = float(retry) if retry is not None else None
    except (TypeError, ValueError):
        retry_after = None  # an HTTP date: the policy's backoff applies instead
    return (status if isinstance(status, int) else None), retry_after


def _claude_error(doc: dict[str, Any]) -> str:
    status = doc.get("api_error_status")
    kind = doc.get("api_error_type")
    head = "model API error"
    if status is not None:
        head += f" {status}"
    if isinstance(kind, str) and kind:
        head += f" ({kind})"
    return f"{head}: {_text(doc.get('result'))}"[:MAX_ERROR]


def _claude_retry(doc: dict[str, Any]) -> str:
    return (
        f"model API retry {doc.get('attempt', '?')}/{doc.get('max_retries', '?')}: "
        f"status {doc.get('error_status', '?')} {_text(doc.get('error'))}"
    )[:MAX_ERROR]


def _opencode_error(doc: dict[str, Any]) -> str:
    error = doc.get("error")
    if not isinstance(error, dict):
        return _text(error)
    data = error.get("data") if isinstance(error.get("data"), dict) else {}
    assert isinstance(data, dict)
    status = data.get("statusCode")
    head = f"model API error {status}" if status is not None else str(error.get("name", "error"))
    return f"{head}: {_text(data.get('message'))}"[:MAX_ERROR]


def _text(value: object) -> str:
    return (value if isinstance(value, str) else json.dumps(value))[:MAX_ERROR]


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
