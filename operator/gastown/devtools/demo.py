"""`make demo`: a whole town on this machine, from nothing to a landed convoy.

Builds (or reuses) the local control plane and starts it with the operator. Where a real node
can run (Linux, root) the agents are real containers on it: the agent image is built locally and
imported into the node's containerd, the rig's remote is served over authenticated smart HTTP on
the node's bridge, and each agent runs the real Claude Code CLI, driven by the scripted model
server (or by the Anthropic API when ANTHROPIC_API_KEY is set); `--agent scripted` runs the
scripted coding agent instead. Elsewhere (`--runtime runner`, or no root) the local node runner
runs agent pods as processes. Shows progress live, where each pod runs, a Claude Code session
as `kubectl logs` shows it, and ends with the convoy landed, `git log` of main and
`kubectl get gastown`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gastown.devtools import images
from gastown.devtools import node as local_node
from gastown.devtools.controlplane import REPO_ROOT, ControlPlane
from gastown.devtools.gitserver import GitServer
from gastown.devtools.modelserver import ModelServer

NAMESPACE = "default"
LEAN_IMAGE = {"WITH_CLAUDE": "0", "WITH_CODEX": "0", "WITH_OPENCODE": "0", "WITH_AIDER": "0"}
"""Build arguments of the agent image for the scripted agent (no coding-agent CLIs)."""
SCRIPTED = {"kind": "command", "command": ["python", "-m", "gastown.agent.scripted"]}
ANTHROPIC_SECRET = {
    "name": "ANTHROPIC_API_KEY",
    "secretKeyRef": {"name": "anthropic", "key": "api-key"},
}
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


def make_repository(bare: Path) -> Path:
    """A bare repository at `bare` with a README on main (replacing any earlier one)."""
    if bare.exists():
        shutil.rmtree(bare)
    bare.parent.mkdir(parents=True, exist_ok=True)
    _git("init", "--bare", "-b", "main", str(bare))
    with tempfile.TemporaryDirectory(prefix="demo-seed-") as tmp:
        seed = Path(tmp) / "seed"
        _git("clone", str(bare), str(seed))
        (seed / "README.md").write_text("# demo app\n")
        _git("add", "README.md", cwd=seed)
        _git("commit", "-m", "initial commit", cwd=seed)
        _git("push", "origin", "HEAD:main", cwd=seed)
    return bare


@dataclass
class Setup:
    """Where the demo's agents run and what they run: the parts of the Town that differ."""

    git_url: str
    agent: dict[str, Any]
    secret_env: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    credentials_secret: str | None = None


def manifests(setup: Setup) -> list[dict[str, Any]]:
    """The Town and the Convoy of the demo."""
    rig: dict[str, Any] = {"name": "app", "gitUrl": setup.git_url}
    if setup.credentials_secret:
        rig["credentialsSecret"] = setup.credentials_secret
    env = {"GASTOWN_HEARTBEAT_SECONDS": "5", **setup.env}
    town = {
        "apiVersion": "gastown.dev/v1alpha1",
        "kind": "Town",
        "metadata": {"name": "demo"},
        "spec": {
            "rigs": [rig],
            "agent": {
                **setup.agent,
                "secretEnv": setup.secret_env,
                "env": [{"name": k, "value": v} for k, v in env.items()],
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


def _secret(plane: ControlPlane, name: str, data: dict[str, str]) -> None:
    """A Secret the Town may use (Secrets must opt in to a town: see "Security model")."""
    literals = [f"--from-literal={k}={v}" for k, v in data.items()]
    plane.kubectl("create", "secret", "generic", name, "-n", NAMESPACE, *literals)
    plane.kubectl("label", "secret", name, "-n", NAMESPACE, "gastown.dev/town=demo")


@contextlib.contextmanager
def on_the_node(
    plane: ControlPlane, directory: Path, scripted: bool, keep: bool
) -> Iterator[Setup]:
    """A real node, the agent image in it, git over authenticated HTTP and (unless an
    Anthropic key is given) the scripted model server, all on the node's bridge. With `keep`
    the node stays up afterwards (the servers end with the demo)."""
    node = local_node.Node(plane=plane, directory=plane.directory / "node")
    print("starting the local node (containerd, kubelet, scheduler; the first run builds it)")
    node.start()
    with contextlib.ExitStack() as stack:
        if not keep:
            stack.callback(node.stop)
        print(f"node {node.name} Ready in {node.startup_seconds:.1f} s")
        variant = "without coding-agent CLIs" if scripted else "with the coding-agent CLIs"
        print(f"building the agent image {variant} (cached; the first build takes minutes)")
        manifest, _ = images.build(
            ["agent"],
            {"agent": LEAN_IMAGE if scripted else {}},
            manifest_path=directory / "images.json",
        )
        record = manifest.images["agent"]
        node.import_image(Path(record.archive))
        print(f"agent image {record.ref} imported into the node's containerd")
        git = stack.enter_context(
            GitServer(directory / "git", "demo", secrets.token_urlsafe(18), host=node.gateway)
        )
        make_repository(git.root / "app.git")
        _secret(plane, "git-credentials", {"username": git.username, "password": git.password})
        setup = Setup(
            git_url=git.url("app.git"),
            agent={"image": record.ref, "imagePullPolicy": "Never"},
            credentials_secret="git-credentials",
        )
        if scripted:
            setup.agent["codingAgent"] = SCRIPTED
        else:
            setup.agent["codingAgent"] = {"kind": "claude-code"}
            key = os.environ.get("ANTHROPIC_API_KEY")
            if key:
                _secret(plane, "anthropic", {"api-key": key})
                setup.secret_env = [ANTHROPIC_SECRET]
            else:
                model = stack.enter_context(ModelServer(host=node.gateway))
                setup.env = model.env()
                print(f"scripted model server (Anthropic Messages API) at {model.url}")
        yield setup


@contextlib.contextmanager
def on_the_runner(
    plane: ControlPlane, directory: Path, scripted: bool, env: dict[str, str]
) -> Iterator[Setup]:
    """The local node runner: agent pods run as local processes of `gastown agent run`."""
    argv = [sys.executable, "-m", "gastown.devtools.noderunner", "--root", str(directory / "pods")]
    with _process("node-runner", argv, env, directory / "logs"):
        repo = make_repository(directory / "remote" / "app.git")
        setup = Setup(git_url=str(repo), agent={"image": "gastown-agent:local"})
        setup.agent["codingAgent"] = SCRIPTED
        key = os.environ.get("ANTHROPIC_API_KEY")
        if not scripted and shutil.which("claude") and key:
            setup.agent["codingAgent"] = {"kind": "claude-code"}
            _secret(plane, "anthropic", {"api-key": key})
            setup.secret_env = [ANTHROPIC_SECRET]
        yield setup


def _stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it has not exited 20 s later; returns once it is gone."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def _process(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Iterator[None]:
    """A background process logging to `logs/<name>.log`, stopped on exit."""
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield
    finally:
        _stop(proc)


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


class PodLog:
    """Where each agent pod ran, and its latest `kubectl logs` while it existed (the operator
    deletes an agent's pod when its work is done)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.nodes: dict[str, str] = {}
        self.logs: dict[str, str] = {}

    def poll(self) -> list[str]:
        """Read the pods; return a line for each one seen running for the first time."""
        lines = []
        for pod in _get(self.plane, "pods", NAMESPACE):
            name = pod["metadata"]["name"]
            if (pod.get("status") or {}).get("phase") != "Running":
                continue
            if name not in self.nodes:
                self.nodes[name] = pod["spec"].get("nodeName") or "-"
                lines.append(f"  pod {name} running on node {self.nodes[name]}")
            out = self.plane.kubectl("logs", "-n", NAMESPACE, name, check=False)
            if out.returncode == 0 and out.stdout:
                self.logs[name] = out.stdout
        return lines

    def session(self, marker: str) -> tuple[str, str] | None:
        """A pod whose log shows a coding-agent session line containing `marker`."""
        for name, text in self.logs.items():
            if marker in text:
                return name, text
        return None


def _show_session(pods: PodLog) -> None:
    """Print a few lines of one Claude Code session as `kubectl logs` showed it."""
    found = pods.session('"subtype":"init"') or pods.session('"subtype": "init"')
    if found is None:
        return
    name, text = found
    lines = [line for line in text.splitlines() if '"type"' in line][:6]
    print(f"kubectl logs {name} (first lines of the coding agent's session):")
    for line in lines:
        print(f"  {line[:160]}{'…' if len(line) > 160 else ''}")
    print()


def run(directory: Path, timeout: float, keep: bool, runtime: str, scripted: bool) -> int:
    """The demo itself; returns the exit code."""
    directory.mkdir(parents=True, exist_ok=True)
    names = (local_node.NODE_NAME,) if runtime == "node" else ()
    plane = ControlPlane(directory=directory / "cluster", node_names=names)
    print("starting the local control plane (the first run builds it; this takes a few minutes)")
    plane.start()
    keep_running = False
    try:
        plane.install_crds(REPO_ROOT / "crds")
        env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "PYTHONUNBUFFERED": "1"}
        operator_argv = [
            str(Path(sys.executable).parent / "gastown"),
            *("run", "-n", NAMESPACE, "--log-format", "plain"),
        ]
        place = (
            on_the_node(plane, directory, scripted, keep)
            if runtime == "node"
            else on_the_runner(plane, directory, scripted, env)
        )
        with place as setup, _process("operator", operator_argv, env, directory / "logs"):
            phase = _apply_and_follow(plane, setup, directory, timeout)
            keep_running = keep
        return 0 if phase == "Landed" else 1
    finally:
        if keep_running:
            print(f"control plane left running: export KUBECONFIG={plane.kubeconfig}")
            print(f"stop it with: gastown cluster down --dir {plane.directory}")
        else:
            plane.stop()


def _apply_and_follow(plane: ControlPlane, setup: Setup, directory: Path, timeout: float) -> str:
    """Apply the Town and Convoy, print progress until the convoy is terminal; its phase."""
    objects = manifests(setup)
    path = directory / "demo.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    plane.kubectl("apply", "-f", str(path))
    kind = setup.agent["codingAgent"]["kind"]
    print(f"applied Town demo and Convoy app-v1 (coding agent: {kind})")
    pods = PodLog(plane)
    shown: list[str] = []
    deadline = time.monotonic() + timeout
    phase = ""
    while time.monotonic() < deadline:
        started = pods.poll()
        lines = progress_lines(plane, NAMESPACE)
        if lines != shown or started:
            print(f"--- {time.strftime('%H:%M:%S')}")
            print("\n".join(lines + started), flush=True)
            shown = lines
        convoy = _get(plane, "convoys", NAMESPACE)
        phase = (convoy[0].get("status") or {}).get("phase", "") if convoy else ""
        if phase in ("Landed", "Failed"):
            break
        time.sleep(1)
    print(f"\nconvoy app-v1: {phase or 'not finished'}\n")
    _show_session(pods)
    where = sorted(set(pods.nodes.values()))
    print(f"{len(pods.nodes)} agent pods ran, on: {', '.join(where) or '-'}\n")
    print("git log of main:")
    print(_git("--git-dir", setup_repo(setup, directory), "log", "--oneline", "--graph", "main"))
    print(plane.kubectl("get", "gastown", "-n", NAMESPACE).stdout)
    screenshot(plane, directory / "convoy.png")
    return phase


SCREENSHOT_TIMEOUT = 120.0


@contextlib.contextmanager
def suppress_timeout() -> Iterator[None]:
    """A browser that hangs costs the picture, not the demo."""
    try:
        yield
    except subprocess.TimeoutExpired:
        print(f"chromium did not finish within {SCREENSHOT_TIMEOUT:.0f} s")


def screenshot(plane: ControlPlane, path: Path) -> Path | None:
    """Take a picture of the convoy's page in `kubectl gastown dashboard` with headless
    Chromium (when it is installed: `hack/install-browser.sh`); returns where it is."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("no chromium here (hack/install-browser.sh installs it): no dashboard screenshot")
        return None
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}
    plugin = Path(sys.executable).parent / "kubectl-gastown"
    server = subprocess.Popen(
        [str(plugin), "dashboard", "-n", NAMESPACE, "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # "gastown dashboard of namespace ...: URL"
        url = line.rsplit(" ", 1)[-1].strip()
        if not url.startswith("http://"):
            print(f"the dashboard did not start: {line.strip()}")
            return None
        with tempfile.TemporaryDirectory(prefix="demo-chromium-") as profile, suppress_timeout():
            subprocess.run(
                [
                    browser,
                    "--headless",
                    "--no-sandbox",  # root, in a container-less demo: the sandbox needs a user
                    "--disable-gpu",
                    f"--user-data-dir={profile}",
                    "--window-size=1400,900",
                    # The page keeps its event stream open, so "loaded" never comes: shoot
                    # at DOMContentLoaded, at the latest after 10 s (the DAG is server-side).
                    "--timeout=10000",
                    f"--screenshot={path}",
                    f"{url}convoy/app-v1",
                ],
                capture_output=True,
                timeout=SCREENSHOT_TIMEOUT,
                check=False,
            )
    finally:
        _stop(server)
    if not path.exists():
        print("chromium took no screenshot of the dashboard")
        return None
    print(f"the convoy in `kubectl gastown dashboard`: {path}")
    return path


def setup_repo(setup: Setup, directory: Path) -> str:
    """The bare repository on this machine behind the rig's remote."""
    if setup.credentials_secret:  # served over HTTP from the git server's root
        return str(directory / "git" / "app.git")
    return setup.git_url


def main(argv: list[str] | None = None) -> int:
    """`python -m gastown.devtools.demo [--dir DIR] [--timeout S] [--keep]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(".local/demo"))
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--keep", action="store_true", help="leave the control plane running")
    parser.add_argument(
        "--runtime",
        choices=("node", "runner"),
        help="where agent pods run: a real node (default on Linux as root) or the node runner",
    )
    parser.add_argument(
        "--agent",
        choices=("claude-code", "scripted"),
        default="claude-code",
        help="the coding agent on the real node (the node runner runs Claude Code only when "
        "its CLI and ANTHROPIC_API_KEY are present)",
    )
    args = parser.parse_args(argv)
    runtime = args.runtime
    if runtime is None:
        why_not = local_node.unsupported_reason()
        runtime = "runner" if why_not else "node"
        if why_not:
            print(f"no real node here ({why_not}): agent pods run on the local node runner")
    scripted = args.agent == "scripted"
    return run(args.dir.resolve(), args.timeout, args.keep, runtime, scripted)


if __name__ == "__main__":
    raise SystemExit(main())
