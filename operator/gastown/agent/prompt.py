"""Prompts for the coding agent, built from the bead, its rework context and the checkpoint.

Every prompt starts with a header of `Key: value` lines (Bead, Role, Branch, Base branch, ...)
so that tools and the scripted test agent can read the context mechanically, followed by the
task and the role's instructions: which `gt` commands to call and what not to do.
"""

from __future__ import annotations

from dataclasses import dataclass

from gastown.agent.channel import WorkOrder
from gastown.agent.identity import Identity
from gastown.model.bead import MergeRequestSpec
from gastown.model.enums import BeadType

POLECAT_INSTRUCTIONS = """\
How to work:
- You are in a git clone of the repository, on the branch {branch}. Make the change the task asks
  for, run the project's tests if there are any, and commit your work on this branch with git.
- Save progress now and then with `gt checkpoint '<json>'` (e.g. '{{"done": ["step 1"]}}'); if
  you are restarted, your last checkpoint is given back to you.
- Report what you are doing with `gt status "<short message>"`.
- When the work is committed, call `gt done --summary "<what you changed>"`. It pushes {branch}
  and reports the work for review. Your task is not finished until `gt done` succeeds; if it
  refuses, read its message, fix the problem and call it again.
- If you are blocked and need a human, call `gt escalate "<what you need>"`.
- Do not push other branches, do not merge into {base}, and do not rewrite published history.
"""

REVIEW_INSTRUCTIONS = """\
How to review:
- The merge of {source} into {target} has been prepared in this clone (HEAD, not pushed) and the
  gates passed. Inspect it, e.g. `git diff {target_sha}...HEAD` and `git log {target_sha}..HEAD`.
- If the work needs changes, call `gt request-changes --feedback "<what must change>"` and add
  `--file <path>` for each file concerned; a polecat will rework the branch.
- If the work is acceptable, call `gt done --summary "<your review>"`; the refinery then pushes
  the merge.
- Do not modify files, commit, or push: whatever you change here is discarded.
"""


@dataclass(frozen=True)
class ReviewContext:
    """What the refinery's review prompt is about."""

    merge_request: MergeRequestSpec
    target_sha: str
    gate_output: str


def polecat_prompt(
    identity: Identity,
    order: WorkOrder,
    branch: str,
    checkpoint: str | None = None,
    nudges: tuple[str, ...] = (),
) -> str:
    """The prompt for a polecat working on an issue or rework bead."""
    spec = order.spec
    header = {
        "Bead": order.bead,
        "Role": identity.role.value,
        "Agent": identity.agent,
        "Rig": order.rig.name,
        "Branch": branch,
        "Base branch": order.base_branch,
    }
    parts = [_header(header), f"# Task: {spec.title}", spec.description.strip() or "(no details)"]
    if spec.type is BeadType.REWORK and spec.rework is not None:
        rework = spec.rework
        lines = [
            "# Rework requested by the reviewer",
            f"Original task: {order.source_title or rework.source_bead}",
            f"Branch under review: {rework.branch}",
            "Feedback:",
            rework.feedback.strip() or "(none given)",
        ]
        if rework.files:
            lines.append("Files named by the reviewer: " + ", ".join(rework.files))
        if order.source_description:
            lines += ["Original description:", order.source_description.strip()]
        parts.append("\n".join(lines))
    parts += _resume(checkpoint, nudges)
    parts.append(POLECAT_INSTRUCTIONS.format(branch=branch, base=order.base_branch))
    return "\n\n".join(parts) + "\n"


def review_prompt(
    identity: Identity, order: WorkOrder, review: ReviewContext, nudges: tuple[str, ...] = ()
) -> str:
    """The prompt for the refinery's review of a prepared merge."""
    mr = review.merge_request
    header = {
        "Bead": order.bead,
        "Role": identity.role.value,
        "Agent": identity.agent,
        "Rig": order.rig.name,
        "Source bead": mr.source_bead,
        "Source branch": mr.branch,
        "Target branch": mr.target_branch,
        "Target commit": review.target_sha,
        "Landing": "yes" if mr.landing else "no",
    }
    parts = [
        _header(header),
        f"# Review: {order.source_title or order.spec.title}",
        (order.source_description or order.spec.description).strip() or "(no details)",
    ]
    if review.gate_output.strip():
        parts.append("# Gate output (tail)\n" + review.gate_output.strip()[-2000:])
    parts += _resume(None, nudges)
    parts.append(
        REVIEW_INSTRUCTIONS.format(
            source=mr.branch, target=mr.target_branch, target_sha=review.target_sha
        )
    )
    return "\n\n".join(parts) + "\n"


def _header(fields: dict[str, str]) -> str:
    return "\n".join(f"{key}: {value}" for key, value in fields.items())


def _resume(checkpoint: str | None, nudges: tuple[str, ...]) -> list[str]:
    parts = []
    if checkpoint:
        parts.append(
            "# You were restarted\nYour last checkpoint (from `gt checkpoint`):\n" + checkpoint
        )
    if nudges:
        parts.append("# Messages from the town\n" + "\n".join(f"- {n}" for n in nudges))
    return parts
