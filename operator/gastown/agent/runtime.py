"""The in-pod runtime: prepare the workspace, run the coding agent, keep the Agent informed.

`run(identity, channel)` is what an agent pod runs (`python -m gastown.agent`, or the lead's
`gastown agent run`). It:

1. makes sure HOME exists and is writable (the CLIs and `git config --global` write there; an
   emptyDir starts empty), then checks that this process is still current (Agent
   spec.generation and hook match the identity; otherwise it exits with EXIT_STALE without
   writing anything). These first API calls are retried with backoff for
   `startup_retry_seconds`: a brief API outage at start must not cost the bead an attempt;
2. prepares the workspace (clone, branch) for the hooked bead;
3. polecat: runs the coding agent with the prompt on stdin; refinery: runs the direct merge (with
   the coding agent as an optional reviewer) or opens a pull request;
4. heartbeats the activity watermark every `heartbeat_seconds`;
5. delivers each new nudge once (into the live session for streaming CLIs, otherwise by
   restarting the CLI with the nudge and the last checkpoint in its prompt) and acknowledges it;
6. on SIGTERM terminates the coding agent's process group (SIGTERM, then SIGKILL after a grace
   period) and reports `exited`;
7. ends with one final report when the coding agent did not write one itself: `exited` (exit
   code 0 without `gt done`) or `failed` (non-zero exit, workspace or git failure), and for the
   refinery the merge outcome (merged, conflict, gate-failed, request-changes, pr-opened).
   When the coding agent could not reach its model (an API error the adapter recognised), that
   error is the report's reason; when that error was the provider's rate limit (429), the report
   is `rate-limited` (with the retry-after the CLI saw), which spends no attempt of the bead.
   A CLI that cannot run commands (Aider) gets its `gt done` from the runtime when it exits 0
   with new commits on the work branch.

Idle sessions: a streaming CLI (Claude Code) keeps its stdin open between turns so nudges can be
delivered; stdin is closed `idleTimeoutSeconds` after a turn ends without `gt done`. A nudge sent
while a turn runs may be queued by the CLI as a further turn: the idle timer only runs while no
turn is running (any progress after a `result` stops it, the next `result` restarts it) and not
after a result that announces queued turns.

Usage: the tokens and cost the CLI prints (see `adapters`) are summed per dispatch generation
(`UsageMeter`) and travel on every report of the generation, including the ones `gt` writes (the
runtime keeps the figure in GASTOWN_USAGE_FILE for it). A CLI prints its last figures after its
last turn, i.e. after `gt done`: a final `usage` report then carries the rest. If the agent was
re-dispatched in between, the API refuses that write and the last turn's usage is not counted.

Exit codes: 0 finished (done/merged/...), the coding agent's code when it failed, 1 other
failures, 3 stale (re-dispatched or unhooked), 143 stopped by SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from gastown.agent import identity as identity_mod
from gastown.agent import workspace
from gastown.agent.adapters import Adapter, AgentEvent, UsageMeter, Watermark, adapter_for
from gastown.agent.channel import (
    ENV_USAGE_FILE,
    AgentChannel,
    ChannelError,
    DispatchNotRecordedError,
    NoHookError,
    ReportDraft,
    StaleGenerationError,
    WorkOrder,
    open_channel,
    pending_nudges,
    unwrap_checkpoint,
    utcnow,
)
from gastown.agent.git import Credentials, GitError, redact
from gastown.agent.identity import Identity, IdentityError
from gastown.agent.prompt import ReviewContext, polecat_prompt, review_prompt
from gastown.agent.providers import ProviderError, client_for, read_token
from gastown.agent.redaction import (
    Redactor,
    from_environment,
    install_log_redaction,
    pod_redactor,
)
from gastown.agent.refinery import (
    MergeContext,
    MergeResult,
    ReviewVerdict,
    merge_direct,
    open_pull_request,
)
from gastown.agent.workspace import Workspace, WorkspaceError
from gastown.model.agent import Report
from gastown.model.enums import AgentRole, MergeStrategy, ReportType
from gastown.model.spend import RateLimitInfo

log = logging.getLogger("gastown.agent")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_STALE = 3
EXIT_SIGTERM = 143
OUTPUT_LIMIT = 16 * 1024 * 1024
ECHO_LIMIT = 4000
FINAL_TYPES = frozenset({ReportType.DONE, ReportType.REQUEST_CHANGES, ReportType.FAILED})


@dataclass(frozen=True)
class Options:
    """Tunables; the defaults are the production values."""

    stop_grace_seconds: float = 10.0
    max_runtime_seconds: float = 6 * 3600.0
    echo_output: bool = True
    review_timeout_seconds: float = 3600.0
    startup_retry_seconds: float = 120.0
    """How long the first API calls are retried (with backoff) before the run gives up."""
    retry_status_seconds: float = 30.0
    """At most one status message per this period about the CLI's model API retries."""


@dataclass(frozen=True)
class SessionEnd:
    """How one run of the coding agent ended."""

    kind: Literal["exited", "stopped", "stale", "timeout"]
    exit_code: int | None


class StaleError(Exception):
    """This process is no longer the current dispatch of its Agent."""


class Runtime:
    """One agent process: state shared by the heartbeat, the session and the final report."""

    def __init__(
        self,
        identity: Identity,
        channel: AgentChannel,
        stop: asyncio.Event,
        options: Options | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.identity = identity
        self.channel = channel
        self.stop = stop
        self.options = options or Options()
        # Every secret value this pod holds; hidden from its logs and from what it echoes.
        # (What it writes to the API is redacted by the channel, see `open_channel`.)
        self.redactor = (
            redactor
            if redactor is not None
            else from_environment({**os.environ, **identity.to_env()})
        )
        self.watermark = Watermark()
        self.delivered: set[str] = set()
        self.start_seq = 0
        self.stale = False
        self._bin_dir: Path | None = None
        self._checkpoint: str | None = None
        self.model_error: str | None = None
        """The last model API failure the coding agent reported (the reason of a failure)."""
        self._retry_status_at = 0.0
        self.meter = UsageMeter()
        """Tokens and cost of this generation so far, as the coding agent printed them."""
        self.rate_limited = False
        """The last model API failure was the provider's rate limit."""
        self.retry_after: float | None = None

    # --- the whole run ---

    async def run(self) -> int:
        """Run the agent to completion and return the process exit code."""
        try:
            ensure_home()
        except OSError as exc:
            log.error("HOME is not usable: %s", exc)
            return EXIT_FAILED
        try:
            order = await self._check_current_retrying()
        except StaleError as exc:
            log.warning("not starting: %s", exc)
            return EXIT_STALE
        except (ChannelError, OSError) as exc:
            log.error("the API stayed unreachable at start: %s", exc)
            return EXIT_FAILED
        heartbeat = asyncio.create_task(self._heartbeat_loop())
        credentials = self._credentials()
        try:
            return await self._run_order(order, credentials)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self._heartbeat_once()
            if credentials is not None:
                credentials.cleanup()
            self._cleanup_bin()

    async def _run_order(self, order: WorkOrder, credentials: Credentials | None) -> int:
        self.meter = UsageMeter(order.coding_agent.model)
        await self._status(f"preparing workspace for {order.bead}")
        try:
            ws = await asyncio.to_thread(workspace.prepare, self.identity, order, credentials)
        except (WorkspaceError, GitError, OSError) as exc:
            return await self._fail(order, f"workspace: {exc}")
        if self.identity.role is AgentRole.REFINERY:
            code = await self._run_refinery(order, ws)
        else:
            code = await self._run_polecat(order, ws)
        await self._report_usage(order)
        return code

    async def _report_usage(self, order: WorkOrder) -> None:
        """A last `usage` report when the generation's reports do not carry all of it yet."""
        if self.meter.empty or self.stale:
            return
        total = self.meter.total
        reported = [r.usage for r in await self._new_reports() if r.usage is not None]
        if any(usage.covers(total) for usage in reported):
            return
        await self._write(ReportDraft(type=ReportType.USAGE, bead=order.bead, usage=total))

    async def _check_current_retrying(self) -> WorkOrder:
        """`_check_current`, retried with backoff while the API is unreachable or failing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.startup_retry_seconds
        delay = 0.25
        while True:
            try:
                return await self._check_current()
            except (NoHookError, StaleGenerationError):
                raise
            except (ChannelError, OSError) as exc:
                if loop.time() + delay > deadline or self.stop.is_set():
                    raise
                log.warning("reading the agent failed, retrying in %.1fs: %s", delay, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=delay)
            delay = min(delay * 2, 15.0)

    async def _check_current(self) -> WorkOrder:
        view = await asyncio.to_thread(self.channel.read_agent)
        spec = view.spec
        if spec.generation != self.identity.generation:
            raise StaleError(
                f"agent is at generation {spec.generation}, not {self.identity.generation}"
            )
        if spec.hook is None or (self.identity.bead and spec.hook != self.identity.bead):
            raise StaleError(f"agent is hooked to {spec.hook}, not {self.identity.bead}")
        if self.identity.pod is not None and view.status.pod != self.identity.pod:
            # The operator creates the pod first and records the dispatch right after it (so a
            # burst of dispatches starts pods at the API server's pace); until the record names
            # this pod, the agent may not write its status yet: wait, as for an API outage.
            raise DispatchNotRecordedError(
                f"the dispatch of {self.identity.pod} is not recorded on the agent yet"
            )
        try:
            order = await asyncio.to_thread(self.channel.read_work_order)
        except NoHookError as exc:
            raise StaleError(str(exc)) from None
        self.start_seq = _max_seq(view.status.reports)
        self._checkpoint = unwrap_checkpoint(view.status.checkpoint, order.bead)
        return order

    # --- polecat ---

    async def _run_polecat(self, order: WorkOrder, ws: Workspace) -> int:
        assert ws.branch is not None
        branch = ws.branch

        def prompt(nudges: tuple[str, ...], checkpoint: str | None) -> str:
            return polecat_prompt(self.identity, order, branch, checkpoint, nudges)

        await self._status(f"working on {order.bead} ({order.coding_agent.kind.value})")
        adapter = adapter_for(order.coding_agent)
        exclude_leftovers(ws.path, adapter.leftovers)
        end = await self._drive(adapter, prompt, ws.path)
        if end.kind == "exited" and end.exit_code == 0 and not adapter.runs_commands:
            await self._done_for(order, ws, adapter)
        return await self._finish(order, end, branch)

    async def _done_for(self, order: WorkOrder, ws: Workspace, adapter: Adapter) -> None:
        """`gt done` for a CLI that cannot run it, when it committed work and hit no error."""
        if self.model_error is not None or await self.has_final_report():
            return
        base = f"refs/remotes/origin/{ws.base_branch}"
        try:
            ahead = await asyncio.to_thread(ws.git.run, "rev-list", "--count", f"{base}..HEAD")
        except GitError as exc:
            log.warning("cannot count the new commits: %s", exc)
            return
        if int(ahead.stdout.strip() or 0) == 0:
            return
        summary = f"{adapter.kind.value} session on {order.bead} ({ahead.stdout.strip()} commits)"
        argv = [sys.executable, "-m", "gastown.agent.gt", "done", "--summary", summary]
        proc = await asyncio.to_thread(
            subprocess.run,
            argv,
            cwd=ws.path,
            env=self._agent_env(ws.path),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        self.echo(f"gt done (for {adapter.kind.value}): {proc.stdout}{proc.stderr}")

    async def _finish(self, order: WorkOrder, end: SessionEnd, branch: str | None) -> int:
        """Write the final report unless the coding agent already reported how it ended."""
        if end.kind == "stale":
            return EXIT_STALE
        reported = await self._new_reports()
        if any(r.type in FINAL_TYPES for r in reported):
            return EXIT_SIGTERM if end.kind == "stopped" else EXIT_OK
        if end.kind == "stopped":
            await self._report(
                ReportType.EXITED, order, "stopped by SIGTERM", end.exit_code, branch
            )
            return EXIT_SIGTERM
        if end.kind == "timeout":
            return await self._fail(order, "coding agent exceeded the maximum runtime")
        code = end.exit_code if end.exit_code is not None else EXIT_FAILED
        error = self._redact(self.model_error) if self.model_error else None
        if code == 0 and error is None:
            await self._report(
                ReportType.EXITED, order, "coding agent exited without gt done", 0, branch
            )
            return EXIT_OK
        message = f"coding agent exited with code {code}"
        if error is not None:
            # Some CLIs (Aider) exit 0 after an API error: the error decides, not the code.
            message = f"{message}: {error}"
        if error is not None and self.rate_limited:
            await self._report_rate_limit(order, message[:4000], code, branch)
        else:
            await self._report(ReportType.FAILED, order, message[:4000], code, branch)
        return code if 0 < code < 256 else EXIT_FAILED

    # --- refinery ---

    async def _run_refinery(self, order: WorkOrder, ws: Workspace) -> int:
        mr = order.spec.merge_request
        if mr is None:
            return await self._fail(order, f"{order.bead} is not a merge request")
        loop = asyncio.get_running_loop()
        reviewed: list[bool] = []

        def review(ctx: MergeContext) -> ReviewVerdict | None:
            # Called from the merge thread; the coding agent runs on the event loop.
            future = asyncio.run_coroutine_threadsafe(self._review(order, ctx, reviewed), loop)
            return future.result(timeout=self.options.review_timeout_seconds)

        try:
            if order.rig.merge_strategy is MergeStrategy.PR:
                result = await self._open_pr(order, ws)
            else:
                await self._status(f"merging {mr.branch} into {mr.target_branch}")
                hook = review if order.review else None
                result = await asyncio.to_thread(
                    merge_direct,
                    ws.git,
                    mr,
                    default_branch=order.rig.default_branch,
                    gates=order.gates,
                    review=hook,
                    bead=order.bead,
                )
        except StaleError:
            return EXIT_STALE
        except _ReviewStoppedError as exc:
            return await self._finish(order, exc.end, mr.branch)
        except (ProviderError, GitError, OSError, TimeoutError) as exc:
            return await self._fail(order, f"refinery: {exc}", mr.branch)
        if result.type is ReportType.REQUEST_CHANGES and reviewed:
            return EXIT_OK  # `gt request-changes` already wrote the report
        await self._write(result.to_draft(order.bead, mr.branch))
        return EXIT_FAILED if result.type is ReportType.FAILED else EXIT_OK

    async def _open_pr(self, order: WorkOrder, ws: Workspace) -> MergeResult:
        mr = order.spec.merge_request
        provider = order.rig.pull_requests
        assert mr is not None
        if provider is None:
            raise ProviderError(f"rig {order.rig.name} has mergeStrategy pr but no pullRequests")
        if self.identity.pr_token_file is None:
            raise ProviderError("no pull-request token mounted (GASTOWN_PR_TOKEN_FILE)")
        token = read_token(self.identity.pr_token_file)
        self.redactor = self.redactor.extended([token])
        client = client_for(provider, token)
        title = order.source_title or order.spec.title
        description = order.source_description or order.spec.description
        body = f"{description}\n\nGastown bead: {mr.source_bead}"
        return await asyncio.to_thread(
            open_pull_request,
            ws.git,
            mr,
            client,
            default_branch=order.rig.default_branch,
            title=title,
            body=body,
        )

    async def _review(
        self, order: WorkOrder, ctx: MergeContext, reviewed: list[bool]
    ) -> ReviewVerdict | None:
        """Run the coding agent as reviewer; its `gt` report is the verdict."""
        mr = order.spec.merge_request
        assert mr is not None
        before = _max_seq(await self._reports())
        context = ReviewContext(mr, ctx.target_sha, ctx.gate_output)

        def prompt(nudges: tuple[str, ...], _checkpoint: str | None) -> str:
            return review_prompt(self.identity, order, context, nudges)

        await self._status(f"reviewing {mr.branch}")
        adapter = adapter_for(order.coding_agent)
        exclude_leftovers(ctx.workdir, adapter.leftovers)
        end = await self._drive(adapter, prompt, ctx.workdir)
        if end.kind == "stale":
            raise StaleError("re-dispatched during review")
        if end.kind != "exited":
            raise _ReviewStoppedError(end)
        verdicts = [r for r in await self._reports() if r.seq > before]
        for report in verdicts:
            if report.type is ReportType.REQUEST_CHANGES:
                reviewed.append(True)
                return ReviewVerdict(report.feedback or "", tuple(report.files))
        if any(r.type is ReportType.DONE for r in verdicts):
            return None
        raise _ReviewStoppedError(SessionEnd("exited", end.exit_code))

    # --- the coding-agent session ---

    async def _drive(
        self,
        adapter: Adapter,
        prompt: Callable[[tuple[str, ...], str | None], str],
        cwd: Path,
    ) -> SessionEnd:
        """Run the coding agent until it ends, restarting it to deliver nudges if needed."""
        deadline = asyncio.get_running_loop().time() + self.options.max_runtime_seconds
        nudges: tuple[str, ...] = ()
        to_ack: list[str] = []
        checkpoint = self._checkpoint
        while True:
            problem = adapter.preflight(self._agent_env(cwd))
            if problem is not None:
                log.error("%s", problem)
                self.model_error = problem
                return SessionEnd("exited", 126)
            try:
                proc = await self._spawn(adapter, cwd)
            except OSError as exc:
                log.error("cannot start the coding agent: %s", exc)
                self.model_error = f"cannot start the coding agent: {exc}"
                return SessionEnd("exited", 127)
            await self._write_stdin(proc, adapter.initial_input(prompt(nudges, checkpoint)))
            if not adapter.streams_input:
                _close_stdin(proc)
            for nudge_id in to_ack:
                await self._ack(nudge_id)
            watch = await _Watch(self, proc, adapter, deadline).run()
            if isinstance(watch, SessionEnd):
                return watch
            # A nudge for a CLI without live input: restart it with the nudge in the prompt.
            nudges, to_ack = watch
            checkpoint = await self._latest_checkpoint()

    async def _spawn(self, adapter: Adapter, cwd: Path) -> asyncio.subprocess.Process:
        env = self._agent_env(cwd)
        argv = adapter.argv(env)
        log.info("starting coding agent: %s", self._redact(shlex.join(argv)))
        self.watermark.tools.clear()
        self.model_error = None
        self.rate_limited = False
        self.retry_after = None
        self.meter.restart()
        return await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its tools die with it when we stop the group
            limit=OUTPUT_LIMIT,
        )

    async def _write_stdin(self, proc: asyncio.subprocess.Process, data: bytes) -> bool:
        if proc.stdin is None or proc.stdin.is_closing():
            return False
        try:
            proc.stdin.write(data)
            await asyncio.wait_for(proc.stdin.drain(), timeout=30)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return False
        return True

    async def terminate(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM the coding agent's process group, SIGKILL it after the grace period."""
        if proc.returncode is not None:
            return
        _signal_group(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=self.options.stop_grace_seconds)
        except TimeoutError:
            _signal_group(proc, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), timeout=30)

    def _agent_env(self, cwd: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.identity.to_env())
        env["PATH"] = f"{self._gt_bin()}{os.pathsep}{env.get('PATH', '')}"
        # Some CLIs (OpenCode) take their working directory from PWD, not from the process.
        env["PWD"] = str(cwd)
        env[ENV_USAGE_FILE] = str(self._gt_bin() / "usage.json")
        return env

    async def observe(self, event: AgentEvent) -> None:
        """Fold one coding-agent event into the watermark and note usage and API failures."""
        self.watermark.observe(event, utcnow())
        if event.usage is not None:
            self.meter.add(event.usage)
            self._save_usage()
        if event.error is None:
            return
        self.model_error = event.error
        self.rate_limited = event.rate_limited
        if event.retry_after is not None:
            self.retry_after = event.retry_after
        now = time.monotonic()
        if event.fatal or now - self._retry_status_at >= self.options.retry_status_seconds:
            self._retry_status_at = now
            log.warning("coding agent: %s", self._redact(event.error))
            await self._status(f"model API trouble: {event.error}")

    def _save_usage(self) -> None:
        """Keep the usage so far where `gt` finds it (its reports carry it)."""
        path = self._gt_bin() / "usage.json"
        try:
            scratch = path.with_suffix(".tmp")
            scratch.write_text(self.meter.total.model_dump_json(by_alias=True))
            scratch.replace(path)  # atomic: `gt` never reads half a file
        except OSError as exc:
            log.warning("cannot record usage for gt: %s", exc)

    def _gt_bin(self) -> Path:
        # `gt` must run with this interpreter whatever is installed on PATH: a one-line shim.
        if self._bin_dir is None:
            self._bin_dir = Path(tempfile.mkdtemp(prefix="gastown-bin-"))
            shim = self._bin_dir / "gt"
            shim.write_text(
                f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m gastown.agent.gt "$@"\n'
            )
            shim.chmod(0o755)
        return self._bin_dir

    def _cleanup_bin(self) -> None:
        if self._bin_dir is not None:
            for child in self._bin_dir.iterdir():
                child.unlink()
            self._bin_dir.rmdir()
            self._bin_dir = None

    def echo(self, line: str) -> None:
        """Copy a coding-agent output line to the pod log (bounded, redacted)."""
        if self.options.echo_output:
            text = self._redact(line.rstrip("\n"))[:ECHO_LIMIT]
            print(text, flush=True)

    # --- channel helpers ---

    def _credentials(self) -> Credentials | None:
        directory = self.identity.git_credentials_dir
        if directory is None:
            return None
        credentials = Credentials(directory)
        self.redactor = self.redactor.extended(credentials.secrets())
        return credentials

    def _redact(self, text: str) -> str:
        """Hide URL userinfo and every secret value of this pod."""
        return self.redactor.redact(redact(text))

    async def _heartbeat_loop(self) -> None:
        while True:
            await self._heartbeat_once()
            await asyncio.sleep(self.identity.heartbeat_seconds)

    async def _heartbeat_once(self) -> None:
        activity = self.watermark.activity(self.identity.generation, utcnow())
        try:
            await asyncio.to_thread(self.channel.write_activity, activity)
        except StaleGenerationError:
            self._became_stale()
        except (ChannelError, OSError) as exc:
            log.warning("heartbeat failed (will retry): %s", exc)

    def _became_stale(self) -> None:
        if not self.stale:
            log.warning("the agent was re-dispatched or unhooked: stopping")
        self.stale = True
        self.stop.set()

    async def check_nudges(self) -> tuple[list[tuple[str, str]], bool]:
        """New nudges as (id, message), and whether this process is still current."""
        try:
            view = await asyncio.to_thread(self.channel.read_agent)
        except (ChannelError, OSError) as exc:
            log.warning("reading the agent failed (will retry): %s", exc)
            return [], True
        spec = view.spec
        current = spec.generation == self.identity.generation and spec.hook is not None
        if self.identity.bead is not None and spec.hook != self.identity.bead:
            current = False
        fresh = [
            (n.id, n.message)
            for n in pending_nudges(spec, view.status)
            if n.id not in self.delivered
        ]
        return fresh, current

    async def _ack(self, nudge_id: str) -> None:
        self.delivered.add(nudge_id)  # never deliver twice, even if the ack write fails
        try:
            await asyncio.to_thread(self.channel.ack_nudge, nudge_id)
        except StaleGenerationError:
            self._became_stale()
        except (ChannelError, OSError) as exc:
            log.warning("acknowledging nudge %s failed: %s", nudge_id, exc)

    async def _reports(self) -> list[Report]:
        view = await asyncio.to_thread(self.channel.read_agent)
        return list(view.status.reports)

    async def _new_reports(self) -> list[Report]:
        try:
            reports = await self._reports()
        except (ChannelError, OSError):
            return []
        gen = self.identity.generation
        return [r for r in reports if r.seq > self.start_seq and r.generation == gen]

    async def has_final_report(self) -> bool:
        """True once `gt done` / `gt request-changes` reported during this run."""
        return any(r.type in FINAL_TYPES for r in await self._new_reports())

    async def _latest_checkpoint(self) -> str | None:
        try:
            view = await asyncio.to_thread(self.channel.read_agent)
        except (ChannelError, OSError):
            return self._checkpoint
        return unwrap_checkpoint(view.status.checkpoint, view.spec.hook or "") or self._checkpoint

    async def _status(self, message: str) -> None:
        try:
            # Redact before clipping: a clip must not leave half a secret behind.
            text = self._redact(message)[:1024]
            await asyncio.to_thread(self.channel.set_status_message, text)
        except StaleGenerationError:
            self._became_stale()
        except (ChannelError, OSError) as exc:
            log.warning("status update failed: %s", exc)

    async def _report(
        self,
        kind: ReportType,
        order: WorkOrder,
        message: str,
        exit_code: int | None = None,
        branch: str | None = None,
    ) -> None:
        draft = ReportDraft(
            type=kind, bead=order.bead, branch=branch, message=message, exit_code=exit_code
        )
        await self._write(draft)

    async def _report_rate_limit(
        self, order: WorkOrder, message: str, exit_code: int | None, branch: str | None
    ) -> None:
        """The session ended on the provider's rate limit: the bead is held, no attempt spent."""
        retry = self.retry_after
        info = RateLimitInfo(
            status=429,
            retry_after_seconds=None if retry is None else min(86400, max(1, round(retry))),
        )
        draft = ReportDraft(
            type=ReportType.RATE_LIMITED,
            bead=order.bead,
            branch=branch,
            message=message,
            exit_code=exit_code,
            rate_limit=info,
        )
        await self._write(draft)

    async def _write(self, draft: ReportDraft) -> None:
        if draft.usage is None and not self.meter.empty:
            draft = dataclasses.replace(draft, usage=self.meter.total)
        try:
            report = await asyncio.to_thread(self.channel.append_report, draft)
            log.info("reported %s (seq %d)", report.type.value, report.seq)
        except StaleGenerationError:
            self._became_stale()
        except (ChannelError, OSError) as exc:
            log.error("writing the %s report failed: %s", draft.type.value, exc)

    async def _fail(self, order: WorkOrder, message: str, branch: str | None = None) -> int:
        text = self._redact(message)
        log.error("%s", text)
        await self._report(ReportType.FAILED, order, text, None, branch)
        return EXIT_FAILED


class _ReviewStoppedError(Exception):
    def __init__(self, end: SessionEnd) -> None:
        super().__init__(end.kind)
        self.end = end


class _Watch:
    """Supervises one coding-agent process: output, nudges, idle, stop, deadline."""

    def __init__(
        self,
        runtime: Runtime,
        proc: asyncio.subprocess.Process,
        adapter: Adapter,
        deadline: float,
    ) -> None:
        self.rt = runtime
        self.proc = proc
        self.adapter = adapter
        self.deadline = deadline
        self.turn_done = asyncio.Event()
        self.turn_running = False
        """True from the first progress after a `result` until the next `result`."""
        self.fatal = False
        self.loop = asyncio.get_running_loop()

    async def run(self) -> SessionEnd | tuple[tuple[str, ...], list[str]]:
        """Watch until the process ends; or return nudges that need a restart."""
        reader = asyncio.create_task(self._read())
        waiter = asyncio.create_task(self.proc.wait())
        stopper = asyncio.create_task(self.rt.stop.wait())
        try:
            return await self._loop(waiter, stopper)
        finally:
            stopper.cancel()
            if self.proc.returncode is None:
                await self.rt.terminate(self.proc)
            waiter.cancel()
            # Read what is left of the output (bounded: the process is gone).
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(reader, timeout=5)
            reader.cancel()

    async def _loop(
        self, waiter: asyncio.Task[int], stopper: asyncio.Task[Literal[True]]
    ) -> SessionEnd | tuple[tuple[str, ...], list[str]]:
        idle_deadline: float | None = None
        next_poll = self.loop.time()
        while True:
            turn = asyncio.create_task(self.turn_done.wait())
            wake = min(next_poll, self.deadline, idle_deadline or float("inf"))
            timeout = max(0.0, wake - self.loop.time())
            done, _ = await asyncio.wait(
                {waiter, stopper, turn}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            turn.cancel()
            if waiter in done:
                return SessionEnd("exited", self.proc.returncode)
            if stopper in done:
                await self.rt.terminate(self.proc)
                kind: Literal["stale", "stopped"] = "stale" if self.rt.stale else "stopped"
                return SessionEnd(kind, self.proc.returncode)
            now = self.loop.time()
            if now >= self.deadline:
                await self.rt.terminate(self.proc)
                return SessionEnd("timeout", self.proc.returncode)
            if self.turn_done.is_set():
                self.turn_done.clear()
                idle_deadline = await self._after_turn()
            if idle_deadline is not None and self.turn_running:
                idle_deadline = None  # a queued turn started: it is not idle
            if idle_deadline is not None and now >= idle_deadline:
                log.info("session idle without gt done: closing its input")
                _close_stdin(self.proc)
                idle_deadline = None
            if now >= next_poll:
                next_poll = now + self.rt.identity.nudge_poll_seconds
                outcome = await self._poll()
                if outcome == "stale":
                    self.rt._became_stale()
                    continue
                if isinstance(outcome, tuple):
                    return outcome
                if outcome == "delivered":
                    idle_deadline = None

    async def _after_turn(self) -> float | None:
        """A streaming turn ended: finish if the agent reported, otherwise wait for nudges."""
        if self.fatal or await self.rt.has_final_report():
            # Done, or the turn ended in an API error: waiting for nudges would only hide it.
            _close_stdin(self.proc)
            return None
        return self.loop.time() + self.rt.identity.effective_idle_timeout

    async def _poll(
        self,
    ) -> Literal["none", "delivered", "stale"] | tuple[tuple[str, ...], list[str]]:
        fresh, current = await self.rt.check_nudges()
        if not current:
            return "stale"
        if not fresh:
            return "none"
        if not self.adapter.streams_input:
            return tuple(message for _, message in fresh), [nudge_id for nudge_id, _ in fresh]
        delivered = False
        for nudge_id, message in fresh:
            if await self.rt._write_stdin(self.proc, self.adapter.nudge_input(message)):
                log.info("delivered nudge %s into the session", nudge_id)
                await self.rt._ack(nudge_id)
                delivered = True
        return "delivered" if delivered else "none"

    async def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        while True:
            try:
                raw = await stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue  # an over-long line: skip it, keep reading
            if not raw:
                return
            line = raw.decode(errors="replace")
            self.rt.echo(line)
            for event in self.adapter.parse(line):
                await self.rt.observe(event)
                if event.fatal:
                    self.fatal = True
                if event.turn_done or event.fatal:
                    self.turn_running = False
                    self.turn_done.set()
                elif event.progress:
                    self.turn_running = True


def ensure_home() -> None:
    """Create HOME if it is missing (an emptyDir starts empty) and check it is writable."""
    home = os.environ.get("HOME")
    if not home:
        return
    path = Path(home)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
        raise OSError(f"HOME {path} is not writable")


def exclude_leftovers(repo: Path, patterns: Sequence[str]) -> None:
    """Add the CLI's leftover files to the clone's .git/info/exclude (once each)."""
    if not patterns:
        return
    git_dir = repo / ".git"
    if not git_dir.is_dir():
        return
    exclude = git_dir / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    present = exclude.read_text().splitlines() if exclude.exists() else []
    missing = [p for p in patterns if p not in present]
    if missing:
        with exclude.open("a") as handle:
            handle.write("".join(f"{p}\n" for p in missing))


def _close_stdin(proc: asyncio.subprocess.Process) -> None:
    if proc.stdin is not None and not proc.stdin.is_closing():
        proc.stdin.close()


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _max_seq(reports: Sequence[Report]) -> int:
    return max((r.seq for r in reports), default=0)


async def run_async(
    identity: Identity,
    channel: AgentChannel,
    stop: asyncio.Event | None = None,
    options: Options | None = None,
    redactor: Redactor | None = None,
) -> int:
    """Run the agent inside an existing event loop; set `stop` to stop it like SIGTERM."""
    return await Runtime(identity, channel, stop or asyncio.Event(), options, redactor).run()


def run(
    identity: Identity,
    channel: AgentChannel,
    options: Options | None = None,
    redactor: Redactor | None = None,
) -> int:
    """Run the agent in a new event loop, stopping cleanly on SIGTERM or SIGINT."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run_async(identity, channel, stop, options, redactor)

    return asyncio.run(main())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of an agent pod (`python -m gastown.agent`)."""
    del argv  # everything comes from the environment
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        identity = identity_mod.from_env()
    except IdentityError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    # Built once (the refinery's gates share it): the pod's secrets are hidden from its log,
    # its echo of the coding agent's output and every API write.
    redactor = pod_redactor()
    install_log_redaction(lambda: redactor)
    try:
        channel = open_channel(identity, redactor)
    except ChannelError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    log.info(
        "agent %s (%s, generation %d) starting at %s",
        identity.agent,
        identity.role.value,
        identity.generation,
        datetime.now().isoformat(timespec="seconds"),
    )
    return run(identity, channel, redactor=redactor)


if __name__ == "__main__":
    sys.exit(main())
