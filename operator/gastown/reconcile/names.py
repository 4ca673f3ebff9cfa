"""Deterministic names for everything the core creates.

A name is a pure function of the state that decided to create the object, so a pass that is
retried (after a crash, a conflict or watch lag) produces the same name and the API server's
"AlreadyExists" turns the duplicate into a no-op. Every name is a valid DNS-1123 subdomain of at
most 253 characters; long names are truncated and suffixed with a short hash of the full name.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

MAX_NAME = 253
MAX_LABEL_VALUE = 63
_HASH_LEN = 8
_INVALID = re.compile(r"[^a-z0-9.-]+")
_EDGES = re.compile(r"^[^a-z0-9]+|[^a-z0-9]+$")
_SLUG_INVALID = re.compile(r"[^a-z0-9]+")
_SLUG_MAX = 40
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def short_hash(text: str, length: int = _HASH_LEN) -> str:
    """A stable hex digest prefix of `text`."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@lru_cache(maxsize=1 << 16)
def dns_name(*parts: str, limit: int = MAX_NAME) -> str:
    """Join parts with "-" into a DNS-1123 subdomain, truncating with a hash when too long."""
    raw = "-".join(p for p in parts if p)
    name = _EDGES.sub("", _INVALID.sub("-", raw.lower())) or "x"
    if len(name) <= limit:
        return name
    digest = short_hash(raw)
    head = _EDGES.sub("", name[: limit - _HASH_LEN - 1])
    return f"{head}-{digest}"


def label_value(name: str) -> str:
    """A valid label value for `name`: the name itself when it is one, else a hashed form.

    Label values hold at most 63 characters while object names may have 253, and names the
    operator derives (`<town>-polecat-<rig>-<n>`, `<bead>-mr-<n>`, ...) grow past 63 with
    perfectly valid inputs: such a value is cut and suffixed with a hash of the full name, so it
    stays unique and selectable. Readers that need the full name use the annotation of the same
    key (see `gastown.kube.labels`).
    """
    if len(name) <= MAX_LABEL_VALUE and _LABEL_VALUE.match(name):
        return name
    return dns_name(name, limit=MAX_LABEL_VALUE).replace(".", "-")


def polecat_name(town: str, rig: str, index: int) -> str:
    """Name of the index-th polecat (worker) of a rig."""
    return dns_name(town, "polecat", rig, str(index))


def refinery_name(town: str, rig: str) -> str:
    """Name of the one refinery of a rig."""
    return dns_name(town, "refinery", rig)


def pod_name(agent: str, generation: int) -> str:
    """Name of the pod of one dispatch generation of an agent."""
    suffix = f"-g{generation}"
    return dns_name(agent, limit=MAX_NAME - len(suffix)) + suffix


def task_bead_name(convoy: str, key: str) -> str:
    """Bead materialised from an inline convoy task."""
    return dns_name(convoy, key)


def merge_request_name(bead: str, attempt: int) -> str:
    """The merge request of the work produced by one dispatch attempt of a bead."""
    return dns_name(bead, "mr", str(attempt))


def rework_name(merge_request: str, review_attempt: int) -> str:
    """The rework bead requested by one review attempt of a merge request."""
    return dns_name(merge_request, "rework", str(review_attempt))


def landing_name(convoy: str, attempt: int) -> str:
    """The landing merge request of a review-then-land convoy, per landing attempt."""
    return dns_name(convoy, "land", str(attempt))


def escalation_name(subject: str, tag: str) -> str:
    """An escalation bead about `subject`; `tag` makes it unique per occasion."""
    return dns_name(subject, "esc", tag)


WORK_BRANCH_PREFIX = "gt/"
"""Every branch an agent works on lives under this prefix: the only branches a refinery deletes."""

_UID_HEX = re.compile(r"[^0-9a-f]")


def bead_short_id(bead: str, uid: str | None = None) -> str:
    """A short, stable id of a bead for branch names: the uid prefix, else a readable name."""
    if uid:
        compact = _UID_HEX.sub("", uid.lower())
        if len(compact) >= 8:
            return compact[:8]
    if len(bead) <= 40:
        return bead
    return f"{bead[:31]}-{short_hash(bead)}"


def work_branch(agent: str, bead: str, uid: str | None = None) -> str:
    """The branch an agent works on for an issue bead: `gt/<agent>/<bead-short-id>`.

    The operator derives it, never the agent: a `done` naming any other branch is refused.
    """
    return f"{WORK_BRANCH_PREFIX}{agent}/{bead_short_id(bead, uid)}"


def is_work_branch(branch: str) -> bool:
    """True for branches in the agents' own namespace of branches (`gt/...`)."""
    return branch.startswith(WORK_BRANCH_PREFIX) and len(branch) > len(WORK_BRANCH_PREFIX)


def slug(title: str) -> str:
    """Lowercase, hyphenated, at most 40 characters (for branch names)."""
    text = _SLUG_INVALID.sub("-", title.lower()).strip("-")
    return text[:_SLUG_MAX].strip("-") or "convoy"


def feature_branch(convoy: str, uid: str | None) -> str:
    """The feature branch of a review-then-land convoy: `convoy/<slug>/<id8>/head`."""
    ident = (uid or "").replace("-", "")[:8] or short_hash(convoy)
    return f"convoy/{slug(convoy)}/{ident}/head"
