"""The scripted model server over real HTTP: the three APIs, failures, recording."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from gastown.devtools.modelserver import ModelServer

PROMPT = "Bead: b1\nRole: polecat\nBranch: gt/p/b1\n\n# Task: Greet\n\n{extra}\n"


@pytest.fixture
def server() -> Iterator[ModelServer]:
    with ModelServer() as running:
        yield running


def post(server: ModelServer, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(
        server.url + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-api-key": "sk-secret"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def sse(text: str) -> list[dict[str, Any]]:
    return [
        json.loads(line[6:])
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def anthropic(extra: str = "", results: int = 0, stream: bool = True) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": PROMPT.format(extra=extra)}]}
    ]
    for i in range(results):
        messages.append({"role": "assistant", "content": [{"type": "tool_use", "id": f"t{i}"}]})
        messages.append(
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}"}]}
        )
    tools = [{"name": "Bash"}, {"name": "Write"}]
    system = "Primary working directory: /workspace/repo"
    return {"model": "m", "messages": messages, "tools": tools, "system": system, "stream": stream}


def test_anthropic_plays_the_polecat_steps(server: ModelServer) -> None:
    status, _, text = post(server, "/v1/messages", anthropic())
    assert status == 200
    events = sse(text)
    start = next(e for e in events if e["type"] == "content_block_start")
    assert start["content_block"]["name"] == "Write"
    delta = next(e for e in events if e["type"] == "content_block_delta")["delta"]
    assert json.loads(delta["partial_json"])["file_path"] == "/workspace/repo/beads/b1.md"
    _, _, text = post(server, "/v1/messages", anthropic(results=2, stream=False))
    block = json.loads(text)["content"][0]
    assert block["name"] == "Bash"
    assert block["input"]["command"].startswith("gt done")
    _, _, text = post(server, "/v1/messages", anthropic(results=3, stream=False))
    assert json.loads(text)["content"][0]["type"] == "text"
    assert [r.reply for r in server.model_calls()] == ["WriteFile", "Shell", "Say"]
    assert server.requests[0].headers["x-api-key"] == "<redacted>"


def test_responses_and_chat_map_onto_their_tools(server: ModelServer) -> None:
    body = {
        "model": "gpt-5",
        "stream": True,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": PROMPT}]}],
        "tools": [{"type": "function", "name": "exec_command"}],
    }
    _, _, text = post(server, "/v1/responses", body)
    events = sse(text)
    assert events[-1]["type"] == "response.completed"
    item = events[-1]["response"]["output"][0]
    assert item["name"] == "exec_command"
    assert "beads/b1.md" in json.loads(item["arguments"])["cmd"]
    chat = {"model": "x", "messages": [{"role": "user", "content": PROMPT}], "stream": False}
    _, _, text = post(server, "/chat/completions", chat)
    content = json.loads(text)["choices"][0]["message"]["content"]
    assert content.startswith("beads/b1.md\n```\n")  # Aider's whole-file edit format


def test_failures_from_directives_and_queue(server: ModelServer) -> None:
    body = anthropic("[model: fail=429x2]", stream=False)
    first, headers, text = post(server, "/v1/messages", body)
    assert first == 429
    assert headers["retry-after"] == "1"
    assert json.loads(text)["error"]["type"] == "rate_limit_error"
    assert post(server, "/v1/messages", body)[0] == 429
    assert post(server, "/v1/messages", body)[0] == 200
    server.fail_next(500)
    assert post(server, "/v1/messages", body)[0] == 500
    assert post(server, "/v1/messages", body)[0] == 200
    assert [r.status for r in server.model_calls()] == [429, 429, 200, 500, 200]


def test_reviewer_requests_changes_once(server: ModelServer) -> None:
    prompt = "Bead: mr\nRole: refinery\nSource bead: b1\nTarget commit: abc\n\n"
    prompt += "[model: request-changes-once]"

    def turn(output: str) -> str:
        messages = [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t"}]},
            {"role": "user", "content": [{"type": "tool_result", "content": output}]},
        ]
        body = {"model": "m", "messages": messages, "tools": [{"name": "Bash"}]}
        command: str = json.loads(post(server, "/v1/messages", body)[2])["content"][0]["input"][
            "command"
        ]
        return command

    assert turn("b1: Greet").startswith("gt request-changes")
    assert turn("rework: b1\nb1: Greet").startswith("gt done")
