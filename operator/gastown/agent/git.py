"""A thin, typed wrapper over the git CLI.

Every call is an argv list (never a shell string) with a deadline. Credentials come from the
rig's Secret mounted as a directory and reach git only through GIT_ASKPASS (https) or
GIT_SSH_COMMAND with a private copy of the key (ssh): they never appear on a command line, in an
error message or in a log line. Every error message is passed through `redact`, which hides URL
userinfo (`https://user:token@host`) and the literal credential values.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TIMEOUT = 300.0
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_ERROR_TAIL = 2000


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Hide URL userinfo and any of the literal `secrets` in `text`."""
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class GitError(Exception):
    """A git command failed; the message is already redacted."""

    def __init__(self, message: str, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


@dataclass
class Credentials:
    """Git credentials read from a mounted Secret directory.

    Keys: `username` (optional, default `x-access-token`, which GitHub and GitLab both accept
    with a token) and `password` or `token` for https; `ssh-privatekey` (and optionally
    `known_hosts`) for ssh.
    """

    directory: Path
    _scratch: Path | None = field(default=None, init=False, repr=False)

    def secrets(self) -> list[str]:
        """The secret values, for redaction; read lazily and never logged."""
        values: list[str] = []
        for key in ("password", "token", "ssh-privatekey"):
            path = self.directory / key
            if path.is_file():
                values.extend(line.strip() for line in path.read_text().splitlines())
        return [v for v in values if v]

    def env(self) -> dict[str, str]:
        """Environment variables that let git authenticate without seeing the secret."""
        scratch = self._scratch_dir()
        env: dict[str, str] = {"GIT_TERMINAL_PROMPT": "0"}
        if (self.directory / "password").is_file() or (self.directory / "token").is_file():
            env["GIT_ASKPASS"] = str(self._askpass(scratch))
        key = self.directory / "ssh-privatekey"
        if key.is_file():
            env["GIT_SSH_COMMAND"] = self._ssh_command(scratch, key)
        return env

    def cleanup(self) -> None:
        """Remove the private copies (askpass script, key copy)."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def _scratch_dir(self) -> Path:
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="gastown-git-"))
            self._scratch.chmod(0o700)
        return self._scratch

    def _askpass(self, scratch: Path) -> Path:
        # The script only names the files; git runs it and reads the first line it prints.
        d = self.directory
        secret_file = d / "password" if (d / "password").is_file() else d / "token"
        user = d / "username"
        user_cmd = f"cat {shlex.quote(str(user))}" if user.is_file() else "echo x-access-token"
        script = scratch / "askpass.sh"
        script.write_text(
            "#!/bin/sh\n"
            'case "$1" in\n'
            f"  [Uu]sername*) {user_cmd} ;;\n"
            f"  *) cat {shlex.quote(str(secret_file))} ;;\n"
            "esac\n"
        )
        script.chmod(stat.S_IRWXU)
        return script

    def _ssh_command(self, scratch: Path, key: Path) -> str:
        # ssh refuses keys readable by others, and mounted Secrets are often 0644: copy it.
        private = scratch / "id"
        private.write_bytes(key.read_bytes())
        private.chmod(0o600)
        parts = ["ssh", "-i", str(private), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
        known = self.directory / "known_hosts"
        if known.is_file():
            parts += ["-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes"]
        else:
            parts += ["-o", "StrictHostKeyChecking=accept-new"]
        return shlex.join(parts)


@dataclass(frozen=True)
class Result:
    """Output of a successful (or unchecked) git command."""

    returncode: int
    stdout: str
    stderr: str


class Git:
    """Runs git in one working directory with optional credentials."""

    def __init__(
        self,
        cwd: Path,
        credentials: Credentials | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        extra_secrets: Sequence[str] = (),
    ) -> None:
        self.cwd = cwd
        self.credentials = credentials
        self.timeout = timeout
        self._secrets = list(extra_secrets) + (credentials.secrets() if credentials else [])
        self._env = self._build_env()

    def _build_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"})
        if self.credentials is not None:
            env.update(self.credentials.env())
        return env

    def at(self, cwd: Path) -> Git:
        """The same settings in another directory."""
        clone = Git.__new__(Git)
        clone.cwd = cwd
        clone.credentials = self.credentials
        clone.timeout = self.timeout
        clone._secrets = self._secrets
        clone._env = self._env
        return clone

    def redact(self, text: str) -> str:
        """Redact URL userinfo and this instance's secrets."""
        return redact(text, self._secrets)

    def run(
        self, *args: str, check: bool = True, timeout: float | None = None, input: str | None = None
    ) -> Result:
        """Run `git <args>`; raise GitError (redacted) on failure when `check`."""
        argv = ["git", *args]
        try:
            proc = subprocess.run(
                argv,
                cwd=self.cwd,
                env=self._env,
                capture_output=True,
                text=True,
                timeout=timeout or self.timeout,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise GitError(
                f"{self._describe(args)} timed out after {timeout or self.timeout}s"
            ) from None
        except OSError as exc:
            raise GitError(f"cannot run git: {exc}") from None
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            stderr = self.redact(proc.stderr.strip())[-_ERROR_TAIL:]
            raise GitError(
                f"{self._describe(args)} failed ({proc.returncode}): {stderr}",
                returncode=proc.returncode,
                stderr=stderr,
            )
        return result

    def _describe(self, args: Sequence[str]) -> str:
        return self.redact("git " + " ".join(args))

    # --- queries ---

    def rev_parse(self, ref: str) -> str | None:
        """The commit a ref names, or None if it does not exist."""
        result = self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        if result.returncode != 0:
            return None
        return result.stdout.strip() or None

    def head(self) -> str:
        """The commit HEAD points at."""
        sha = self.rev_parse("HEAD")
        if sha is None:
            raise GitError("HEAD does not point at a commit")
        return sha

    def current_branch(self) -> str | None:
        """The checked-out branch, or None when HEAD is detached."""
        result = self.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        if result.returncode != 0:
            return None
        return result.stdout.strip() or None

    def is_clean(self) -> bool:
        """True when there are no staged, unstaged or untracked changes."""
        return self.run("status", "--porcelain").stdout.strip() == ""

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """True when `ancestor` is reachable from `descendant`."""
        result = self.run("merge-base", "--is-ancestor", ancestor, descendant, check=False)
        if result.returncode not in (0, 1):
            raise GitError(f"merge-base failed: {self.redact(result.stderr.strip())}")
        return result.returncode == 0

    def count(self, revision_range: str) -> int:
        """Number of commits in a range such as `origin/main..HEAD`."""
        return int(self.run("rev-list", "--count", revision_range).stdout.strip())

    def ls_remote_branch(self, branch: str, remote: str = "origin") -> str | None:
        """The commit a branch points at on the remote (asked now), or None if absent."""
        out = self.run("ls-remote", "--heads", remote, f"refs/heads/{branch}").stdout
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref == f"refs/heads/{branch}":
                return sha
        return None

    def config_get(self, key: str) -> str | None:
        """A repository config value, or None."""
        result = self.run("config", "--get", key, check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    def config_set(self, key: str, value: str) -> None:
        """Set a repository config value."""
        self.run("config", key, value)

    def check_branch_name(self, name: str) -> None:
        """Raise GitError unless `name` is a valid branch name."""
        self.run("check-ref-format", "--branch", name)

    # --- remote operations ---

    def fetch(self, remote: str = "origin") -> None:
        """Fetch all branches, pruning deleted ones."""
        self.run("fetch", "--prune", "--no-tags", remote)

    def push(
        self, source: str, branch: str, expect: str | None = None, expect_absent: bool = False
    ) -> None:
        """Push `source` to `refs/heads/<branch>` on origin.

        Without `expect`/`expect_absent` the push is a plain fast-forward push. `expect`
        (a SHA) or `expect_absent` turn it into a compare-and-set with --force-with-lease.
        """
        args = ["push", "--porcelain"]
        if expect is not None:
            args.append(f"--force-with-lease=refs/heads/{branch}:{expect}")
        elif expect_absent:
            args.append(f"--force-with-lease=refs/heads/{branch}:")
        self.run(*args, "origin", f"{source}:refs/heads/{branch}")

    def delete_remote_branch(self, branch: str, expect: str | None = None) -> None:
        """Delete a branch on origin, only if it still points at `expect` when given."""
        args = ["push", "--porcelain"]
        if expect is not None:
            args.append(f"--force-with-lease=refs/heads/{branch}:{expect}")
        self.run(*args, "origin", f":refs/heads/{branch}")


def clone(
    url: str,
    dest: Path,
    credentials: Credentials | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Git:
    """Clone `url` into `dest` (which must not exist) and return a Git for it."""
    runner = Git(dest.parent, credentials=credentials, timeout=timeout)
    runner.run("clone", "--no-tags", "--", url, str(dest))
    return runner.at(dest)
