"""Real git repositories on local disk for end-to-end tests."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "PATH": "/usr/bin:/bin",
}


def git(*args: str, cwd: Path | None = None) -> str:
    """Run git and return its output."""
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True
    )
    return result.stdout


@dataclass(frozen=True)
class HttpRig:
    """A rig's remote served over authenticated smart HTTP (see the `node_rig` fixture)."""

    path: Path
    """The bare repository on disk (for assertions)."""
    url: str
    """The Town's `gitUrl`."""
    secret: str
    """The Town's `credentialsSecret`: a labelled Secret with `username` and `password`."""


def run_git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run git and return the finished process, whatever its exit code."""
    return subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=False
    )


def make_bare_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    """A bare repository whose main has one commit with `files` (default: a README)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    git("init", "--bare", "-b", "main", str(path))
    work = path.parent / (path.stem + "-seed")
    git("clone", str(path), str(work))
    for name, text in (files or {"README.md": "# app\n"}).items():
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git("add", "-A", cwd=work)
    git("commit", "-m", "initial", cwd=work)
    git("push", "origin", "HEAD:main", cwd=work)
    return path


def files_on(repo: Path, branch: str = "main") -> list[str]:
    """Paths of the files on a branch of a (bare) repository."""
    return git("ls-tree", "-r", "--name-only", branch, cwd=repo).split()


def show(repo: Path, path: str, branch: str = "main") -> str:
    """One file's content on a branch."""
    return git("show", f"{branch}:{path}", cwd=repo)


def log(repo: Path, branch: str = "main") -> str:
    """One-line log of a branch."""
    return git("log", "--oneline", "--graph", branch, cwd=repo)
