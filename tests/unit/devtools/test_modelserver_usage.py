"""The scripted model server reports scripted usage and rate limits with a retry-after."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from gastown.devtools.modelserver import ModelServer

PROMPT = "Bead: b1\nRole: polecat\n\n# Task: x\n\n[model: {}]"


def post(server: ModelServer, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        f"{server.url}{path}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def test_usage_directive_in_each_api() -> None:
    text = PROMPT.format("usage=100/20/300/40")
    with ModelServer() as server:
        _, _, anthropic = post(
            server, "/v1/messages", {"model": "m", "messages": [{"role": "user", "content": text}]}
        )
        _, _, responses = post(server, "/v1/responses", {"model": "m", "input": text})
        _, _, chat = post(
            server,
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": text}]},
        )
    assert anthropic["usage"] == {
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_read_input_tokens": 300,
        "cache_creation_input_tokens": 40,
    }
    assert responses["usage"]["input_tokens"] == 400
    assert responses["usage"]["input_tokens_details"] == {"cached_tokens": 300}
    assert chat["usage"]["prompt_tokens"] == 400
    assert chat["usage"]["completion_tokens"] == 20


@pytest.mark.parametrize(
    ("marks", "expected"), [("fail=429", "1"), ("fail=429, retry-after=30", "30")]
)
def test_rate_limit_carries_retry_after(marks: str, expected: str) -> None:
    text = PROMPT.format(marks)
    with ModelServer() as server:
        status, headers, body = post(
            server, "/v1/messages", {"model": "m", "messages": [{"role": "user", "content": text}]}
        )
    assert status == 429
    assert {k.lower(): v for k, v in headers.items()}["retry-after"] == expected
    assert body["error"]["type"] == "rate_limit_error"
