"""Spend: token usage and cost reported by agents, accumulated on Beads, Convoys and the Town.

Usage flows one way: an agent's reports carry the cumulative usage of their dispatch generation
(`Report.usage`); the reconciler folds it into the Bead (`BeadStatus.spend`, one entry per agent
and generation), then each Bead's total into its Convoy and the Town (`spend`, with the figure
already counted per bead). Every fold records what it counted in the same status write, so a
report read twice, or an operator restart, counts nothing twice; figures only ever grow.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from gastown.model.common import Model

MAX_SESSIONS = 64
"""Sessions (agent generations) a Bead keeps figures for; older ones are folded into `earlier`."""

COST_DIGITS = 6
"""Costs are kept in US dollars rounded to micro-dollars, so sums stay exact enough to compare."""


def dollars(value: float) -> float:
    """A cost rounded to micro-dollars (never negative)."""
    return max(0.0, round(value, COST_DIGITS))


class Usage(Model):
    """Tokens and cost of one coding-agent session (or a sum of sessions)."""

    input_tokens: int = Field(default=0, ge=0, description="Input tokens not read from cache.")
    output_tokens: int = Field(default=0, ge=0, description="Output tokens.")
    cache_read_tokens: int = Field(default=0, ge=0, description="Input tokens read from cache.")
    cache_write_tokens: int = Field(default=0, ge=0, description="Input tokens written to cache.")
    cost_usd: float = Field(
        default=0.0,
        ge=0,
        description="Cost in US dollars: as the coding agent reported it, or priced by the "
        "operator from the Town's price table when the agent reports tokens only.",
    )
    cost_reported: bool = Field(
        default=False, description="True if the coding agent reported the cost itself."
    )
    turns: int = Field(default=0, ge=0, description="Model turns (where the agent says).")
    model: str | None = Field(default=None, max_length=128, description="Model used.")

    @property
    def tokens(self) -> int:
        """All tokens, input (fresh and cached) and output."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    def plus(self, other: Usage) -> Usage:
        """The sum of two usages (the model of the right one wins when it has one)."""
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cost_usd=dollars(self.cost_usd + other.cost_usd),
            cost_reported=self.cost_reported or other.cost_reported,
            turns=self.turns + other.turns,
            model=other.model or self.model,
        )

    def at_least(self, other: Usage) -> Usage:
        """Field by field the larger of two cumulative readings of the same session."""
        return Usage(
            input_tokens=max(self.input_tokens, other.input_tokens),
            output_tokens=max(self.output_tokens, other.output_tokens),
            cache_read_tokens=max(self.cache_read_tokens, other.cache_read_tokens),
            cache_write_tokens=max(self.cache_write_tokens, other.cache_write_tokens),
            cost_usd=max(self.cost_usd, other.cost_usd),
            cost_reported=self.cost_reported or other.cost_reported,
            turns=max(self.turns, other.turns),
            model=other.model or self.model,
        )

    def covers(self, other: Usage) -> bool:
        """True if this reading is at least `other` in every figure (nothing new in `other`)."""
        return self.at_least(other).figures() == self.figures()

    def figures(self) -> tuple[int, int, int, int, float, int]:
        """The numbers, for comparisons."""
        return (
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.cost_usd,
            self.turns,
        )


class Spend(Model):
    """A cost and a token count."""

    cost_usd: float = Field(default=0.0, ge=0, description="US dollars.")
    tokens: int = Field(default=0, ge=0, description="Tokens (input, cached and output).")

    def plus(self, other: Spend) -> Spend:
        """The sum of two figures."""
        return Spend(
            cost_usd=dollars(self.cost_usd + other.cost_usd), tokens=self.tokens + other.tokens
        )

    def minus(self, other: Spend) -> Spend:
        """What this figure has beyond `other` (never negative)."""
        return Spend(
            cost_usd=dollars(self.cost_usd - other.cost_usd),
            tokens=max(0, self.tokens - other.tokens),
        )

    @property
    def empty(self) -> bool:
        """True if nothing was spent."""
        return self.cost_usd <= 0 and self.tokens <= 0


class WindowSpend(Spend):
    """Spend inside one calendar window (UTC)."""

    window: str = Field(
        default="", max_length=16, description="The window: a day (2026-12-02) or a month."
    )


class BeadSpend(Model):
    """What the agents that worked on a bead spent, over all its attempts."""

    total: Usage = Field(default_factory=Usage, description="Sum over every session.")
    sessions: dict[str, Usage] = Field(
        default_factory=dict,
        description="Counted usage per session (key: agent uid/generation); the record that "
        "makes counting exactly once.",
    )
    earlier: Usage = Field(
        default_factory=Usage,
        description=f"Sessions folded away to keep at most {MAX_SESSIONS} entries.",
    )


class RateLimitHold(Model):
    """The bead's last attempt ended on the model provider's rate limit (no attempt spent)."""

    at: datetime = Field(description="When the rate-limited ending was applied.")
    until: datetime = Field(description="No new attempt before this moment.")
    count: int = Field(default=1, ge=1, description="Rate-limited endings of this bead so far.")
    retry_after_seconds: int | None = Field(
        default=None, ge=0, description="The window the provider (or the CLI) gave, if any."
    )
    message: str = Field(default="", max_length=1024, description="What the agent reported.")


class RateLimitInfo(Model):
    """An agent's session ended on a rate limit (HTTP 429 or the CLI's equivalent)."""

    status: int | None = Field(default=None, description="HTTP status, usually 429.")
    retry_after_seconds: int | None = Field(
        default=None, ge=0, le=86400, description="Retry-after the provider or CLI gave."
    )


class LedgerSpend(Model):
    """Spend summed from beads, with the figure already counted per bead (exactly once)."""

    total: Spend = Field(default_factory=Spend, description="All spend so far.")
    counted: dict[str, Spend] = Field(
        default_factory=dict, description="Per bead: the part of its spend already counted."
    )


class TownSpend(LedgerSpend):
    """The town's spend: in total, today and this month (UTC calendar windows)."""

    today: WindowSpend = Field(default_factory=WindowSpend, description="Spend today (UTC).")
    month: WindowSpend = Field(default_factory=WindowSpend, description="Spend this month.")


class BudgetState(Model):
    """A budget the town or a convoy has reached (shown as a BudgetExceeded condition)."""

    scope: str = Field(max_length=32, description="bead, convoy, day or month.")
    spent_usd: float = Field(ge=0, description="What was spent in the scope.")
    budget_usd: float = Field(ge=0, description="The budget.")
    window: str = Field(default="", max_length=16, description="The window (day or month).")


class RateLimitState(Model):
    """Rate limits in the town: dispatch backs off while any is in force."""

    held_beads: int = Field(default=0, ge=0, description="Beads held by a rate limit now.")
    until: datetime | None = Field(default=None, description="Dispatch backs off until then.")
    recent: int = Field(default=0, ge=0, description="Rate-limited endings inside the window.")
    breaker_open: bool = Field(
        default=False, description="Too many rate limits in the window: dispatch paused."
    )
    model: str | None = Field(default=None, max_length=128, description="Model affected.")
