"""`sling` builders, colour choice, kubeconfig resolution and the CLI without a cluster."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from gastown.plugin import sling
from gastown.plugin.fetch import context_namespace, kubeconfig_path
from gastown.plugin.main import Context, build_parser, run
from gastown.plugin.style import ago, colour_wanted, duration
from tests.unit.reconcile.builders import town


@pytest.mark.parametrize(
    ("text", "task"),
    [
        ("a:Do A", {"key": "a", "title": "Do A"}),
        ("b:Do B:a", {"key": "b", "title": "Do B", "dependsOn": ["a"]}),
        ("c:Do C:a,b", {"key": "c", "title": "Do C", "dependsOn": ["a", "b"]}),
        ("d:api: add login", {"key": "d", "title": "api: add login"}),
        ("e:fix: the thing:a", {"key": "e", "title": "fix: the thing", "dependsOn": ["a"]}),
    ],
)
def test_parse_task(text: str, task: dict[str, Any]) -> None:
    assert sling.parse_task(text) == task


@pytest.mark.parametrize("text", ["nokey", ":title", "a:", "a:  "])
def test_parse_task_rejects(text: str) -> None:
    with pytest.raises(sling.SlingError, match="key:title"):
        sling.parse_task(text)


def test_bead_object_is_validated_and_named_from_the_title() -> None:
    obj = sling.bead_object(town="t", title="Fix the Login!", rig="app", depends_on=["x"])
    assert obj["metadata"] == {"generateName": "fix-the-login-"}
    assert obj["spec"]["dependsOn"] == ["x"]
    with pytest.raises(sling.SlingError, match=r"spec\.title: String should have at least 1"):
        sling.bead_object(town="t", title="", rig="app")
    with pytest.raises(sling.SlingError, match=r"spec\.priority"):
        sling.bead_object(town="t", title="x", rig="app", priority="urgent")
    with pytest.raises(sling.SlingError, match="not a valid object name"):
        sling.bead_object(town="t", title="x", rig="app", name="Bad_Name")


def test_convoy_object_reports_field_paths() -> None:
    obj = sling.convoy_object(name="c", town="t", rig="app", tasks=[{"key": "a", "title": "A"}])
    assert obj["spec"]["mergeMode"] == "review-then-land"
    with pytest.raises(sling.SlingError, match=r"spec\.tasks\[0\]\.key"):
        sling.convoy_object(name="c", town="t", rig="app", tasks=[{"key": "A B", "title": "x"}])
    with pytest.raises(sling.SlingError, match="used twice"):
        sling.convoy_object(
            name="c",
            town="t",
            rig="app",
            tasks=[{"key": "a", "title": "x"}, {"key": "a", "title": "y"}],
        )
    with pytest.raises(sling.SlingError, match="needs tasks"):
        sling.convoy_object(name="c", town="t", rig="app", tasks=[])


@pytest.mark.parametrize(
    ("data", "tasks", "options"),
    [
        ([{"key": "a", "title": "A"}], 1, {}),
        (
            {"tasks": [{"key": "a", "title": "A"}], "rig": "app", "staged": True},
            1,
            {"rig": "app", "staged": True},
        ),
    ],
)
def test_tasks_from_file(data: Any, tasks: int, options: dict[str, Any]) -> None:
    got_tasks, got_options = sling.tasks_from_file(data)
    assert len(got_tasks) == tasks
    assert got_options == options


@pytest.mark.parametrize("data", ["text", {"tasks": "x"}, [1, 2]])
def test_tasks_from_file_rejects(data: Any) -> None:
    with pytest.raises(sling.SlingError):
        sling.tasks_from_file(data)


def test_default_rig() -> None:
    one, two = town(rigs=["app"]), town(rigs=["app", "web"])
    assert sling.default_rig(one, None) == "app"
    assert sling.default_rig(two, "web") == "web"
    with pytest.raises(sling.SlingError, match="pass --rig"):
        sling.default_rig(two, None)
    with pytest.raises(sling.SlingError, match="no rig 'api'"):
        sling.default_rig(two, "api")


@pytest.mark.parametrize(
    ("choice", "tty", "env", "wanted"),
    [
        ("auto", True, {}, True),
        ("auto", False, {}, False),
        ("auto", True, {"NO_COLOR": "1"}, False),
        ("auto", True, {"TERM": "dumb"}, False),
        ("always", False, {"NO_COLOR": "1"}, True),
        ("never", True, {}, False),
    ],
)
def test_colour_wanted(choice: str, tty: bool, env: dict[str, str], wanted: bool) -> None:
    assert colour_wanted(choice, tty, env) is wanted


@pytest.mark.parametrize(
    ("seconds", "text"), [(5, "5s"), (65, "1m05s"), (3725, "1h02m"), (90000, "1d1h")]
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_ago() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert ago(None, now) == "never"
    assert ago(datetime(2026, 1, 1, 0, 1, tzinfo=UTC), now) == "in 1m00s"
    assert ago(datetime(2025, 12, 31, 23, 59, tzinfo=UTC), now) == "1m00s ago"


def test_kubeconfig_path(tmp_path: Path) -> None:
    assert kubeconfig_path("/x/cfg", {}, tmp_path) == Path("/x/cfg")
    assert kubeconfig_path(None, {"KUBECONFIG": "/a:/b"}, tmp_path) == Path("/a")
    assert kubeconfig_path(None, {}, tmp_path) is None
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("{}")
    assert kubeconfig_path(None, {}, tmp_path) == tmp_path / ".kube" / "config"


@pytest.mark.parametrize(
    ("config", "namespace"),
    [
        (
            {"current-context": "c", "contexts": [{"name": "c", "context": {"namespace": "ns"}}]},
            "ns",
        ),
        ({"current-context": "c", "contexts": [{"name": "c", "context": {}}]}, None),
        (
            {"current-context": "x", "contexts": [{"name": "c", "context": {"namespace": "n"}}]},
            None,
        ),
        ({}, None),
    ],
)
def test_context_namespace(config: dict[str, Any], namespace: str | None) -> None:
    assert context_namespace(config) == namespace


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_version() -> None:
    assert cli("version") == (0, "kubectl-gastown 0.1.0\n", "")
    _code, out, _ = cli("version", "-o", "json")
    assert json.loads(out) == {"plugin": "kubectl-gastown", "version": "0.1.0"}


def test_dry_run_needs_no_cluster() -> None:
    code, out, err = cli(
        "sling",
        "convoy",
        "c",
        "--town",
        "t",
        "--rig",
        "app",
        "--dry-run",
        "--task",
        "a:A",
        "--task",
        "b:B:a",
        "--staged",
    )
    assert code == 0, err
    obj = yaml.safe_load(out)
    assert obj["spec"]["tasks"][1] == {"key": "b", "title": "B", "dependsOn": ["a"]}
    assert obj["spec"]["staged"] is True


def test_local_validation_error_exits_1(tmp_path: Path) -> None:
    code, out, err = cli("sling", "bead", "--town", "t", "--title", "", "--dry-run")
    assert (code, out) == (1, "")
    assert err.startswith("error: invalid input:\n  spec.title")


def test_missing_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = cli("tree", "--kubeconfig", str(tmp_path / "nope"))
    assert code == 1
    assert err == f"error: kubeconfig {tmp_path / 'nope'} does not exist\n"


def test_unreachable_server(tmp_path: Path) -> None:
    config = {
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True},
            }
        ],
        "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "n"}}],
        "current-context": "c",
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    code, _, err = cli("status", "--kubeconfig", str(path))
    assert code == 1
    assert err.startswith("error: cannot reach https://127.0.0.1:1:")


def test_options_before_or_after_the_subcommand(tmp_path: Path) -> None:
    for argv in (
        ("-n", "x", "tree", "--kubeconfig", "/nope"),
        ("--kubeconfig", "/nope", "tree", "-n", "x"),
    ):
        code, _, err = cli(*argv)
        assert (code, err) == (1, "error: kubeconfig /nope does not exist\n")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "argv", "env", "coloured"),
    [
        (_Tty, [], {}, True),
        (_Tty, [], {"NO_COLOR": ""}, False),
        (io.StringIO, [], {}, False),
        (io.StringIO, ["--color", "always"], {}, True),
        (_Tty, ["--color", "never"], {}, False),
    ],
)
def test_colour_follows_the_terminal(
    monkeypatch: pytest.MonkeyPatch,
    stream: type[io.StringIO],
    argv: list[str],
    env: dict[str, str],
    coloured: bool,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = build_parser().parse_args(["version", *argv])
    assert Context(args, stream()).style.enabled is coloured
