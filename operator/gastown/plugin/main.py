"""The `kubectl-gastown` console script: argument parsing, output and errors (thin).

    kubectl gastown tree    [--town T] [-o text|json]
    kubectl gastown why     BEAD [-o text|json]
    kubectl gastown status  [--town T] [-o text|json]
    kubectl gastown sling bead --title TITLE [--description D] [--rig R] [--priority P]
                               [--depends-on B]... [--label L]... [--name N] [--dry-run]
    kubectl gastown sling convoy NAME (--task key:title[:dep1,dep2]... | --file tasks.yaml)
                               [--rig R] [--mode M] [--staged] [--bead B]... [--dry-run]
    kubectl gastown dashboard [--port P] [--address A] [--open] [--allow-remote]
    kubectl gastown version [-o text|json]

Global options (before or after the subcommand): --kubeconfig, -n/--namespace, --color.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import webbrowser
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

import gastown
from gastown.kube.errors import ApiError
from gastown.model import Town
from gastown.plugin import fetch, sling, web
from gastown.plugin.fetch import PluginError, Session
from gastown.plugin.status import build_status, render_status
from gastown.plugin.style import Style, colour_wanted
from gastown.plugin.tree import build_tree, render_tree
from gastown.plugin.why import explain, render_why

PROG = "kubectl gastown"


# --- arguments ---------------------------------------------------------------------------------


def _common(suppress: bool) -> argparse.ArgumentParser:
    """Options valid anywhere; on subcommands they default to SUPPRESS (no override)."""
    default: Any = argparse.SUPPRESS if suppress else None
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", default=default, help="kubeconfig file to use")
    common.add_argument("-n", "--namespace", default=default, help="namespace of the town")
    common.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default=argparse.SUPPRESS if suppress else "auto",
        help="colour output (auto: only on a terminal and without NO_COLOR)",
    )
    return common


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", choices=("text", "json"), default="text", help="output format"
    )


def _town(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--town", help="town name (default: the only Town in the namespace)")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Look at and feed a Gastown town: tree, why, status, dashboard, sling.",
        parents=[_common(suppress=False)],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common(suppress=True)

    tree = sub.add_parser("tree", parents=[common], help="town -> convoys -> beads -> agents/pods")
    _town(tree)
    _output(tree)

    why = sub.add_parser("why", parents=[common], help="why a bead is (not) progressing")
    why.add_argument("bead", help="bead name")
    _output(why)

    status = sub.add_parser("status", parents=[common], help="town dashboard")
    _town(status)
    _output(status)

    _dashboard_parser(sub, common)

    version = sub.add_parser("version", parents=[common], help="plugin version")
    _output(version)

    _sling_parser(sub, common)
    return parser


def _dashboard_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    board = sub.add_parser(
        "dashboard", parents=[common], help="live web dashboard on loopback (your credentials)"
    )
    board.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    board.add_argument("--address", default="127.0.0.1", help="address to listen on")
    board.add_argument("--open", action="store_true", help="open the dashboard in a browser")
    board.add_argument(
        "--allow-remote",
        action="store_true",
        help="answer non-loopback clients too (anyone who reaches the port sees what you see)",
    )


def _sling_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    sling_p = sub.add_parser("sling", parents=[common], help="create a bead or a convoy")
    kinds = sling_p.add_subparsers(dest="kind", required=True, metavar="KIND")

    bead = kinds.add_parser("bead", parents=[common], help="create one bead")
    bead.add_argument("--title", required=True)
    bead.add_argument("--description", default="")
    bead.add_argument("--priority", choices=("low", "medium", "high", "critical"), default="medium")
    bead.add_argument("--depends-on", action="append", default=[], metavar="BEAD")
    bead.add_argument("--label", action="append", default=[])
    bead.add_argument("--name", help="object name (default: generated from the title)")

    convoy = kinds.add_parser("convoy", parents=[common], help="create a convoy of tasks")
    convoy.add_argument("name", help="convoy name; tasks become beads <name>-<key>")
    convoy.add_argument(
        "--task", action="append", default=[], metavar="KEY:TITLE[:DEP,...]", help="inline task"
    )
    convoy.add_argument("--file", type=Path, help="YAML: a list of tasks, or {tasks: [...], ...}")
    convoy.add_argument("--mode", choices=("review-then-land", "review-and-merge"), default=None)
    convoy.add_argument("--staged", action="store_true", help="create staged (nothing runs yet)")
    convoy.add_argument("--bead", action="append", default=[], help="existing bead to include")

    for parser in (bead, convoy):
        _town(parser)
        parser.add_argument("--rig", help="rig (default: the town's only rig)")
        parser.add_argument("--dry-run", action="store_true", help="print the object, create none")
        _output(parser)


# --- commands ----------------------------------------------------------------------------------


class Context:
    """What a command needs: parsed args, a lazily built session, the style and streams."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.now = datetime.now(UTC)
        is_tty = bool(getattr(out, "isatty", lambda: False)())
        self.style = Style(colour_wanted(args.color, is_tty, os.environ))
        self._session: Session | None = None

    @property
    def session(self) -> Session:
        """Connect on first use (so `version` and `--dry-run` need no cluster)."""
        if self._session is None:
            self._session = fetch.connect(self.args.kubeconfig, self.args.namespace)
        return self._session

    @property
    def json(self) -> bool:
        """True for `-o json`."""
        return getattr(self.args, "output", "text") == "json"

    def emit(self, data: Any, text: Callable[[], str]) -> None:
        """Print `data` as JSON (sorted keys) or the text rendering."""
        if self.json:
            self.out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        else:
            self.out.write(text() + "\n")


def cmd_tree(ctx: Context) -> int:
    """`tree`: the town as a tree."""
    town = fetch.find_town(ctx.session, ctx.args.town)
    tree = build_tree(fetch.load_state(ctx.session, town))
    ctx.emit(tree, lambda: render_tree(tree, ctx.style))
    return 0


def cmd_status(ctx: Context) -> int:
    """`status`: the town dashboard."""
    town = fetch.find_town(ctx.session, ctx.args.town)
    board = build_status(fetch.load_state(ctx.session, town), ctx.now)
    ctx.emit(board, lambda: render_status(board, ctx.now, ctx.style))
    return 0


def cmd_why(ctx: Context) -> int:
    """`why BEAD`: why the bead is where it is."""
    try:
        bead = fetch.get_bead(ctx.session, ctx.args.bead)
    except PluginError:
        convoy = fetch.convoy_materialising(ctx.session, ctx.args.bead)
        if convoy is None:
            raise
        raise PluginError(
            f"bead {ctx.args.bead} does not exist yet: it is a task of convoy {convoy}, which "
            "the operator materialises on its next pass (is the operator running?)"
        ) from None
    town_name = (bead.get("spec") or {}).get("town")
    try:
        town = fetch.find_town(ctx.session, town_name)
    except PluginError:
        raise PluginError(
            f"bead {ctx.args.bead} belongs to town {town_name!r}, which does not exist in "
            f"namespace {ctx.session.namespace} (the operator marks it TownNotFound)"
        ) from None
    why = explain(fetch.load_state(ctx.session, town), ctx.args.bead, ctx.now)
    ctx.emit(why.to_json(), lambda: render_why(why, ctx.style))
    return 0


def cmd_version(ctx: Context) -> int:
    """`version`."""
    data = {"plugin": "kubectl-gastown", "version": gastown.__version__}
    ctx.emit(data, lambda: f"kubectl-gastown {gastown.__version__}")
    return 0


def cmd_sling(ctx: Context) -> int:
    """`sling bead|convoy`: validate locally, create, print the created names."""
    args = ctx.args
    if args.dry_run and args.town is None:
        raise PluginError("--dry-run needs --town (it does not contact the cluster)")
    town = _sling_town(ctx)
    obj = _sling_bead(args, town) if args.kind == "bead" else _sling_convoy(args, town)
    if args.dry_run:
        ctx.emit(obj, lambda: yaml.safe_dump(obj, sort_keys=False).rstrip())
        return 0
    created = ctx.session.client.create(obj["kind"], ctx.session.namespace, obj)
    report = _created_report(created)
    ctx.emit(report, lambda: _created_text(report))
    return 0


def _sling_town(ctx: Context) -> Town:
    if ctx.args.dry_run:
        return _placeholder_town(ctx.args.town, ctx.args.rig)
    return Town.from_api(fetch.find_town(ctx.session, ctx.args.town))


def _placeholder_town(name: str, rig: str | None) -> Town:
    """A town with just the given rig, for --dry-run (no cluster read)."""
    return Town.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "rigs": [{"name": rig or "default", "gitUrl": "/dry-run"}],
                "agent": {"image": "dry-run"},
            },
        }
    )


def _sling_bead(args: argparse.Namespace, town: Town) -> dict[str, Any]:
    return sling.bead_object(
        town=town.name,
        title=args.title,
        rig=sling.default_rig(town, args.rig),
        description=args.description,
        priority=args.priority,
        depends_on=args.depends_on,
        labels=args.label,
        name=args.name,
    )


def _sling_convoy(args: argparse.Namespace, town: Town) -> dict[str, Any]:
    tasks = [sling.parse_task(t) for t in args.task]
    options: dict[str, Any] = {}
    if args.file is not None:
        try:
            data = yaml.safe_load(args.file.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise PluginError(f"cannot read {args.file}: {err}") from None
        file_tasks, options = sling.tasks_from_file(data)
        tasks += file_tasks
    return sling.convoy_object(
        name=args.name,
        town=town.name,
        rig=sling.default_rig(town, args.rig or options.get("rig")),
        tasks=tasks,
        mode=args.mode or options.get("mergeMode", "review-then-land"),
        staged=args.staged or bool(options.get("staged", False)),
        beads=[*options.get("beads", []), *args.bead],
    )


def _created_report(created: dict[str, Any]) -> dict[str, Any]:
    kind = created.get("kind", "")
    name = created["metadata"]["name"]
    spec = created.get("spec") or {}
    beads = [f"{name}-{t['key']}" for t in spec.get("tasks", [])] if kind == "Convoy" else []
    return {
        "kind": kind,
        "name": name,
        "namespace": created["metadata"].get("namespace"),
        "beads": beads,
    }


def _created_text(report: dict[str, Any]) -> str:
    line = f"{report['kind'].lower()}/{report['name']} created"
    if report["beads"]:
        line += "\n  tasks become beads: " + ", ".join(report["beads"])
    return line


def cmd_dashboard(ctx: Context) -> int:
    """`dashboard`: serve the live dashboard until interrupted."""
    args = ctx.args
    server = web.serve(
        ctx.session.client,
        ctx.session.namespace,
        args.address,
        args.port,
        allow_remote=args.allow_remote,
    )
    ctx.out.write(f"gastown dashboard of namespace {ctx.session.namespace}: {server.url}\n")
    ctx.out.flush()
    if args.open:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


COMMANDS: dict[str, Callable[[Context], int]] = {
    "tree": cmd_tree,
    "why": cmd_why,
    "status": cmd_status,
    "sling": cmd_sling,
    "version": cmd_version,
    "dashboard": cmd_dashboard,
}


# --- entry point -------------------------------------------------------------------------------


def run(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    """Run one command; errors go to `err` with exit code 1."""
    args = build_parser().parse_args(list(argv))
    ctx = Context(args, out)
    try:
        return COMMANDS[args.command](ctx)
    except (PluginError, sling.SlingError) as error:
        err.write(f"error: {error}\n")
    except ApiError as error:
        err.write(f"error: the API server refused ({error.status}): {error.message}\n")
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        where = ctx._session.client.server if ctx._session else "the API server"
        err.write(f"error: cannot reach {where}: {reason}\n")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point (`kubectl-gastown`)."""
    return run(sys.argv[1:] if argv is None else argv, sys.stdout, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
