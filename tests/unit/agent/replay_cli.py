"""A stand-in coding-agent CLI that replays output recorded from a real CLI (tests only).

    python replay_cli.py FIXTURE [--pause SECONDS] [--stdin-log FILE] [--aider] [CLI flags...]

Prints the fixture's lines. With --pause it prints up to the first line after the first
`result` (the start of a queued turn), waits that long, notes in --stdin-log whether its stdin
was closed meanwhile (the runtime closing a session while a queued turn runs), prints the rest
and waits for stdin to close.
With --aider it behaves like Aider on disk: writes and commits beads/<bead>.md and leaves
Aider's files in the clone (a .gitignore too unless --no-gitignore is given).
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import time
from pathlib import Path


def stdin_closed() -> bool:
    """True when stdin is at EOF (the runtime closed it); consumes pending input."""
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], 0)
        if not ready:
            return False
        if not os.read(sys.stdin.fileno(), 65536):
            return True


def aider_work(no_gitignore: bool) -> None:
    """What Aider leaves behind after an edit: a commit and its own files."""
    bead = os.environ.get("GASTOWN_BEAD", "bead")
    Path("beads").mkdir(exist_ok=True)
    Path(f"beads/{bead}.md").write_text(f"{bead}: aider edit\n")
    subprocess.run(["git", "add", f"beads/{bead}.md"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", "aider: scripted change"], check=True)
    Path(".aider.chat.history.md").write_text("# aider chat\n")
    Path(".aider.input.history").write_text("\n")
    Path(".aider.tags.cache.v4").mkdir(exist_ok=True)
    (Path(".aider.tags.cache.v4") / "cache.db").write_text("x")
    if not no_gitignore:
        Path(".gitignore").write_text(".aider*\n")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("fixture")
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--stdin-log")
    parser.add_argument("--aider", action="store_true")
    parser.add_argument("--no-gitignore", action="store_true")
    parser.add_argument("--exit", type=int, default=0)
    args, _ = parser.parse_known_args()
    if args.aider:
        aider_work(args.no_gitignore)
    lines = Path(args.fixture).read_text().splitlines()
    first = next((i for i, line in enumerate(lines) if '"type":"result"' in line), len(lines))
    for line in lines[: first + 2]:
        print(line, flush=True)
    if args.pause:
        # Inside the queued second turn: take longer than the idle timeout, then look.
        time.sleep(args.pause)
        if args.stdin_log:
            Path(args.stdin_log).write_text("closed" if stdin_closed() else "open")
    for line in lines[first + 2 :]:
        print(line, flush=True)
    if args.pause:
        sys.stdin.read()  # a streaming CLI waits for input until the runtime closes it
    return int(args.exit)


if __name__ == "__main__":
    sys.exit(main())
