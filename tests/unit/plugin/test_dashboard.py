"""`kubectl gastown dashboard` without a cluster: DAG layout, timeline, pages, loopback guard."""

from __future__ import annotations

import http.client
import ipaddress
import re
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest

from gastown.plugin import dag, pages, web
from gastown.plugin.mirror import KINDS, Mirror
from gastown.plugin.state import TownState
from gastown.plugin.timeline import bead_timeline, dispatches, timeline_subjects
from gastown.reconcile.snapshot import PodView
from gastown.reconcile.writes import iso
from tests.unit.reconcile.builders import (
    T0,
    agent,
    bead,
    convoy,
    merge_request,
    minutes,
    task,
    town,
)

NOW = T0 + minutes(30)
POLECAT = "t-polecat-rig-1-1"


def diamond(**landing: Any) -> TownState:
    """A diamond convoy: base, then left and right, then top (not materialised yet)."""
    status: dict[str, Any] = {"phase": "InProgress", "progress": "1/4"}
    if landing:
        status["landing"] = landing
    return TownState.of(
        town(),
        beads=[
            bead("d-base", convoy="d", phase="closed"),
            bead("d-left", convoy="d", depends_on=["d-base"], phase="in_progress", assignee="p1"),
            bead("d-right", convoy="d", depends_on=["d-base"], phase="open"),
        ],
        convoys=[
            convoy(
                "d",
                [
                    task("base"),
                    task("left", "base"),
                    task("right", "base"),
                    task("top", "left", "right"),
                ],
                **status,
            )
        ],
    )


# --- the DAG ------------------------------------------------------------------------------------


def test_graph_has_every_task_its_phase_and_the_dependency_edges() -> None:
    state = diamond()
    graph = dag.convoy_graph(state, state.convoys["d"])
    phases = {n.name: n.phase for n in graph.nodes}
    assert phases == {
        "d-base": "closed",
        "d-left": "in_progress",
        "d-right": "open",
        "d-top": dag.PENDING,  # a task not materialised yet
    }
    assert sorted(graph.edges) == [
        ("d-base", "d-left"),
        ("d-base", "d-right"),
        ("d-left", "d-top"),
        ("d-right", "d-top"),
    ]


def test_layers_follow_the_longest_dependency_path() -> None:
    state = diamond()
    placed = dag.layout(dag.convoy_graph(state, state.convoys["d"]))
    assert placed.layers == {"d-base": 0, "d-left": 1, "d-right": 1, "d-top": 2}
    x = {name: pos[0] for name, pos in placed.positions.items()}
    assert x["d-base"] < x["d-left"] == x["d-right"] < x["d-top"]
    assert len(set(placed.positions.values())) == 4  # no two nodes on one spot
    for left, top in placed.positions.values():
        assert left + dag.NODE_WIDTH <= placed.width
        assert top + dag.NODE_HEIGHT <= placed.height


def test_the_landing_mr_follows_the_last_beads() -> None:
    state = diamond(mergeRequest="d-landing-1", attempts=1)
    graph = dag.convoy_graph(state, state.convoys["d"])
    landing = [n for n in graph.nodes if n.kind == dag.LANDING]
    assert [n.name for n in landing] == ["d-landing-1"]
    assert ("d-top", "d-landing-1") in graph.edges
    assert ("d-base", "d-landing-1") not in graph.edges  # only sinks lead to the landing
    assert dag.layout(graph).layers["d-landing-1"] == 3


def test_a_cycle_in_the_input_still_lays_out() -> None:
    graph = dag.Graph(
        "c",
        [dag.Node("a", "a", "open"), dag.Node("b", "b", "open")],
        [("a", "b"), ("b", "a")],
    )
    placed = dag.layout(graph)
    assert set(placed.positions) == {"a", "b"}


def test_svg_links_each_node_and_escapes_titles() -> None:
    state = TownState.of(
        town(), beads=[bead("x-a", convoy="x", title="<script>alert(1)</script>")], convoys=[]
    )
    graph = dag.Graph("x", [dag.Node("x-a", "<script>alert(1)</script>", "open")], [])
    svg = dag.render_svg(dag.layout(graph))
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert 'href="/bead/x-a"' in svg
    assert 'data-node="x-a"' in svg
    assert 'data-phase="open"' in svg
    assert state.beads["x-a"].spec.title.startswith("<script>")


def test_svg_draws_one_path_per_edge() -> None:
    state = diamond()
    svg = dag.render_svg(dag.layout(dag.convoy_graph(state, state.convoys["d"])))
    assert svg.count('class="edge"') == 4
    assert 'data-from="d-left" data-to="d-top"' in svg


# --- the timeline -------------------------------------------------------------------------------


def event(
    name: str, reason: str, message: str, minute: int, type_: str = "Normal"
) -> dict[str, Any]:
    """A core/v1 Event about `name`."""
    return {
        "involvedObject": {"name": name, "kind": "Bead"},
        "reason": reason,
        "message": message,
        "type": type_,
        "lastTimestamp": iso(T0 + minutes(minute)),
    }


def reviewed_state() -> TownState:
    """A bead dispatched twice (the first pod failed), done, reviewed, merged."""
    finished = PodView(
        name="t-polecat-rig-1-1-g1",
        agent="t-polecat-rig-1-1",
        generation=1,
        bead="a",
        phase="Failed",
        reason="Error",
        exit_code=2,
        created_at=T0 + minutes(1),
        started_at=T0 + minutes(1),
        finished_at=T0 + minutes(3),
        deleting=False,
    )
    return TownState.of(
        town(),
        beads=[
            bead("a", phase="closed", closedAt=T0 + minutes(20), attempts=2),
            merge_request(
                "a-mr-1",
                "a",
                created=T0 + minutes(9),
                phase="closed",
                closedAt=T0 + minutes(15),
                review={
                    "refinery": "t-refinery-rig-1",
                    "startedAt": iso(T0 + minutes(10)),
                    "mergeCommit": "c0ffee",
                },
            ),
        ],
        agents=[
            agent(
                "t-polecat-rig-1-1",
                generation=2,
                lastHook="a",
                reports=[
                    {
                        "seq": 1,
                        "generation": 2,
                        "type": "done",
                        "at": iso(T0 + minutes(8)),
                        "bead": "a",
                        "summary": "did a",
                    },
                    {
                        "seq": 2,
                        "generation": 2,
                        "type": "done",
                        "at": iso(T0 + minutes(8)),
                        "bead": "other",
                        "summary": "not about a",
                    },
                ],
            )
        ],
        pods=[finished],
    )


def test_timeline_orders_dispatches_pods_reports_review_and_merge() -> None:
    events = [
        event(
            "a",
            "Dispatched",
            "polecat t-polecat-rig-1-1 dispatched (attempt 1, pod t-polecat-rig-1-1-g1)",
            1,
        ),
        event(
            "a",
            "Dispatched",
            "polecat t-polecat-rig-1-1 dispatched (attempt 2, pod t-polecat-rig-1-1-g2)",
            4,
        ),
        event("a-mr-1", "Merged", "merged as c0ffee", 15),
        event("unrelated", "Dispatched", "polecat x dispatched (attempt 1, pod x-g1)", 2),
    ]
    entries = bead_timeline(reviewed_state(), "a", events)
    kinds = [e.kind for e in entries]
    assert kinds == [
        "created",
        "dispatch",
        "pod",
        "dispatch",
        "report",
        "merge_request",
        "review",
        "merged",
        "event",
        "closed",
    ]
    first, second = dispatches(entries)
    assert (first.generation, first.pod, first.agent) == (
        1,
        "t-polecat-rig-1-1-g1",
        "t-polecat-rig-1-1",
    )
    assert second.generation == 2
    pod = next(e for e in entries if e.kind == "pod")
    assert pod.warning
    assert "exit 2" in pod.text
    report = next(e for e in entries if e.kind == "report")
    assert "did a" in report.text
    assert "not about a" not in " ".join(e.text for e in entries)
    merged = next(e for e in entries if e.kind == "merged")
    assert "c0ffee" in merged.text
    assert merged.subject == "a-mr-1"


def rework(name: str, merge_request: str, source: str, **status: Any) -> Any:
    """A rework bead the refinery's request-changes on `merge_request` created."""
    spec = {
        "rework": {
            "mergeRequest": merge_request,
            "sourceBead": source,
            "branch": f"gt/{source}",
            "feedback": "fix it",
        }
    }
    return bead(name, type="rework", spec=spec, created=T0 + minutes(12), **status)


def reworked_state() -> TownState:
    """Bead a under review, its MR sent back for rework (done); bead b's MR has rework too."""
    return TownState.of(
        town(),
        beads=[
            bead("a", phase="in_review"),
            merge_request(
                "a-mr-1",
                "a",
                created=T0 + minutes(9),
                review={"refinery": "t-refinery-rig-1", "startedAt": iso(T0 + minutes(10))},
            ),
            rework("a-rework-1", "a-mr-1", "a", phase="closed", closedAt=T0 + minutes(16)),
            bead("b", phase="in_review"),
            merge_request("b-mr-1", "b"),
            rework("b-rework-1", "b-mr-1", "b", phase="open"),
        ],
        agents=[
            agent(
                POLECAT,
                generation=3,
                hook="a-rework-1",
                reports=[
                    {
                        "seq": 1,
                        "generation": 3,
                        "type": "done",
                        "at": iso(T0 + minutes(15)),
                        "bead": "a-rework-1",
                        "summary": "fixed the review's point",
                    }
                ],
            )
        ],
    )


REWORK_EVENTS = [
    event("a-rework-1", "Dispatched", f"polecat {POLECAT} dispatched (attempt 1, pod x-g3)", 13),
    event("b-rework-1", "Dispatched", "polecat y dispatched (attempt 1, pod y-g1)", 13),
]


def test_timeline_lists_the_rework_of_the_beads_merge_requests() -> None:
    """Rework beads of the bead's merge requests join its timeline: their creation, their
    closing, the reports and Events about them; rework of another bead's MR does not."""
    state = reworked_state()
    assert timeline_subjects(state, "a") == ["a", "a-mr-1", "a-rework-1"]
    entries = bead_timeline(state, "a", REWORK_EVENTS)
    about = [(e.kind, e.subject) for e in entries]
    assert about == [
        ("created", "a"),
        ("merge_request", "a-mr-1"),
        ("review", "a-mr-1"),
        ("rework", "a-rework-1"),
        ("dispatch", "a-rework-1"),
        ("report", "a-rework-1"),
        ("closed", "a-rework-1"),
    ]
    created = next(e for e in entries if e.kind == "rework")
    assert created.text == "rework a-rework-1 created"
    assert created.at == T0 + minutes(12)
    (dispatch,) = dispatches(entries)
    assert (dispatch.agent, dispatch.generation, dispatch.pod) == (POLECAT, 3, "x-g3")
    assert "b-rework-1" not in " ".join(e.text + e.subject for e in entries)
    html = pages.bead_body(state.beads["a"], entries, NOW)
    assert 'data-kind="rework"' in html
    assert 'href="/bead/a-rework-1"' in html


def test_timeline_of_a_missing_bead_is_empty() -> None:
    assert bead_timeline(reviewed_state(), "nope") == []


def test_bead_page_lists_the_timeline_escaped() -> None:
    state = reviewed_state()
    entries = bead_timeline(state, "a", [event("a", "Odd", "<b>bold</b>", 2)])
    html = pages.bead_body(state.beads["a"], entries, NOW)
    assert html.count("<li ") == len(entries)
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert 'data-kind="dispatch"' not in html  # no dispatch Event given here
    assert "generation 1" in html  # from the finished pod


# --- pages --------------------------------------------------------------------------------------


def test_agents_page_shows_watermark_and_gupp_tier() -> None:
    stalled = agent(
        "t-polecat-rig-1-1",
        hook="d-left",
        generation=3,
        phase="stalled",
        activity={"generation": 3, "lastHeartbeatAt": iso(T0), "activeTools": ["bash"]},
        gupp={"generation": 3, "warnedAt": iso(T0), "forceStoppedAt": iso(T0 + minutes(1))},
    )
    state = TownState.of(town(), agents=[stalled])
    html = pages.agents_body(state, NOW)
    assert "force-stop" in html
    assert "bash" in html
    assert 'href="/bead/d-left"' in html
    assert pages.gupp_tier(stalled) == "force-stop"


def test_queue_page_lists_live_merge_requests_per_rig() -> None:
    state = TownState.of(
        town(),
        beads=[
            bead("a", phase="in_review"),
            merge_request("a-mr-1", "a", phase="in_progress", assignee="r"),
            merge_request("old-mr", "a", phase="closed"),
        ],
        agents=[agent("r", role="refinery", hook="a-mr-1")],
    )
    html = pages.queue_body(state)
    assert "a-mr-1" in html
    assert "old-mr" not in html
    assert "(1)" in html


def test_towns_page_shows_health_counts_and_repairs() -> None:
    state = TownState.of(
        town(
            status={
                "lastRepairs": [
                    {"code": "DuplicateHook", "subject": "a", "message": "m", "at": iso(T0)}
                ]
            }
        ),
        beads=[bead("a", phase="open")],
    )
    html = pages.towns_body([state], NOW)
    assert 'href="/town/t"' in html
    assert "1 open" in html
    row = towns_row(html)
    assert row["repairs"] == "1"
    assert row["violations"] == "0"
    assert row["spend"] == "$0.00 today · $0.00"


def towns_row(html: str) -> dict[str, str]:
    """The towns table's only row, by column header."""
    headers = re.findall(r"<th>(.*?)</th>", html)
    cells = re.findall(r"<td>(.*?)</td>", html)
    assert len(cells) == len(headers), (headers, cells)
    return dict(zip(headers, cells, strict=True))


def test_towns_page_shows_spend_today_and_in_total_and_counts_repairs() -> None:
    """Spend of today's window (yesterday's rolls over to nothing) and in total; the repairs
    column counts the Town's recent repairs."""
    repairs = [
        {"code": "DuplicateHook", "subject": s, "message": "m", "at": iso(T0)} for s in "abc"
    ]
    spend = {
        "total": {"costUsd": 12.5, "tokens": 900},
        "today": {"window": NOW.strftime("%Y-%m-%d"), "costUsd": 3.25, "tokens": 100},
        "month": {"window": NOW.strftime("%Y-%m"), "costUsd": 12.5, "tokens": 900},
    }
    state = TownState.of(town(status={"lastRepairs": repairs, "spend": spend}))
    row = towns_row(pages.towns_body([state], NOW))
    assert row["spend"] == "$3.25 today · $12.50"
    assert row["repairs"] == "3"
    tomorrow = towns_row(pages.towns_body([state], NOW + timedelta(days=1)))
    assert tomorrow["spend"] == "$0.00 today · $12.50"


# --- the server ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:8080", True),
        ("localhost:8080", True),
        ("[::1]:8080", True),
        ("localhost", True),
        ("evil.example:8080", False),
        ("127.0.0.1.evil.example", False),
        ("", False),
        (None, False),
    ],
)
def test_host_header_must_name_the_loopback(host: str | None, ok: bool) -> None:
    assert web.host_is_loopback(host) is ok


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("127.0.0.1", True),
        ("127.5.5.5", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.7", False),
        ("192.168.1.2", False),
        ("::ffff:10.0.0.7", False),
        ("junk", False),
    ],
)
def test_client_must_be_loopback(address: str, ok: bool) -> None:
    assert web.client_is_loopback(address) is ok


class FakeClient:
    """No API server: the mirror is filled by hand."""

    server = "https://unused.invalid"
    token = "never-sent"

    def request(self, method: str, path: str) -> dict[str, Any]:
        return {"items": []}


@pytest.fixture
def served() -> Iterator[web.DashboardServer]:
    """A server over a mirror holding the diamond convoy's objects (no watches running)."""
    with serving("127.0.0.1", allow_remote=False) as server:
        yield server


@contextmanager
def serving(
    address: str,
    *,
    allow_remote: bool,
    state: TownState | None = None,
    client: FakeClient | None = None,
) -> Iterator[web.DashboardServer]:
    """Serve a state's objects (default: the diamond convoy's) on `address`; Events come from
    `client`."""
    client = client or FakeClient()
    mirror = Mirror(client, "ns")  # type: ignore[arg-type]
    state = state or diamond()
    for kind, objects in (
        ("Town", [state.town]),
        ("Bead", list(state.beads.values())),
        ("Convoy", list(state.convoys.values())),
        ("Agent", list(state.agents.values())),
    ):
        for obj in objects:
            mirror._apply(kind, "ADDED", obj.to_api())
    mirror._listed.update(KINDS)
    views = web.Views(mirror, client, "ns")  # type: ignore[arg-type]
    server = web.DashboardServer((address, 0), views, allow_remote=allow_remote)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.close()
        thread.join(timeout=10)


def get(server: web.DashboardServer, path: str, host: str | None = None) -> tuple[int, str]:
    """GET a path of the server (optionally with another Host header)."""
    request = urllib.request.Request(server.url.rstrip("/") + path)
    if host is not None:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_server_serves_the_convoy_dag_and_fragments(served: web.DashboardServer) -> None:
    status, html = get(served, "/convoy/d")
    assert status == 200
    assert html.startswith("<!doctype html>")
    assert 'data-node="d-top"' in html
    status, fragment = get(served, "/convoy/d?fragment=1")
    assert status == 200
    assert not fragment.startswith("<!doctype")
    assert 'data-phase="in_progress"' in fragment
    assert get(served, "/convoy/nope")[0] == 404
    assert get(served, "/town/t")[0] == 200
    assert get(served, "/bead/d-left")[0] == 200


def test_server_refuses_a_foreign_host_header(served: web.DashboardServer) -> None:
    status, _ = get(served, "/", host="evil.example")
    assert status == 403


def test_server_refuses_non_loopback_clients(
    served: web.DashboardServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web, "client_is_loopback", lambda address: False)
    assert get(served, "/")[0] == 403
    served.allow_remote = True
    assert get(served, "/")[0] == 200


def non_loopback_ipv4() -> str:
    """This machine's IPv4 address on its default route (a UDP socket's connect picks the
    source address and sends nothing), else the first global one `ip -4 addr` lists. Fails
    (never skips) on a machine without one: the refusal cannot be shown there."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # TEST-NET-2: routed like any remote address
            found = probe.getsockname()[0]
        except OSError:
            found = ""
    if found and not ipaddress.ip_address(found).is_loopback:
        return str(found)
    ip = shutil.which("ip")
    listed = ""
    if ip is not None:
        listed = subprocess.run(
            [ip, "-4", "-o", "addr", "show", "scope", "global"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
        for match in re.finditer(r"\binet (\d+\.\d+\.\d+\.\d+)/", listed):
            if not ipaddress.ip_address(match.group(1)).is_loopback:
                return match.group(1)
    pytest.fail(
        f"this machine has no non-loopback IPv4 address to connect from (ip: {listed!r})",
        pytrace=False,
    )


def get_from(server: web.DashboardServer, source: str, target: str) -> int:
    """GET / connecting from `source` to `target`, with a Host header naming the loopback, so
    that only the peer address can make the server refuse."""
    port = server.server_address[1]
    conn = http.client.HTTPConnection(target, port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", "/", headers={"Host": f"127.0.0.1:{port}"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.parametrize("allow_remote", [False, True])
def test_a_connection_from_a_non_loopback_address(allow_remote: bool) -> None:
    """Bound to every address, the server refuses a client connecting from the machine's own
    non-loopback address (403) unless remote clients are allowed; loopback clients pass."""
    address = non_loopback_ipv4()
    with serving("0.0.0.0", allow_remote=allow_remote) as server:
        assert get_from(server, "127.0.0.1", "127.0.0.1") == 200
        assert get_from(server, address, address) == (200 if allow_remote else 403)


class EventsClient(FakeClient):
    """Answers each Event LIST with the given Events about the field selector's object."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.asked: list[str] = []

    def request(self, method: str, path: str) -> dict[str, Any]:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        name = query["fieldSelector"][0].removeprefix("involvedObject.name=")
        self.asked.append(name)
        return {"items": [e for e in self.events if e["involvedObject"]["name"] == name]}


def test_bead_page_lists_the_events_of_its_rework_beads() -> None:
    """The page asks for the Events of the bead, its MR and the MR's rework bead, and shows the
    rework's dispatch."""
    client = EventsClient(REWORK_EVENTS)
    with serving("127.0.0.1", allow_remote=False, state=reworked_state(), client=client) as server:
        status, html = get(server, "/bead/a")
    assert status == 200
    assert client.asked == ["a", "a-mr-1", "a-rework-1"]
    assert 'data-kind="dispatch"' in html
    assert "pod x-g3" in html


def test_event_stream_reports_a_change(served: web.DashboardServer) -> None:
    mirror = served.views.mirror
    with urllib.request.urlopen(served.url + "events", timeout=10) as stream:
        first = stream.readline().decode()
        assert first.startswith("data: ")
        stream.readline()
        mirror._apply("Bead", "DELETED", {"metadata": {"name": "d-right"}})
        second = stream.readline().decode()
        assert second.startswith("data: ")
        assert second != first


def test_the_command_line_knows_the_dashboard() -> None:
    from gastown.plugin.main import COMMANDS, build_parser

    args = build_parser().parse_args(["dashboard", "--port", "8123", "-n", "team-a"])
    assert (args.command, args.port, args.address, args.allow_remote) == (
        "dashboard",
        8123,
        "127.0.0.1",
        False,
    )
    assert args.namespace == "team-a"
    assert "dashboard" in COMMANDS


def test_only_http_pull_request_urls_become_links() -> None:
    """A PR URL may come from an agent: a `javascript:` one is shown, never linked."""
    state = TownState.of(
        town(),
        beads=[
            bead("a", phase="in_review"),
            merge_request("a-mr-1", "a", review={"prUrl": "javascript:alert(1)"}),
            merge_request("a-mr-2", "a", review={"prUrl": "https://git.example/pr/2"}),
        ],
    )
    html = pages.queue_body(state)
    assert 'href="javascript:' not in html
    assert "javascript:alert(1)" in html
    assert 'href="https://git.example/pr/2"' in html
