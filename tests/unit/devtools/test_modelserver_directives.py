"""The scripted model server's `slow=`, `hang` and `fail=401` directives over real HTTP."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from gastown.devtools.modelserver import ModelServer
from tests.unit.devtools.test_modelserver import PROMPT, anthropic, post, sse

DELAY = 1.0
DEADLINE = 10.0  # every read from the server gives up after this long


@pytest.fixture
def server() -> Iterator[ModelServer]:
    with ModelServer() as running:
        yield running


def _timed_post(server: ModelServer, path: str, body: dict[str, Any]) -> tuple[float, str]:
    """POST and measure how long the whole answer took."""
    begin = time.monotonic()
    status, _, text = post(server, path, body)
    assert status == 200, text
    return time.monotonic() - begin, text


# --- slow=<seconds> --------------------------------------------------------------------------


def test_slow_stalls_a_whole_reply(server: ModelServer) -> None:
    elapsed, text = _timed_post(
        server, "/v1/messages", anthropic(f"[model: slow={DELAY}]", stream=False)
    )
    assert elapsed >= DELAY
    assert json.loads(text)["content"][0]["name"] == "Write"  # the script still plays
    chat = {
        "model": "x",
        "messages": [{"role": "user", "content": PROMPT.format(extra=f"[model: slow={DELAY}]")}],
    }
    elapsed, _ = _timed_post(server, "/v1/chat/completions", chat)
    assert elapsed >= DELAY


def test_slow_stalls_in_the_middle_of_a_stream(server: ModelServer) -> None:
    # A slow turn as a CLI sees it: the stream opens at once, then nothing comes for a while.
    request = urllib.request.Request(
        server.url + "/v1/messages",
        data=json.dumps(anthropic(f"[model: slow={DELAY}]")).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=DEADLINE) as resp:
        assert resp.status == 200
        first = resp.readline().decode()
        opened = time.monotonic()
        rest = resp.read().decode()
        ended = time.monotonic()
    assert first.strip() == "event: message_start"
    assert ended - opened >= DELAY
    events = sse(first + rest)
    assert events[-1]["type"] == "message_stop"
    start = next(e for e in events if e["type"] == "content_block_start")
    assert start["content_block"]["name"] == "Write"


# --- hang ------------------------------------------------------------------------------------


def _hang_turn(server: ModelServer, nudges: list[str]) -> dict[str, Any]:
    """One Anthropic request of a `hang` conversation after the given nudges."""
    prompt = PROMPT.format(extra="[model: hang]")
    messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    for nudge in nudges:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": "..."}]})
        messages.append({"role": "user", "content": [{"type": "text", "text": nudge}]})
    body = {
        "model": "m",
        "messages": messages,
        "tools": [{"name": "Bash"}, {"name": "Write"}],
        "system": "Primary working directory: /workspace/repo",
    }
    status, _, text = post(server, "/v1/messages", body)
    assert status == 200, text
    reply: dict[str, Any] = json.loads(text)
    return reply


def test_hang_makes_no_tool_call_until_a_finish_nudge(server: ModelServer) -> None:
    first = _hang_turn(server, [])
    assert first["stop_reason"] == "end_turn"
    assert [b["type"] for b in first["content"]] == ["text"]
    nudged = _hang_turn(server, ["GUPP: you have work on your hook"])
    assert nudged["stop_reason"] == "end_turn"
    assert nudged["content"][0]["text"].startswith("Received: GUPP")
    released = _hang_turn(server, ["GUPP: you have work on your hook", "go [model: finish]"])
    assert released["stop_reason"] == "tool_use"
    assert released["content"][0]["name"] == "Write"
    assert [r.reply for r in server.model_calls()] == ["Say", "Say", "WriteFile"]


# --- fail=401 --------------------------------------------------------------------------------


def test_fail_401_is_an_authentication_error_on_every_request(server: ModelServer) -> None:
    body = anthropic("[model: fail=401]", stream=False)
    for _ in range(2):  # no count: every request of the conversation fails
        status, headers, text = post(server, "/v1/messages", body)
        assert status == 401
        assert "retry-after" not in {k.lower() for k in headers}
        doc = json.loads(text)
        assert doc["type"] == "error"
        assert doc["error"]["type"] == "authentication_error"
    chat = {
        "model": "x",
        "messages": [{"role": "user", "content": PROMPT.format(extra="[model: fail=401]")}],
    }
    status, _, text = post(server, "/v1/chat/completions", chat)
    assert status == 401
    assert json.loads(text)["error"]["code"] == "invalid_api_key"
    assert [(r.status, r.reply) for r in server.model_calls()] == [(401, "Fail")] * 3
