"""Labels and annotations the operator puts on what it creates (all under gastown.dev)."""

from __future__ import annotations

PREFIX = "gastown.dev"
TOWN = f"{PREFIX}/town"
RIG = f"{PREFIX}/rig"
AGENT = f"{PREFIX}/agent"
BEAD = f"{PREFIX}/bead"
ROLE = f"{PREFIX}/role"
GENERATION = f"{PREFIX}/generation"
CONVOY = f"{PREFIX}/convoy"
MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "app.kubernetes.io/part-of"
COMPONENT = "app.kubernetes.io/component"
OPERATOR = "gastown-operator"


def common(town: str) -> dict[str, str]:
    """Labels on every object the operator creates for a town."""
    return {TOWN: town, MANAGED_BY: OPERATOR, PART_OF: "gastown"}
