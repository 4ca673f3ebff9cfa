"""The short soak: every kind of fault during a few minutes of work; nothing lost, nothing
duplicated, no violation (the long run is `make soak`; bench/soak.py says what it does)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def test_short_soak_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    args = ["--minutes", "1.5", "--beads", "30", "--fault-interval", "12"]
    args += ["--partition-seconds", "8", "--seed", "11", "--dir", str(tmp_path)]
    run = subprocess.run(
        [sys.executable, str(SOAK), *args], capture_output=True, text=True, timeout=1100
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    report = json.loads(run.stdout[run.stdout.index("{") :])
    assert report["landed"] == report["beads"] == 30
    assert set(report["faults"]) == {"kill", "freeze", "apiserver", "etcd", "partition"}
    assert report["duplicates"] == dict.fromkeys(report["duplicates"], 0)
    assert report["violations_at_end"] == 0
    assert report["convoys_finished_unseen"] == 0
    assert report["operator_restarts"] >= 1
