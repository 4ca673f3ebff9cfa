"""`kubectl gastown sling`: build Bead and Convoy objects from the command line (pure).

Objects are validated locally with the same pydantic models the CRDs are generated from, so most
mistakes are reported before anything is sent; the API server's CEL rules (a bead depending on
itself, a task depending on an unknown key, ...) are checked by the server and its message shown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from gastown.model import API_VERSION, BeadSpec, ConvoySpec, Town
from gastown.model.common import ObjectName

_DEPS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(,[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SLUG = re.compile(r"[^a-z0-9]+")
_NAME = TypeAdapter(ObjectName)


class SlingError(ValueError):
    """Input that cannot become a valid object; the message says what to fix."""


def parse_task(text: str) -> dict[str, Any]:
    """`key:title[:dep1,dep2]` -> a convoy task (wire form).

    The last `:`-part counts as dependencies only if it looks like a list of task keys
    (lowercase names separated by commas), so titles may contain colons ("api: add login").
    """
    key, sep, rest = text.partition(":")
    if not sep or not key.strip() or not rest.strip():
        raise SlingError(f"--task {text!r}: expected key:title[:dep1,dep2]")
    title, deps = rest, ""
    head, sep, tail = rest.rpartition(":")
    if sep and head.strip() and _DEPS.match(tail.strip()):
        title, deps = head, tail.strip()
    task: dict[str, Any] = {"key": key.strip(), "title": title.strip()}
    if deps:
        task["dependsOn"] = deps.split(",")
    return task


def slug(text: str, limit: int = 30) -> str:
    """A DNS-label-safe prefix from free text ("Fix the login!" -> "fix-the-login")."""
    return _SLUG.sub("-", text.lower()).strip("-")[:limit].strip("-") or "bead"


def default_rig(town: Town, rig: str | None) -> str:
    """The rig to use: the one given (must exist), else the town's only rig."""
    rigs = [r.name for r in town.spec.rigs]
    if rig is not None:
        if rig not in rigs:
            raise SlingError(f"town {town.name} has no rig {rig!r} (rigs: {', '.join(rigs)})")
        return rig
    if len(rigs) == 1:
        return rigs[0]
    raise SlingError(f"town {town.name} has several rigs ({', '.join(rigs)}): pass --rig")


def bead_object(
    *,
    town: str,
    title: str,
    rig: str,
    description: str = "",
    priority: str = "medium",
    depends_on: Sequence[str] = (),
    labels: Sequence[str] = (),
    name: str | None = None,
) -> dict[str, Any]:
    """A validated Bead object; without a name the API server generates one from the title."""
    spec: dict[str, Any] = {
        "town": town,
        "rig": rig,
        "type": "issue",
        "title": title,
        "description": description,
        "priority": priority,
    }
    if depends_on:
        spec["dependsOn"] = list(depends_on)
    if labels:
        spec["labels"] = list(labels)
    validate(BeadSpec, spec)
    return {
        "apiVersion": API_VERSION,
        "kind": "Bead",
        "metadata": _metadata(name, title),
        "spec": spec,
    }


def convoy_object(
    *,
    name: str,
    town: str,
    rig: str,
    tasks: Sequence[Mapping[str, Any]],
    mode: str = "review-then-land",
    staged: bool = False,
    beads: Sequence[str] = (),
) -> dict[str, Any]:
    """A validated Convoy object with inline tasks (and optional existing beads)."""
    spec: dict[str, Any] = {
        "town": town,
        "rig": rig,
        "mergeMode": mode,
        "staged": staged,
        "tasks": [dict(t) for t in tasks],
    }
    if beads:
        spec["beads"] = list(beads)
    if not tasks and not beads:
        raise SlingError("a convoy needs tasks (--task key:title[:deps] or --file) or --bead")
    _duplicate_keys(spec["tasks"])
    validate(ConvoySpec, spec)
    return {
        "apiVersion": API_VERSION,
        "kind": "Convoy",
        "metadata": _metadata(name, name),
        "spec": spec,
    }


def tasks_from_file(data: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Tasks and convoy options from a YAML document: a list of tasks, or a mapping with
    `tasks` and optionally `rig`, `mergeMode`, `staged`, `beads`."""
    if isinstance(data, list):
        data = {"tasks": data}
    if not isinstance(data, dict) or not isinstance(data.get("tasks", []), list):
        raise SlingError("the tasks file must be a list of tasks or a mapping with `tasks:`")
    tasks = data.get("tasks") or []
    for index, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise SlingError(f"tasks[{index}] must be a mapping with key and title")
    options = {k: data[k] for k in ("rig", "mergeMode", "staged", "beads") if k in data}
    return [dict(t) for t in tasks], options


def _duplicate_keys(tasks: Sequence[Mapping[str, Any]]) -> None:
    seen: set[str] = set()
    for task in tasks:
        key = str(task.get("key", ""))
        if key in seen:
            raise SlingError(f"task key {key!r} is used twice")
        seen.add(key)


def _metadata(name: str | None, hint: str) -> dict[str, Any]:
    if name is None:
        return {"generateName": slug(hint) + "-"}
    try:
        _NAME.validate_python(name)
    except ValidationError:
        raise SlingError(
            f"name {name!r} is not a valid object name (lowercase letters, digits, '-', '.')"
        ) from None
    return {"name": name}


def validate(model: type[BaseModel], spec: Mapping[str, Any]) -> None:
    """Validate a spec with its pydantic model; SlingError lists every problem by field path."""
    try:
        model.model_validate(dict(spec))
    except ValidationError as err:
        problems = [f"spec.{field_path(e['loc'])}: {e['msg']}" for e in err.errors()]
        raise SlingError("invalid input:\n  " + "\n  ".join(problems)) from None


def field_path(loc: Sequence[int | str]) -> str:
    """("tasks", 0, "key") -> "tasks[0].key"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
