"""Kubernetes Events about our objects (best effort: an Event never fails a pass)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from gastown.kube.client import ApiError, Kube
from gastown.model.common import API_VERSION
from gastown.reconcile.names import MAX_NAME, dns_name

log = logging.getLogger(__name__)
MAX_MESSAGE = 1024


def event_name(subject: str) -> str:
    """A unique Event name about `subject`, within the 253 characters of an object name (a long
    subject is cut and hashed, so its Events are never refused for their name)."""
    suffix = f".{uuid.uuid4().hex[:16]}"
    return dns_name(subject, limit=MAX_NAME - len(suffix)) + suffix


def build_event(
    namespace: str, kind: str, name: str, uid: str, type_: str, reason: str, message: str
) -> dict[str, Any]:
    """A core/v1 Event about one object."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    api_version = "v1" if kind == "Pod" else API_VERSION
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(name), "namespace": namespace},
        "involvedObject": {
            "apiVersion": api_version,
            "kind": kind,
            "name": name,
            "namespace": namespace,
            "uid": uid,
        },
        "type": type_,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "source": {"component": "gastown-operator"},
        "reportingComponent": "gastown-operator",
        "reportingInstance": "gastown-operator",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


async def post_event(kube: Kube, event: dict[str, Any]) -> bool:
    """Create the Event; log (without the message body) and carry on if it fails."""
    try:
        await kube.create_core("Event", event["metadata"]["namespace"], event)
    except ApiError as err:
        log.warning(
            "event %s on %s not posted: %s",
            event["reason"],
            event["involvedObject"]["name"],
            err.status,
        )
        return False
    return True
