"""A scripted model server: the model providers' APIs, played from a script, every request recorded.

The real coding-agent CLIs (Claude Code, Codex, OpenCode, Aider) run against it in tests and in
the demo exactly as against a provider: their base URL points here (the Town's agent env sets
ANTHROPIC_BASE_URL / OPENAI_BASE_URL / OPENAI_API_BASE) and any API key is accepted. It speaks

| API                        | path                                   | who calls it            |
|----------------------------|----------------------------------------|-------------------------|
| Anthropic Messages         | POST /v1/messages (SSE or JSON)         | Claude Code, OpenCode   |
|                            | POST /v1/messages/count_tokens         | Claude Code             |
| OpenAI Responses           | POST /v1/responses (SSE or JSON)        | Codex, OpenCode         |
| OpenAI Chat Completions    | POST /v1/chat/completions (SSE or JSON) | Aider (litellm)         |
| model list, probes         | GET /v1/models, HEAD anything           | several                 |

(The same paths without the /v1 prefix are accepted too: some SDKs expect the base URL to carry
it, others add it.) Codex first tries a WebSocket on /v1/responses; the upgrade is refused with
404, and the Codex adapter configures its provider without WebSockets anyway.

What the model "says" comes from a script, a function of the conversation so far
(`Conversation` -> `Reply`): say a text, run a shell command, write a file (each mapped onto the
tools the calling CLI offers, or onto Aider's whole-file edit format), or fail with an HTTP error.
Scripts are stateless: the step is the number of tool results already in the conversation, so
retries, restarts and many agents at once all work. The default script, `town_script`, plays a
gastown agent from the runtime's prompt header (Bead, Role, Branch, Target commit, ...):

- polecat: write `beads/<bead>.md` (or append a rework line), `git add` + `git commit`,
  `gt done --summary ...`, then a closing text;
- refinery reviewer: `git log <target>..HEAD`, then `gt done` (approve) or
  `gt request-changes --feedback ... --file beads/<source>.md`;
- a later user message (a nudge delivered into a live session) gets a short acknowledgement;
- side requests without tools (titles, commit messages) get a one-line answer.

Directives in the prompt (the bead's description), `[model: <directive>, ...]`:

    fail=<status>[x<n>]     answer <status> (401, 429, 500, 529, ...) to the first n requests of
                            this conversation (every request when n is left out); 429 and 529
                            carry `retry-after: 1` (or `retry-after=<seconds>`)
    retry-after=<seconds>   the retry-after header of scripted 429/529 answers
    usage=<in>/<out>[/<cache read>/<cache write>]
                            the token usage every reply reports (default 10/10/0/0), in each
                            API's own fields (Anthropic cache_read/cache_creation_input_tokens,
                            Responses input_tokens_details.cached_tokens, Chat Completions
                            prompt_tokens_details.cached_tokens)
    slow=<seconds>          wait that long in the middle of every reply (a slow turn)
    hang                    answer the task with a text and no tool call (a turn that ends
                            without `gt done`), until a nudge containing `[model: finish]`
    request-changes-once    reviewer: request changes unless a commit subject starts `rework:`
    request-changes-always  reviewer: always request changes

Tests can also queue failures for the next requests of any conversation (`fail_next`) or replace
the script. Every request is recorded (`requests`): API, path, headers with credentials
redacted, the JSON body, and the status answered.

Run it for the demo or by hand: `python -m gastown.devtools.modelserver --port 8090`.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import re
import shlex
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Api = Literal["anthropic", "responses", "chat"]
DIRECTIVE = re.compile(r"\[model:\s*([^\]]+)\]")
HEADER_LINE = re.compile(r"^([A-Z][A-Za-z ]{0,40}): (.*)$")
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization"})
MAX_BODY = 64 * 1024 * 1024


# --- what the model says ----------------------------------------------------------------------


@dataclass(frozen=True)
class Say:
    """A text answer that ends the turn."""

    text: str


@dataclass(frozen=True)
class Shell:
    """A tool call running one shell command (Bash, bash, exec_command, shell, ...)."""

    command: str
    description: str = "run a command"


@dataclass(frozen=True)
class WriteFile:
    """A tool call writing a file (Write, write; a shell heredoc where no write tool exists)."""

    path: str
    content: str


@dataclass(frozen=True)
class Fail:
    """An HTTP error instead of an answer."""

    status: int
    message: str = "scripted failure"
    retry_after: float | None = None


Reply = Say | Shell | WriteFile | Fail


@dataclass(frozen=True)
class Conversation:
    """What a script sees of one request: the conversation so far, normalised across APIs."""

    api: Api
    model: str
    system: str
    user_texts: tuple[str, ...]
    """Text of each user message, in order (tool results excluded)."""
    tool_results: tuple[str, ...]
    """Output of each tool call answered so far, in order."""
    assistant_turns: int
    tools: tuple[str, ...]
    """Names of the tools the CLI offers."""

    @property
    def prompt(self) -> str:
        """The gastown prompt: the first user text carrying a `Bead:` header (else the first)."""
        for text in self.user_texts:
            if header(text).get("Bead"):
                return text
        return self.user_texts[0] if self.user_texts else ""

    @property
    def header(self) -> dict[str, str]:
        """The prompt's `Key: value` header."""
        return header(self.prompt)

    @property
    def directives(self) -> dict[str, str]:
        """`[model: ...]` directives in the prompt."""
        return directives(self.prompt)

    @property
    def nudges(self) -> tuple[str, ...]:
        """User messages after the prompt (nudges delivered into a live session)."""
        texts = self.user_texts
        prompt = self.prompt
        index = texts.index(prompt) if prompt in texts else 0
        return tuple(t for t in texts[index + 1 :] if not t.startswith("<system-reminder>"))

    @property
    def key(self) -> str:
        """Identifies the conversation across its requests (for counted failures)."""
        return hashlib.sha256(f"{self.api}\0{self.prompt}".encode()).hexdigest()[:16]

    @property
    def cwd(self) -> str | None:
        """The working directory the CLI announced in its system prompt or context, if any."""
        texts = (self.system, *self.user_texts)
        patterns = (
            r"Primary working directory: (\S+)",
            r"Working directory: (\S+)",
            r"<cwd>([^<]+)</cwd>",
        )
        for pattern in patterns:
            for text in texts:
                found = re.search(pattern, text)
                if found:
                    return found.group(1).strip()
        return None


Script = Callable[[Conversation], Reply]


def header(text: str) -> dict[str, str]:
    """`Key: value` lines at the top of a text (the runtime's prompt header)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        match = HEADER_LINE.match(line)
        if match is None:
            if fields:
                break
            continue
        fields[match.group(1)] = match.group(2).strip()
    return fields


def directives(text: str) -> dict[str, str]:
    """`[model: a, b=c]` directives in a text."""
    found: dict[str, str] = {}
    for group in DIRECTIVE.findall(text):
        for item in group.split(","):
            key, _, value = item.strip().partition("=")
            if key:
                found[key] = value
    return found


@dataclass(frozen=True)
class Usage:
    """Token usage a reply reports (`usage=` directive)."""

    input: int = 10
    output: int = 10
    cache_read: int = 0
    cache_write: int = 0


def usage_of(marks: dict[str, str]) -> Usage:
    """The usage a conversation's replies report: `usage=in/out[/cache read/cache write]`."""
    raw = marks.get("usage")
    if not raw:
        return Usage()
    parts = [int(p) for p in raw.split("/") if p.strip().isdigit()]
    parts += [0] * (4 - len(parts))
    return Usage(*parts[:4])


def _retry_after(marks: dict[str, str]) -> float:
    raw = marks.get("retry-after", "")
    try:
        return max(1.0, float(raw))
    except ValueError:
        return 1.0


def town_script(conv: Conversation) -> Reply:
    """Play a gastown agent from the runtime's prompt (see the module docstring)."""
    head = conv.header
    if not head.get("Bead") or (not conv.tools and _is_side(conv)):
        return _side_answer(conv)
    marks = conv.directives
    step = len(conv.tool_results)
    finished = any("[model: finish]" in n for n in conv.nudges)
    if "hang" in marks and not finished:
        if conv.nudges:
            return Say(f"Received: {conv.nudges[-1][:200]}")
        return Say("Waiting for instructions.")
    if head.get("Role") == "refinery":
        plan = _review_plan(conv, head, marks)
    else:
        plan = _polecat_plan(conv, head)
    if step < len(plan):
        return plan[step]
    if conv.nudges and conv.assistant_turns > len(plan):
        return Say(f"Received: {conv.nudges[-1][:200]}")
    return Say(f"Finished {head['Bead']}.")


def _polecat_plan(conv: Conversation, head: dict[str, str]) -> list[Reply]:
    bead = head["Bead"]
    title = _title(conv.prompt)
    rework = "# Rework requested" in conv.prompt
    source = _rework_source(conv.prompt) or bead
    path = f"beads/{source if rework else bead}.md"
    line = f"rework of {source} ({bead})" if rework else f"{bead}: {title}"
    subject = f"rework: {source}" if rework else f"{bead}: {title}"
    if rework:
        edit: Reply = Shell(f"echo {shlex.quote(line)} >> {path}", "append the rework line")
    else:
        edit = WriteFile(path, line + "\n")
    return [
        edit,
        Shell(f"git add -A && git commit -q -m {shlex.quote(subject)}", "commit the change"),
        Shell(f"gt done --summary {shlex.quote('model server: ' + subject)}", "report done"),
    ]


def _review_plan(conv: Conversation, head: dict[str, str], marks: dict[str, str]) -> list[Reply]:
    target = head.get("Target commit", "HEAD~1")
    plan: list[Reply] = [Shell(f"git log --format=%s {target}..HEAD", "list the commits")]
    if not conv.tool_results:
        return plan
    reworked = "rework:" in conv.tool_results[0]
    once = "request-changes-once" in marks and not reworked
    if once or "request-changes-always" in marks:
        source = head.get("Source bead", "bead")
        feedback = "model server review: please rework this change"
        plan.append(
            Shell(
                f"gt request-changes --feedback {shlex.quote(feedback)} --file beads/{source}.md",
                "request changes",
            )
        )
    else:
        plan.append(Shell("gt done --summary 'model server review: approved'", "approve"))
    return plan


def _is_side(conv: Conversation) -> bool:
    """A CLI's side request (a session title, a commit message), not the agent's turn."""
    system = conv.system.lower()
    return "title generator" in system or "commit message" in system


def _side_answer(conv: Conversation) -> Reply:
    text = (conv.system + "\n" + "\n".join(conv.user_texts)).lower()
    if "commit message" in text:
        return Say("gastown: scripted change")
    if "title" in text:
        return Say("Gastown work")
    return Say("OK.")


def _title(prompt: str) -> str:
    for line in prompt.splitlines():
        if line.startswith(("# Task: ", "# Review: ")):
            return line.partition(": ")[2].strip()
    return "work"


def _rework_source(prompt: str) -> str | None:
    for line in prompt.splitlines():
        if line.startswith("Files named by the reviewer: beads/"):
            name = line.rpartition("beads/")[2].split(",")[0].strip()
            return name.removesuffix(".md") or None
    return None


# --- the server --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One request as received (credentials redacted) and the status answered."""

    api: str
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int
    at: float
    reply: str | None = None
    """What the script answered (the reply's type name), for model calls."""


@dataclass
class _Queued:
    status: int
    retry_after: float | None
    remaining: int


@dataclass
class ModelServer:
    """The scripted model server; `start()` it, point CLIs at `url`, read `requests`."""

    script: Script = town_script
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _failed: Counter[str] = field(default_factory=Counter)
    _queued: list[_Queued] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        """Base URL without /v1 (Claude Code's ANTHROPIC_BASE_URL form)."""
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def env(self) -> dict[str, str]:
        """Environment that points every supported CLI at this server."""
        return {
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": "sk-ant-scripted",
            "OPENAI_BASE_URL": f"{self.url}/v1",
            "OPENAI_API_BASE": f"{self.url}/v1",
            "OPENAI_API_KEY": "sk-scripted",
        }

    def start(self) -> ModelServer:
        """Listen (in a background thread) and return self."""
        handler = type("Handler", (_Handler,), {"model_server": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="model-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, status: int, count: int = 1, retry_after: float | None = None) -> None:
        """Answer the next `count` model calls (of any conversation) with `status`."""
        with self._lock:
            self._queued.append(_Queued(status, retry_after, count))

    def model_calls(self, api: str | None = None) -> list[Recorded]:
        """Recorded model requests (not probes), optionally of one API."""
        with self._lock:
            calls = [r for r in self.requests if r.reply is not None]
        return [r for r in calls if api is None or r.api == api]

    # --- used by the handler ---

    def record(self, entry: Recorded) -> None:
        """Keep one request."""
        with self._lock:
            self.requests.append(entry)

    def next_id(self) -> int:
        """A fresh number for response and call ids."""
        with self._lock:
            return next(self._ids)

    def decide(self, conv: Conversation) -> tuple[Reply, float]:
        """The reply to a model call and how long to stall in the middle of it."""
        with self._lock:
            for queued in self._queued:
                if queued.remaining > 0:
                    queued.remaining -= 1
                    return Fail(queued.status, "queued failure", queued.retry_after), 0.0
        marks = conv.directives
        if "fail" in marks:
            status, _, count = marks["fail"].partition("x")
            with self._lock:
                served = self._failed[conv.key]
                if not count or served < int(count):
                    self._failed[conv.key] += 1
                    code = int(status)
                    retry = _retry_after(marks) if code in (429, 529) else None
                    return Fail(code, f"scripted failure {code}", retry), 0.0
        slow = float(marks.get("slow") or 0) if "slow" in marks else 0.0
        return self.script(conv), slow


class _Handler(BaseHTTPRequestHandler):
    model_server: ModelServer
    protocol_version = "HTTP/1.1"
    server_version = "gastown-model-server"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: every request is recorded instead."""

    # --- routing ---

    def do_HEAD(self) -> None:
        self._record("probe", None, 200)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        path = self._path()
        if path == "/models":
            data = {"object": "list", "data": [{"id": "scripted", "object": "model"}]}
            self._record("probe", None, 200)
            self._json(200, data)
            return
        self._record("probe", None, 404)
        self._json(404, {"error": {"type": "not_found_error", "message": f"no GET {path}"}})

    def do_POST(self) -> None:
        path = self._path()
        body = self._body()
        if path == "/messages/count_tokens":
            self._record("anthropic", body, 200)
            self._json(200, {"input_tokens": max(1, len(json.dumps(body)) // 4)})
            return
        api: Api | None = {
            "/messages": "anthropic",
            "/responses": "responses",
            "/chat/completions": "chat",
        }.get(path)  # type: ignore[assignment]
        if api is None or not isinstance(body, dict):
            self._record("unknown", body, 404)
            self._json(404, {"error": {"type": "not_found_error", "message": f"no POST {path}"}})
            return
        conv = conversation(api, body)
        reply, slow = self.model_server.decide(conv)
        if isinstance(reply, Fail):
            self._record(api, body, reply.status, type(reply).__name__)
            self._fail(api, reply)
            return
        self._record(api, body, 200, type(reply).__name__)
        stream = bool(body.get("stream"))
        writer = _WRITERS[api](self, conv, reply, body)
        if stream:
            writer.stream(slow)
        else:
            if slow:
                time.sleep(slow)
            self._json(200, writer.whole())

    # --- helpers ---

    def _path(self) -> str:
        path = self.path.split("?", 1)[0].rstrip("/")
        return path.removeprefix("/v1") or "/"

    def _body(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(min(length, MAX_BODY)) if length else b""
        try:
            return json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return raw.decode(errors="replace")

    def _record(self, api: str, body: Any, status: int, reply: str | None = None) -> None:
        headers = {
            k.lower(): ("<redacted>" if k.lower() in SECRET_HEADERS else v)
            for k, v in self.headers.items()
        }
        entry = Recorded(api, self.command, self.path, headers, body, status, time.time(), reply)
        self.model_server.record(entry)

    def _json(self, status: int, doc: Any, extra: dict[str, str] | None = None) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _fail(self, api: Api, fail: Fail) -> None:
        extra = {}
        if fail.retry_after is not None:
            extra["retry-after"] = str(int(fail.retry_after) or 1)
        if api == "anthropic":
            kinds = {
                400: "invalid_request_error",
                401: "authentication_error",
                403: "permission_error",
                404: "not_found_error",
                429: "rate_limit_error",
                529: "overloaded_error",
            }
            kind = kinds.get(fail.status, "api_error")
            doc: dict[str, Any] = {
                "type": "error",
                "error": {"type": kind, "message": fail.message},
            }
        else:
            codes = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
            doc = {
                "error": {
                    "message": fail.message,
                    "type": "invalid_request_error" if fail.status < 500 else "server_error",
                    "code": codes.get(fail.status),
                    "param": None,
                }
            }
        self._json(fail.status, doc, extra)

    def sse_start(self) -> None:
        """Begin an event stream (chunked, so the CLI reads events as they come)."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

    def sse(self, data: Any, event: str | None = None) -> None:
        """One server-sent event."""
        text = (f"event: {event}\n" if event else "") + "data: "
        text += data if isinstance(data, str) else json.dumps(data)
        chunk = (text + "\n\n").encode()
        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        self.wfile.flush()

    def sse_end(self) -> None:
        """End the chunked stream."""
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


# --- reading conversations ---------------------------------------------------------------------


def conversation(api: Api, body: dict[str, Any]) -> Conversation:
    """Normalise one request body of any of the three APIs."""
    if api == "anthropic":
        return _anthropic_conversation(body)
    if api == "responses":
        return _responses_conversation(body)
    return _chat_conversation(body)


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    texts = []
    for block in content:
        if (
            isinstance(block, dict)
            and isinstance(block.get("text"), str)
            and block.get("type") in ("text", "input_text", "output_text", None)
        ):
            texts.append(block["text"])
    return texts


def _flatten(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(_texts(content))


def _anthropic_conversation(body: dict[str, Any]) -> Conversation:
    users: list[str] = []
    results: list[str] = []
    system_parts = _texts(body.get("system"))
    turns = 0
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), message.get("content")
        if role == "assistant":
            turns += 1
        elif role == "system":
            system_parts += _texts(content)
        elif role == "user":
            blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
            for block in blocks:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_result":
                    results.append(_flatten(block.get("content")))
                elif block.get("type") == "text" and isinstance(block.get("text"), str):
                    users.append(block["text"])
    tools = tuple(str(t.get("name")) for t in body.get("tools") or [] if isinstance(t, dict))
    return Conversation(
        "anthropic",
        str(body.get("model", "")),
        "\n".join(system_parts),
        tuple(users),
        tuple(results),
        turns,
        tools,
    )


def _responses_conversation(body: dict[str, Any]) -> Conversation:
    users: list[str] = []
    results: list[str] = []
    system = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    turns = 0
    tools = [str(t.get("name")) for t in body.get("tools") or [] if isinstance(t, dict)]
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    for item in items or []:
        if not isinstance(item, dict):
            continue
        kind, role = item.get("type"), item.get("role")
        if kind in ("function_call_output", "custom_tool_call_output"):
            output = item.get("output")
            results.append(output if isinstance(output, str) else _flatten(output))
        elif kind in ("function_call", "custom_tool_call"):
            continue
        elif kind == "additional_tools":
            tools += _namespace_tools(item.get("tools"))
        elif role in ("system", "developer"):
            system += _texts(item.get("content"))
        elif role == "assistant":
            turns += 1
        elif role == "user":
            users += _texts(item.get("content"))
    return Conversation(
        "responses",
        str(body.get("model", "")),
        "\n".join(system),
        tuple(u for u in users if not u.startswith("<environment_context>")),
        tuple(results),
        turns,
        tuple(tools),
    )


def _namespace_tools(tools: Any) -> list[str]:
    names: list[str] = []
    for tool in tools or []:
        if isinstance(tool, dict):
            names += (
                _namespace_tools(tool.get("tools")) if "tools" in tool else [str(tool.get("name"))]
            )
    return names


def _chat_conversation(body: dict[str, Any]) -> Conversation:
    users: list[str] = []
    results: list[str] = []
    system: list[str] = []
    turns = 0
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role == "tool":
            results.append(_flatten(message.get("content")))
        elif role == "system":
            system += _texts(message.get("content"))
        elif role == "assistant":
            turns += 1
        elif role == "user":
            users += _texts(message.get("content"))
    tools = tuple(
        str(t.get("function", {}).get("name"))
        for t in body.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    )
    return Conversation(
        "chat",
        str(body.get("model", "")),
        "\n".join(system),
        tuple(users),
        tuple(results),
        turns,
        tools,
    )


# --- mapping replies onto each CLI's tools ------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """A reply turned into one concrete tool call of the calling CLI."""

    name: str
    arguments: dict[str, Any]


def tool_call(conv: Conversation, reply: Shell | WriteFile) -> ToolCall | None:
    """The tool call that carries out `reply` with the tools the CLI offers (None: no tool)."""
    offered = set(conv.tools)
    if isinstance(reply, WriteFile):
        path = reply.path
        if conv.cwd and not path.startswith("/"):
            path = f"{conv.cwd.rstrip('/')}/{path}"
        if "Write" in offered and path.startswith("/"):
            return ToolCall("Write", {"file_path": path, "content": reply.content})
        if "write" in offered and path.startswith("/"):
            return ToolCall("write", {"filePath": path, "content": reply.content})
        directory = reply.path.rpartition("/")[0]
        mkdir = f"mkdir -p {shlex.quote(directory)} && " if directory else ""
        command = f"{mkdir}printf %s {shlex.quote(reply.content)} > {shlex.quote(reply.path)}"
        reply = Shell(command, f"write {reply.path}")
    if "Bash" in offered:
        return ToolCall("Bash", {"command": reply.command, "description": reply.description})
    if "bash" in offered:
        return ToolCall("bash", {"command": reply.command, "description": reply.description})
    if "exec_command" in offered:
        return ToolCall("exec_command", {"cmd": reply.command})
    if "shell_command" in offered:
        return ToolCall("shell_command", {"command": reply.command})
    if "shell" in offered:
        return ToolCall("shell", {"command": ["bash", "-c", reply.command]})
    return None


def aider_text(conv: Conversation, reply: Reply) -> str:
    """A reply in Aider's whole-file edit format (Aider has no tools: edits are text)."""
    if isinstance(reply, WriteFile):
        return f"{reply.path}\n```\n{reply.content}```\n"
    if isinstance(reply, Shell):
        return f"```bash\n{reply.command}\n```\n"
    assert isinstance(reply, Say)
    return reply.text


class _Writer:
    """Writes one reply in one API's format, streamed (SSE) or whole (JSON)."""

    def __init__(
        self, handler: _Handler, conv: Conversation, reply: Reply, body: dict[str, Any]
    ) -> None:
        self.h = handler
        self.conv = conv
        self.body = body
        self.n = handler.model_server.next_id()
        self.usage = usage_of(conv.directives)
        call = tool_call(conv, reply) if isinstance(reply, Shell | WriteFile) else None
        self.call = call
        if call is None and not isinstance(reply, Say):
            # No tool to carry it (Aider): edits become its text edit format.
            self.text = aider_text(conv, reply)
        elif isinstance(reply, Say):
            self.text = reply.text
        else:
            self.text = ""

    def stream(self, slow: float) -> None:
        """Write the reply as server-sent events."""
        raise NotImplementedError

    def whole(self) -> dict[str, Any]:
        """The reply as one JSON document."""
        raise NotImplementedError


class _AnthropicWriter(_Writer):
    def _message(self, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": f"msg_scripted_{self.n}",
            "type": "message",
            "role": "assistant",
            "model": self.conv.model or "scripted",
            "content": content,
            "stop_reason": "tool_use" if self.call else "end_turn",
            "stop_sequence": None,
            "usage": self._usage(self.usage.output),
        }

    def _usage(self, output: int) -> dict[str, int]:
        return {
            "input_tokens": self.usage.input,
            "cache_creation_input_tokens": self.usage.cache_write,
            "cache_read_input_tokens": self.usage.cache_read,
            "output_tokens": output,
        }

    def _blocks(self) -> list[dict[str, Any]]:
        if self.call is not None:
            return [
                {
                    "type": "tool_use",
                    "id": f"toolu_scripted_{self.n}",
                    "name": self.call.name,
                    "input": self.call.arguments,
                }
            ]
        return [{"type": "text", "text": self.text}]

    def whole(self) -> dict[str, Any]:
        return self._message(self._blocks())

    def stream(self, slow: float) -> None:
        h = self.h
        h.sse_start()
        start = self._message([])
        start["stop_reason"] = None
        start["usage"] = self._usage(1)
        h.sse({"type": "message_start", "message": start}, "message_start")
        h.sse({"type": "ping"}, "ping")
        if slow:
            time.sleep(slow)
        block = self._blocks()[0]
        if block["type"] == "tool_use":
            opening = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        else:
            opening = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        h.sse(
            {"type": "content_block_start", "index": 0, "content_block": opening},
            "content_block_start",
        )
        h.sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
        h.sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        h.sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if self.call else "end_turn"},
                "usage": {"output_tokens": self.usage.output},
            },
            "message_delta",
        )
        h.sse({"type": "message_stop"}, "message_stop")
        h.sse_end()


class _ResponsesWriter(_Writer):
    def _item(self, status: str) -> dict[str, Any]:
        if self.call is not None:
            arguments = json.dumps(self.call.arguments) if status == "completed" else ""
            return {
                "type": "function_call",
                "id": f"fc_scripted_{self.n}",
                "call_id": f"call_scripted_{self.n}",
                "name": self.call.name,
                "arguments": arguments,
                "status": status,
            }
        content = (
            [{"type": "output_text", "text": self.text, "annotations": []}]
            if status == "completed"
            else []
        )
        return {
            "type": "message",
            "id": f"msg_scripted_{self.n}",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    def _response(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": f"resp_scripted_{self.n}",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": self.conv.model or "scripted",
            "output": output,
            "error": None,
            "incomplete_details": None,
        }
        if status == "completed":
            usage = self.usage
            doc["usage"] = {
                "input_tokens": usage.input + usage.cache_read,
                "input_tokens_details": {"cached_tokens": usage.cache_read},
                "output_tokens": usage.output,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage.input + usage.cache_read + usage.output,
            }
        return doc

    def whole(self) -> dict[str, Any]:
        return self._response("completed", [self._item("completed")])

    def stream(self, slow: float) -> None:
        h = self.h
        seq = itertools.count()
        h.sse_start()

        def send(kind: str, **fields: Any) -> None:
            h.sse({"type": kind, "sequence_number": next(seq), **fields}, kind)

        send("response.created", response=self._response("in_progress", []))
        send("response.in_progress", response=self._response("in_progress", []))
        if slow:
            time.sleep(slow)
        item = self._item("completed")
        send("response.output_item.added", output_index=0, item=self._item("in_progress"))
        if self.call is not None:
            send(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=0,
                delta=item["arguments"],
            )
            send(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=0,
                arguments=item["arguments"],
            )
        else:
            part = {"type": "output_text", "text": "", "annotations": []}
            ids = {"item_id": item["id"], "output_index": 0, "content_index": 0}
            send("response.content_part.added", **ids, part=part)
            send("response.output_text.delta", **ids, delta=self.text, logprobs=[])
            send("response.output_text.done", **ids, text=self.text, logprobs=[])
            send("response.content_part.done", **ids, part={**part, "text": self.text})
        send("response.output_item.done", output_index=0, item=item)
        send("response.completed", response=self._response("completed", [item]))
        h.sse_end()


class _ChatWriter(_Writer):
    def _base(self) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-scripted-{self.n}",
            "created": int(time.time()),
            "model": self.conv.model or "scripted",
        }

    def _tool_calls(self) -> list[dict[str, Any]]:
        assert self.call is not None
        return [
            {
                "index": 0,
                "id": f"call_scripted_{self.n}",
                "type": "function",
                "function": {"name": self.call.name, "arguments": json.dumps(self.call.arguments)},
            }
        ]

    def _chat_usage(self) -> dict[str, Any]:
        usage = self.usage
        prompt = usage.input + usage.cache_read
        return {
            "prompt_tokens": prompt,
            "completion_tokens": usage.output,
            "total_tokens": prompt + usage.output,
            "prompt_tokens_details": {"cached_tokens": usage.cache_read},
        }

    def whole(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.call is not None:
            message["tool_calls"] = [
                {k: v for k, v in c.items() if k != "index"} for c in self._tool_calls()
            ]
        return {
            **self._base(),
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if self.call else "stop",
                }
            ],
            "usage": self._chat_usage(),
        }

    def stream(self, slow: float) -> None:
        h = self.h
        h.sse_start()

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            h.sse({**self._base(), "object": "chat.completion.chunk", "choices": [choice], **extra})

        chunk({"role": "assistant", "content": ""})
        if slow:
            time.sleep(slow)
        if self.call is not None:
            chunk({"tool_calls": self._tool_calls()})
        else:
            chunk({"content": self.text})
        chunk({}, "tool_calls" if self.call else "stop", usage=self._chat_usage())
        h.sse("[DONE]")
        h.sse_end()


_WRITERS: dict[Api, type[_Writer]] = {
    "anthropic": _AnthropicWriter,
    "responses": _ResponsesWriter,
    "chat": _ChatWriter,
}


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gastown.devtools.modelserver`: serve the town script until interrupted."""
    parser = argparse.ArgumentParser(prog="gastown.devtools.modelserver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--log", help="append every recorded request as a JSON line to this file")
    args = parser.parse_args(argv)
    server = ModelServer(host=args.host, port=args.port).start()
    print(f"model server listening on {server.url}", flush=True)
    for key, value in server.env().items():
        print(f"  {key}={value}", flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.5)
            with server._lock:
                fresh = server.requests[seen:]
                seen = len(server.requests)
            for entry in fresh:
                line = f"{entry.method} {entry.path} -> {entry.status} ({entry.reply or entry.api})"
                print(line, flush=True)
                if args.log:
                    with open(args.log, "a") as handle:
                        handle.write(json.dumps(entry.__dict__, default=str) + "\n")
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
