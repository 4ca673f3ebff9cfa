"""The Kubernetes implementation of the agent runtime's `AgentChannel`.

It runs inside agent pods with the pod's own ServiceAccount token, whose Role allows writing the
status of this one Agent only. Every status write is a JSON merge patch carrying the
resourceVersion it was computed from (compare-and-set); on a conflict it re-reads and retries,
so a report is never lost nor duplicated, and the operator's status fields are never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gastown.agent.channel import (
    MAX_STATUS_MESSAGE,
    AgentView,
    ChannelError,
    NoHookError,
    ReportDraft,
    WorkOrder,
    add_delivered_nudge,
    add_report,
    check_generation,
    utcnow,
    validate_checkpoint,
)
from gastown.agent.identity import Identity
from gastown.kube.errors import ApiError, Conflict, NotFound
from gastown.kube.rest import RestClient
from gastown.model import Agent, Bead, Convoy, ConvoyMergeMode, Town
from gastown.model.agent import RUNTIME_STATUS_FIELDS, Activity, AgentStatus, Report
from gastown.reconcile.names import feature_branch

MAX_ATTEMPTS = 20
RUNTIME_FIELDS = RUNTIME_STATUS_FIELDS


class KubeAgentChannel:
    """AgentChannel over the API server."""

    def __init__(self, identity: Identity, client: RestClient | None = None) -> None:
        self.identity = identity
        self.client = client or RestClient.from_environment()
        self.ns = identity.namespace

    # -- reads ---------------------------------------------------------------------------------

    def _get(self, kind: str, name: str) -> dict[str, Any]:
        try:
            return self.client.get(kind, self.ns, name)
        except NotFound:
            raise ChannelError(f"{kind} {name} not found") from None
        except ApiError as err:
            raise ChannelError(f"reading {kind} {name}: {err}") from None

    def read_agent(self) -> AgentView:
        """Read the agent's own Agent object."""
        agent = Agent.from_api(self._get("Agent", self.identity.agent))
        return AgentView(agent.spec, agent.status, agent.metadata.resource_version)

    def read_work_order(self) -> WorkOrder:
        """Assemble the work order from the hook, the Bead, its Convoy and the Town."""
        agent = self.read_agent()
        if agent.spec.hook is None:
            raise NoHookError(f"agent {self.identity.agent} has no hooked bead")
        bead = Bead.from_api(self._get("Bead", agent.spec.hook))
        town = Town.from_api(self._get("Town", self.identity.town))
        rig = next((r for r in town.spec.rigs if r.name == bead.spec.rig), None)
        if rig is None:
            raise NoHookError(f"bead {bead.name} names rig {bead.spec.rig!r}, not in the town")
        source = self._source(bead)
        return WorkOrder(
            bead=bead.name,
            bead_uid=bead.metadata.uid,
            spec=bead.spec,
            generation=agent.spec.generation,
            rig=rig,
            base_branch=self._base_branch(bead, rig.default_branch),
            coding_agent=town.spec.agent.coding_agent,
            gates=tuple(rig.gates if rig.gates is not None else town.spec.refinery.gates),
            review=town.spec.refinery.review,
            source_title=source.spec.title if source else None,
            source_description=source.spec.description if source else None,
        )

    def _source(self, bead: Bead) -> Bead | None:
        name = None
        if bead.spec.merge_request is not None:
            name = bead.spec.merge_request.source_bead
        elif bead.spec.rework is not None:
            name = bead.spec.rework.source_bead
        if name is None:
            return None
        try:
            return Bead.from_api(self.client.get("Bead", self.ns, name))
        except ApiError:
            return None  # a landing MR's source is a Convoy; the title is enough

    def _base_branch(self, bead: Bead, default_branch: str) -> str:
        if bead.spec.merge_request is not None:
            return bead.spec.merge_request.target_branch
        if bead.spec.rework is not None:
            mr = Bead.from_api(self._get("Bead", bead.spec.rework.merge_request))
            if mr.spec.merge_request is not None:
                return mr.spec.merge_request.target_branch
        if bead.spec.convoy:
            convoy = Convoy.from_api(self._get("Convoy", bead.spec.convoy))
            if convoy.spec.merge_mode is ConvoyMergeMode.REVIEW_THEN_LAND:
                return convoy.status.feature_branch or feature_branch(
                    convoy.name, convoy.metadata.uid
                )
        return default_branch

    # -- writes --------------------------------------------------------------------------------

    def _update(self, change: Callable[[AgentStatus], AgentStatus]) -> None:
        """Read-modify-write of the runtime's own status fields, compare-and-set."""
        for _ in range(MAX_ATTEMPTS):
            view = self.read_agent()
            check_generation(view.spec, self.identity)
            new = change(view.status).to_api()
            patch = {
                "metadata": {"resourceVersion": view.resource_version},
                "status": {key: new.get(key) for key in RUNTIME_FIELDS},
            }
            try:
                self.client.patch_status("Agent", self.ns, self.identity.agent, patch)
            except Conflict:
                continue  # somebody wrote in between: recompute on the fresh object
            except ApiError as err:
                raise ChannelError(f"writing Agent {self.identity.agent} status: {err}") from None
            return
        raise ChannelError(f"Agent {self.identity.agent} status kept changing; gave up")

    def append_report(self, draft: ReportDraft) -> Report:
        """Append one report with the next seq and this process's generation."""
        stamped: list[Report] = []

        def change(status: AgentStatus) -> AgentStatus:
            stamped.clear()
            new_status, report = add_report(status, draft, self.identity.generation, utcnow())
            stamped.append(report)
            return new_status

        self._update(change)
        return stamped[0]

    def write_activity(self, activity: Activity) -> None:
        """Replace the activity watermark (heartbeat)."""
        self._update(lambda s: s.model_copy(update={"activity": activity}))

    def set_status_message(self, message: str) -> None:
        """Set statusMessage."""
        if len(message) > MAX_STATUS_MESSAGE:
            raise ValueError(f"status message longer than {MAX_STATUS_MESSAGE} characters")
        self._update(lambda s: s.model_copy(update={"status_message": message}))

    def set_checkpoint(self, checkpoint: str) -> None:
        """Set the checkpoint (a JSON document)."""
        validate_checkpoint(checkpoint)
        self._update(lambda s: s.model_copy(update={"checkpoint": checkpoint}))

    def ack_nudge(self, nudge_id: str) -> None:
        """Acknowledge a delivered nudge."""
        self._update(lambda s: add_delivered_nudge(s, nudge_id))
