"""A live copy of one namespace's towns, kept by watches with the user's own credentials.

For `kubectl gastown dashboard`: one LIST and then one long WATCH per kind (Towns, Beads, Convoys,
Agents and agent Pods), re-listed when the API server says the watch is too old (410). Pages are
rendered from this copy, so a page view costs no API call, and every change bumps `version`,
which wakes the server-sent event streams: the browser refreshes only when something changed.
What the user may not read stays unread: a refused LIST is kept as that kind's error and shown.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gastown.kube import labels
from gastown.kube.errors import ApiError, error_for, from_http_error
from gastown.kube.rest import RestClient

log = logging.getLogger(__name__)

KINDS = ("Town", "Bead", "Convoy", "Agent", "Pod")
RETRY_SECONDS = 2.0


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


@dataclass(frozen=True)
class Change:
    """One watch event, as applied to the copy."""

    kind: str
    type: str
    name: str


class Mirror:
    """Objects of `KINDS` in one namespace, by kind and name, kept current by watches."""

    def __init__(self, client: RestClient, namespace: str, watch_seconds: int = 60) -> None:
        self.client = client
        self.namespace = namespace
        self.watch_seconds = watch_seconds
        self._objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self._errors: dict[str, str] = {}
        self._listed: set[str] = set()
        self._changed = threading.Condition()
        self._stopped = threading.Event()
        self.version = 0

    # -- reading -------------------------------------------------------------------------------

    def objects(self, kind: str) -> list[dict[str, Any]]:
        """The objects of one kind (a copy of the list, sorted by name)."""
        with self._changed:
            return [self._objects[kind][name] for name in sorted(self._objects[kind])]

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """One object, or None."""
        with self._changed:
            return self._objects[kind].get(name)

    def errors(self) -> dict[str, str]:
        """Kinds the user may not list (or that failed), with the API server's message."""
        with self._changed:
            return dict(self._errors)

    def ready(self) -> bool:
        """True once every kind has been listed (or refused) at least once."""
        with self._changed:
            return self._listed | set(self._errors) >= set(KINDS)

    def wait(self, since: int, timeout: float) -> int:
        """Block until `version` differs from `since` or `timeout` passes; the version."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != since, timeout)
            return self.version

    # -- running -------------------------------------------------------------------------------

    def start(self) -> None:
        """One daemon thread per kind (the process may exit while a watch is open)."""
        for kind in KINDS:
            threading.Thread(
                target=self._run, args=(kind,), name=f"watch-{kind}", daemon=True
            ).start()

    def stop(self) -> None:
        """Stop watching (open watches end at their timeout; their events are then ignored)."""
        self._stopped.set()
        with self._changed:
            self.version += 1
            self._changed.notify_all()

    def _run(self, kind: str) -> None:
        while not self._stopped.is_set():
            try:
                version = self._list(kind)
                while not self._stopped.is_set():
                    version = self._watch(kind, version)
            except Expired:
                continue  # list again
            except ApiError as err:
                self._fail(kind, f"{err.status}: {err.message}")
            except (OSError, ValueError, KeyError, http.client.HTTPException) as err:
                # A dropped connection, a timeout, a cut or malformed chunk: list again.
                log.debug("watch of %s ended: %s", kind, err)
            self._stopped.wait(RETRY_SECONDS)  # a refused or failing kind is retried slowly

    def _list(self, kind: str) -> str:
        body = self.client.request("GET", self._path(kind))
        items = {item["metadata"]["name"]: item for item in body.get("items") or []}
        with self._changed:
            self._objects[kind] = items
            self._listed.add(kind)
            self._errors.pop(kind, None)
            self._bump()
        return str((body.get("metadata") or {}).get("resourceVersion", ""))

    def _watch(self, kind: str, version: str) -> str:
        """Follow one watch request to its end; the last resourceVersion seen."""
        query = {
            "watch": "1",
            "resourceVersion": version,
            "timeoutSeconds": str(self.watch_seconds),
            "allowWatchBookmarks": "true",
        }
        for event in self._stream(self._path(kind, query)):
            obj = event.get("object") or {}
            if event.get("type") == "ERROR":
                if obj.get("code") == 410:
                    raise Expired
                raise error_for(int(obj.get("code") or 500), str(obj.get("message", "")))
            version = str((obj.get("metadata") or {}).get("resourceVersion", version))
            if event.get("type") != "BOOKMARK" and not self._stopped.is_set():
                self._apply(kind, str(event.get("type")), obj)
        return version

    def _apply(self, kind: str, type_: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        with self._changed:
            if type_ == "DELETED":
                self._objects[kind].pop(name, None)
            else:
                self._objects[kind][name] = obj
            self._bump()

    def _fail(self, kind: str, message: str) -> None:
        with self._changed:
            if self._errors.get(kind) != message:
                self._errors[kind] = message
                self._objects[kind] = {}
                self._bump()

    def _bump(self) -> None:
        """Called with the lock held: a new version, and wake every waiting stream."""
        self.version += 1
        self._changed.notify_all()

    def _path(self, kind: str, query: dict[str, str] | None = None) -> str:
        params = dict(query or {})
        if kind == "Pod":
            path = f"/api/v1/namespaces/{self.namespace}/pods"
            params["labelSelector"] = labels.AGENT  # agent pods only
        else:
            path = self.client.collection_path(kind, self.namespace)
        return path + ("?" + urllib.parse.urlencode(params) if params else "")

    def _stream(self, path: str) -> Iterator[dict[str, Any]]:
        """The JSON lines of a watch response."""
        request = urllib.request.Request(self.client.server + path, method="GET")
        request.add_header("Authorization", f"Bearer {self.client.token}")
        request.add_header("Accept", "application/json")
        timeout = self.watch_seconds + 15
        try:
            with urllib.request.urlopen(request, context=self.client.context, timeout=timeout) as r:
                for line in r:
                    if line.strip():
                        yield json.loads(line)
        except urllib.error.HTTPError as err:
            raise from_http_error(err) from None
