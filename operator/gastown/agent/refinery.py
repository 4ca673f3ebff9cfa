"""The refinery's git work on one merge request, as plain functions over a clone.

direct: fetch, merge the source into the target with --no-ff (locally, detached), run the gate
commands, let an optional review hook ask for changes, push as a fast-forward, verify the merge
commit is on the remote, delete the source branch. Nothing is pushed before every check passed,
so a conflict, a failed gate or a review that requests changes never changes the remote target.
If the target moved while we worked, the push is rejected (it is not a fast-forward) and the
whole merge is redone on the new tip, a bounded number of times.

Re-running after a crash is safe: if the source is already contained in the remote target, the
merge is reported with the target's commit instead of being redone.

pr: check the source branch is on the remote and open a pull/merge request through the provider
client; an already-open one for the same branches is found and reused.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gastown.agent.channel import ReportDraft
from gastown.agent.git import Git, GitError
from gastown.agent.providers import PullRequestClient
from gastown.agent.redaction import Redactor, pod_redactor
from gastown.agent.workspace import WorkspaceError, ensure_remote_branch
from gastown.model.bead import MergeRequestSpec
from gastown.model.enums import ReportType
from gastown.reconcile.names import is_work_branch

GATE_TIMEOUT = 1800.0
OUTPUT_TAIL = 3500
MERGE_ATTEMPTS = 3


@dataclass(frozen=True)
class MergeContext:
    """What a review hook gets to look at: the local merge, not yet pushed."""

    workdir: Path
    source_branch: str
    target_branch: str
    target_sha: str
    merge_sha: str
    gate_output: str


@dataclass(frozen=True)
class ReviewVerdict:
    """A review that asks for changes."""

    feedback: str
    files: tuple[str, ...] = ()


ReviewHook = Callable[[MergeContext], ReviewVerdict | None]
"""Returns None to approve, a verdict to request changes."""


@dataclass(frozen=True)
class GateResult:
    """Outcome of the gate commands."""

    ok: bool
    command: str | None = None
    exit_code: int | None = None
    output: str = ""


@dataclass(frozen=True)
class MergeResult:
    """Outcome of processing a merge request; `type` is the report to write."""

    type: ReportType
    merge_commit: str | None = None
    files: tuple[str, ...] = ()
    message: str | None = None
    feedback: str | None = None
    pr_url: str | None = None
    source_deleted: bool = False

    def to_draft(self, bead: str, branch: str) -> ReportDraft:
        """The report for this result."""
        return ReportDraft(
            type=self.type,
            bead=bead,
            branch=branch,
            merge_commit=self.merge_commit,
            files=self.files,
            message=self.message,
            feedback=self.feedback,
            pr_url=self.pr_url,
        )


def merge_direct(
    git: Git,
    mr: MergeRequestSpec,
    *,
    default_branch: str,
    gates: Sequence[str] = (),
    review: ReviewHook | None = None,
    gate_timeout: float = GATE_TIMEOUT,
    attempts: int = MERGE_ATTEMPTS,
    bead: str | None = None,
) -> MergeResult:
    """Merge `mr.branch` into `mr.target_branch` on origin, or say why not."""
    if mr.branch in (mr.target_branch, default_branch):
        return _failed(f"refusing to merge {mr.branch} into {mr.target_branch}: same branch")
    git.fetch()
    source_sha = git.rev_parse(f"refs/remotes/origin/{mr.branch}")
    if source_sha is None:
        return _failed(f"source branch {mr.branch} does not exist on the remote")
    try:
        _ensure_target(git, mr.target_branch, default_branch)
    except (WorkspaceError, GitError) as exc:
        return _failed(f"target branch {mr.target_branch}: {exc}")
    try:
        for _ in range(attempts):
            result = _merge_once(git, mr, source_sha, gates, review, gate_timeout, bead)
            if result is not None:
                return result
            git.fetch()  # the target moved under us: merge again on its new tip
    except GitError as exc:
        return _failed(str(exc))
    return _failed(f"{mr.target_branch} kept moving; gave up after {attempts} attempts")


def open_pull_request(
    git: Git,
    mr: MergeRequestSpec,
    client: PullRequestClient,
    *,
    default_branch: str,
    title: str,
    body: str,
) -> MergeResult:
    """Open (or find) the pull request for `mr` and return its URL."""
    git.fetch()
    source_sha = git.ls_remote_branch(mr.branch)
    if source_sha is None:
        return _failed(f"source branch {mr.branch} does not exist on the remote")
    try:
        _ensure_target(git, mr.target_branch, default_branch)
    except (WorkspaceError, GitError) as exc:
        return _failed(f"target branch {mr.target_branch}: {exc}")
    url = client.create_pull_request(head=mr.branch, base=mr.target_branch, title=title, body=body)
    return MergeResult(type=ReportType.PR_OPENED, pr_url=url)


def run_gates(
    workdir: Path,
    gates: Sequence[str],
    timeout: float = GATE_TIMEOUT,
    tail: int = OUTPUT_TAIL,
    redactor: Redactor | None = None,
) -> GateResult:
    """Run gate commands in order (each through `sh -c`; they are the town's own commands).

    Stops at the first failure. Output is spooled to a file so a chatty gate cannot exhaust
    memory, and only the last `tail` characters are kept for the report. Gates inherit the
    pod's environment, secrets included: each output is redacted (default: the pod's redactor)
    before it is cut to the tail, so the cut never leaves part of a secret behind.
    """
    redact = (pod_redactor() if redactor is None else redactor).redact
    outputs: list[str] = []
    for command in gates:
        exit_code, output = _run_gate(workdir, command, timeout)
        outputs.append(redact(f"$ {command}\n{output}"))
        if exit_code != 0:
            text = "\n".join(outputs)[-tail:]
            return GateResult(False, command, exit_code, text)
    return GateResult(True, output="\n".join(outputs)[-tail:])


def _merge_once(
    git: Git,
    mr: MergeRequestSpec,
    source_sha: str,
    gates: Sequence[str],
    review: ReviewHook | None,
    gate_timeout: float,
    bead: str | None,
) -> MergeResult | None:
    """One merge attempt; None means the push lost a race and the caller should retry."""
    target_sha = git.rev_parse(f"refs/remotes/origin/{mr.target_branch}")
    if target_sha is None:
        return _failed(f"target branch {mr.target_branch} vanished from the remote")
    if git.is_ancestor(source_sha, target_sha):
        # Already merged (e.g. we crashed after pushing, before reporting): report, don't redo.
        return _finish(git, mr, source_sha, target_sha)
    git.run("checkout", "--quiet", "--detach", target_sha)
    what = f" ({bead})" if bead else ""
    message = f"Merge {mr.branch} into {mr.target_branch}{what}"
    merge = git.run("merge", "--no-ff", "--no-edit", "-m", message, source_sha, check=False)
    if merge.returncode != 0:
        return _conflict(git, target_sha, merge.stdout + merge.stderr)
    merge_sha = git.head()
    gate = run_gates(git.cwd, gates, gate_timeout)
    if not gate.ok:
        _reset(git, target_sha)
        return MergeResult(
            type=ReportType.GATE_FAILED,
            message=git.redact(
                f"gate `{gate.command}` failed with exit code {gate.exit_code}:\n{gate.output}"
            )[-4000:],
        )
    if review is not None:
        context = MergeContext(
            git.cwd, mr.branch, mr.target_branch, target_sha, merge_sha, gate.output
        )
        verdict = review(context)
        # Whatever the reviewer touched stays local: push exactly the merge we checked.
        _reset(git, merge_sha)
        if verdict is not None:
            _reset(git, target_sha)
            return MergeResult(
                type=ReportType.REQUEST_CHANGES, feedback=verdict.feedback, files=verdict.files
            )
    try:
        git.push(merge_sha, mr.target_branch)
    except GitError:
        if git.ls_remote_branch(mr.target_branch) != target_sha:
            return None
        raise
    return _finish(git, mr, source_sha, merge_sha)


def _finish(git: Git, mr: MergeRequestSpec, source_sha: str, merge_sha: str) -> MergeResult:
    """Verify the merge is on the remote target, then delete the source branch."""
    git.fetch()
    remote = git.rev_parse(f"refs/remotes/origin/{mr.target_branch}")
    if remote is None or not git.is_ancestor(merge_sha, remote):
        return _failed(f"merge {merge_sha} is not on {mr.target_branch} after pushing")
    deleted = False
    if deletable(mr) and git.rev_parse(f"refs/remotes/origin/{mr.branch}") == source_sha:
        # Only delete what we merged: a push made since then must not be lost.
        with contextlib.suppress(GitError):
            git.delete_remote_branch(mr.branch, expect=source_sha)
            deleted = True
    return MergeResult(type=ReportType.MERGED, merge_commit=merge_sha, source_deleted=deleted)


def deletable(mr: MergeRequestSpec) -> bool:
    """Only an agent's own work branch is deleted after its merge: never a target, default or
    convoy branch, whatever branch a merge request names."""
    return is_work_branch(mr.branch) and mr.branch != mr.target_branch and not mr.landing


def _conflict(git: Git, target_sha: str, output: str) -> MergeResult:
    files = git.run("diff", "--name-only", "--diff-filter=U").stdout.split()
    git.run("merge", "--abort", check=False)
    _reset(git, target_sha)
    if not files:
        return _failed(git.redact(f"merge failed: {output.strip()}")[-4000:])
    return MergeResult(
        type=ReportType.CONFLICT,
        files=tuple(files),
        message=f"merge conflict in {len(files)} file(s): {', '.join(files[:20])}",
    )


def _ensure_target(git: Git, target: str, default_branch: str) -> None:
    if target == default_branch:
        if git.rev_parse(f"refs/remotes/origin/{target}") is None:
            raise WorkspaceError(f"default branch {target} does not exist on the remote")
        return
    ensure_remote_branch(git, target, default_branch)


def _reset(git: Git, sha: str) -> None:
    git.run("reset", "--quiet", "--hard", sha)
    git.run("clean", "--quiet", "-fdx")


def _failed(message: str) -> MergeResult:
    return MergeResult(type=ReportType.FAILED, message=message)


def _run_gate(workdir: Path, command: str, timeout: float) -> tuple[int, str]:
    with tempfile.TemporaryFile(mode="w+b") as spool:
        proc = subprocess.Popen(
            ["sh", "-c", command],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=spool,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so a timeout kills the gate's children too
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            code = -1
        spool.seek(0, os.SEEK_END)
        size = spool.tell()
        spool.seek(max(0, size - OUTPUT_TAIL * 4))
        output = spool.read().decode(errors="replace")
    if code == -1:
        output += f"\n[timed out after {timeout:.0f}s]"
    return code, output
