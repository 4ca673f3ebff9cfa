"""The agent's only link to the outside world: its own Agent object and the work it is hooked to.

`AgentChannel` is deliberately small and synchronous: the `gt` tools are short-lived CLI
processes, and the runtime calls the channel through `asyncio.to_thread`. Two implementations:

- `FileChannel` (here): the Agent, and the work order, live in one JSON file guarded by an
  advisory lock. Unit tests and local debugging use it (`GASTOWN_CHANNEL=file:<path>`).
- `gastown.kube.agent_channel:KubeAgentChannel` (the kube layer): reads the Agent, Bead, Convoy
  and Town through the API and writes only its own Agent's status, with resourceVersion
  preconditions. It must behave like `FileChannel`; the pure helpers below (`add_report`,
  `add_delivered_nudge`, `check_generation`, `pending_nudges`) exist so both share the rules.

Write semantics every implementation guarantees:
- a report gets `seq = max(existing seqs, appliedReportSeq) + 1`, the identity's generation and
  the current time, and is appended with compare-and-set (retry on a conflict, never lose or
  duplicate a report);
- every write is refused with `StaleGenerationError` once the Agent's spec.generation differs
  from the generation this process was dispatched with (a stale pod must not write facts);
- the runtime owns `activity`, `reports`, `checkpoint`, `statusMessage` and `deliveredNudges`
  and never touches the operator's status fields.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from gastown.agent.identity import Identity
from gastown.agent.redaction import Redactor, pod_redactor
from gastown.model.agent import Activity, AgentSpec, AgentStatus, Nudge, Report
from gastown.model.bead import BeadSpec
from gastown.model.enums import ReportType
from gastown.model.spend import RateLimitInfo, Usage
from gastown.model.town import CodingAgent, Rig

MAX_REPORTS = 64
MAX_DELIVERED_NUDGES = 64
MAX_CHECKPOINT = 16384
MAX_STATUS_MESSAGE = 1024
MAX_REPORT_TEXT = 4096
"""Bound of a report's message and summary (a refinery gate's output goes into the message)."""
MAX_FEEDBACK = 20000
"""Bound of a report's review feedback."""


class ChannelError(Exception):
    """The channel could not read or write the Agent."""


class NoHookError(ChannelError):
    """The agent has no hooked bead (or the hook has no work order)."""


class StaleGenerationError(ChannelError):
    """The Agent was re-dispatched: this process's generation is no longer current."""


class DispatchNotRecordedError(ChannelError):
    """The Agent's status does not name this pod yet: the operator is still recording the
    dispatch it started the pod for (transient; the runtime retries)."""


@dataclass(frozen=True)
class AgentView:
    """The agent's own Agent object as last read."""

    spec: AgentSpec
    status: AgentStatus
    resource_version: str | None = None


@dataclass(frozen=True)
class WorkOrder:
    """Everything the runtime needs about the hooked bead, its rig and the town.

    The channel assembles it from the Agent's hook, the Bead, the bead's Convoy and the Town.
    """

    bead: str
    """Name of the hooked Bead."""
    spec: BeadSpec
    """The hooked Bead's spec (title, description, type, mergeRequest, rework, convoy)."""
    generation: int
    """The Agent's spec.generation when the order was read."""
    rig: Rig
    """The bead's rig: gitUrl, defaultBranch, mergeStrategy, pullRequests, gates."""
    base_branch: str
    """Branch the work starts from and is merged into: the rig's default branch, the convoy
    feature branch `convoy/<slug>/<short-id>/head` for a review-then-land convoy bead, the
    merge request's target branch for a rework bead, targetBranch for a merge request."""
    coding_agent: CodingAgent = field(default_factory=CodingAgent)
    """Town spec.agent.codingAgent."""
    gates: tuple[str, ...] = ()
    """Effective gate commands: the rig's gates if set, else the town's refinery gates."""
    review: bool = False
    """Town spec.refinery.review: let the coding agent review merges."""
    bead_uid: str | None = None
    """metadata.uid of the Bead (short branch ids come from it)."""
    source_title: str | None = None
    """For merge_request and rework beads: the title of the original work item."""
    source_description: str | None = None
    """For merge_request and rework beads: the description of the original work item."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (camelCase, like the API)."""
        return {
            "bead": self.bead,
            "beadUid": self.bead_uid,
            "spec": self.spec.to_api(),
            "generation": self.generation,
            "rig": self.rig.to_api(),
            "baseBranch": self.base_branch,
            "codingAgent": self.coding_agent.to_api(),
            "gates": list(self.gates),
            "review": self.review,
            "sourceTitle": self.source_title,
            "sourceDescription": self.source_description,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkOrder:
        """Inverse of `to_dict`."""
        return cls(
            bead=data["bead"],
            bead_uid=data.get("beadUid"),
            spec=BeadSpec.model_validate(data["spec"]),
            generation=int(data["generation"]),
            rig=Rig.model_validate(data["rig"]),
            base_branch=data["baseBranch"],
            coding_agent=CodingAgent.model_validate(data.get("codingAgent") or {}),
            gates=tuple(data.get("gates") or ()),
            review=bool(data.get("review", False)),
            source_title=data.get("sourceTitle"),
            source_description=data.get("sourceDescription"),
        )


@dataclass(frozen=True)
class ReportDraft:
    """A report before the channel stamps it with seq, generation and time."""

    type: ReportType
    bead: str | None = None
    branch: str | None = None
    head_sha: str | None = None
    summary: str | None = None
    pr_url: str | None = None
    merge_commit: str | None = None
    feedback: str | None = None
    files: tuple[str, ...] = ()
    message: str | None = None
    exit_code: int | None = None
    usage: Usage | None = None
    rate_limit: RateLimitInfo | None = None


class AgentChannel(Protocol):
    """What the runtime and `gt` need from the Agent's world. All methods are synchronous."""

    def read_agent(self) -> AgentView:
        """Read the agent's own Agent object (spec: hook, generation, nudges; status)."""
        ...

    def read_work_order(self) -> WorkOrder:
        """Read the hooked bead and its rig/town settings; NoHookError without a hook."""
        ...

    def append_report(self, draft: ReportDraft) -> Report:
        """Append one report (next seq, own generation, now) with compare-and-set."""
        ...

    def write_activity(self, activity: Activity) -> None:
        """Replace the activity watermark (the heartbeat)."""
        ...

    def set_status_message(self, message: str) -> None:
        """Set status.statusMessage (at most 1024 characters)."""
        ...

    def set_checkpoint(self, checkpoint: str) -> None:
        """Set status.checkpoint (a JSON document, at most 16384 characters)."""
        ...

    def ack_nudge(self, nudge_id: str) -> None:
        """Record that the nudge was delivered (idempotent)."""
        ...


# --- Pure rules shared by every implementation ---------------------------------------------


ENV_USAGE_FILE = "GASTOWN_USAGE_FILE"
"""File where the runtime keeps the session's usage so far, for the reports `gt` writes."""


def read_usage_file(env: Mapping[str, str]) -> Usage | None:
    """The usage the runtime recorded for this session (None if there is none or it is bad)."""
    path = env.get(ENV_USAGE_FILE)
    if not path:
        return None
    try:
        return Usage.model_validate_json(Path(path).read_text())
    except (OSError, ValueError):
        return None


def utcnow() -> datetime:
    """The current time, timezone-aware (one timestamp type everywhere: seed §11.2.4)."""
    return datetime.now(UTC)


def check_generation(spec: AgentSpec, identity: Identity) -> None:
    """Refuse writes from a process whose dispatch generation is no longer current."""
    if spec.generation != identity.generation:
        raise StaleGenerationError(
            f"agent {identity.agent} is at generation {spec.generation}, this process was "
            f"dispatched for generation {identity.generation}"
        )


def pending_nudges(spec: AgentSpec, status: AgentStatus) -> list[Nudge]:
    """Nudges posted and not yet acknowledged, oldest first."""
    delivered = set(status.delivered_nudges)
    return sorted(
        (n for n in spec.nudges if n.id not in delivered), key=lambda n: (n.created_at, n.id)
    )


def add_report(
    status: AgentStatus, draft: ReportDraft, generation: int, now: datetime
) -> tuple[AgentStatus, Report]:
    """Return the status with the report appended, and the stamped report."""
    seq = max([r.seq for r in status.reports] + [status.applied_report_seq]) + 1
    report = Report(
        seq=seq,
        generation=generation,
        type=draft.type,
        at=now,
        bead=draft.bead,
        branch=draft.branch,
        head_sha=draft.head_sha,
        summary=_clip(draft.summary, MAX_REPORT_TEXT),
        pr_url=draft.pr_url,
        merge_commit=draft.merge_commit,
        feedback=_clip(draft.feedback, MAX_FEEDBACK),
        files=[f[:1024] for f in draft.files[:100]],
        message=_clip(draft.message, MAX_REPORT_TEXT),
        exit_code=draft.exit_code,
        usage=draft.usage,
        rate_limit=draft.rate_limit,
    )
    reports = list(status.reports)
    if len(reports) >= MAX_REPORTS:
        # Reports the operator already applied are history; drop the oldest of them to make room.
        applied = [r for r in reports if r.seq <= status.applied_report_seq]
        if not applied:
            raise ChannelError("report list is full of reports the operator has not applied")
        drop = len(reports) - MAX_REPORTS + 1
        dropped = {r.seq for r in applied[:drop]}
        reports = [r for r in reports if r.seq not in dropped]
    reports.append(report)
    return status.model_copy(update={"reports": reports}), report


def add_delivered_nudge(status: AgentStatus, nudge_id: str) -> AgentStatus:
    """Return the status with the nudge acknowledged (bounded, idempotent)."""
    if nudge_id in status.delivered_nudges:
        return status
    delivered = [*status.delivered_nudges, nudge_id][-MAX_DELIVERED_NUDGES:]
    return status.model_copy(update={"delivered_nudges": delivered})


def validate_checkpoint(checkpoint: str) -> None:
    """Raise ValueError unless the checkpoint is a JSON document that fits the status field."""
    if len(checkpoint) > MAX_CHECKPOINT:
        raise ValueError(f"checkpoint is {len(checkpoint)} characters, limit {MAX_CHECKPOINT}")
    try:
        json.loads(checkpoint)
    except json.JSONDecodeError as exc:
        raise ValueError(f"checkpoint is not valid JSON: {exc}") from None


def wrap_checkpoint(bead: str | None, generation: int, data: str) -> str:
    """Store an agent's checkpoint (a JSON document) with the bead it belongs to.

    The bead tag lets the runtime ignore a checkpoint left over from a different bead.
    """
    try:
        parsed = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ValueError(f"checkpoint is not valid JSON: {exc}") from None
    wrapped = json.dumps({"bead": bead, "generation": generation, "data": parsed})
    validate_checkpoint(wrapped)
    return wrapped


def unwrap_checkpoint(raw: str | None, bead: str) -> str | None:
    """The agent's checkpoint data for `bead` (as JSON text), or None."""
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or doc.get("bead") != bead or "data" not in doc:
        return None
    return json.dumps(doc["data"])


def _clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


# --- FileChannel -----------------------------------------------------------------------------


class FileChannel:
    """An AgentChannel over one JSON file: {"resourceVersion", "agent": {spec, status},
    "workOrder"}. An flock on `<file>.lock` makes each read-modify-write atomic across the
    runtime and concurrent `gt` processes; files are replaced atomically."""

    def __init__(self, path: Path, identity: Identity) -> None:
        self.path = path
        self.identity = identity

    # -- setup helpers (tests and local debugging play the operator with these) --

    @staticmethod
    def create(
        path: Path,
        spec: AgentSpec,
        work_order: WorkOrder | None,
        status: AgentStatus | None = None,
    ) -> None:
        """Write a fresh channel file."""
        doc = {
            "resourceVersion": 1,
            "agent": {
                "spec": spec.to_api(),
                "status": (status or AgentStatus()).to_api(),
            },
            "workOrder": None if work_order is None else work_order.to_dict(),
        }
        with _locked(path):
            _write(path, doc)

    @staticmethod
    def update_spec(path: Path, change: Callable[[AgentSpec], AgentSpec]) -> None:
        """Change the Agent spec as the operator would (post a nudge, re-dispatch)."""

        def apply(doc: dict[str, Any]) -> None:
            spec = AgentSpec.model_validate(doc["agent"]["spec"])
            doc["agent"]["spec"] = change(spec).to_api()

        _modify(path, apply)

    @staticmethod
    def post_nudge(path: Path, nudge: Nudge) -> None:
        """Append a nudge to the Agent spec."""
        FileChannel.update_spec(path, lambda s: s.model_copy(update={"nudges": [*s.nudges, nudge]}))

    @staticmethod
    def load(path: Path) -> AgentView:
        """Read the Agent without an identity (for assertions)."""
        doc = _read(path)
        return AgentView(
            spec=AgentSpec.model_validate(doc["agent"]["spec"]),
            status=AgentStatus.model_validate(doc["agent"]["status"]),
            resource_version=str(doc["resourceVersion"]),
        )

    # -- AgentChannel --

    def read_agent(self) -> AgentView:
        """Read the agent's own Agent object."""
        return self.load(self.path)

    def read_work_order(self) -> WorkOrder:
        """Read the work order of the hooked bead."""
        doc = _read(self.path)
        spec = AgentSpec.model_validate(doc["agent"]["spec"])
        if spec.hook is None:
            raise NoHookError(f"agent {self.identity.agent} has no hooked bead")
        raw = doc.get("workOrder")
        if raw is None:
            raise NoHookError(f"no work order for bead {spec.hook}")
        order = WorkOrder.from_dict(raw)
        if order.bead != spec.hook:
            raise NoHookError(f"work order is for {order.bead}, the hook is {spec.hook}")
        return replace(order, generation=spec.generation)

    def append_report(self, draft: ReportDraft) -> Report:
        """Append one report; the lock makes the read-modify-write a compare-and-set."""
        stamped: list[Report] = []

        def change(status: AgentStatus) -> AgentStatus:
            new_status, report = add_report(status, draft, self.identity.generation, utcnow())
            stamped.append(report)
            return new_status

        self._update_status(change)
        return stamped[0]

    def write_activity(self, activity: Activity) -> None:
        """Replace the activity watermark."""
        self._update_status(lambda s: s.model_copy(update={"activity": activity}))

    def set_status_message(self, message: str) -> None:
        """Set statusMessage."""
        if len(message) > MAX_STATUS_MESSAGE:
            raise ValueError(f"status message longer than {MAX_STATUS_MESSAGE} characters")
        self._update_status(lambda s: s.model_copy(update={"status_message": message}))

    def set_checkpoint(self, checkpoint: str) -> None:
        """Set checkpoint after validating it."""
        validate_checkpoint(checkpoint)
        self._update_status(lambda s: s.model_copy(update={"checkpoint": checkpoint}))

    def ack_nudge(self, nudge_id: str) -> None:
        """Acknowledge a delivered nudge."""
        self._update_status(lambda s: add_delivered_nudge(s, nudge_id))

    def _update_status(self, change: Callable[[AgentStatus], AgentStatus]) -> None:
        def apply(doc: dict[str, Any]) -> None:
            spec = AgentSpec.model_validate(doc["agent"]["spec"])
            check_generation(spec, self.identity)
            status = AgentStatus.model_validate(doc["agent"]["status"])
            # Round-trip through the model so that invalid values fail here, like the API would.
            doc["agent"]["status"] = AgentStatus.model_validate(change(status).to_api()).to_api()

        _modify(self.path, apply)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".lock")
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ChannelError(f"channel file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ChannelError(f"channel file {path} is not JSON: {exc}") from None
    return data


def _write(path: Path, doc: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(doc, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _modify(path: Path, apply: Callable[[dict[str, Any]], None]) -> None:
    with _locked(path):
        doc = _read(path)
        apply(doc)
        doc["resourceVersion"] = int(doc.get("resourceVersion", 0)) + 1
        _write(path, doc)


# --- Choosing the channel --------------------------------------------------------------------

KUBE_CHANNEL = "gastown.kube.agent_channel:KubeAgentChannel"


def open_channel(identity: Identity, redactor: Redactor | None = None) -> AgentChannel:
    """The channel GASTOWN_CHANNEL selects: `file:<path>`, or by default the Kubernetes one.

    The Kubernetes channel is imported lazily by name so that this package never imports a
    Kubernetes client (import-linter enforces it) and so that `gt` works without one in tests.
    It is constructed as `KubeAgentChannel(identity)`.

    The channel comes wrapped in a `RedactingChannel` with `redactor` (default: the pod's
    secrets, `gastown.agent.redaction.pod_redactor`): this factory is how the runtime and every
    `gt` tool reach their Agent, so no text they write can skip redaction.
    """
    return RedactingChannel(_open_raw(identity), pod_redactor() if redactor is None else redactor)


def _open_raw(identity: Identity) -> AgentChannel:
    spec = identity.channel
    if spec is not None:
        if spec.startswith("file:") and len(spec) > len("file:"):
            return FileChannel(Path(spec[len("file:") :]), identity)
        raise ChannelError(f"GASTOWN_CHANNEL={spec!r} is not understood (use file:<path>)")
    module_name, _, attr = KUBE_CHANNEL.partition(":")
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ChannelError(
            f"the Kubernetes agent channel {KUBE_CHANNEL} is not available ({exc}); "
            "set GASTOWN_CHANNEL=file:<path> to use a file channel"
        ) from None
    channel: AgentChannel = factory(identity)
    return channel


# --- Redaction --------------------------------------------------------------------------------


class RedactingChannel:
    """An AgentChannel that redacts every text before the wrapped channel writes it.

    The pod's secrets (`secretEnv` values, git credentials, the PR token) must never reach the
    API: the operator copies report text into Beads and Events. Redacting here, below every
    writer and above every implementation, covers every field the runtime owns: each string of
    a report, the activity watermark, statusMessage and the checkpoint. It runs before the
    channel clips texts to their limits, so a clip can never cut a secret in half and leave a
    piece of it visible.
    """

    def __init__(self, inner: AgentChannel, redactor: Redactor) -> None:
        self.inner = inner
        self.redactor = redactor

    def read_agent(self) -> AgentView:
        """Read the agent's own Agent object."""
        return self.inner.read_agent()

    def read_work_order(self) -> WorkOrder:
        """Read the work order of the hooked bead."""
        return self.inner.read_work_order()

    def append_report(self, draft: ReportDraft) -> Report:
        """Append the report with every string field redacted."""
        return self.inner.append_report(redact_draft(draft, self.redactor))

    def write_activity(self, activity: Activity) -> None:
        """Replace the activity watermark (tool names and event types redacted)."""
        if self.redactor:
            activity = Activity.model_validate(self.redactor.redact_json(activity.to_api()))
        self.inner.write_activity(activity)

    def set_status_message(self, message: str) -> None:
        """Set statusMessage, redacted."""
        self.inner.set_status_message(self.redactor.redact(message))

    def set_checkpoint(self, checkpoint: str) -> None:
        """Set the checkpoint with every string inside the JSON document redacted."""
        self.inner.set_checkpoint(redact_checkpoint(checkpoint, self.redactor))

    def ack_nudge(self, nudge_id: str) -> None:
        """Acknowledge a delivered nudge."""
        self.inner.ack_nudge(nudge_id)


def redact_draft(draft: ReportDraft, redactor: Redactor) -> ReportDraft:
    """The draft with every string (and every string of a tuple) redacted."""
    if not redactor:
        return draft
    changes: dict[str, Any] = {}
    for item in fields(draft):
        value = getattr(draft, item.name)
        if isinstance(value, str):
            changes[item.name] = redactor.redact(value)
        elif isinstance(value, tuple):
            changes[item.name] = tuple(
                redactor.redact(v) if isinstance(v, str) else v for v in value
            )
    return replace(draft, **changes)


def redact_checkpoint(checkpoint: str, redactor: Redactor) -> str:
    """Redact a checkpoint, keeping it a valid JSON document when it was one."""
    redacted = redactor.redact(checkpoint)
    if redacted == checkpoint:
        return checkpoint
    try:
        # Redact the decoded strings: a secret may sit there JSON-escaped, and replacing raw
        # text could cut an escape sequence in half.
        return json.dumps(redactor.redact_json(json.loads(checkpoint)))
    except json.JSONDecodeError:
        return redacted
