"""The operator's own check of agents' claims against a rig's remote (read-only git).

A polecat says "I pushed S to my branch", a refinery says "M is on the target and contains the
reviewed work": neither is believed until this code — which runs in the operator, not in any
agent pod — has asked the remote itself:

- branch claim: `git ls-remote` shows the branch at S (or, if the agent pushed again since, S is
  an ancestor of the tip, checked on a fetched copy);
- merge claim: after fetching the target, M is an ancestor of (or is) the target's tip, and every
  commit the merge must contain (the verified source head; for a landing, every verified merge
  of the convoy) is an ancestor of M.

Only commit ids (hex) and the operator's own branch names reach git's command line. Fetches go
into one bare cache repository per remote under the operator's cache directory, serialised per
remote; credentials come from the rig's Secret, are written to a private temporary directory for
the duration of one check and never logged. The verdict is kept in the town's in-memory store
(`TownStore.verdicts`) and the town's loop is woken; nothing is written to the API here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from gastown.agent.git import Credentials, Git, GitError, redact
from gastown.kube.client import ApiError, Kube
from gastown.kube.store import TownStore
from gastown.model import Rig
from gastown.reconcile.snapshot import Verdict
from gastown.reconcile.writes import BranchClaim, Claim, MergeClaim, VerifyClaim

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 120.0
"""Seconds one attempt at a check may take (fetches of a large repository included)."""
RETRY_DELAYS = (2.0, 5.0)
"""Pauses before re-trying a check that could not reach the remote (then the claim is refused)."""
CREDENTIAL_KEYS = ("username", "password", "token", "ssh-privatekey", "known_hosts")
_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")
_TARGET_REF = "refs/gastown/target"
_BRANCH_REF = "refs/gastown/branch"


class RemoteUnreachableError(Exception):
    """The remote could not be asked (network, authentication, timeout): try again later."""


def default_cache_dir() -> Path:
    """Where the bare cache repositories live (`GASTOWN_CACHE_DIR`, else the temp directory)."""
    configured = os.environ.get("GASTOWN_CACHE_DIR")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "gastown-verify"


# --- the checks (synchronous; run in a worker thread) ---------------------------------------


def check_claim(git: Git, url: str, claim: Claim) -> Verdict:
    """Check one claim against the remote at `url`, using the bare repository `git.cwd`."""
    shas = (claim.sha,) if isinstance(claim, BranchClaim) else (claim.merge_commit, *claim.contains)
    bad = [sha for sha in shas if not _COMMIT.match(sha)]
    if bad:
        return Verdict(False, f"{bad[0][:64]!r} is not a commit id")
    if isinstance(claim, BranchClaim):
        return _check_branch(git, url, claim)
    return _check_merge(git, url, claim)


def _check_branch(git: Git, url: str, claim: BranchClaim) -> Verdict:
    tip = _ls_remote(git, url, claim.branch)
    if tip is None:
        return Verdict(False, f"branch {claim.branch} does not exist on the remote")
    if tip == claim.sha:
        return Verdict(True, f"{claim.branch} is at {claim.sha}")
    _fetch(git, url, claim.branch, _BRANCH_REF)
    if _has_commit(git, claim.sha) and git.is_ancestor(claim.sha, _BRANCH_REF):
        return Verdict(True, f"{claim.branch} contains {claim.sha}")
    return Verdict(
        False, f"branch {claim.branch} is at {tip[:12]}; the reported {claim.sha[:12]} is not on it"
    )


def _check_merge(git: Git, url: str, claim: MergeClaim) -> Verdict:
    if _ls_remote(git, url, claim.target) is None:
        return Verdict(False, f"target branch {claim.target} does not exist on the remote")
    _fetch(git, url, claim.target, _TARGET_REF)
    merge = claim.merge_commit
    if not _has_commit(git, merge) or not git.is_ancestor(merge, _TARGET_REF):
        return Verdict(False, f"merge commit {merge[:12]} is not on {claim.target}")
    for sha in claim.contains:
        if not _has_commit(git, sha) or not git.is_ancestor(sha, merge):
            return Verdict(
                False, f"merge commit {merge[:12]} does not contain the reviewed commit {sha[:12]}"
            )
    return Verdict(True, f"{merge[:12]} is on {claim.target}")


def _ls_remote(git: Git, url: str, branch: str) -> str | None:
    ref = f"refs/heads/{branch}"
    try:
        out = git.run("ls-remote", "--heads", "--", url, ref, timeout=CHECK_TIMEOUT).stdout
    except GitError as exc:
        raise RemoteUnreachableError(str(exc)) from None
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:
            return sha
    return None


def _fetch(git: Git, url: str, branch: str, into: str) -> None:
    try:
        git.run(
            "fetch", "--no-tags", "--quiet", "--", url, f"+refs/heads/{branch}:{into}",
            timeout=CHECK_TIMEOUT,
        )  # fmt: skip
    except GitError as exc:
        raise RemoteUnreachableError(str(exc)) from None


def _has_commit(git: Git, sha: str) -> bool:
    return git.run("cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode == 0


def cache_repository(cache_dir: Path, url: str) -> Path:
    """The bare cache repository of one remote (created on first use)."""
    path = cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.git"
    if not (path / "HEAD").exists():
        path.mkdir(parents=True, exist_ok=True)
        Git(path).run("init", "--quiet", "--bare")
    return path


# --- the verifier (async; owned by the operator process) ------------------------------------


class ClaimVerifier:
    """Runs claim checks in the background and records their verdicts in the town's store."""

    def __init__(self, kube: Kube, cache_dir: Path | None = None) -> None:
        self.kube = kube
        self.cache_dir = cache_dir or default_cache_dir()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def request(self, town: TownStore, effect: VerifyClaim) -> None:
        """Start checking `effect.claim` unless it is known or in flight (never blocks)."""
        if effect.key in town.verdicts:
            return
        town.record_verdict(effect.key, None)
        task = asyncio.create_task(self._run(town, effect))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, town: TownStore, effect: VerifyClaim) -> None:
        verdict = Verdict(False, "not checked")
        for delay in (*RETRY_DELAYS, None):
            try:
                verdict = await self._check(town, effect.claim)
                break
            except (RemoteUnreachableError, ApiError, TimeoutError) as exc:
                message = redact(str(exc))[-300:] or type(exc).__name__
                verdict = Verdict(False, f"could not verify against the remote: {message}")
                if delay is None:
                    break
                log.info("claim check %s: %s; retrying in %.0fs", effect.key, message, delay)
                await asyncio.sleep(delay)
            except Exception:  # a bug must refuse the claim, not leave it pending forever
                log.exception("claim check %s crashed", effect.key)
                verdict = Verdict(False, "the check failed unexpectedly (see the operator log)")
                break
        log.info(
            "claim %s %s: %s",
            effect.key,
            "verified" if verdict.ok else "refused",
            verdict.message,
            extra={"town": town.name},
        )
        town.record_verdict(effect.key, verdict)
        town.wake.set()

    async def _check(self, town: TownStore, claim: Claim) -> Verdict:
        rig = _rig(town, claim.rig)
        if rig is None:
            return Verdict(False, f"rig {claim.rig} is not in the town")
        lock = self._locks.setdefault(rig.git_url, asyncio.Lock())
        async with lock:
            credentials_dir = await self._credentials(town.namespace, rig)
            try:
                return await asyncio.wait_for(
                    asyncio.to_thread(self._check_sync, rig.git_url, credentials_dir, claim),
                    CHECK_TIMEOUT * 3,
                )
            finally:
                if credentials_dir is not None:
                    shutil.rmtree(credentials_dir, ignore_errors=True)

    def _check_sync(self, url: str, credentials_dir: Path | None, claim: Claim) -> Verdict:
        credentials = Credentials(credentials_dir) if credentials_dir is not None else None
        try:
            git = Git(cache_repository(self.cache_dir, url), credentials=credentials)
            return check_claim(git, url, claim)
        finally:
            if credentials is not None:
                credentials.cleanup()

    async def _credentials(self, namespace: str, rig: Rig) -> Path | None:
        """The rig's git credentials as files in a private directory (None without a Secret)."""
        if not rig.credentials_secret:
            return None
        data = await self.kube.read_secret_data(namespace, rig.credentials_secret)
        return await asyncio.to_thread(_write_credentials, data)

    async def close(self) -> None:
        """Cancel checks still running (the operator is stopping)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _write_credentials(data: dict[str, str]) -> Path:
    """Credential files in a fresh private directory, as a mounted Secret would provide them."""
    directory = Path(tempfile.mkdtemp(prefix="gastown-creds-"))
    directory.chmod(0o700)
    for key in CREDENTIAL_KEYS:
        if key in data:
            path = directory / key
            path.write_text(data[key])
            path.chmod(0o600)
    return directory


def _rig(town: TownStore, name: str) -> Rig | None:
    if town.town is None:
        return None
    return next((rig for rig in town.town.spec.rigs if rig.name == name), None)
