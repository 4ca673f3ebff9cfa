"""`make demo`: a whole town on this machine, from nothing to a landed convoy.

Builds (or reuses) the local control plane, starts it with the local node runner and the
operator, creates a git repository, applies a Town and a Convoy whose agents run the scripted
coding agent (or Claude Code when its CLI and ANTHROPIC_API_KEY are present), shows progress
live, and ends with the convoy landed, `git log` of main and `kubectl get gastown`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from gastown.devtools.controlplane import REPO_ROOT, ControlPlane

TASKS = [
    {"key": "model", "title": "Add the data model", "description": "Create the core types."},
    {"key": "api", "title": "Add the HTTP API", "dependsOn": ["model"]},
    {"key": "cli", "title": "Add the command line", "dependsOn": ["model"]},
    {"key": "docs", "title": "Write the user guide", "dependsOn": ["api", "cli"]},
]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "demo",
    "GIT_AUTHOR_EMAIL": "demo@gastown.invalid",
    "GIT_COMMITTER_NAME": "demo",
    "GIT_COMMITTER_EMAIL": "demo@gastown.invalid",
}


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout


def make_repository(root: Path) -> Path:
    """A bare repository with a README on main."""
    bare = root / "app.git"
    if bare.exists():
        shutil.rmtree(bare)
    _git("init", "--bare", "-b", "main", str(bare))
    seed = root / "seed"
    shutil.rmtree(seed, ignore_errors=True)
    _git("clone", str(bare), str(seed))
    (seed / "README.md").write_text("# demo app\n")
    _git("add", "README.md", cwd=seed)
    _git("commit", "-m", "initial commit", cwd=seed)
    _git("push", "origin", "HEAD:main", cwd=seed)
    return bare


def coding_agent() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Claude Code when available, else the scripted agent; plus the Secret env it needs."""
    if shutil.which("claude") and os.environ.get("ANTHROPIC_API_KEY"):
        return {"kind": "claude-code"}, [
            {"name": "ANTHROPIC_API_KEY", "secretKeyRef": {"name": "anthropic", "key": "api-key"}}
        ]
    return {"kind": "command", "command": ["python", "-m", "gastown.agent.scripted"]}, []


def manifests(repo: Path) -> list[dict[str, Any]]:
    """The Town and the Convoy of the demo."""
    agent, secret_env = coding_agent()
    town = {
        "apiVersion": "gastown.dev/v1alpha1",
        "kind": "Town",
        "metadata": {"name": "demo"},
        "spec": {
            "rigs": [{"name": "app", "gitUrl": str(repo)}],
            "agent": {
                "image": "gastown-agent:local",
                "codingAgent": agent,
                "secretEnv": secret_env,
                "env": [{"name": "GASTOWN_HEARTBEAT_SECONDS", "value": "5"}],
            },
            "limits": {"maxPolecatsPerRig": 2, "maxPolecats": 4},
            "refinery": {"gates": ["test -f README.md"]},
        },
    }
    convoy = {
        "apiVersion": "gastown.dev/v1alpha1",
        "kind": "Convoy",
        "metadata": {"name": "app-v1"},
        "spec": {"town": "demo", "rig": "app", "mergeMode": "review-then-land", "tasks": TASKS},
    }
    return [town, convoy]


def _get(plane: ControlPlane, what: str, namespace: str) -> list[dict[str, Any]]:
    out = plane.kubectl("get", what, "-n", namespace, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def progress_lines(plane: ControlPlane, namespace: str) -> list[str]:
    """One line per convoy and bead."""
    lines = []
    for convoy in _get(plane, "convoys", namespace):
        status = convoy.get("status") or {}
        lines.append(
            f"convoy {convoy['metadata']['name']}: {status.get('phase', '-')} "
            f"{status.get('progress', '')}"
        )
    for bead in sorted(_get(plane, "beads", namespace), key=lambda b: b["metadata"]["name"]):
        status = bead.get("status") or {}
        who = f" ({status['assignee']})" if status.get("assignee") else ""
        lines.append(
            f"  {bead['spec']['type']:<13} {bead['metadata']['name']:<28} "
            f"{status.get('phase', 'open'):<11}{who}"
        )
    return lines


def run(directory: Path, timeout: float, keep: bool) -> int:
    """The demo itself; returns the exit code."""
    directory.mkdir(parents=True, exist_ok=True)
    plane = ControlPlane(directory=directory / "cluster")
    print("starting the local control plane (the first run builds it; this takes a few minutes)")
    plane.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        plane.install_crds(REPO_ROOT / "crds")
        env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "PYTHONUNBUFFERED": "1"}
        logs = directory / "logs"
        logs.mkdir(exist_ok=True)
        bin_dir = Path(sys.executable).parent
        for name, argv in (
            (
                "node-runner",
                [
                    sys.executable,
                    "-m",
                    "gastown.devtools.noderunner",
                    "--root",
                    str(directory / "pods"),
                ],
            ),
            (
                "operator",
                [str(bin_dir / "gastown"), "run", "-n", "default", "--log-format", "plain"],
            ),
        ):
            with (logs / f"{name}.log").open("ab") as log:
                procs.append(
                    subprocess.Popen(
                        argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        repo = make_repository(directory / "remote")
        objects = manifests(repo)
        if any(v.get("secretKeyRef") for v in objects[0]["spec"]["agent"]["secretEnv"]):
            plane.kubectl(
                "create",
                "secret",
                "generic",
                "anthropic",
                f"--from-literal=api-key={os.environ['ANTHROPIC_API_KEY']}",
            )
            # A Town may use only Secrets that opted in to it (see "Security model").
            plane.kubectl("label", "secret", "anthropic", "gastown.dev/town=demo")
        path = directory / "demo.yaml"
        path.write_text(yaml.safe_dump_all(objects))
        plane.kubectl("apply", "-f", str(path))
        kind = objects[0]["spec"]["agent"]["codingAgent"]["kind"]
        print(f"applied Town demo and Convoy app-v1 (coding agent: {kind})")
        shown: list[str] = []
        deadline = time.monotonic() + timeout
        phase = ""
        while time.monotonic() < deadline:
            lines = progress_lines(plane, "default")
            if lines != shown:
                print(f"--- {time.strftime('%H:%M:%S')}")
                print("\n".join(lines), flush=True)
                shown = lines
            convoy = _get(plane, "convoys", "default")
            phase = (convoy[0].get("status") or {}).get("phase", "") if convoy else ""
            if phase in ("Landed", "Failed"):
                break
            time.sleep(1)
        print(f"\nconvoy app-v1: {phase or 'not finished'}\n")
        print("git log of main:")
        print(_git("log", "--oneline", "--graph", "main", cwd=repo))
        print(plane.kubectl("get", "gastown", "-n", "default").stdout)
        return 0 if phase == "Landed" else 1
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if keep:
            print(f"control plane left running: export KUBECONFIG={plane.kubeconfig}")
        else:
            plane.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m gastown.devtools.demo [--dir DIR] [--timeout S] [--keep]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(".local/demo"))
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--keep", action="store_true", help="leave the control plane running")
    args = parser.parse_args(argv)
    return run(args.dir.resolve(), args.timeout, args.keep)


if __name__ == "__main__":
    raise SystemExit(main())
