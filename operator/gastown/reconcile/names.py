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
_HASH_LEN = 8
_INVALID = re.compile(r"[^a-z0-9.-]+")
_EDGES = re.compile(r"^[^a-z0-9]+|[^a-z0-9]+$")
_SLUG_INVALID = re.compile(r"[^a-z0-9]+")
_SLUG_MAX = 40


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


def slug(title: str) -> str:
    """Lowercase, hyphenated, at most 40 characters (for branch names)."""
    text = _SLUG_INVALID.sub("-", title.lower()).strip("-")
    return text[:_SLUG_MAX].strip("-") or "convoy"


def feature_branch(convoy: str, uid: str | None) -> str:
    """The feature branch of a review-then-land convoy: `convoy/<slug>/<id8>/head`."""
    ident = (uid or "").replace("-", "")[:8] or short_hash(convoy)
    return f"convoy/{slug(convoy)}/{ident}/head"
