"""The committed CRDs are exactly what the models generate, and the schemas are structural."""

from __future__ import annotations

from typing import Any

import pytest

from gastown import crdgen
from gastown.devtools.controlplane import REPO_ROOT
from gastown.model import KINDS

GENERATED = crdgen.render_all()


@pytest.mark.parametrize("directory", ["crds", "charts/gastown/crds"])
@pytest.mark.parametrize("name", sorted(GENERATED))
def test_committed_crd_matches_generated(directory: str, name: str) -> None:
    path = REPO_ROOT / directory / name
    assert path.exists(), f"{path} missing: run `make manifests`"
    assert path.read_text() == GENERATED[name], f"{path} is stale: run `make manifests`"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found.extend(_walk(value, f"{path}.{key}"))
        if isinstance(node.get("items"), dict):
            found.extend(_walk(node["items"], f"{path}[]"))
        if isinstance(node.get("additionalProperties"), dict):
            found.extend(_walk(node["additionalProperties"], f"{path}{{}}"))
    return found


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.info.kind)
def test_schema_is_structural_and_documented(kind: Any) -> None:
    crd = crdgen.crd_for(kind)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "type" in node or "x-kubernetes-int-or-string" in node, f"{path} has no type"
        for forbidden in ("$ref", "anyOf", "allOf", "oneOf", "title", "$defs"):
            assert forbidden not in node, f"{path} has {forbidden}"
        assert node.get("additionalProperties") is not False, path
    spec_fields = _walk(schema["properties"]["spec"])
    undocumented = [
        p for p, n in spec_fields if p and "description" not in n and not p.endswith(("[]", "{}"))
    ]
    assert not undocumented, f"spec fields without a description: {undocumented}"


def test_kind_names_and_category() -> None:
    short = [name for kind in KINDS for name in kind.info.short_names]
    assert len(short) == len(set(short))
    for kind in KINDS:
        names = crdgen.crd_for(kind)["spec"]["names"]
        assert names["categories"] == ["gastown"]
        assert "all" not in names["categories"]


def test_every_kind_has_an_age_column() -> None:
    for kind in KINDS:
        assert kind.info.columns[-1].name == "Age"


def test_configuration_reference_is_up_to_date() -> None:
    from gastown import docgen

    path = REPO_ROOT / "docs" / "configuration.md"
    assert path.read_text() == docgen.render(), "docs/configuration.md is stale: `make manifests`"


def test_the_reference_shows_exclusive_bounds_as_strict() -> None:
    from gastown import docgen

    text = docgen.render()
    assert "| `spec.policy.budget.perDayUsd` | number |" in text
    row = next(line for line in text.splitlines() if "`spec.policy.budget.perDayUsd`" in line)
    assert row.endswith("| >0 |"), row  # gt=0: zero is not a budget
    assert docgen._bounds({"maximum": 2, "exclusiveMaximum": True}) == "<2"
    assert docgen._bounds({"minimum": 1, "maximum": 5}) == "≥1; ≤5"


@pytest.mark.parametrize(
    ("bound", "value", "expected"),
    [
        ("exclusiveMinimum", 0, {"minimum": 0, "exclusiveMinimum": True}),
        ("exclusiveMaximum", 1.5, {"maximum": 1.5, "exclusiveMaximum": True}),
        ("exclusiveMinimum", True, {"exclusiveMinimum": True}),  # already OpenAPI v3
    ],
)
def test_exclusive_bounds_become_openapi_v3_booleans(
    bound: str, value: Any, expected: dict[str, Any]
) -> None:
    """pydantic's `gt`/`lt` write JSON Schema's numeric bounds; the API server refuses them."""
    node = crdgen.structural({"type": "number", bound: value})
    assert node == {"type": "number", **expected}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.info.kind)
def test_no_numeric_exclusive_bound_reaches_a_crd(kind: Any) -> None:
    schema = crdgen.crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(bound, True) is True, f"{path}.{bound} must be a boolean"
