"""The small write vocabulary the Kubernetes adapter executes, and pure helpers to evaluate it.

Every semantic action (see `actions.py`) lowers to a tuple of these writes. The adapter applies
the writes of all actions in order with these semantics:

* `CreateObject` creates the object (and then writes `status`, if given, through the status
  subresource). "AlreadyExists" is success: names are deterministic, so a retry is harmless.
* `PatchStatus` / `PatchSpec` are JSON merge patches guarded by `expect`: every top-level field
  named in `expect` (camelCase) must currently hold that value, compared on the object parsed
  through its model and dumped with `model_dump(mode="json", by_alias=True)` (so a missing field
  equals its default). If it does not hold, the write is skipped as a conflict; the next pass
  recomputes from fresh state. `expect_holds` implements exactly this comparison.
* `DeleteObject` deletes; "NotFound" is success.
* Side effects (`StartPod`, `StopPod`, `PollPR`) run after every state write of the pass, and
  only for actions none of whose state writes conflicted (a conflict means the plan was made on
  stale state, so its side effects must not happen).
* `Emit` posts a Kubernetes Event; it never fails the pass.

Datetimes inside patches are ISO-8601 strings ending in "Z" (see `iso`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel


class Kind(StrEnum):
    """The kinds the core reads and writes."""

    TOWN = "Town"
    BEAD = "Bead"
    CONVOY = "Convoy"
    AGENT = "Agent"
    POD = "Pod"


@dataclass(frozen=True)
class CreateObject:
    """Create an object of one of our kinds (camelCase spec/status dicts)."""

    kind: Kind
    name: str
    spec: Mapping[str, Any]
    status: Mapping[str, Any] | None
    labels: Mapping[str, str]
    owner: tuple[Kind, str] | None


@dataclass(frozen=True)
class PatchStatus:
    """JSON merge patch of `.status`, applied only if every `expect` field holds."""

    kind: Kind
    name: str
    patch: Mapping[str, Any]
    expect: Mapping[str, Any]


@dataclass(frozen=True)
class PatchSpec:
    """JSON merge patch of `.spec`, applied only if every `expect` field holds."""

    kind: Kind
    name: str
    patch: Mapping[str, Any]
    expect: Mapping[str, Any]


@dataclass(frozen=True)
class DeleteObject:
    """Delete an object; a missing object is fine."""

    kind: Kind
    name: str


@dataclass(frozen=True)
class StartPod:
    """Side effect: start the pod of one dispatch (name from `names.pod_name`)."""

    agent: str
    generation: int
    bead: str | None
    role: str


@dataclass(frozen=True)
class StopPod:
    """Side effect: delete a pod (gracefully)."""

    pod: str
    reason: str


@dataclass(frozen=True)
class PollPR:
    """Side effect: poll a pull request and write `review.prState` on the bead.

    The URL is a refinery's claim: the poller checks it against the provider's API, with what
    the PR must carry (`head_branch` at `head_sha` into `base_branch`), and writes `mismatch`
    when anything differs. `head_sha` is None when the expected commit is unknown.
    """

    bead: str
    url: str
    head_branch: str
    base_branch: str
    head_sha: str | None


@dataclass(frozen=True)
class BranchClaim:
    """An agent says it pushed `sha` to `branch` of the rig's remote."""

    rig: str
    branch: str
    sha: str


@dataclass(frozen=True)
class MergeClaim:
    """A refinery says `merge_commit` is on `target` and contains every commit of `contains`."""

    rig: str
    target: str
    merge_commit: str
    contains: tuple[str, ...]


Claim = BranchClaim | MergeClaim


@dataclass(frozen=True)
class VerifyClaim:
    """Side effect: check a claim against the rig's remote (read-only) and record the verdict.

    The verdict lands in the town's in-memory verdicts under `key` (one per report) and wakes
    the loop; it is not written to the API (re-checking after a restart is a cheap read).
    """

    key: str
    claim: Claim


@dataclass(frozen=True)
class Emit:
    """A Kubernetes Event: type "Normal" or "Warning", CamelCase reason."""

    kind: Kind
    name: str
    type: str
    reason: str
    message: str


Write = (
    CreateObject
    | PatchStatus
    | PatchSpec
    | DeleteObject
    | StartPod
    | StopPod
    | PollPR
    | VerifyClaim
    | Emit
)


def iso(moment: datetime) -> str:
    """ISO-8601 in UTC with a trailing "Z", the one timestamp format used in patches."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    text = moment.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def merge_patch(document: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch: nested dicts merge, None deletes, anything else replaces."""
    result = copy.deepcopy(dict(document))
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping):
            current = result.get(key)
            base = current if isinstance(current, Mapping) else {}
            result[key] = merge_patch(base, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def expect_holds(part: BaseModel | Mapping[str, Any], expect: Mapping[str, Any]) -> bool:
    """True if every expected top-level field of `part` (a spec or status) has that value.

    A model is compared through its JSON dump with aliases, so a field left out on the wire
    equals its default and enums compare as their string values.
    """
    if not expect:
        return True
    current = part.model_dump(mode="json", by_alias=True) if isinstance(part, BaseModel) else part
    return all(current.get(key) == value for key, value in expect.items())
