"""`kubectl gastown dashboard` in a real headless browser (Chromium, Debian's package), on a
convoy the operator runs: the DAG has the right nodes, edges and phases, follows the town live
(server-sent events, no reload) when a bead moves, and a bead's timeline lists its dispatches
and reports. The browser is driven over the DevTools protocol (aiohttp's websocket client).
"""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gastown.devtools.controlplane import REPO_ROOT, ControlPlane
from gastown.model import BeadPhase
from gastown.plugin import fetch, web
from tests.support.api import Api, eventually
from tests.support.procs import Process
from tests.support.town import AgentPlayer, TownView, convoy, town

pytestmark = pytest.mark.cluster

DIAMOND = [
    {"key": "base", "title": "Base"},
    {"key": "left", "title": "Left", "dependsOn": ["base"]},
    {"key": "right", "title": "Right", "dependsOn": ["base"]},
    {"key": "top", "title": "Top", "dependsOn": ["left", "right"]},
]
NODES = {"feat-base", "feat-left", "feat-right", "feat-top"}
EDGES = {
    ("feat-base", "feat-left"),
    ("feat-base", "feat-right"),
    ("feat-left", "feat-top"),
    ("feat-right", "feat-top"),
}
DAG_STATE = """JSON.stringify({
  nodes: Array.from(document.querySelectorAll('svg.dag [data-node]'))
    .map(n => [n.getAttribute('data-node'), n.getAttribute('data-phase')]),
  edges: Array.from(document.querySelectorAll('svg.dag .edge'))
    .map(e => [e.getAttribute('data-from'), e.getAttribute('data-to')]),
  marker: window.__sameDocument === true
})"""
TIMELINE = """JSON.stringify(Array.from(document.querySelectorAll('#timeline li'))
  .map(li => [li.getAttribute('data-kind'), li.textContent]))"""
DEADLINE = 60.0


def chromium() -> str:
    """The browser binary, installed on first use by hack/install-browser.sh (Debian's
    package); the test fails (never skips) when it cannot be installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        script = REPO_ROOT / "hack" / "install-browser.sh"
        proc = subprocess.run(
            ["bash", str(script)], capture_output=True, text=True, timeout=900, check=False
        )
        found = shutil.which("chromium") or shutil.which("chromium-browser")
        if proc.returncode != 0 or found is None:
            pytest.fail(f"chromium could not be installed:\n{proc.stderr[-2000:]}", pytrace=False)
    return found


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[str]:
    """A headless Chromium; yields its DevTools websocket URL."""
    proc = subprocess.Popen(
        [
            chromium(),
            "--headless=new",
            "--no-sandbox",  # root in a container: the sandbox needs user namespaces
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    stderr = proc.stderr
    threading.Thread(target=lambda: [lines.put(line) for line in stderr], daemon=True).start()
    try:
        while True:
            line = lines.get(timeout=DEADLINE)  # raises queue.Empty at the deadline
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            if match:
                break
        yield match.group(1)
    finally:
        proc.kill()
        proc.wait(timeout=30)


class Page:
    """One browser tab over the DevTools protocol (flattened session on the browser socket)."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.ids = 0
        self.session: str | None = None

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command and wait (bounded) for its reply, skipping protocol events."""
        self.ids += 1
        message: dict[str, Any] = {"id": self.ids, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        await self.socket.send_json(message)
        async with asyncio.timeout(DEADLINE):
            while True:
                reply = await self.socket.receive_json()
                if reply.get("id") == self.ids:
                    assert "error" not in reply, reply
                    result: dict[str, Any] = reply["result"]
                    return result

    async def open(self, url: str) -> None:
        """A new tab on `url`, attached."""
        target = await self.call("Target.createTarget", url=url)
        attached = await self.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        self.session = attached["sessionId"]

    async def navigate(self, url: str) -> None:
        """Load another page in the tab."""
        await self.call("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a script in the page."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        value = result["result"].get("value")
        return json.loads(value) if isinstance(value, str) else value

    async def until(self, expression: str, check: Any, what: str) -> Any:
        """Evaluate until `check(value)` holds; fail with `what` at the deadline."""
        value: Any = None
        try:
            async with asyncio.timeout(DEADLINE):
                while True:
                    value = await self.evaluate(expression)
                    if value is not None and check(value):
                        return value
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise AssertionError(f"{what}: last seen {value}") from None


def api_phases(view: TownView) -> dict[str, str]:
    """The convoy's bead phases as the API server has them."""
    return {b.name: b.status.phase.value for b in view.beads() if b.name in NODES}


def test_convoy_dag_renders_updates_live_and_links_a_timeline(
    api: Api,
    namespace: str,
    operator_proc: Process,
    view: TownView,
    player: AgentPlayer,
    control_plane: ControlPlane,
    browser: str,
    tmp_path: Path,
) -> None:
    assert api.create(namespace, town(git_url=player.git_url)).status == 201
    assert api.create(namespace, convoy("feat", DIAMOND)).status == 201
    eventually(
        lambda: api_phases(view).get("feat-base") == BeadPhase.IN_PROGRESS.value,
        DEADLINE,
        "feat-base to be dispatched",
    )
    player.leave = {"feat-left", "feat-right"}  # the first move is base's alone
    session = fetch.connect(str(control_plane.kubeconfig), namespace)
    server = web.serve(session.client, session.namespace, watch_seconds=10)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        asyncio.run(_drive(browser, server.url, view, player, tmp_path))
    finally:
        server.close()
        thread.join(timeout=10)


async def _drive(
    browser: str, base: str, view: TownView, player: AgentPlayer, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(browser, max_msg_size=0) as ws:
        page = Page(ws)
        await page.open(base + "convoy/feat")
        first = await page.until(
            DAG_STATE, lambda v: {n for n, _ in v["nodes"]} == NODES, "the DAG's four nodes"
        )
        assert {tuple(e) for e in first["edges"]} == EDGES
        phases = dict(first["nodes"])
        assert phases["feat-base"] == "in_progress"
        assert phases["feat-top"] in ("open", "pending")
        await page.evaluate("window.__sameDocument = true")

        # The bead moves: base is done, reviewed and merged; the page follows without a reload.
        def base_closed() -> bool:
            player.step()
            return api_phases(view).get("feat-base") == BeadPhase.CLOSED.value

        await asyncio.to_thread(eventually, base_closed, DEADLINE, "feat-base to be merged")
        moved = await page.until(
            DAG_STATE,
            lambda v: dict(v["nodes"]).get("feat-base") == "closed" and v["marker"],
            "the open page to show feat-base closed",
        )
        assert {tuple(e) for e in moved["edges"]} == EDGES
        shot = await page.call("Page.captureScreenshot", format="png")
        (tmp_path / "convoy.png").write_bytes(base64.b64decode(shot["data"]))
        assert (tmp_path / "convoy.png").stat().st_size > 1000

        await page.navigate(base + "bead/feat-base")
        timeline = await page.until(
            TIMELINE,
            lambda v: any(kind == "dispatch" for kind, _ in v),
            "feat-base's timeline with its dispatch",
        )
        kinds = [kind for kind, _ in timeline]
        assert "report" in kinds, timeline
        assert "merged" in kinds or "closed" in kinds, timeline
        dispatch = next(text for kind, text in timeline if kind == "dispatch")
        assert "generation" in dispatch
        assert "pod" in dispatch
