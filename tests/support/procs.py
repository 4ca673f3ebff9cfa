"""Processes that end-to-end tests run as production runs them: the operator, the node runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gastown.devtools.controlplane import REPO_ROOT, ControlPlane, wait_until


@dataclass
class Process:
    """A child process with its output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    def start(self) -> None:
        """Start (or restart) the process."""
        self.starts += 1
        handle = self.log.open("ab")
        handle.write(f"\n===== start #{self.starts} =====\n".encode())
        handle.flush()
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        handle.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        """Still running."""
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 60) -> str:
        """Last lines of the log."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _env(plane: ControlPlane, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GASTOWN_")}
    env["KUBECONFIG"] = str(plane.kubeconfig)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def operator(plane: ControlPlane, namespace: str, log_dir: Path, **env: str) -> Process:
    """The operator, watching one namespace, as `gastown run` runs it."""
    gastown = str(Path(sys.executable).parent / "gastown")
    return Process(
        "operator",
        [gastown, "run", "--namespace", namespace, "--log-format", "plain"],
        _env(plane, {"GASTOWN_RESYNC_SECONDS": "2", **env}),
        log_dir / f"operator-{namespace}.log",
    )


def node_runner(
    plane: ControlPlane, root: Path, log_dir: Path, node: str = "gastown-local"
) -> Process:
    """The local node runner."""
    return Process(
        "node-runner",
        [sys.executable, "-m", "gastown.devtools.noderunner", "--node", node, "--root", str(root)],
        _env(plane),
        log_dir / "node-runner.log",
    )


def wait_started(process: Process, marker: str, timeout: float = 60) -> None:
    """Wait until the process logged `marker` (or died)."""

    def ready() -> bool:
        if not process.alive():
            raise AssertionError(f"{process.name} exited:\n{process.tail()}")
        return (
            marker
            in process.log.read_text(errors="replace").split(
                f"===== start #{process.starts} ====="
            )[-1]
        )

    wait_until(ready, timeout, f"{process.name} to log {marker!r}")
