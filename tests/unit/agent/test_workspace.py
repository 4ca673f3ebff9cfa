"""Workspace branch rules against a real bare repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gastown.agent import workspace
from gastown.agent.git import Credentials, Git, GitError, clone, redact
from gastown.agent.workspace import WorkspaceError, prepare
from gastown.model.enums import AgentRole
from gastown.model.town import Rig
from gastown.reconcile.names import bead_short_id, work_branch
from tests.unit.agent.conftest import (
    Remote,
    git,
    issue_order,
    make_identity,
    mr_order,
    rework_order,
)


def test_issue_bead_gets_its_own_branch_from_the_default_branch(
    remote: Remote, tmp_path: Path
) -> None:
    ws = prepare(make_identity(tmp_path / "w"), issue_order(remote))
    assert ws.branch == "gt/polecat-1/bead-a"
    assert ws.git.current_branch() == "gt/polecat-1/bead-a"
    assert ws.git.head() == remote.sha("main")
    assert ws.git.config_get("gastown.base") == "main"
    assert ws.git.config_get("gastown.branch") == "gt/polecat-1/bead-a"


def test_short_id_comes_from_the_uid_when_known() -> None:
    assert bead_short_id("bead-a", "3F2A9C1B-0000-4000-8000-000000000000") == "3f2a9c1b"
    assert work_branch("p", "bead-a", None) == "gt/p/bead-a"
    long = "x" * 60
    assert len(bead_short_id(long)) == 40
    assert bead_short_id(long) != bead_short_id("x" * 59 + "y")


def test_convoy_feature_branch_is_created_from_default_when_missing(
    remote: Remote, tmp_path: Path
) -> None:
    feature = "convoy/ship-it/abcd1234/head"
    ws = prepare(make_identity(tmp_path / "w"), issue_order(remote, base_branch=feature))
    assert remote.sha(feature) == remote.sha("main")
    assert ws.git.head() == remote.sha("main")
    assert ws.base_branch == feature


def test_convoy_bead_starts_from_existing_feature_branch(remote: Remote, tmp_path: Path) -> None:
    feature = "convoy/ship-it/abcd1234/head"
    tip = remote.commit(feature, "one.txt", "one\n")
    ws = prepare(make_identity(tmp_path / "w"), issue_order(remote, base_branch=feature))
    assert ws.git.head() == tip
    assert remote.sha("main") != tip


def test_existing_remote_work_branch_is_continued(remote: Remote, tmp_path: Path) -> None:
    tip = remote.commit("gt/polecat-1/bead-a", "partial.txt", "half done\n")
    ws = prepare(make_identity(tmp_path / "w"), issue_order(remote))
    assert ws.git.head() == tip


def test_rework_continues_the_branch_under_review(remote: Remote, tmp_path: Path) -> None:
    tip = remote.commit("gt/polecat-9/bead-a", "work.txt", "v1\n")
    ws = prepare(
        make_identity(tmp_path / "w", agent="polecat-2"),
        rework_order(remote, "gt/polecat-9/bead-a"),
    )
    assert ws.branch == "gt/polecat-9/bead-a"
    assert ws.git.current_branch() == "gt/polecat-9/bead-a"
    assert ws.git.head() == tip


def test_rework_of_a_missing_branch_is_refused(remote: Remote, tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="does not exist"):
        prepare(make_identity(tmp_path / "w"), rework_order(remote, "gt/gone/x"))


def test_polecat_cannot_work_on_a_merge_request(remote: Remote, tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="merge_request"):
        prepare(make_identity(tmp_path / "w"), mr_order(remote, "gt/x/y"))


def test_refinery_only_clones(remote: Remote, tmp_path: Path) -> None:
    ident = make_identity(tmp_path / "w", role=AgentRole.REFINERY, agent="refinery-rig")
    ws = prepare(ident, mr_order(remote, "gt/x/y"))
    assert ws.branch is None
    assert (ws.path / "README.md").read_text() == "hello\n"


def test_restarted_container_reuses_its_clone_and_local_commits(
    remote: Remote, tmp_path: Path
) -> None:
    ident = make_identity(tmp_path / "w")
    ws = prepare(ident, issue_order(remote))
    (ws.path / "local.txt").write_text("unpushed\n")
    git(ws.path, "add", "local.txt")
    git(ws.path, "commit", "-q", "-m", "local")
    again = prepare(ident, issue_order(remote))
    assert again.git.head() == ws.git.head()
    assert (again.path / "local.txt").exists()


def test_missing_default_branch_is_a_clear_error(remote: Remote, tmp_path: Path) -> None:
    rig = Rig(name="rig", git_url=remote.url, default_branch="trunk")
    order = issue_order(remote, base_branch="trunk", rig=rig)
    with pytest.raises(WorkspaceError, match="trunk"):
        workspace.prepare(make_identity(tmp_path / "w"), order)


def test_clone_errors_never_show_url_credentials(tmp_path: Path) -> None:
    token = "s3cr3t-token-value"
    with pytest.raises(GitError) as info:
        clone(f"http://user:{token}@127.0.0.1:9/repo.git", tmp_path / "c", timeout=30)
    assert token not in str(info.value)
    assert "***@127.0.0.1" in str(info.value)


def test_clone_errors_never_show_secret_file_values(tmp_path: Path) -> None:
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    token = "ghp_abcdefSECRET123"
    (secret_dir / "token").write_text(token + "\n")
    creds = Credentials(secret_dir)
    try:
        runner = Git(tmp_path, credentials=creds, timeout=30)
        result = runner.run("ls-remote", f"http://x:{token}@127.0.0.1:9/r.git", check=False)
        assert result.returncode != 0
        with pytest.raises(GitError) as info:
            runner.run("ls-remote", f"http://127.0.0.1:9/{token}.git")
        assert token not in str(info.value)
    finally:
        creds.cleanup()


def test_askpass_answers_from_the_secret_directory(tmp_path: Path) -> None:
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    (secret_dir / "username").write_text("bot\n")
    (secret_dir / "password").write_text("pa55word\n")
    creds = Credentials(secret_dir)
    try:
        env = creds.env()
        askpass = env["GIT_ASKPASS"]
        assert "pa55word" not in Path(askpass).read_text()
        user = subprocess.run(
            [askpass, "Username for 'https://h': "], capture_output=True, text=True, check=True
        )
        password = subprocess.run(
            [askpass, "Password for 'https://bot@h': "], capture_output=True, text=True, check=True
        )
        assert user.stdout.strip() == "bot"
        assert password.stdout.strip() == "pa55word"
    finally:
        creds.cleanup()
    assert not Path(askpass).exists()


def test_ssh_key_is_copied_private(tmp_path: Path) -> None:
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    (secret_dir / "ssh-privatekey").write_text("-----BEGIN KEY-----\nabc\n")
    creds = Credentials(secret_dir)
    try:
        command = creds.env()["GIT_SSH_COMMAND"]
        key = Path(command.split("-i ")[1].split()[0])
        assert key.stat().st_mode & 0o077 == 0
        assert "BEGIN KEY" not in command
    finally:
        creds.cleanup()


def test_redact_hides_userinfo_and_literals() -> None:
    text = "fatal: https://u:tok@host/x and tok again ssh://git@host/y"
    out = redact(text, ["tok again"])
    assert "u:tok" not in out
    assert "tok again" not in out
    assert "https://***@host/x" in out
