"""Colour (only on a terminal, never with NO_COLOR) and human-friendly times (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

RESET = "\033[0m"
CODES = {
    "green": "32",
    "yellow": "33",
    "red": "31",
    "blue": "34",
    "cyan": "36",
    "dim": "2",
    "bold": "1",
}

# Colour of each phase/state word the plugin prints; anything else stays plain.
PHASE_COLOURS = {
    "closed": "green",
    "Landed": "green",
    "working": "green",
    "Running": "green",
    "Succeeded": "green",
    "True": "green",
    "active": "green",
    "in_progress": "yellow",
    "in_review": "cyan",
    "InProgress": "yellow",
    "ReadyToLand": "cyan",
    "Landing": "cyan",
    "Pending": "yellow",
    "Staged": "dim",
    "open": "dim",
    "idle": "dim",
    "shadow": "yellow",
    "paused": "yellow",
    "draining": "yellow",
    "Unknown": "yellow",
    "failed": "red",
    "Failed": "red",
    "stalled": "red",
    "False": "red",
}


def colour_wanted(choice: str, is_tty: bool, env: Mapping[str, str]) -> bool:
    """Whether to print ANSI colour: `always`, `never`, or `auto` (a TTY without NO_COLOR)."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    return is_tty and "NO_COLOR" not in env and env.get("TERM") != "dumb"


@dataclass(frozen=True)
class Style:
    """Wraps text in ANSI colour codes when enabled, else returns it unchanged."""

    enabled: bool = False

    def paint(self, text: str, colour: str) -> str:
        """`text` in `colour` (a key of CODES)."""
        if not self.enabled or not text:
            return text
        return f"\033[{CODES[colour]}m{text}{RESET}"

    def phase(self, text: str | None, width: int = 0) -> str:
        """A phase word in its colour ("-" when unknown), padded to `width` visible columns."""
        word = text or "-"
        colour = PHASE_COLOURS.get(word)
        padding = " " * max(0, width - len(word))
        return (self.paint(word, colour) if colour else word) + padding

    def bold(self, text: str) -> str:
        """Bold text."""
        return self.paint(text, "bold")

    def dim(self, text: str) -> str:
        """Dimmed text."""
        return self.paint(text, "dim")


PLAIN = Style(False)


def aware(moment: datetime) -> datetime:
    """Naive datetimes are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def duration(seconds: float) -> str:
    """A short human duration: 45s, 3m12s, 2h05m, 3d4h."""
    total = int(abs(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def ago(moment: datetime | None, now: datetime) -> str:
    """ "3m12s ago", "in 40s" for the future, "never" when unknown."""
    if moment is None:
        return "never"
    seconds = (aware(now) - aware(moment)).total_seconds()
    if seconds < 0:
        return f"in {duration(seconds)}"
    return f"{duration(seconds)} ago"


def iso(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with a Z, for JSON output (None stays None)."""
    if moment is None:
        return None
    return aware(moment).astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
