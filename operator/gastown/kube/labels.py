"""Labels and annotations the operator puts on what it creates (all under gastown.dev).

A label value holds at most 63 characters, an object name up to 253: every value derived from a
name goes through `value` (the name itself when it fits, else a hashed form), and objects whose
full names the operator reads back (agent pods) also carry them as annotations of the same keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gastown.reconcile.names import label_value

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


def value(name: str) -> str:
    """The label value of a name (always valid; see `gastown.reconcile.names.label_value`)."""
    return label_value(name)


def common(town: str) -> dict[str, str]:
    """Labels on every object the operator creates for a town."""
    return {TOWN: value(town), MANAGED_BY: OPERATOR, PART_OF: "gastown"}


def town_selector(town: str) -> str:
    """A label selector of a town's agent pods."""
    return f"{TOWN}={value(town)}"


def full_name(metadata: Mapping[str, Any], key: str) -> str | None:
    """The full name under `key`: the annotation when present, else the label (older objects)."""
    for section in ("annotations", "labels"):
        found = (metadata.get(section) or {}).get(key)
        if found:
            return str(found)
    return None
