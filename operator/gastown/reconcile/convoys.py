"""Convoys: materialised tasks, progress n/m, and the two merge modes.

review-and-merge: every bead merges into the rig's default branch; the convoy has landed when
all of its beads are closed. review-then-land: beads merge into the convoy's feature branch
`convoy/<slug>/<id8>/head`; when all are closed the convoy becomes ReadyToLand (written first),
and on a later pass exactly one landing merge request is created from the feature branch into
the default branch. Landing attempts are capped, with an exponential cooldown, ending in a failed
convoy. A convoy whose beads failed (or are held forever behind a failure) never lands: it fails
once nothing in it can progress any more. Staged convoys dispatch nothing until started.
"""

from __future__ import annotations

from typing import Any

from gastown.model import Bead, BeadPhase, BeadType, Convoy, ConvoyMergeMode, ConvoyPhase
from gastown.reconcile import names
from gastown.reconcile.actions import (
    NORMAL,
    WARNING,
    Announce,
    CreateLandingMR,
    CreateTaskBead,
    UpdateConvoy,
)
from gastown.reconcile.context import Pass
from gastown.reconcile.dag import cyclic_nodes
from gastown.reconcile.finished import ConvoyTally
from gastown.reconcile.writes import Kind, iso

TERMINAL = (ConvoyPhase.LANDED, ConvoyPhase.FAILED)
# A landing MR recorded in status but not visible in the snapshot is re-created (same name, so
# harmless) only after this long, to ride out watch lag without churn.
LANDING_RECREATE_SECONDS = 60


def convoy_of(ctx: Pass, bead: Bead) -> Convoy | None:
    """The convoy a bead belongs to, if any."""
    name = ctx.index.convoy_name(bead)
    return ctx.snap.convoys.get(name) if name is not None else None


def in_staged_convoy(ctx: Pass, bead: Bead) -> bool:
    """True if the bead belongs to a convoy that has not been started."""
    convoy = convoy_of(ctx, bead)
    return convoy is not None and convoy.spec.staged


def feature_branch(convoy: Convoy) -> str:
    """The feature branch of a review-then-land convoy."""
    return names.feature_branch(convoy.name, convoy.metadata.uid)


def target_branch(ctx: Pass, bead: Bead) -> str:
    """Where a bead's work merges: its convoy's feature branch, or the rig default branch."""
    convoy = convoy_of(ctx, bead)
    if convoy is not None and convoy.spec.merge_mode is ConvoyMergeMode.REVIEW_THEN_LAND:
        return feature_branch(convoy)
    rig = ctx.index.rigs.get(bead.spec.rig or "")
    return rig.default_branch if rig is not None else "main"


def task_cycle(convoy: Convoy) -> set[str]:
    """Task keys on (or behind) a dependency cycle."""
    graph = {t.key: [d for d in t.depends_on if d != t.key] for t in convoy.spec.tasks}
    return cyclic_nodes(graph)


def member_names(ctx: Pass, convoy: Convoy) -> list[str]:
    """Every bead of the convoy: materialised tasks (existing or not yet) and listed beads,
    then the beads that name it (in name order)."""
    cached = ctx.members_cache.get(convoy.name)
    if cached is not None:
        return cached
    indexed: list[str] = list(ctx.index.members.get(convoy.name, ()))
    finished = ctx.index.finished
    if finished is not None:
        indexed.extend(finished.named.get(convoy.name, ()))
    result = [names.task_bead_name(convoy.name, t.key) for t in convoy.spec.tasks]
    seen = set(result)
    for name in [*convoy.spec.beads, *sorted(indexed)]:
        if name not in seen:
            seen.add(name)
            result.append(name)
    ctx.members_cache[convoy.name] = result
    return result


def listed_names(convoy: Convoy) -> list[str]:
    """The bead names a convoy lists itself: its tasks' beads, then `spec.beads`."""
    listed = [names.task_bead_name(convoy.name, t.key) for t in convoy.spec.tasks]
    return list(dict.fromkeys([*listed, *convoy.spec.beads]))


def finished_tally(ctx: Pass, convoy: Convoy) -> ConvoyTally:
    """The finished part of a convoy's progress, from the summary (memoised across passes for
    the same Convoy object while none of its finished members changes)."""
    view = ctx.index.finished
    assert view is not None
    key = view.tally_key(convoy.name)
    cached = view.memo.get(key)
    if cached is not None and cached[0] is convoy:
        return cached[1]
    listed = listed_names(convoy)
    listed_set = frozenset(listed)
    records = view.records
    named = view.named.get(convoy.name, {})
    finished = set(named)
    phases = list(named.values())
    pending: list[str] = []
    for name in listed:
        if name in named:
            continue
        record = records.get(name)
        if record is None:
            pending.append(name)
        else:
            finished.add(name)
            phases.append(record.phase)
    closed = sum(1 for phase in phases if phase is BeadPhase.CLOSED)
    tally = ConvoyTally(
        finished=frozenset(finished),
        closed=closed,
        failed=len(phases) - closed,
        pending=tuple(pending),
        listed=listed_set,
        extra=sum(1 for name in named if name not in listed_set),
    )
    view.memo[key] = (convoy, tally)
    return tally


def reconcile_convoys(ctx: Pass) -> None:
    """Materialise tasks, then bring each convoy's status and landing up to date."""
    quiet = quiet_convoys(ctx, "pass")
    for name in sorted(ctx.snap.convoys):
        if name in quiet:
            continue  # settled, and nothing it depends on changed since it needed nothing
        convoy = ctx.snap.convoys[name]
        if not ctx.free(Kind.CONVOY, name) or convoy.metadata.deletion_timestamp is not None:
            continue
        terminal = convoy.status.phase in TERMINAL
        cycle = set() if terminal else task_cycle(convoy)  # a settled convoy ignores cycles
        if not terminal and not cycle:
            _materialise(ctx, convoy)
        desired, expect_phase = _desired_status(ctx, convoy, cycle)
        planned = len(ctx.actions)
        _write_status(ctx, convoy, desired, expect_phase)
        if len(ctx.actions) == planned:
            note_quiet(ctx, convoy, "pass")


def quiet_convoys(ctx: Pass, purpose: str) -> set[str]:
    """Settled (landed or failed) convoys known to need nothing for `purpose`: found so by an
    earlier pass or check on the very same Convoy object, with the same finished members, and
    still without live members; empty while this pass moves any finished bead."""
    view = ctx.index.finished
    if view is None or ctx.quiet_blocked():
        return set()
    convoys, versions = ctx.snap.convoys, view.versions
    busy = ctx.busy_convoys()
    return {
        name
        for name, (obj, version) in view.quiet[purpose].items()
        if convoys.get(name) is obj and versions.get(name, 0) == version and name not in busy
    }


def note_quiet(ctx: Pass, convoy: Convoy, purpose: str) -> None:
    """Record that a convoy needed nothing for `purpose`, if that finding can be reused: it is
    settled, all its members are finished, none is missing, and this pass moves none."""
    view = ctx.index.finished
    if view is None or convoy.status.phase not in TERMINAL or ctx.quiet_blocked():
        return
    if convoy.name in ctx.busy_convoys() or finished_tally(ctx, convoy).pending:
        return
    view.quiet[purpose][convoy.name] = (convoy, view.versions.get(convoy.name, 0))


def _materialise(ctx: Pass, convoy: Convoy) -> None:
    """Create the beads of the convoy's inline tasks that do not exist yet; one Event on the
    convoy names them all (one per bead would say the same thing a task at a time)."""
    keys = {t.key for t in convoy.spec.tasks}
    created: list[str] = []
    for task in convoy.spec.tasks:
        bead = names.task_bead_name(convoy.name, task.key)
        if bead in ctx.snap.beads or not ctx.free(Kind.BEAD, bead):
            continue
        spec: dict[str, Any] = {
            "town": ctx.town.name,
            "rig": task.rig or convoy.spec.rig,
            "type": BeadType.ISSUE.value,
            "title": task.title,
            "description": task.description,
            "priority": task.priority.value,
            # Self-references and unknown keys are ignored, as the original did (CEL rejects
            # them at admission; this guards objects written before the rules existed).
            "dependsOn": [
                names.task_bead_name(convoy.name, d)
                for d in task.depends_on
                if d != task.key and d in keys
            ],
            "convoy": convoy.name,
        }
        ctx.add(
            CreateTaskBead(
                town=ctx.town.name,
                bead=bead,
                spec=spec,
                owner=(Kind.CONVOY, convoy.name),
                reason="TaskMaterialised",
                message=f"task {task.key} of convoy {convoy.name}",
                event=False,
            ),
            (Kind.BEAD, bead),
        )
        created.append(bead)
    if created:
        count = f"{len(created)} task" + ("s" if len(created) > 1 else "")
        ctx.add(
            Announce(
                kind=Kind.CONVOY,
                name=convoy.name,
                reason="TaskMaterialised",
                message=f"{count} materialised as beads: {', '.join(created)}",
            )
        )


def convoy_counts(ctx: Pass, convoy: Convoy, settle: bool = True) -> tuple[int, int, int, bool]:
    """(total, closed, failed, settled): settled means nothing in the convoy can progress
    (computed only if `settle`)."""
    if ctx.index.finished is None:
        members = member_names(ctx, convoy)
        return _count(ctx, members, len(members), 0, 0, settle)
    tally = finished_tally(ctx, convoy)
    total = len(tally.listed) + tally.extra
    closed, failed = tally.closed, tally.failed
    others = list(tally.pending)
    listed, finished = tally.listed, tally.finished
    for name in ctx.index.members.get(convoy.name, ()):  # live beads that name the convoy
        if name not in listed and name not in finished:
            total += 1
            others.append(name)
    if ctx.planned_phases:  # a finished member this pass moves is counted by its new phase
        records = ctx.index.finished.records
        for name in ctx.planned_phases:
            if name in finished:
                if records[name].phase is BeadPhase.CLOSED:
                    closed -= 1
                else:
                    failed -= 1
                others.append(name)
    return _count(ctx, others, total, closed, failed, settle)


def _count(
    ctx: Pass, members: list[str], total: int, closed: int, failed: int, settle: bool
) -> tuple[int, int, int, bool]:
    """Add the members' phases to the counts; `total` already includes them."""
    phase_of = ctx.phase_view().get  # this loop sees every member and plans nothing
    closed_phase, failed_phase = BeadPhase.CLOSED, BeadPhase.FAILED
    settled = settle
    for name in members:
        phase = phase_of(name)
        if phase is closed_phase:
            closed += 1
        elif phase is failed_phase:
            failed += 1
        elif settled and (phase is None or not ctx.readiness.doomed(name)):
            settled = False  # one member that can still progress is enough to know
    return total, closed, failed, settled


def _desired_status(
    ctx: Pass, convoy: Convoy, cycle: set[str]
) -> tuple[dict[str, Any], ConvoyPhase | None]:
    """The status fields the convoy should have, and the phase it must still be in."""
    status = convoy.status
    total, closed, failed, settled = convoy_counts(ctx, convoy)
    desired: dict[str, Any] = {
        "total": total,
        "closed": closed,
        "failed": failed,
        "progress": f"{closed}/{total}",
    }
    rtl = convoy.spec.merge_mode is ConvoyMergeMode.REVIEW_THEN_LAND
    if rtl:
        desired["featureBranch"] = feature_branch(convoy)
    if not convoy.spec.staged and status.started_at is None:
        desired["startedAt"] = ctx.now  # the "convoy started" fact, recorded once
    if status.phase in TERMINAL:
        return desired, status.phase
    if cycle:
        desired.update(
            phase=ConvoyPhase.FAILED,
            reason="DependencyCycle",
            message=f"tasks form a dependency cycle: {', '.join(sorted(cycle))}",
        )
    elif convoy.spec.staged:
        desired.update(phase=ConvoyPhase.STAGED, reason="Staged")
    elif total > 0 and closed == total:
        if rtl:
            _landing(ctx, convoy, desired)
        else:
            desired.update(phase=ConvoyPhase.LANDED, reason="AllMerged", landedAt=ctx.now)
    elif total > 0 and settled and failed + (total - closed - failed) > 0:
        desired.update(
            phase=ConvoyPhase.FAILED,
            reason="MemberFailed",
            message=f"{failed} of {total} beads failed; the convoy will not land",
        )
    else:
        desired.update(phase=ConvoyPhase.IN_PROGRESS, reason="InProgress")
    return desired, status.phase


def _landing(ctx: Pass, convoy: Convoy, desired: dict[str, Any]) -> None:
    """Two-phase landing: ReadyToLand first, then exactly one landing MR per attempt."""
    status = convoy.status
    if status.phase not in (ConvoyPhase.READY_TO_LAND, ConvoyPhase.LANDING):
        desired.update(phase=ConvoyPhase.READY_TO_LAND, reason="AllMerged")
        return
    landing = status.landing
    policy = ctx.policy.landing
    mr = ctx.snap.beads.get(landing.merge_request or "")
    if landing.merge_request is None:
        _create_landing(ctx, convoy, landing.attempts + 1)
        desired["phase"] = ConvoyPhase.LANDING
        return
    desired["phase"] = status.phase
    if mr is None:
        if ctx.older_than(landing.last_attempt_at, LANDING_RECREATE_SECONDS):
            _create_landing(ctx, convoy, max(landing.attempts, 1))
        return
    # The snapshot's phase, not this pass's plan: the merge commit becomes visible with it.
    phase = mr.status.phase
    if phase is BeadPhase.CLOSED:
        commit = mr.status.review.merge_commit if mr.status.review else None
        desired.update(phase=ConvoyPhase.LANDED, reason="Landed", landedAt=ctx.now)
        desired["landing"] = {"mergeCommit": commit} if commit else {}
    elif phase is BeadPhase.FAILED:
        if landing.attempts >= policy.max_attempts:
            desired.update(
                phase=ConvoyPhase.FAILED,
                reason="LandingFailed",
                message=f"{landing.attempts} landing attempts failed; last {mr.name}",
            )
            return
        cooldown = policy.cooldown_seconds * 2 ** max(landing.attempts - 1, 0)
        failed_at = mr.status.phase_since or landing.last_attempt_at
        if not ctx.older_than(failed_at, cooldown - 1e-9):
            return
        _create_landing(ctx, convoy, landing.attempts + 1)


def _create_landing(ctx: Pass, convoy: Convoy, attempt: int) -> None:
    rig = ctx.index.rigs.get(convoy.spec.rig)
    ctx.add(
        CreateLandingMR(
            town=ctx.town.name,
            convoy=convoy.name,
            attempt=attempt,
            rig=convoy.spec.rig,
            feature_branch=feature_branch(convoy),
            target_branch=rig.default_branch if rig is not None else "main",
            old_phase=convoy.status.phase,
            now=ctx.now,
            reason="Landing",
        ),
        (Kind.CONVOY, convoy.name),
        (Kind.BEAD, names.landing_name(convoy.name, attempt)),
    )


def _write_status(
    ctx: Pass, convoy: Convoy, desired: dict[str, Any], expect_phase: ConvoyPhase | None
) -> None:
    """Patch only the fields that differ (an idle town costs no writes)."""
    if not ctx.free(Kind.CONVOY, convoy.name):
        return  # a landing MR was just created; its action already writes the status
    current = convoy.status
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if key == "landing":
            if value and current.landing.merge_commit != value.get("mergeCommit"):
                patch[key] = value
            continue
        attr = _ATTRS.get(key, key)
        have = getattr(current, attr)
        if have != value:
            patch[key] = iso(value) if key in ("startedAt", "landedAt") else _plain(value)
    if not patch:
        return
    new_phase = desired.get("phase")
    event = None
    if "phase" in patch:
        event = WARNING if new_phase is ConvoyPhase.FAILED else NORMAL
    ctx.add(
        UpdateConvoy(
            convoy=convoy.name,
            set=patch,
            expect={"phase": None if expect_phase is None else expect_phase.value},
            reason=str(desired.get("reason") or "Progress"),
            message=str(desired.get("message") or desired["progress"]),
            event=event,
        ),
        (Kind.CONVOY, convoy.name),
    )


_ATTRS = {
    "featureBranch": "feature_branch",
    "startedAt": "started_at",
    "landedAt": "landed_at",
}


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, ConvoyPhase) else value
