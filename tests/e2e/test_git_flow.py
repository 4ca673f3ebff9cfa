"""From bead to merged commit: real pods (node runner), real git, the scripted coding agent."""

from __future__ import annotations

import pytest

from gastown.devtools.gitserver import GitServer
from gastown.model import BeadPhase
from tests.support.api import Api
from tests.support.git import HttpRig, files_on, log
from tests.support.procs import Process
from tests.support.town import TownView, bead, scripted_town

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("remote", ["file", "http"])
def test_single_bead_is_merged_into_main(
    api: Api,
    namespace: str,
    node_runner_proc: Process,
    operator_proc: Process,
    view: TownView,
    request: pytest.FixtureRequest,
    remote: str,
) -> None:
    """Over a path, and over authenticated smart HTTP as hosted git is reached: the polecat's
    clone and push, the refinery's merge and push and the operator's checks of both claims."""
    if remote == "http":
        rig: HttpRig = request.getfixturevalue("http_rig_repo")
        server: GitServer = request.getfixturevalue("git_server")
        repo = rig.path
        body = scripted_town(rig.url)
        body["spec"]["rigs"][0]["credentialsSecret"] = rig.secret
    else:
        repo = request.getfixturevalue("rig_repo")
        body = scripted_town(repo)
    assert api.create(namespace, body).status == 201
    assert api.create(namespace, bead("hello")).status == 201
    view.wait(
        lambda: any(b.name == "hello" and b.status.phase is BeadPhase.CLOSED for b in view.beads()),
        120,
        "the bead to be merged",
    )
    assert "beads/hello.md" in files_on(repo), log(repo)
    if remote == "http":
        # Two pushes (the polecat's branch, the refinery's merge), each authenticated.
        path = f"/{namespace}/app.git/git-receive-pack"
        pushes = [r for r in server.requests if r.method == "POST" and r.path == path]
        assert len(pushes) >= 2, pushes
        assert all(r.status == 200 and r.user == server.username for r in pushes), pushes
