"""Labels and annotations the operator puts on what it creates (all under gastown.dev).

A label value holds at most 63 characters, an object name up to 253: every value derived from a
name goes through `value` (the name itself when it fits, else a hashed form), and objects whose
full names the operator reads back (agent pods) also carry them as annotations of the same keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector: `key` compared by `operator` with `values`."""

    key: str
    operator: str  # "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether `labels` satisfy this term (Kubernetes semantics: `notin` and `!=` also
        match objects without the key)."""
        if self.operator == "exists":
            return self.key in labels
        if self.operator == "!exists":
            return self.key not in labels
        present = self.key in labels and labels[self.key] in self.values
        return present if self.operator == "in" else not present


@dataclass(frozen=True)
class Selector:
    """A label selector in the Kubernetes text form (`a=b,c!=d,e in (f,g),!h`); empty: all."""

    text: str
    terms: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether an object with `labels` is selected (every term must hold)."""
        found = labels or {}
        return all(term.matches(found) for term in self.terms)


_SET_TERM = re.compile(r"^([^\s=!()]+)\s+(in|notin)\s+\(([^()]*)\)$")
_COMPARE_TERM = re.compile(r"^([^\s=!()]+)\s*(==|=|!=)\s*([^\s=!(),]*)$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def parse_selector(text: str) -> Selector:
    """Parse a label selector; ValueError naming the bad term if it is not one."""
    terms = [_parse_term(term.strip()) for term in _split_terms(text) if term.strip()]
    return Selector(text=text.strip(), terms=tuple(terms))


def _split_terms(text: str) -> list[str]:
    # Commas separate terms, except inside the parentheses of a set term.
    terms, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    return [*terms, current]


def _parse_term(term: str) -> Requirement:
    if found := _SET_TERM.match(term):
        key, operator, values = found.groups()
        items = frozenset(_value(v.strip(), term) for v in values.split(",") if v.strip())
        return Requirement(_key(key, term), operator, items)
    if found := _COMPARE_TERM.match(term):
        key, operator, item = found.groups()
        kind = "notin" if operator == "!=" else "in"
        return Requirement(_key(key, term), kind, frozenset({_value(item, term)}))
    if term.startswith("!"):
        return Requirement(_key(term[1:].strip(), term), "!exists")
    return Requirement(_key(term, term), "exists")


def _value(item: str, term: str) -> str:
    if len(item) > 63 or not _VALUE.match(item):
        raise ValueError(f"not a label value in {term!r}: {item!r}")
    return item


def _key(key: str, term: str) -> str:
    if not _KEY.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
        raise ValueError(f"not a label selector term: {term!r}")
    return key
