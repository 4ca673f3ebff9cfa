"""Fixtures for the reconciler tests."""

from __future__ import annotations

import pytest

from tests.unit.reconcile.builders import World, town


@pytest.fixture
def world() -> World:
    """An empty town with one rig, `rig-1`."""
    return World.of(town())
