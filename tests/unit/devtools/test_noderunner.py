"""The local node runner binds only the pods a scheduler would place on its node."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from gastown.devtools.noderunner import NodeRunner


@pytest.mark.parametrize(
    ("selector", "binds"),
    [
        (None, True),
        ({}, True),
        ({"kubernetes.io/hostname": "runner"}, True),
        ({"kubernetes.io/os": "linux", "gastown.dev/local-node": "true"}, True),
        ({"kubernetes.io/hostname": "gastown-node"}, False),  # meant for the real node
        ({"disk": "ssd"}, False),
    ],
)
def test_node_selector_decides_whether_the_runner_binds_a_pod(
    selector: dict[str, str] | None, binds: bool
) -> None:
    runner = NodeRunner(
        kube=cast(Any, None), node="runner", root=Path("/nonexistent"), server="", ca_data=""
    )
    assert runner._selects_this_node(selector) is binds
