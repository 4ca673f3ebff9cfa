"""Agents are untrusted: their claims change work state only once verified.

A polecat's `done` says "I pushed commit S to my branch"; a refinery's `merged` says "merge commit
M is on the target and contains the work". Neither is believed. The reconciler asks the adapter
to check the claim against the rig's remote with code the agent does not control (a read-only
`git ls-remote`/`fetch` by the operator); the verdict comes back in the snapshot
(`Snapshot.verdicts`, keyed per report), and only then is the report applied. While a check is
in flight the report stays unapplied and the agent and bead are held, so no other rule (session
end, GUPP) acts on a half-applied fact.

A claim that fails verification changes nothing but a Warning Event and the bead's
`ClaimsVerified` condition (`status.refusedClaim`); the report is marked applied so it is not
re-checked forever, and the attempt then ends the ordinary way (its pod exits without an
accepted report and the bead is retried with backoff).
"""

from __future__ import annotations

from typing import Any

from gastown.model import Agent, Bead, Report
from gastown.reconcile.actions import WARNING, AnnotateBead, VerifyAgentClaim
from gastown.reconcile.context import Pass
from gastown.reconcile.snapshot import Verdict
from gastown.reconcile.writes import Claim, Kind, iso


def claim_key(agent: Agent, report: Report) -> str:
    """One key per report of one Agent object (the uid keeps a re-created agent apart)."""
    return f"{agent.metadata.uid or agent.name}/{report.generation}/{report.seq}"


def verdict(ctx: Pass, agent: Agent, bead: Bead, report: Report, claim: Claim) -> Verdict | None:
    """The verdict on `claim`, or None after asking for it (or while it is being checked).

    While None, the agent and the bead are held for this pass and the report stays unapplied.
    """
    key = claim_key(agent, report)
    known = ctx.snap.verdicts
    if key in known and known[key] is not None:
        return known[key]
    ctx.hold((Kind.AGENT, agent.name), (Kind.BEAD, bead.name))
    if key not in known:
        ctx.add(
            VerifyAgentClaim(
                key=key,
                claim=claim,
                bead=bead.name,
                reason="VerifyClaim",
                message=f"checking {report.type.value} of {agent.name} against the remote",
            )
        )
    return None


def refuse(ctx: Pass, agent: Agent, bead: Bead, report: Report, reason: str, message: str) -> None:
    """Record a refused claim on the bead (condition and Warning Event); nothing else moves.

    The caller marks the report applied, as for any other report.
    """
    record: dict[str, Any] = {
        "agent": agent.name,
        "generation": report.generation,
        "seq": report.seq,
        "reason": reason,
        "message": message[:1024],
        "at": iso(ctx.now),
    }
    ctx.add(
        AnnotateBead(
            bead=bead.name,
            set={"refusedClaim": record},
            expect={"phase": bead.status.phase.value},
            reason=reason,
            message=f"refused {report.type.value} of {agent.name}: {message}"[:1024],
            event=WARNING,
        ),
        (Kind.BEAD, bead.name),
    )
