"""`gt`: the tools a coding agent calls to tell the town what it did.

    gt done [--summary TEXT]                     polecat: push the branch, verify, report done
                                                 refinery: report done (review finished)
    gt request-changes --feedback TEXT [--file PATH ...]   refinery only
    gt status TEXT                               set the agent's status message
    gt checkpoint JSON                           save progress, fed back after a restart
    gt escalate TEXT                             ask a human for help

Each command writes exactly one report (or status field) into the agent's own Agent through the
channel chosen by GASTOWN_CHANNEL, stamped with the agent's dispatch generation. Misuse (wrong
role, no hook, nothing to push, invalid JSON, stale generation) exits non-zero with a message
that says what to do instead. Exit codes: 0 ok, 1 refused or failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from gastown.agent import identity as identity_mod
from gastown.agent.channel import (
    MAX_STATUS_MESSAGE,
    AgentChannel,
    AgentView,
    ChannelError,
    ReportDraft,
    check_generation,
    open_channel,
    read_usage_file,
    wrap_checkpoint,
)
from gastown.agent.git import Credentials, Git, GitError
from gastown.agent.identity import Identity, IdentityError
from gastown.agent.workspace import CLONE_DIR
from gastown.model.enums import AgentRole, BeadType, ReportType
from gastown.model.spend import Usage


class GtError(Exception):
    """A refused or failed `gt` command; the message is shown to the coding agent."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gt` console script."""
    args = _parser().parse_args(argv)
    try:
        identity = identity_mod.from_env()
        channel = open_channel(identity)
        message = args.handler(args, identity, channel)
    except (GtError, IdentityError, ChannelError, GitError, ValueError) as exc:
        print(f"gt {args.command}: error: {exc}", file=sys.stderr)
        return 1
    print(message)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gt", description="Report to the gastown town.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    done = sub.add_parser("done", help="finish the hooked bead (polecats push their branch)")
    done.add_argument("--summary", default=None, help="what was done")
    done.set_defaults(handler=cmd_done)

    changes = sub.add_parser("request-changes", help="refinery: send the work back for rework")
    changes.add_argument("--feedback", required=True, help="what must change")
    changes.add_argument(
        "--file", dest="files", action="append", default=[], help="a file the feedback is about"
    )
    changes.set_defaults(handler=cmd_request_changes)

    status = sub.add_parser("status", help="set the status message")
    status.add_argument("message")
    status.set_defaults(handler=cmd_status)

    checkpoint = sub.add_parser("checkpoint", help="save progress (a JSON document)")
    checkpoint.add_argument("json")
    checkpoint.set_defaults(handler=cmd_checkpoint)

    escalate = sub.add_parser("escalate", help="ask for human help")
    escalate.add_argument("message")
    escalate.set_defaults(handler=cmd_escalate)
    return parser


# --- commands -------------------------------------------------------------------------------


def cmd_done(args: argparse.Namespace, identity: Identity, channel: AgentChannel) -> str:
    """Polecat: push and verify the branch, then report done. Refinery: report done."""
    hook = _require_hook(identity, channel)
    if identity.role is AgentRole.REFINERY:
        report = channel.append_report(
            ReportDraft(type=ReportType.DONE, bead=hook, summary=args.summary, usage=_usage())
        )
        return f"done reported (seq {report.seq}) for {hook}"
    if identity.role is not AgentRole.POLECAT:
        raise GtError(f"gt done is for polecats and refineries, not a {identity.role.value}")
    git = _repo(identity)
    try:
        branch, sha = push_work_branch(git)
    finally:
        if git.credentials is not None:
            git.credentials.cleanup()
    report = channel.append_report(
        ReportDraft(
            type=ReportType.DONE,
            bead=hook,
            branch=branch,
            head_sha=sha,
            summary=args.summary,
            usage=_usage(),
        )
    )
    return f"done reported (seq {report.seq}) for {hook}: branch {branch} at {sha} is pushed"


def cmd_request_changes(args: argparse.Namespace, identity: Identity, channel: AgentChannel) -> str:
    """Refinery: ask for rework of the merge request under review."""
    if identity.role is not AgentRole.REFINERY:
        raise GtError("gt request-changes is for the refinery; polecats use gt done")
    hook = _require_hook(identity, channel)
    order = channel.read_work_order()
    if order.spec.type is not BeadType.MERGE_REQUEST or order.spec.merge_request is None:
        raise GtError(f"the hooked bead {hook} is not a merge request")
    feedback = args.feedback.strip()
    if not feedback:
        raise GtError("--feedback must say what has to change")
    report = channel.append_report(
        ReportDraft(
            type=ReportType.REQUEST_CHANGES,
            bead=hook,
            branch=order.spec.merge_request.branch,
            feedback=feedback,
            files=tuple(args.files),
            usage=_usage(),
        )
    )
    return f"request-changes reported (seq {report.seq}) for {hook}"


def cmd_status(args: argparse.Namespace, identity: Identity, channel: AgentChannel) -> str:
    """Set the agent's status message."""
    message = args.message.strip()
    if not message:
        raise GtError("the status message is empty")
    if len(message) > MAX_STATUS_MESSAGE:
        raise GtError(f"the status message is longer than {MAX_STATUS_MESSAGE} characters")
    check_generation(channel.read_agent().spec, identity)
    channel.set_status_message(message)
    return "status updated"


def cmd_checkpoint(args: argparse.Namespace, identity: Identity, channel: AgentChannel) -> str:
    """Save a checkpoint (validated JSON) tagged with the hooked bead."""
    view = _current(identity, channel)
    try:
        wrapped = wrap_checkpoint(view.spec.hook, identity.generation, args.json)
    except ValueError as exc:
        raise GtError(str(exc)) from None
    channel.set_checkpoint(wrapped)
    return "checkpoint saved"


def cmd_escalate(args: argparse.Namespace, identity: Identity, channel: AgentChannel) -> str:
    """Ask for human help; the operator turns this into an escalation."""
    message = args.message.strip()
    if not message:
        raise GtError("say what you need help with")
    view = _current(identity, channel)
    report = channel.append_report(
        ReportDraft(type=ReportType.ESCALATE, bead=view.spec.hook, message=message)
    )
    return f"escalation reported (seq {report.seq})"


# --- helpers --------------------------------------------------------------------------------


def _usage() -> Usage | None:
    """The session's usage so far, as the runtime recorded it (reports carry it)."""
    return read_usage_file(os.environ)


def push_work_branch(git: Git) -> tuple[str, str]:
    """Push the checked-out work branch to origin and verify it with ls-remote.

    Refuses a detached HEAD, a protected branch (default or base), the wrong branch,
    uncommitted changes, and a branch with no commits ahead of its base.
    Returns (branch, pushed SHA).
    """
    branch = git.current_branch()
    if branch is None:
        raise GtError("HEAD is detached: check out your work branch and commit on it")
    expected = git.config_get("gastown.branch")
    base = git.config_get("gastown.base")
    protected = {b for b in (base, git.config_get("gastown.default")) if b}
    if branch in protected:
        raise GtError(f"refusing to push {branch}: commit your work on {expected or 'a branch'}")
    if expected is not None and branch != expected:
        raise GtError(f"you are on {branch}, but this bead's branch is {expected}")
    if not git.is_clean():
        raise GtError("the working tree has uncommitted changes: commit (or discard) them first")
    git.fetch()
    head = git.head()
    base_ref = f"refs/remotes/origin/{base}"
    if base is not None and git.rev_parse(base_ref) and git.count(f"{base_ref}..HEAD") == 0:
        raise GtError(f"nothing to push: {branch} has no commits that are not on {base}")
    if git.ls_remote_branch(branch) != head:
        try:
            git.push("HEAD", branch)
        except GitError as exc:
            raise GtError(f"push of {branch} was rejected: {exc}") from None
    remote = git.ls_remote_branch(branch)
    if remote != head:
        raise GtError(f"push not verified: origin has {branch} at {remote}, expected {head}")
    return branch, head


def _require_hook(identity: Identity, channel: AgentChannel) -> str:
    view = _current(identity, channel)
    hook = view.spec.hook
    if hook is None:
        raise GtError("no bead is hooked to this agent; there is nothing to finish")
    if identity.bead is not None and hook != identity.bead:
        raise GtError(f"the hook moved from {identity.bead} to {hook}; this session is stale")
    return hook


def _current(identity: Identity, channel: AgentChannel) -> AgentView:
    view = channel.read_agent()
    try:
        check_generation(view.spec, identity)
    except ChannelError as exc:
        raise GtError(f"{exc}; this session is stale") from None
    return view


def _repo(identity: Identity) -> Git:
    credentials = (
        Credentials(identity.git_credentials_dir) if identity.git_credentials_dir else None
    )
    top = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    path = Path(top.stdout.strip()) if top.returncode == 0 else identity.workdir / CLONE_DIR
    if not (path / ".git").exists():
        raise GtError(f"not inside the agent's git workspace (looked at {path})")
    return Git(path, credentials=credentials)


if __name__ == "__main__":
    sys.exit(main())
