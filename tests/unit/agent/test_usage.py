"""Usage and rate limits read from real CLI output (recorded against the scripted model server).

Recordings (versions in images/cli-versions.env), each a polecat session with the model server's
`usage=1200/300/5000/800` directive (`*-usage*`: 1200 input, 300 output, 5000 cache-read and 800
cache-write tokens per model call) or `fail=429, retry-after=7` (`*-429*`: every call refused).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gastown.agent.adapters import AgentEvent, UsageMeter, UsageSample, adapter_for, aider_usage
from gastown.model.enums import CodingAgentKind, ReportType
from gastown.model.spend import Usage
from gastown.model.town import CodingAgent
from tests.unit.agent.conftest import Remote, issue_order
from tests.unit.agent.test_runtime import Agent, start  # noqa: F401 - the fixture

DATA = Path(__file__).parent / "data"
REPLAY = str(Path(__file__).parent / "replay_cli.py")


def events(kind: CodingAgentKind, fixture: str) -> list[AgentEvent]:
    adapter = adapter_for(CodingAgent(kind=kind))
    return [e for line in (DATA / fixture).read_text().splitlines() for e in adapter.parse(line)]


def metered(kind: CodingAgentKind, fixture: str) -> Usage:
    meter = UsageMeter("configured-model")
    for event in events(kind, fixture):
        if event.usage is not None:
            meter.add(event.usage)
    return meter.total


def test_claude_code_reports_tokens_and_cost_per_result() -> None:
    # Four model calls of 1200/300/5000/800; the CLI prices them itself (costBasis "list").
    usage = metered(CodingAgentKind.CLAUDE_CODE, "claude-usage.jsonl")
    assert (usage.input_tokens, usage.output_tokens) == (4800, 1200)
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (20000, 3200)
    assert usage.cost_reported
    assert usage.cost_usd == pytest.approx(0.0632)
    assert usage.model == "claude-opus-5-5"
    assert usage.turns == 4  # the result's num_turns: four model calls in one prompt


def test_claude_code_results_are_increments_across_queued_turns() -> None:
    # Two results in one process: model_usage_since_last_result is per result, total_cost_usd
    # is the running total (0.00096, then 0.0012): the meter adds the increments.
    usage = metered(CodingAgentKind.CLAUDE_CODE, "claude-nudge.jsonl")
    assert usage.cost_usd == pytest.approx(0.0012)
    # num_turns is per result as well (4 for the task, 1 for the nudge): they add up.
    assert usage.turns == 5


def test_claude_code_turns_without_num_turns_count_one_per_result() -> None:
    line = next(
        line
        for line in (DATA / "claude-usage.jsonl").read_text().splitlines()
        if '"type":"result"' in line.replace(" ", "")
    )
    doc = json.loads(line)
    assert doc["num_turns"] == 4
    del doc["num_turns"]
    adapter = adapter_for(CodingAgent(kind=CodingAgentKind.CLAUDE_CODE))
    samples = [e.usage for e in adapter.parse(json.dumps(doc)) if e.usage is not None]
    assert [s.turns for s in samples] == [1]


def test_codex_input_tokens_include_the_cached_ones() -> None:
    usage = metered(CodingAgentKind.CODEX, "codex-usage.jsonl")
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (1200, 5000, 300)
    assert not usage.cost_reported  # priced by the operator from the Town's price table
    assert usage.model == "configured-model"


def test_opencode_reports_tokens_and_cost_per_step() -> None:
    usage = metered(CodingAgentKind.OPENCODE, "opencode-usage.jsonl")
    assert (usage.input_tokens, usage.output_tokens) == (4800, 1200)
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (20000, 3200)
    assert usage.cost_reported
    assert usage.cost_usd == pytest.approx(0.0504)


def test_aider_reports_rounded_tokens() -> None:
    usage = metered(CodingAgentKind.AIDER, "aider-usage.txt")
    assert (usage.input_tokens, usage.output_tokens) == (6200, 300)
    sample = aider_usage("Tokens: 2.5k sent, 1.2k cache hit, 1.5M received. Cost: $0.12 message")
    assert sample is not None
    assert (sample.input_tokens, sample.cache_read_tokens, sample.output_tokens) == (
        1300,
        1200,
        1_500_000,
    )
    assert sample.cost_usd == pytest.approx(0.12)


@pytest.mark.parametrize(
    ("kind", "fixture", "retry_after"),
    [
        (CodingAgentKind.CLAUDE_CODE, "claude-429.jsonl", 8.103),  # its own retry delay
        (CodingAgentKind.CODEX, "codex-429.jsonl", None),
        (CodingAgentKind.OPENCODE, "opencode-429.jsonl", 7.0),  # the retry-after header
        (CodingAgentKind.AIDER, "aider-429.txt", None),
    ],
)
def test_rate_limits_are_recognised(
    kind: CodingAgentKind, fixture: str, retry_after: float | None
) -> None:
    errors = [e for e in events(kind, fixture) if e.error is not None]
    assert errors
    assert errors[-1].rate_limited
    assert not any(e.progress for e in errors)
    hints = [e.retry_after for e in errors if e.retry_after is not None]
    assert (hints[-1] if hints else None) == retry_after


def test_other_api_errors_are_not_rate_limits() -> None:
    for kind, fixture in (
        (CodingAgentKind.CLAUDE_CODE, "claude-401.jsonl"),
        (CodingAgentKind.CODEX, "codex-401.jsonl"),
        (CodingAgentKind.OPENCODE, "opencode-401.jsonl"),
        (CodingAgentKind.AIDER, "aider-401.txt"),
    ):
        errors = [e for e in events(kind, fixture) if e.error is not None]
        assert errors, fixture
        assert not any(e.rate_limited for e in errors), fixture


def test_meter_adds_increments_and_keeps_the_largest_cumulative_reading() -> None:
    meter = UsageMeter("m")
    meter.add(UsageSample(input_tokens=10, cost_usd=0.5, cumulative=True))
    meter.add(UsageSample(input_tokens=8, cost_usd=0.4, cumulative=True))  # stale reading
    assert (meter.total.input_tokens, meter.total.cost_usd) == (10, 0.5)
    meter.restart()  # a new process (a nudge restart): its totals add to the first one's
    meter.add(UsageSample(input_tokens=5, cost_usd=0.25, cumulative=True))
    meter.add(UsageSample(output_tokens=7))
    assert (meter.total.input_tokens, meter.total.output_tokens) == (15, 7)
    assert meter.total.cost_usd == pytest.approx(0.75)


def test_claude_rate_limit_becomes_a_rate_limited_report(
    start: Callable[..., Agent],  # noqa: F811 - the imported fixture
    remote: Remote,
) -> None:
    command = [sys.executable, REPLAY, str(DATA / "claude-429.jsonl"), "--exit", "1"]
    coding = CodingAgent(kind=CodingAgentKind.CLAUDE_CODE, command=command)
    agent = start(issue_order(remote, coding_agent=coding))
    assert agent.wait() == 1, agent.output()
    [report] = agent.view().status.reports
    assert report.type is ReportType.RATE_LIMITED
    assert report.rate_limit is not None
    assert report.rate_limit.status == 429
    assert report.rate_limit.retry_after_seconds == 8
    assert report.message is not None
    assert "429" in report.message


def test_usage_reaches_the_reports(
    start: Callable[..., Agent],  # noqa: F811 - the imported fixture
    remote: Remote,
) -> None:
    # The session ends without `gt done`: the `exited` report carries the session's usage.
    command = [sys.executable, REPLAY, str(DATA / "claude-usage.jsonl")]
    coding = CodingAgent(kind=CodingAgentKind.CLAUDE_CODE, command=command)
    agent = start(issue_order(remote, coding_agent=coding))
    assert agent.wait() == 0, agent.output()
    reports = agent.view().status.reports
    assert [r.type for r in reports] == [ReportType.EXITED]
    usage = reports[0].usage
    assert usage is not None
    assert usage.cost_usd == pytest.approx(0.0632)
    assert usage.tokens == 4800 + 1200 + 20000 + 3200
