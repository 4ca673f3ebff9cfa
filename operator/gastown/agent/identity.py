"""Who this agent process is, read once from the environment the pod builder sets.

The operator's pod builder sets exactly these variables on an agent container (the `gt` tools
inherit them from the runtime, because the coding agent runs as the runtime's child):

Required
    GASTOWN_TOWN          name of the Town.
    GASTOWN_NAMESPACE     namespace of the Town, Agent and Beads.
    GASTOWN_AGENT         name of this Agent object.
    GASTOWN_ROLE          polecat, refinery or mayor.
    GASTOWN_GENERATION    dispatch generation this pod runs (Agent spec.generation at dispatch).

Optional
    GASTOWN_RIG           rig name (required for polecats and refineries).
    GASTOWN_BEAD          bead hooked at dispatch; the runtime refuses to work if the Agent's hook
                          has moved on since.
    GASTOWN_WORKDIR       directory for the clone (default: the current directory); the pod
                          mounts an emptyDir here.
    GASTOWN_CHANNEL       how the agent reaches its Agent object: `file:<path>` selects the
                          JSON-file channel (tests, local debugging); unset means the Kubernetes
                          channel `gastown.kube.agent_channel:KubeAgentChannel`.
    GASTOWN_GIT_CREDENTIALS_DIR
                          directory where the rig's credentials Secret is mounted (keys
                          `username` + `password` or `token`, or `ssh-privatekey`). Values are
                          read from files only when git asks; they never enter argv or logs.
    GASTOWN_PR_TOKEN_FILE file holding the pull-request provider token (the mounted
                          `pullRequests.tokenSecret` key); only the refinery of a `pr` rig needs it.
    GASTOWN_SECRET_ENV    comma-separated names (never values) of the variables that hold the
                          Town's `secretEnv`: the runtime redacts their values, the git
                          credentials and the PR token from all it writes and logs
                          (`gastown.agent.redaction`).
    GASTOWN_HEARTBEAT_SECONDS
                          heartbeat interval (default 30).
    GASTOWN_NUDGE_POLL_SECONDS
                          how often the runtime looks for new nudges (default 5).
    GASTOWN_IDLE_TIMEOUT_SECONDS
                          how long a streaming session may sit idle after a turn without `gt done`
                          before its input is closed (default 120; refinery 600).
    GASTOWN_POD           the pod's own name (downward API). The operator records a dispatch on
                          the Agent and the Bead right after it creates the pod, so the runtime
                          waits (within its startup retries) until the Agent's status names this
                          pod before it does anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gastown.model.enums import AgentRole

ENV_TOWN = "GASTOWN_TOWN"
ENV_NAMESPACE = "GASTOWN_NAMESPACE"
ENV_AGENT = "GASTOWN_AGENT"
ENV_ROLE = "GASTOWN_ROLE"
ENV_RIG = "GASTOWN_RIG"
ENV_BEAD = "GASTOWN_BEAD"
ENV_GENERATION = "GASTOWN_GENERATION"
ENV_WORKDIR = "GASTOWN_WORKDIR"
ENV_CHANNEL = "GASTOWN_CHANNEL"
ENV_GIT_CREDENTIALS_DIR = "GASTOWN_GIT_CREDENTIALS_DIR"
ENV_PR_TOKEN_FILE = "GASTOWN_PR_TOKEN_FILE"
ENV_HEARTBEAT_SECONDS = "GASTOWN_HEARTBEAT_SECONDS"
ENV_NUDGE_POLL_SECONDS = "GASTOWN_NUDGE_POLL_SECONDS"
ENV_IDLE_TIMEOUT_SECONDS = "GASTOWN_IDLE_TIMEOUT_SECONDS"
ENV_POD = "GASTOWN_POD"

ALL_VARIABLES = (
    ENV_TOWN,
    ENV_NAMESPACE,
    ENV_AGENT,
    ENV_ROLE,
    ENV_RIG,
    ENV_BEAD,
    ENV_GENERATION,
    ENV_WORKDIR,
    ENV_CHANNEL,
    ENV_GIT_CREDENTIALS_DIR,
    ENV_PR_TOKEN_FILE,
    ENV_HEARTBEAT_SECONDS,
    ENV_NUDGE_POLL_SECONDS,
    ENV_IDLE_TIMEOUT_SECONDS,
    ENV_POD,
)


class IdentityError(Exception):
    """The environment does not describe a valid agent identity."""


@dataclass(frozen=True)
class Identity:
    """The agent's identity and the pod-level settings that come with it."""

    town: str
    namespace: str
    agent: str
    role: AgentRole
    generation: int
    rig: str | None = None
    bead: str | None = None
    workdir: Path = Path(".")
    channel: str | None = None
    git_credentials_dir: Path | None = None
    pr_token_file: Path | None = None
    heartbeat_seconds: float = 30.0
    nudge_poll_seconds: float = 5.0
    idle_timeout_seconds: float | None = None
    pod: str | None = None
    """The pod this process runs in (the downward API's metadata.name); None outside a pod."""

    @property
    def effective_idle_timeout(self) -> float:
        """Idle timeout after a streaming turn; refineries review longer (seed #1349)."""
        if self.idle_timeout_seconds is not None:
            return self.idle_timeout_seconds
        return 600.0 if self.role is AgentRole.REFINERY else 120.0

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces this identity (for the coding agent and `gt`)."""
        env = {
            ENV_TOWN: self.town,
            ENV_NAMESPACE: self.namespace,
            ENV_AGENT: self.agent,
            ENV_ROLE: self.role.value,
            ENV_GENERATION: str(self.generation),
            ENV_WORKDIR: str(self.workdir),
            ENV_HEARTBEAT_SECONDS: str(self.heartbeat_seconds),
            ENV_NUDGE_POLL_SECONDS: str(self.nudge_poll_seconds),
        }
        optional = {
            ENV_RIG: self.rig,
            ENV_BEAD: self.bead,
            ENV_CHANNEL: self.channel,
            ENV_GIT_CREDENTIALS_DIR: _opt_path(self.git_credentials_dir),
            ENV_PR_TOKEN_FILE: _opt_path(self.pr_token_file),
            ENV_IDLE_TIMEOUT_SECONDS: _opt_str(self.idle_timeout_seconds),
            ENV_POD: self.pod,
        }
        env.update({k: v for k, v in optional.items() if v is not None})
        return env


def from_env(environ: Mapping[str, str] | None = None) -> Identity:
    """Read the identity from `environ` (default: os.environ); raise IdentityError if invalid."""
    env = os.environ if environ is None else environ
    missing = [
        name
        for name in (ENV_TOWN, ENV_NAMESPACE, ENV_AGENT, ENV_ROLE, ENV_GENERATION)
        if not env.get(name)
    ]
    if missing:
        raise IdentityError(f"missing environment variables: {', '.join(missing)}")
    try:
        role = AgentRole(env[ENV_ROLE])
    except ValueError:
        raise IdentityError(f"{ENV_ROLE}={env[ENV_ROLE]!r} is not a known role") from None
    rig = env.get(ENV_RIG) or None
    if role is not AgentRole.MAYOR and rig is None:
        raise IdentityError(f"{ENV_RIG} is required for a {role.value}")
    return Identity(
        town=env[ENV_TOWN],
        namespace=env[ENV_NAMESPACE],
        agent=env[ENV_AGENT],
        role=role,
        generation=_int(env, ENV_GENERATION),
        rig=rig,
        bead=env.get(ENV_BEAD) or None,
        workdir=Path(env.get(ENV_WORKDIR) or "."),
        channel=env.get(ENV_CHANNEL) or None,
        git_credentials_dir=_path(env, ENV_GIT_CREDENTIALS_DIR),
        pr_token_file=_path(env, ENV_PR_TOKEN_FILE),
        heartbeat_seconds=_float(env, ENV_HEARTBEAT_SECONDS, 30.0),
        nudge_poll_seconds=_float(env, ENV_NUDGE_POLL_SECONDS, 5.0),
        idle_timeout_seconds=_float_or_none(env, ENV_IDLE_TIMEOUT_SECONDS),
        pod=env.get(ENV_POD) or None,
    )


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        value = int(env[name])
    except ValueError:
        raise IdentityError(f"{name}={env[name]!r} is not an integer") from None
    if value < 0:
        raise IdentityError(f"{name} must not be negative")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float_or_none(env, name)
    return default if value is None else value


def _float_or_none(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise IdentityError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise IdentityError(f"{name} must be positive")
    return value


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw) if raw else None


def _opt_path(value: Path | None) -> str | None:
    return None if value is None else str(value)


def _opt_str(value: float | None) -> str | None:
    return None if value is None else str(value)
