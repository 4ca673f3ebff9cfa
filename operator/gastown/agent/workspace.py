"""The agent's workspace: a clone of the rig with the right branch checked out.

Branch rules:
- an issue bead works on `gt/<agent>/<bead-short-id>`, started from the work order's base
  branch (the rig's default branch, or for a review-then-land convoy bead the convoy feature
  branch `convoy/<slug>/<short-id>/head`, created on the remote from the default branch when
  missing); if the branch already exists on the remote (an earlier generation pushed part of the
  work) it is continued rather than started again;
- a rework bead checks out and continues the branch under review (`spec.rework.branch`);
- a refinery only clones: its merge work lives in `gastown.agent.refinery`.

The workspace records what it decided in the clone's git config (`gastown.branch`,
`gastown.base`, `gastown.bead`), which `gt done` reads back.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from gastown.agent.channel import WorkOrder
from gastown.agent.git import Credentials, Git, GitError, clone
from gastown.agent.identity import Identity
from gastown.model.enums import AgentRole, BeadType
from gastown.reconcile.names import work_branch

CLONE_DIR = "repo"


class WorkspaceError(Exception):
    """The workspace cannot be prepared for this work order."""


@dataclass(frozen=True)
class Workspace:
    """A prepared clone."""

    path: Path
    git: Git
    base_branch: str
    branch: str | None
    """The branch the agent works on (None for a refinery)."""


def prepare(
    identity: Identity, order: WorkOrder, credentials: Credentials | None = None
) -> Workspace:
    """Clone (or reuse) the rig and check out the branch the role and bead call for."""
    git = _clone_or_reuse(identity, order, credentials)
    _configure(git, identity, order)
    if identity.role is AgentRole.REFINERY:
        return Workspace(git.cwd, git, order.base_branch, None)
    kind = order.spec.type
    if kind is BeadType.REWORK:
        branch = _checkout_rework(git, order)
    elif kind is BeadType.ISSUE:
        branch = _checkout_issue(git, identity, order)
    else:
        raise WorkspaceError(f"a {identity.role.value} cannot work on a {kind.value} bead")
    git.config_set("gastown.branch", branch)
    return Workspace(git.cwd, git, order.base_branch, branch)


def ensure_remote_branch(git: Git, branch: str, start: str) -> None:
    """Make sure `branch` exists on origin, creating it at origin/<start> if missing.

    Two agents may race to create a convoy feature branch: the push is a compare-and-set on
    "absent", and the loser simply uses the winner's branch.
    """
    if git.rev_parse(f"refs/remotes/origin/{branch}") is not None:
        return
    if git.rev_parse(f"refs/remotes/origin/{start}") is None:
        raise WorkspaceError(f"branch {start} does not exist on the remote")
    try:
        git.push(f"refs/remotes/origin/{start}", branch, expect_absent=True)
    except GitError:
        git.fetch()
        if git.rev_parse(f"refs/remotes/origin/{branch}") is None:
            raise
    git.fetch()


def _clone_or_reuse(identity: Identity, order: WorkOrder, credentials: Credentials | None) -> Git:
    dest = identity.workdir / CLONE_DIR
    if dest.exists():
        reused = _reusable(dest, order, credentials)
        if reused is not None:
            return reused
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    git = clone(order.rig.git_url, dest, credentials=credentials)
    git.fetch()
    return git


def _reusable(dest: Path, order: WorkOrder, credentials: Credentials | None) -> Git | None:
    # A restarted container in the same pod keeps its clone and any unpushed local commits.
    git = Git(dest, credentials=credentials)
    try:
        if git.config_get("remote.origin.url") != order.rig.git_url:
            return None
        if git.config_get("gastown.bead") != order.bead:
            return None
        git.fetch()
    except GitError:
        return None
    return git


def _configure(git: Git, identity: Identity, order: WorkOrder) -> None:
    git.config_set("user.name", identity.agent)
    git.config_set("user.email", f"{identity.agent}@{identity.town}.gastown.invalid")
    git.config_set("gastown.bead", order.bead)
    git.config_set("gastown.base", order.base_branch)
    git.config_set("gastown.default", order.rig.default_branch)


def _checkout_issue(git: Git, identity: Identity, order: WorkOrder) -> str:
    branch = work_branch(identity.agent, order.bead, order.bead_uid)
    git.check_branch_name(branch)
    if order.base_branch != order.rig.default_branch:
        ensure_remote_branch(git, order.base_branch, order.rig.default_branch)
    elif git.rev_parse(f"refs/remotes/origin/{order.base_branch}") is None:
        raise WorkspaceError(f"default branch {order.base_branch} does not exist on the remote")
    if git.rev_parse(f"refs/heads/{branch}") is not None:
        git.run("checkout", branch)
    elif git.rev_parse(f"refs/remotes/origin/{branch}") is not None:
        git.run("checkout", "-B", branch, f"refs/remotes/origin/{branch}")
    else:
        git.run("checkout", "-B", branch, f"refs/remotes/origin/{order.base_branch}")
    return branch


def _checkout_rework(git: Git, order: WorkOrder) -> str:
    rework = order.spec.rework
    if rework is None:
        raise WorkspaceError(f"rework bead {order.bead} has no rework section")
    branch = rework.branch
    if git.rev_parse(f"refs/remotes/origin/{branch}") is None:
        raise WorkspaceError(f"branch under review {branch} does not exist on the remote")
    if git.rev_parse(f"refs/heads/{branch}") is not None:
        git.run("checkout", branch)
    else:
        git.run("checkout", "-B", branch, f"refs/remotes/origin/{branch}")
    return branch
