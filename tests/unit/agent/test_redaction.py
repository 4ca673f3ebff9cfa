"""Redaction in the agent pod: the redactor, where its values come from, the channel, the logs."""

from __future__ import annotations

import base64
import io
import json
import logging
import urllib.parse
from pathlib import Path

import pytest

from gastown.agent.channel import (
    MAX_REPORT_TEXT,
    FileChannel,
    RedactingChannel,
    ReportDraft,
    add_report,
)
from gastown.agent.redaction import (
    REDACTED,
    RedactingFilter,
    Redactor,
    directory_values,
    from_environment,
    install_log_redaction,
)
from gastown.agent.refinery import OUTPUT_TAIL, run_gates
from gastown.model.agent import Activity, AgentStatus
from gastown.model.enums import ReportType
from tests.unit.agent.conftest import NOW, ChannelFactory, Remote, issue_order, make_identity

SECRET = "sk-ant-api03-Zq9vWm2LpX7rT4yBnC8dKe"


@pytest.fixture
def redactor() -> Redactor:
    return Redactor([SECRET])


# --- the redactor ---------------------------------------------------------------------------


def test_literal_values_are_replaced_everywhere(redactor: Redactor) -> None:
    text = f"key={SECRET}; again {SECRET}."
    assert redactor.redact(text) == f"key={REDACTED}; again {REDACTED}."


@pytest.mark.parametrize("prefix", [b"", b"K", b"KE", b"KEY=", b"export KEY="])
def test_base64_is_replaced_at_every_alignment(redactor: Redactor, prefix: bytes) -> None:
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        printed = encode(prefix + SECRET.encode() + b"\n").decode()
        redacted = redactor.redact(printed)
        assert REDACTED in redacted
        # What is left encodes only the prefix, the newline and the bytes at the seams.
        left = redacted.replace(REDACTED, "")
        assert len(left) <= len(encode(prefix)) + 8, (printed, redacted)


def test_escaped_and_encoded_forms_are_replaced() -> None:
    value = 'pa"ss/wo rd\\x'
    redactor = Redactor([value])
    assert value not in redactor.redact(value)
    assert json.dumps(value)[1:-1] not in redactor.redact(json.dumps({"v": value}))
    assert urllib.parse.quote(value, safe="") not in redactor.redact(
        "https://h/?t=" + urllib.parse.quote(value, safe="")
    )


def test_each_line_of_a_multiline_value_is_a_secret() -> None:
    key = "-----BEGIN KEY-----\nAAAAB3NzaC1yc2EAAAADAQAB\nZZZZ9876543210abcdef\n-----END KEY-----\n"
    redactor = Redactor([key])
    printed = "line one\nAAAAB3NzaC1yc2EAAAADAQAB\nthen ZZZZ9876543210abcdef"
    assert redactor.redact(printed) == f"line one\n{REDACTED}\nthen {REDACTED}"


def test_short_values_are_ignored_and_short_ones_not_encoded() -> None:
    assert not Redactor(["", "abc", "  \n"])
    redactor = Redactor(["abcd"])
    assert redactor.redact("xabcdx") == f"x{REDACTED}x"
    # base64("abcd") is "YWJjZA==": too short to tell apart from ordinary text, kept.
    assert redactor.redact("YWJjZA==") == "YWJjZA=="


def test_no_secrets_costs_nothing_and_changes_nothing() -> None:
    empty = Redactor()
    body = {"a": ["x", {"b": 1}]}
    assert empty.redact_json(body) is body
    assert empty.redact("text") == "text"


def test_json_walk_redacts_strings_and_keeps_keys_and_other_values(redactor: Redactor) -> None:
    body = {SECRET: [SECRET, 3, None, True, {"m": f"a {SECRET}"}]}
    assert redactor.redact_json(body) == {SECRET: [REDACTED, 3, None, True, {"m": f"a {REDACTED}"}]}


def test_extended_adds_values_and_keeps_identity_when_nothing_is_new(redactor: Redactor) -> None:
    assert redactor.extended([SECRET, "ab"]) is redactor
    both = redactor.extended(["token-0123456789"])
    assert both.redact(f"{SECRET} token-0123456789") == f"{REDACTED} {REDACTED}"


# --- where the values come from -------------------------------------------------------------


def test_from_environment_reads_named_variables_credentials_and_token(tmp_path: Path) -> None:
    creds = tmp_path / "git"
    (creds / "..data").mkdir(parents=True)
    (creds / "username").write_text("octobot")
    (creds / "known_hosts").write_text("github.com ssh-ed25519 AAAAC3Nza")
    (creds / "token").write_text("ghp_gitToken1234567\n")
    (creds / "..data" / "token").write_text("ghp_gitToken1234567\n")
    token_file = tmp_path / "pr-token"
    token_file.write_text("glpat-prToken7654321")
    env = {
        "GASTOWN_SECRET_ENV": "ANTHROPIC_API_KEY, OPENAI_API_KEY,MISSING",
        "ANTHROPIC_API_KEY": SECRET,
        "OPENAI_API_KEY": "sk-openai-000111222",
        "PLAIN": "not-a-secret-value",
        "GASTOWN_GIT_CREDENTIALS_DIR": str(creds),
        "GASTOWN_PR_TOKEN_FILE": str(token_file),
    }
    redactor = from_environment(env)
    assert redactor.values == {
        SECRET,
        "sk-openai-000111222",
        "ghp_gitToken1234567\n",
        "ghp_gitToken1234567",
        "glpat-prToken7654321",
    }
    assert redactor.redact("octobot not-a-secret-value") == "octobot not-a-secret-value"


def test_unreadable_sources_are_skipped(tmp_path: Path) -> None:
    env = {
        "GASTOWN_GIT_CREDENTIALS_DIR": str(tmp_path / "absent"),
        "GASTOWN_PR_TOKEN_FILE": str(tmp_path / "absent-token"),
    }
    assert not from_environment(env)
    assert directory_values(tmp_path / "absent") == []


# --- the channel ----------------------------------------------------------------------------


def _channel(remote: Remote, tmp_path: Path, channel_file: ChannelFactory) -> RedactingChannel:
    path = channel_file(issue_order(remote))
    return RedactingChannel(FileChannel(path, make_identity(tmp_path)), Redactor([SECRET]))


def test_every_report_field_is_redacted(
    remote: Remote, tmp_path: Path, channel_file: ChannelFactory
) -> None:
    channel = _channel(remote, tmp_path, channel_file)
    channel.append_report(
        ReportDraft(
            type=ReportType.REQUEST_CHANGES,
            bead="bead-a",
            branch=f"gt/{SECRET}",
            summary=f"s {SECRET}",
            feedback=f"f {SECRET}",
            files=(f"{SECRET}.py", "ok.py"),
            message=f"m {SECRET}",
        )
    )
    status = channel.read_agent().status
    assert SECRET not in status.model_dump_json()
    [report] = status.reports
    assert report.files == [f"{REDACTED}.py", "ok.py"]
    assert report.feedback == f"f {REDACTED}"


def test_status_message_checkpoint_and_activity_are_redacted(
    remote: Remote, tmp_path: Path, channel_file: ChannelFactory
) -> None:
    channel = _channel(remote, tmp_path, channel_file)
    channel.set_status_message(f"using {SECRET}")
    tricky = Redactor([SECRET, 'say "hi"\\now'])
    channel.redactor = tricky
    checkpoint = json.dumps({"notes": [f"key {SECRET}", 'say "hi"\\now'], "n": 1})
    channel.set_checkpoint(checkpoint)
    channel.write_activity(Activity(generation=1, last_heartbeat_at=NOW, last_event_type=SECRET))
    status = channel.read_agent().status
    assert status.status_message == f"using {REDACTED}"
    assert json.loads(status.checkpoint or "") == {"notes": [f"key {REDACTED}", REDACTED], "n": 1}
    assert status.activity is not None
    assert status.activity.last_event_type == REDACTED


def test_redaction_runs_before_the_clip_so_no_half_secret_survives(redactor: Redactor) -> None:
    from gastown.agent.channel import redact_draft

    message = "x" * (MAX_REPORT_TEXT - 10) + SECRET + "tail"
    draft = redact_draft(ReportDraft(type=ReportType.FAILED, message=message), redactor)
    _, report = add_report(AgentStatus(), draft, 1, NOW)
    assert report.message is not None
    assert len(report.message) <= MAX_REPORT_TEXT
    assert SECRET[:8] not in report.message


# --- gate output ------------------------------------------------------------------------------


def test_gate_output_is_redacted_before_it_is_cut_and_stays_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redactor: Redactor
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    # A megabyte of output; unredacted, the kept tail would start with the secret's last 18
    # characters (then a line of y, then the secret's base64: 1 + N+1 + 53 characters).
    gate = (
        'yes filler | head -c 1000000; echo "$ANTHROPIC_API_KEY"; '
        f'printf "%{OUTPUT_TAIL - 73}s\\n" "" | tr " " "y"; '
        'echo "$ANTHROPIC_API_KEY" | base64; exit 1'
    )
    result = run_gates(tmp_path, [gate], redactor=redactor)
    assert not result.ok
    assert len(result.output) <= OUTPUT_TAIL
    assert SECRET[-10:] not in result.output
    assert base64.b64encode(SECRET.encode()).decode()[:20] not in result.output
    assert result.output.count(REDACTED) == 2


# --- logs ---------------------------------------------------------------------------------------


def test_log_records_messages_arguments_and_tracebacks_are_redacted(redactor: Redactor) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(lambda: redactor))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("token %s in %r", SECRET, {"k": SECRET})
        try:
            raise ValueError(f"bad key {SECRET}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert SECRET not in output
    assert "ValueError: bad key ***" in output


def test_install_log_redaction_filters_root_handlers_once(redactor: Redactor) -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)
    try:
        install_log_redaction(lambda: redactor)
        install_log_redaction(lambda: redactor)
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    finally:
        root.removeHandler(handler)
