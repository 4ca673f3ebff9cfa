"""Building blocks shared by the four kinds: the base model, names, conditions, references.

Every model here is the single source of truth for both runtime parsing and the CRD schema
(`gastown.model.crdgen` turns them into OpenAPI). Field descriptions become `kubectl explain`
text, so they are written for users.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "gastown.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "gastown"

# RFC 1123 label: what Kubernetes accepts as the name of most objects we reference by name.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# RFC 1123 subdomain: object names (Beads, Secrets, ...).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

ObjectName = Annotated[
    str,
    Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN),
]
"""The name of another object in the same namespace."""

LabelName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
"""A short DNS-label name (rigs, convoy task keys)."""


class Model(BaseModel):
    """Base of every gastown model: camelCase on the wire, immutable in memory.

    Unknown fields are ignored rather than rejected so that an older operator can read objects
    written by a newer one (the API server prunes unknown fields on write anyway).
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="ignore",
        use_enum_values=False,
    )

    def to_api(self) -> dict[str, Any]:
        """Serialise for the API server: camelCase keys, no unset optionals."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ConditionStatus(StrEnum):
    """Status of a condition, as in metav1.Condition."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """One aspect of an object's current state, in the standard Kubernetes form."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Type of condition in CamelCase, e.g. Ready.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The metadata.generation this condition was computed from.",
    )
    last_transition_time: datetime = Field(
        description="When the condition last changed status.",
    )
    reason: str = Field(
        max_length=1024,
        min_length=1,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Machine-readable CamelCase reason for the last transition.",
    )
    message: str = Field(
        default="",
        max_length=32768,
        description="Human-readable details about the last transition.",
    )


Conditions = Annotated[
    list[Condition],
    Field(
        default_factory=list,
        max_length=32,
        description="Current state of the object, as standard Kubernetes conditions.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    ),
]


class SecretKeyRef(Model):
    """A key inside a Secret in the same namespace."""

    name: ObjectName = Field(description="Name of the Secret.")
    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key within the Secret.",
    )


class EnvVar(Model):
    """A plain environment variable for agent pods (never a secret: use secretEnv)."""

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Variable name.",
    )
    value: str = Field(default="", max_length=4096, description="Variable value.")


class SecretEnvVar(Model):
    """An environment variable whose value comes from a Secret (API keys, tokens)."""

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Variable name inside the agent container.",
    )
    secret_key_ref: SecretKeyRef = Field(description="Where the value is read from.")


def cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """JSON-schema extra carrying CEL validation rules as (rule, message) pairs."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


def find_condition(conditions: list[Condition], type_: str) -> Condition | None:
    """Return the condition of the given type, if present."""
    for condition in conditions:
        if condition.type == type_:
            return condition
    return None
