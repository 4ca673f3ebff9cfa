"""From bead to merged commit: real pods (node runner), real git, the scripted coding agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gastown.model import BeadPhase
from tests.support.api import Api
from tests.support.git import files_on, log
from tests.support.procs import Process
from tests.support.town import TownView, bead, town

pytestmark = pytest.mark.cluster

SCRIPTED = {"kind": "command", "command": ["python", "-m", "gastown.agent.scripted"]}


def scripted_town(repo: Path, **spec: Any) -> dict[str, Any]:
    """A town whose agents run the scripted coding agent against a local bare repository."""
    spec.setdefault("policy", {})
    spec["policy"].setdefault("retry", {"backoffSeconds": [1]})
    body = town(git_url=str(repo), **spec)
    body["spec"]["agent"]["codingAgent"] = SCRIPTED
    body["spec"]["agent"]["env"] = [{"name": "GASTOWN_HEARTBEAT_SECONDS", "value": "2"}]
    return body


def test_single_bead_is_merged_into_main(
    api: Api,
    namespace: str,
    node_runner_proc: Process,
    operator_proc: Process,
    view: TownView,
    rig_repo: Path,
) -> None:
    assert api.create(namespace, scripted_town(rig_repo)).status == 201
    assert api.create(namespace, bead("hello")).status == 201
    view.wait(
        lambda: any(b.name == "hello" and b.status.phase is BeadPhase.CLOSED for b in view.beads()),
        120,
        "the bead to be merged",
    )
    assert "beads/hello.md" in files_on(rig_repo), log(rig_repo)
