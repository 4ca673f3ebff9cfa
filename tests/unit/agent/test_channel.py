"""FileChannel and the shared channel rules; identity from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from gastown.agent.channel import (
    ChannelError,
    FileChannel,
    NoHookError,
    RedactingChannel,
    ReportDraft,
    StaleGenerationError,
    add_report,
    open_channel,
    pending_nudges,
)
from gastown.agent.identity import IdentityError, from_env
from gastown.model.agent import Activity, AgentSpec, AgentStatus, Nudge
from gastown.model.enums import AgentRole, ReportType
from tests.unit.agent.conftest import NOW, ChannelFactory, Remote, issue_order, make_identity

DONE = ReportDraft(type=ReportType.DONE, bead="bead-a")


def test_reports_get_increasing_seq_and_own_generation(
    remote: Remote, tmp_path: Path, channel_file: ChannelFactory
) -> None:
    path = channel_file(issue_order(remote), generation=4)
    channel = FileChannel(path, make_identity(tmp_path, generation=4))
    first = channel.append_report(DONE)
    second = channel.append_report(ReportDraft(type=ReportType.ESCALATE, message="help"))
    assert (first.seq, second.seq) == (1, 2)
    assert first.generation == second.generation == 4
    assert first.at.tzinfo is not None
    assert [r.seq for r in FileChannel.load(path).status.reports] == [1, 2]


def test_seq_continues_after_applied_reports_were_trimmed() -> None:
    status = AgentStatus(applied_report_seq=41)
    status, report = add_report(status, DONE, 1, NOW)
    assert report.seq == 42


def test_full_report_list_drops_applied_reports_only() -> None:
    status = AgentStatus()
    for _ in range(64):
        status, _ = add_report(status, DONE, 1, NOW)
    with pytest.raises(ChannelError, match="full"):
        add_report(status, DONE, 1, NOW)
    status = status.model_copy(update={"applied_report_seq": 10})
    status, report = add_report(status, DONE, 1, NOW)
    assert report.seq == 65
    assert len(status.reports) == 64
    assert status.reports[0].seq == 2


def test_long_texts_are_clipped_to_fit() -> None:
    draft = ReportDraft(type=ReportType.FAILED, message="x" * 10000, files=("f",) * 200)
    _, report = add_report(AgentStatus(), draft, 1, NOW)
    assert report.message is not None
    assert len(report.message) == 4096
    assert len(report.files) == 100


def test_writes_from_a_stale_generation_are_refused(
    remote: Remote, tmp_path: Path, channel_file: ChannelFactory
) -> None:
    path = channel_file(issue_order(remote), generation=2)
    channel = FileChannel(path, make_identity(tmp_path, generation=1))
    with pytest.raises(StaleGenerationError):
        channel.append_report(DONE)
    with pytest.raises(StaleGenerationError):
        channel.write_activity(Activity(generation=1))
    assert FileChannel.load(path).status.reports == []


def test_nudges_are_pending_until_acknowledged(
    remote: Remote, tmp_path: Path, channel_file: ChannelFactory
) -> None:
    path = channel_file(issue_order(remote))
    channel = FileChannel(path, make_identity(tmp_path))
    for nudge_id in ("b", "a"):
        FileChannel.post_nudge(
            path, Nudge(id=nudge_id, message=nudge_id, source="t", created_at=NOW)
        )
    view = channel.read_agent()
    assert [n.id for n in pending_nudges(view.spec, view.status)] == ["a", "b"]
    channel.ack_nudge("a")
    channel.ack_nudge("a")
    view = channel.read_agent()
    assert view.status.delivered_nudges == ["a"]
    assert [n.id for n in pending_nudges(view.spec, view.status)] == ["b"]


def test_work_order_round_trip_and_no_hook(
    remote: Remote, tmp_path: Path, channel_file: ChannelFactory
) -> None:
    order = issue_order(remote, gates=("make test",), review=True, bead_uid="u-1")
    path = channel_file(order, generation=3)
    read = FileChannel(path, make_identity(tmp_path, generation=3)).read_work_order()
    assert read == type(order)(**{**order.__dict__, "generation": 3})
    FileChannel.update_spec(path, lambda s: s.model_copy(update={"hook": None}))
    with pytest.raises(NoHookError):
        FileChannel(path, make_identity(tmp_path, generation=3)).read_work_order()


def test_status_and_checkpoint_limits(
    remote: Remote, tmp_path: Path, channel_file: ChannelFactory
) -> None:
    channel = FileChannel(channel_file(issue_order(remote)), make_identity(tmp_path))
    with pytest.raises(ValueError, match="JSON"):
        channel.set_checkpoint("{")
    with pytest.raises(ValueError, match="1024"):
        channel.set_status_message("x" * 1025)


def test_open_channel_choices(tmp_path: Path) -> None:
    ident = make_identity(tmp_path, channel=tmp_path / "a.json")
    opened = open_channel(ident)
    assert isinstance(opened, RedactingChannel)  # nothing written through it skips redaction
    assert isinstance(opened.inner, FileChannel)
    from dataclasses import replace

    with pytest.raises(ChannelError, match="not understood"):
        open_channel(replace(ident, channel="http://x"))


def test_identity_from_env() -> None:
    env = {
        "GASTOWN_TOWN": "t",
        "GASTOWN_NAMESPACE": "ns",
        "GASTOWN_AGENT": "polecat-1",
        "GASTOWN_ROLE": "polecat",
        "GASTOWN_RIG": "rig",
        "GASTOWN_GENERATION": "7",
        "GASTOWN_BEAD": "bead-a",
        "GASTOWN_HEARTBEAT_SECONDS": "15",
    }
    ident = from_env(env)
    assert (ident.role, ident.generation, ident.heartbeat_seconds) == (AgentRole.POLECAT, 7, 15.0)
    assert ident.effective_idle_timeout == 120.0
    assert from_env(ident.to_env()) == ident
    with pytest.raises(IdentityError, match="GASTOWN_TOWN"):
        from_env({k: v for k, v in env.items() if k != "GASTOWN_TOWN"})
    with pytest.raises(IdentityError, match="role"):
        from_env({**env, "GASTOWN_ROLE": "king"})
    with pytest.raises(IdentityError, match="integer"):
        from_env({**env, "GASTOWN_GENERATION": "x"})
    with pytest.raises(IdentityError, match="GASTOWN_RIG"):
        from_env({k: v for k, v in env.items() if k != "GASTOWN_RIG"})
    refinery = from_env({**env, "GASTOWN_ROLE": "refinery"})
    assert refinery.effective_idle_timeout == 600.0


def test_agent_spec_round_trip_in_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    FileChannel.create(path, AgentSpec(town="t", role=AgentRole.REFINERY, rig="r"), None)
    assert FileChannel.load(path).spec.role is AgentRole.REFINERY
