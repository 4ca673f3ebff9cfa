"""The `gt` tools: each writes one report, refuses misuse clearly, and never leaks secrets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gastown.agent import gt
from gastown.agent.channel import FileChannel, unwrap_checkpoint
from gastown.agent.identity import Identity
from gastown.agent.workspace import Workspace, prepare
from gastown.model.enums import AgentRole, ReportType
from tests.unit.agent.conftest import (
    ChannelFactory,
    Remote,
    git,
    issue_order,
    make_identity,
    mr_order,
)


def use(monkeypatch: pytest.MonkeyPatch, identity: Identity, cwd: Path) -> None:
    for key, value in identity.to_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(cwd)


def run_gt(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = gt.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def polecat(
    remote: Remote,
    tmp_path: Path,
    channel_file: ChannelFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Workspace, Path]:
    order = issue_order(remote)
    path = channel_file(order)
    ident = make_identity(tmp_path / "w", channel=path)
    ws = prepare(ident, order)
    use(monkeypatch, ident, ws.path)
    return ws, path


def commit(ws: Workspace, name: str = "work.txt") -> str:
    (ws.path / name).write_text("work\n")
    git(ws.path, "add", name)
    git(ws.path, "commit", "-q", "-m", "work")
    return git(ws.path, "rev-parse", "HEAD")


def reports(path: Path) -> list:  # type: ignore[type-arg]
    return FileChannel.load(path).status.reports


def test_done_pushes_verifies_and_reports(
    polecat: tuple[Workspace, Path], remote: Remote, capsys: pytest.CaptureFixture[str]
) -> None:
    ws, path = polecat
    sha = commit(ws)
    code, out = run_gt(capsys, "done", "--summary", "did the thing")
    assert code == 0, out
    assert remote.sha("gt/polecat-1/bead-a") == sha
    [report] = reports(path)
    assert report.type is ReportType.DONE
    assert (report.seq, report.generation) == (1, 1)
    assert report.branch == "gt/polecat-1/bead-a"
    assert report.summary == "did the thing"
    assert report.bead == "bead-a"


def test_done_twice_is_idempotent_on_git_and_reports_again(
    polecat: tuple[Workspace, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ws, path = polecat
    commit(ws)
    assert run_gt(capsys, "done")[0] == 0
    assert run_gt(capsys, "done")[0] == 0
    assert [r.seq for r in reports(path)] == [1, 2]


def test_done_with_nothing_to_push_is_refused(
    polecat: tuple[Workspace, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = polecat
    code, out = run_gt(capsys, "done")
    assert code == 1
    assert "nothing to push" in out
    assert reports(path) == []


def test_done_with_uncommitted_changes_is_refused(
    polecat: tuple[Workspace, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ws, path = polecat
    commit(ws)
    (ws.path / "dirty.txt").write_text("x\n")
    code, out = run_gt(capsys, "done")
    assert code == 1
    assert "uncommitted" in out
    assert reports(path) == []


def test_done_on_the_default_branch_is_refused(
    polecat: tuple[Workspace, Path], capsys: pytest.CaptureFixture[str], remote: Remote
) -> None:
    ws, _ = polecat
    git(ws.path, "checkout", "-q", "main")
    commit(ws)
    code, out = run_gt(capsys, "done")
    assert code == 1
    assert "refusing to push main" in out
    assert remote.sha("main") != ws.git.head()


def test_done_without_a_hook_is_refused(
    remote: Remote,
    tmp_path: Path,
    channel_file: ChannelFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = channel_file(None, hook=None)
    use(monkeypatch, make_identity(tmp_path, bead=None, channel=path), tmp_path)
    code, out = run_gt(capsys, "done")
    assert code == 1
    assert "no bead is hooked" in out


def test_stale_generation_is_refused(
    polecat: tuple[Workspace, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ws, path = polecat
    commit(ws)
    FileChannel.update_spec(path, lambda s: s.model_copy(update={"generation": 2}))
    code, out = run_gt(capsys, "done")
    assert code == 1
    assert "stale" in out
    assert reports(path) == []


def test_request_changes_is_for_the_refinery_only(
    polecat: tuple[Workspace, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_gt(capsys, "request-changes", "--feedback", "no")
    assert code == 1
    assert "refinery" in out


def test_refinery_request_changes_and_done(
    remote: Remote,
    tmp_path: Path,
    channel_file: ChannelFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = channel_file(mr_order(remote, "gt/p/x"), role=AgentRole.REFINERY)
    ident = make_identity(
        tmp_path, role=AgentRole.REFINERY, agent="ref", bead="mr-bead-a", channel=path
    )
    use(monkeypatch, ident, tmp_path)
    code, out = run_gt(
        capsys, "request-changes", "--feedback", "add tests", "--file", "a.py", "--file", "b.py"
    )
    assert code == 0, out
    assert run_gt(capsys, "done", "--summary", "reviewed")[0] == 0
    first, second = reports(path)
    assert first.type is ReportType.REQUEST_CHANGES
    assert first.feedback == "add tests"
    assert first.files == ["a.py", "b.py"]
    assert first.branch == "gt/p/x"
    assert second.type is ReportType.DONE
    assert second.seq == 2


def test_refinery_request_changes_needs_a_merge_request(
    remote: Remote,
    tmp_path: Path,
    channel_file: ChannelFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = channel_file(issue_order(remote), role=AgentRole.REFINERY)
    use(monkeypatch, make_identity(tmp_path, role=AgentRole.REFINERY, channel=path), tmp_path)
    code, out = run_gt(capsys, "request-changes", "--feedback", "x")
    assert code == 1
    assert "not a merge request" in out


def test_status_checkpoint_escalate(
    polecat: tuple[Workspace, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = polecat
    assert run_gt(capsys, "status", "halfway")[0] == 0
    assert run_gt(capsys, "checkpoint", '{"step": 3}')[0] == 0
    assert run_gt(capsys, "escalate", "need a human")[0] == 0
    status = FileChannel.load(path).status
    assert status.status_message == "halfway"
    assert unwrap_checkpoint(status.checkpoint, "bead-a") == '{"step": 3}'
    assert unwrap_checkpoint(status.checkpoint, "other-bead") is None
    [report] = status.reports
    assert report.type is ReportType.ESCALATE
    assert report.message == "need a human"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("checkpoint", "{not json"), "not valid JSON"),
        (("checkpoint", json.dumps({"x": "y" * 20000})), "limit"),
        (("status", "  "), "empty"),
        (("status", "x" * 2000), "longer"),
        (("escalate", ""), "help"),
    ],
)
def test_invalid_input_is_refused(
    polecat: tuple[Workspace, Path],
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    expected: str,
) -> None:
    _, path = polecat
    code, out = run_gt(capsys, *argv)
    assert code == 1
    assert expected in out
    status = FileChannel.load(path).status
    assert status.checkpoint is None
    assert status.status_message is None


def test_missing_identity_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = run_gt(capsys, "status", "x")
    assert code == 1
    assert "GASTOWN_TOWN" in out


def test_missing_kube_channel_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use(monkeypatch, make_identity(tmp_path), tmp_path)
    monkeypatch.setitem(sys.modules, "gastown.kube.agent_channel", None)
    code, out = run_gt(capsys, "status", "x")
    assert code == 1
    assert "GASTOWN_CHANNEL=file:" in out


def test_push_failure_never_shows_the_token(
    polecat: tuple[Workspace, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ws, path = polecat
    token = "glpat-SuperSecretToken42"
    commit(ws)
    git(ws.path, "remote", "set-url", "origin", f"http://bot:{token}@127.0.0.1:9/repo.git")
    code, out = run_gt(capsys, "done")
    assert code == 1
    assert token not in out
    assert reports(path) == []


def test_gt_runs_as_a_program(polecat: tuple[Workspace, Path]) -> None:
    ws, path = polecat
    commit(ws)
    proc = subprocess.run(
        [sys.executable, "-m", "gastown.agent.gt", "done", "--summary", "cli"],
        cwd=ws.path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert reports(path)[0].summary == "cli"
