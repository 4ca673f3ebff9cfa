"""Prompts carry the bead, the rework context, the checkpoint and the role's gt instructions."""

from __future__ import annotations

from pathlib import Path

from gastown.agent.prompt import ReviewContext, polecat_prompt, review_prompt
from gastown.model.bead import MergeRequestSpec
from gastown.model.enums import AgentRole
from tests.unit.agent.conftest import Remote, issue_order, make_identity, mr_order, rework_order


def test_issue_prompt(remote: Remote, tmp_path: Path) -> None:
    order = issue_order(remote, description="Add a greeting.")
    text = polecat_prompt(make_identity(tmp_path), order, "gt/polecat-1/bead-a")
    assert text.startswith("Bead: bead-a\nRole: polecat\n")
    assert "# Task: Do bead-a" in text
    assert "Add a greeting." in text
    assert "gt done --summary" in text
    assert "gt checkpoint" in text
    assert "You were restarted" not in text


def test_rework_prompt_has_feedback_files_and_checkpoint(remote: Remote, tmp_path: Path) -> None:
    order = rework_order(remote, "gt/polecat-9/bead-a")
    text = polecat_prompt(
        make_identity(tmp_path), order, "gt/polecat-9/bead-a", '{"step": 2}', ("hurry up",)
    )
    assert "please add tests" in text
    assert "beads/bead-a.md" in text
    assert "Branch under review: gt/polecat-9/bead-a" in text
    assert '{"step": 2}' in text
    assert "# Messages from the town\n- hurry up" in text


def test_review_prompt(remote: Remote, tmp_path: Path) -> None:
    order = mr_order(remote, "gt/p/x", source_description="Make it fast.")
    mr = MergeRequestSpec(source_bead="bead-a", branch="gt/p/x", target_branch="main")
    ident = make_identity(tmp_path, role=AgentRole.REFINERY, agent="refinery")
    text = review_prompt(ident, order, ReviewContext(mr, "abc123", "all tests passed"))
    assert "Target commit: abc123" in text
    assert "Make it fast." in text
    assert "gt request-changes" in text
    assert "all tests passed" in text
