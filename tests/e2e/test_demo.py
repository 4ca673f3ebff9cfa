"""`make demo` as documented: from nothing to a landed convoy, with its own control plane."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster


def test_demo_lands_its_convoy_and_cleans_up(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gastown.devtools.demo", "--dir", str(tmp_path), "--timeout", "240"],
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "convoy app-v1: Landed" in out
    assert "Merge convoy/app-v1/" in out  # the one landing merge, in git log of main
    assert "town.gastown.dev/demo" in out
    # Every process the demo started is gone (the control plane was stopped by PID).
    state = (tmp_path / "cluster" / "state.json").read_text()
    assert '"pids": {}' in state
