"""A scripted coding agent for tests and `make demo`: real edits, real commits, real `gt` calls.

Run it as `python -m gastown.agent.scripted`, either as codingAgent kind `command`, or as kind
`claude-code` with `command: [python, -m, gastown.agent.scripted]` (it then accepts Claude Code's
flags and speaks stream-json on stdin, so nudges reach it live). It reads the prompt, reads the
`Key: value` header the runtime puts at the top (Bead, Role, Branch, Base branch, Target
commit, ...), prints Claude-Code-like stream-json progress lines, and:

- as a polecat: creates or appends to `beads/<bead>.md`, commits on the current branch, and
  calls `gt done --summary ...`. For a rework bead it first merges the base branch into the
  branch (conflicts resolved by keeping both sides) and commits with a subject starting
  `rework:`.
- as the refinery's reviewer: approves with `gt done`, or calls `gt request-changes`.

Markers, written anywhere in the bead description as `[scripted: <directive>]` (they reach the
refinery through the source description), or listed comma-separated in GASTOWN_SCRIPTED:

    fail                    exit 3 without doing anything (the runtime reports `failed`)
    fail-once               fail the first time this bead runs (state in GASTOWN_SCRIPTED_STATE,
                            default <tmp>/gastown-scripted-state), work normally afterwards
    no-done                 do the work and commit, but exit 0 without `gt done` (-> `exited`)
    hang                    print progress, then hang (up to an hour) without finishing; in
                            stream mode it keeps reading nudges
    finish                  overrides `hang`; also a nudge containing `[scripted: finish]` makes
                            a hanging stream-mode agent finish its work
    sleep=<seconds>         sleep before committing (a slow agent)
    conflict-file=<path>    also overwrite <path> with a bead-specific line (two beads doing
                            this conflict); ignored when reworking
    request-changes-once    refinery review: request changes unless the branch has a commit
                            whose subject starts with `rework:`
    request-changes-always  refinery review: always request changes

Every nudge message it receives (live in stream mode, or in the "Messages from the town" section
of a restarted prompt) is appended as one line to the file GASTOWN_SCRIPTED_NUDGE_LOG, if set.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HANG_SECONDS = 3600.0
MARKER = re.compile(r"\[scripted:\s*([^\]]+)\]")


class Scripted:
    """One run of the scripted agent."""

    def __init__(self, stream: bool) -> None:
        self.stream = stream
        self.prompt = ""
        self.header: dict[str, str] = {}
        self.directives: dict[str, str] = {}
        self.tool_seq = 0

    # --- I/O ---

    def emit(self, doc: dict[str, Any]) -> None:
        """Print one stream-json line."""
        print(json.dumps(doc), flush=True)

    def say(self, text: str) -> None:
        """An assistant text event."""
        self.emit({"type": "assistant", "message": {"content": [{"type": "text", "text": text}]}})

    def tool(self, name: str, detail: str) -> str:
        """Announce a tool call; returns its id."""
        self.tool_seq += 1
        call_id = f"toolu_scripted_{self.tool_seq}"
        block = {"type": "tool_use", "id": call_id, "name": name, "input": {"detail": detail}}
        self.emit({"type": "assistant", "message": {"content": [block]}})
        return call_id

    def tool_done(self, call_id: str, output: str) -> None:
        """Finish a tool call."""
        block = {"type": "tool_result", "tool_use_id": call_id, "content": output[-500:]}
        self.emit({"type": "user", "message": {"content": [block]}})

    def read_message(self) -> str | None:
        """Next user message text from stream-json stdin, or None at EOF."""
        for raw in sys.stdin:
            try:
                doc = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict) and doc.get("type") == "user":
                return _message_text(doc)
        return None

    def log_nudge(self, message: str) -> None:
        """Record a received nudge for tests."""
        path = os.environ.get("GASTOWN_SCRIPTED_NUDGE_LOG")
        if path:
            with open(path, "a") as handle:
                handle.write(message.replace("\n", " ") + "\n")

    # --- main flow ---

    def run(self) -> int:
        """Read the prompt and act on it."""
        prompt = self.read_message() if self.stream else sys.stdin.read()
        if prompt is None:
            return 2
        self.load(prompt)
        self.emit({"type": "system", "subtype": "init", "session_id": "scripted"})
        for nudge in _town_messages(prompt):
            self.log_nudge(nudge)
        if self.header.get("Role", os.environ.get("GASTOWN_ROLE")) == "refinery":
            code = self.review()
        else:
            code = self.work()
        self.emit({"type": "result", "subtype": "success" if code == 0 else "error"})
        if self.stream and code == 0:
            self.drain()
        return code

    def load(self, prompt: str) -> None:
        """Parse the header and the directives."""
        self.prompt = prompt
        for line in prompt.splitlines():
            if not line.strip():
                break
            key, sep, value = line.partition(": ")
            if sep:
                self.header[key.strip()] = value.strip()
        sources = MARKER.findall(prompt) + os.environ.get("GASTOWN_SCRIPTED", "").split(",")
        for item in sources:
            for directive in item.split(","):
                key, _, value = directive.strip().partition("=")
                if key:
                    self.directives[key] = value

    def work(self) -> int:
        """Polecat: edit, commit, gt done (subject to directives)."""
        bead = self.header.get("Bead") or os.environ.get("GASTOWN_BEAD", "bead")
        if "fail" in self.directives or self._fail_once(bead):
            self.say("scripted: failing as instructed")
            return 3
        if "sleep" in self.directives:
            time.sleep(float(self.directives["sleep"] or "1"))
        if "hang" in self.directives and "finish" not in self.directives and not self.hang():
            return 0
        rework = "# Rework requested" in self.prompt
        if rework:
            self.merge_base()
        self.edit(bead, rework)
        if "no-done" in self.directives:
            self.say("scripted: leaving without gt done")
            return 0
        return self.gt("done", "--summary", f"scripted work on {bead}")

    def review(self) -> int:
        """Refinery reviewer: approve or request changes."""
        target = self.header.get("Target commit", "")
        subjects = self.git("log", "--format=%s", f"{target}..HEAD") if target else ""
        reworked = any(s.startswith("rework:") for s in subjects.splitlines())
        once = "request-changes-once" in self.directives and not reworked
        if once or "request-changes-always" in self.directives:
            bead = self.header.get("Source bead", "bead")
            return self.gt(
                "request-changes",
                "--feedback",
                "scripted review: please rework this change",
                "--file",
                f"beads/{bead}.md",
            )
        return self.gt("done", "--summary", "scripted review: approved")

    def hang(self) -> bool:
        """Hang until a finish nudge (stream mode) or the deadline; True means go on working."""
        self.say("scripted: hanging")
        deadline = time.monotonic() + HANG_SECONDS
        if not self.stream:
            while time.monotonic() < deadline:
                time.sleep(1)
            return False
        while time.monotonic() < deadline:
            message = self.read_message()
            if message is None:
                return False
            self.log_nudge(message)
            self.say(f"scripted: received nudge: {message[:200]}")
            if "[scripted: finish]" in message:
                return True
        return False

    def drain(self) -> None:
        """Stream mode after a turn: keep taking messages until stdin closes (like Claude)."""
        while (message := self.read_message()) is not None:
            self.log_nudge(message)
            self.say(f"scripted: received nudge: {message[:200]}")
            self.emit({"type": "result", "subtype": "success"})

    # --- actions ---

    def edit(self, bead: str, rework: bool) -> None:
        """Create or extend beads/<bead>.md (and the conflict file), then commit."""
        call = self.tool("Edit", f"beads/{bead}.md")
        path = Path("beads") / f"{bead}.md"
        path.parent.mkdir(exist_ok=True)
        title = _title(self.prompt)
        line = f"rework of {bead}\n" if rework else f"{bead}: {title}\n"
        with path.open("a") as handle:
            handle.write(line)
        conflict = self.directives.get("conflict-file")
        if conflict and not rework:
            Path(conflict).write_text(f"{bead} was here\n")
            self.git("add", conflict)
        self.git("add", str(path))
        subject = f"rework: {bead}" if rework else f"{bead}: {title}"
        self.git("commit", "-q", "-m", subject)
        self.tool_done(call, "committed")

    def merge_base(self) -> None:
        """Bring the base branch in, keeping both sides of any conflict (union merge)."""
        base = self.header.get("Base branch")
        if not base:
            return
        call = self.tool("Bash", f"git merge origin/{base}")
        # No fetch: the runtime fetched the remote just before the session, and a coding agent
        # holds no git credentials (only the runtime does), so an authenticated remote would
        # refuse it.
        attributes = Path(self.git("rev-parse", "--git-path", "info/attributes"))
        attributes.parent.mkdir(parents=True, exist_ok=True)
        attributes.write_text("* merge=union\n")
        self.git("merge", "-q", "--no-edit", f"origin/{base}")
        self.tool_done(call, "merged")

    def git(self, *args: str) -> str:
        """Run git in the workspace."""
        proc = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=120
        )
        return proc.stdout.strip()

    def gt(self, *args: str) -> int:
        """Call the gt tool like a real agent would (found on PATH)."""
        program = shutil.which("gt")
        argv = [program] if program else [sys.executable, "-m", "gastown.agent.gt"]
        call = self.tool("Bash", "gt " + " ".join(args[:1]))
        proc = subprocess.run(
            [*argv, *args], capture_output=True, text=True, timeout=300, check=False
        )
        self.tool_done(call, proc.stdout + proc.stderr)
        return proc.returncode

    def _fail_once(self, bead: str) -> bool:
        if "fail-once" not in self.directives:
            return False
        default = Path(tempfile.gettempdir()) / "gastown-scripted-state"
        state = Path(os.environ.get("GASTOWN_SCRIPTED_STATE") or default)
        state.mkdir(parents=True, exist_ok=True)
        marker = state / f"{bead}.failed-once"
        if marker.exists():
            return False
        marker.write_text("failed once\n")
        return True


def _message_text(doc: dict[str, Any]) -> str:
    content = doc.get("message", {}).get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return ""


def _title(prompt: str) -> str:
    for line in prompt.splitlines():
        if line.startswith("# Task: "):
            return line[len("# Task: ") :].strip()
    return "work"


def _town_messages(prompt: str) -> list[str]:
    """Nudges handed over in a restarted prompt's "Messages from the town" section."""
    section = prompt.partition("# Messages from the town\n")[2]
    messages = []
    for line in section.splitlines():
        if not line.startswith("- "):
            break
        messages.append(line[2:])
    return messages


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; accepts (and mostly ignores) Claude Code's flags."""
    parser = argparse.ArgumentParser(prog="scripted-agent")
    parser.add_argument("-p", "--print", action="store_true")
    parser.add_argument("--output-format", default="text")
    parser.add_argument("--input-format", default="text")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--model", default=None)
    parser.add_argument("--permission-mode", default=None)
    args, _ = parser.parse_known_args(argv)
    return Scripted(stream=args.input_format == "stream-json").run()


if __name__ == "__main__":
    sys.exit(main())
