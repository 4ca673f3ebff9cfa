"""Fixtures shared with the agent tests: a bare remote with a scratch clone (real git)."""

from tests.unit.agent.conftest import remote  # noqa: F401 (re-exported fixture)
