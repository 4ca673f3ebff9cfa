"""Generate CustomResourceDefinitions from the pydantic models.

The models in `gastown.model` are the single source of truth. This converter rewrites pydantic's
JSON schema into a Kubernetes *structural* schema:

- every `$ref` is inlined (CRDs forbid references);
- `Optional[X]` (`anyOf: [X, null]`) becomes X, optional by not being required;
- `title`, `additionalProperties: false` and other non-structural keys are dropped;
- enums and constants become `type: string` + `enum`; free-form dicts keep `additionalProperties`;
- defaults of `default_factory` fields are emitted (empty lists/maps, whole default objects) so
  `kubectl get -o yaml` shows the effective policy;
- `x-kubernetes-*` markers and CEL rules (`x-kubernetes-validations`) pass through;
- JSON Schema's numeric `exclusiveMinimum: X` / `exclusiveMaximum: X` (pydantic's `gt`/`lt`)
  become OpenAPI v3's `minimum: X` + `exclusiveMinimum: true` (the API server wants booleans).

Output is deterministic so a golden test can compare generated and committed YAML.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from gastown.kube.identity import agent_status_policy
from gastown.model.common import CATEGORY, GROUP, VERSION
from gastown.model.resources import KINDS, KindInfo, Resource

_DROP_KEYS = {"title", "$schema", "examples", "discriminator"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline `$ref`s recursively."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].split("/")[-1]]
            merged = {**_resolve(target, defs), **{k: v for k, v in node.items() if k != "$ref"}}
            return _resolve(merged, defs)
        return {k: _resolve(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    return node


def _collapse_optional(node: dict[str, Any]) -> dict[str, Any]:
    """Turn `anyOf: [X, {type: null}]` into X, keeping the outer description/default."""
    options = node.get("anyOf")
    if not options:
        return node
    non_null = [o for o in options if o.get("type") != "null"]
    if len(non_null) != 1:
        raise ValueError(f"non-structural union in schema: {options!r}")
    outer = {k: v for k, v in node.items() if k != "anyOf"}
    if outer.get("default", ...) is None:
        outer.pop("default")
    return {**non_null[0], **outer}


_EXCLUSIVE_BOUNDS = {"exclusiveMinimum": "minimum", "exclusiveMaximum": "maximum"}
"""JSON Schema's numeric exclusive bounds, and the OpenAPI v3 bound each becomes."""


def structural(node: Any) -> Any:
    """Rewrite one (already inlined) JSON-schema node into a structural CRD schema node."""
    if isinstance(node, list):
        return [structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = _collapse_optional(node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key in _EXCLUSIVE_BOUNDS and not isinstance(value, bool):
            out[_EXCLUSIVE_BOUNDS[key]] = value
            out[key] = True
            continue
        if key in ("properties",):
            out[key] = {name: structural(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = structural(value)
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "properties" in out:
        out.setdefault("type", "object")
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "description" in out:
        out["description"] = " ".join(str(out["description"]).split())
    return out


def _add_factory_defaults(model: type[BaseModel], schema: dict[str, Any]) -> None:
    """Emit `default` for default_factory fields whose value is empty or an object of defaults."""
    props = schema.get("properties", {})
    for name, field in model.model_fields.items():
        alias = field.alias or name
        sub = props.get(alias)
        if sub is None:
            continue
        annotation = field.annotation
        nested = _model_of(annotation)
        if field.default_factory is not None and "default" not in sub:
            value = field.default_factory()  # type: ignore[call-arg]
            if isinstance(value, BaseModel):
                # The full object: the API server validates defaults (CEL included) as written,
                # without applying nested defaults first.
                sub["default"] = value.model_dump(mode="json", by_alias=True, exclude_none=True)
            elif value in ([], {}):
                sub["default"] = value
        if nested is not None and sub.get("type") == "object":
            _add_factory_defaults(nested, sub)
        elif nested is not None and sub.get("type") == "array":
            _add_factory_defaults(nested, sub["items"])


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside X, X | None or list[X], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Structural schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    inlined = _resolve(raw, raw.get("$defs", {}))
    result: dict[str, Any] = structural(inlined)
    _add_factory_defaults(model, result)
    return result


def _columns(info: KindInfo) -> list[dict[str, Any]]:
    cols = []
    for col in info.columns:
        entry: dict[str, Any] = {"name": col.name, "type": col.type, "jsonPath": col.json_path}
        if col.description:
            entry["description"] = col.description
        if col.priority:
            entry["priority"] = col.priority
        cols.append(entry)
    return cols


def crd_for(resource: type[Resource[Any, Any]]) -> dict[str, Any]:
    """The full CustomResourceDefinition of one kind."""
    info = resource.info
    spec_model = resource.model_fields["spec"].annotation
    status_model = resource.model_fields["status"].annotation
    assert isinstance(spec_model, type)
    assert isinstance(status_model, type)
    spec_schema = model_schema(spec_model)
    status_schema = model_schema(status_model)
    status_schema["description"] = f"Observed state of the {info.kind}, written by the operator."
    root: dict[str, Any] = {
        "type": "object",
        "description": info.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version of the object."},
            "kind": {"type": "string", "description": "Kind of the object."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    if info.root_rules:
        root["x-kubernetes-validations"] = [{"rule": r, "message": m} for r, m in info.root_rules]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "gastown", "app.kubernetes.io/part-of": "gastown"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _columns(info),
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


POLICY_FILES = (f"{GROUP}_agent-status-policy.yaml", f"{GROUP}_agent-status-policy-binding.yaml")
"""The admission policy that scopes agent pods' writes, and its binding, ship beside the CRDs:
cluster-scoped, installed by the same administrator at the same time (one object per file)."""


def render_all() -> dict[str, str]:
    """File name -> YAML text of every CRD, and of the agent status admission policy."""
    header = "# Generated by `make manifests` (gastown.crdgen) from gastown.model; do not edit.\n"
    files = {
        f"{GROUP}_{kind.info.plural}.yaml": header
        + yaml.safe_dump(crd_for(kind), sort_keys=False, width=100)
        for kind in KINDS
    }
    policy_header = (
        "# Generated by `make manifests` (gastown.crdgen) from gastown.kube.identity; no edits.\n"
        "# Lets an agent pod write only its own Agent's status (see docs/helm.md).\n"
    )
    for name, obj in zip(POLICY_FILES, agent_status_policy(), strict=True):
        files[name] = policy_header + yaml.safe_dump(obj, sort_keys=False, width=100)
    return files


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) the CRD files in the given directories."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="output directories")
    parser.add_argument("--check", action="store_true", help="fail if files differ")
    args = parser.parse_args(argv)
    rendered = render_all()
    stale = []
    for directory in args.dirs:
        for name, text in rendered.items():
            path = directory / name
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(path))
            else:
                directory.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if stale:
        print("CRDs are out of date, run `make manifests`: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
