"""The `gastown` command line: run the operator, manage the local control plane, generate CRDs."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

DEFAULT_CLUSTER_DIR = Path(os.environ.get("GASTOWN_CLUSTER_DIR", ".local/cluster"))


def _cluster_up(args: argparse.Namespace) -> int:
    from gastown.devtools.controlplane import ControlPlane, ControlPlaneError

    directory: Path = args.dir
    if (directory / "state.json").exists():
        existing = ControlPlane.load(directory)
        if existing.pids:
            print(
                f"a control plane is already running in {directory}; `gastown cluster down` first",
                file=sys.stderr,
            )
            return 1
    from gastown.devtools import node as local_node

    # A real node by default where one can run; elsewhere the control plane alone, and why.
    why_not = "--no-node given" if args.no_node else local_node.unsupported_reason()
    names = () if why_not else (local_node.NODE_NAME,)
    plane = ControlPlane(directory=directory.resolve(), node_names=names)
    try:
        plane.start(with_controller_manager=not args.no_controller_manager)
    except ControlPlaneError as err:
        print(f"gastown cluster up: {err}", file=sys.stderr)
        return 1
    print(f"control plane ready at {plane.server} in {plane.startup_seconds:.1f}s", file=sys.stderr)
    if why_not:
        print(f"no local node ({why_not}): pods stay Pending", file=sys.stderr)
    else:
        node = local_node.Node(plane=plane, directory=plane.directory / "node")
        try:
            node.start()
        except local_node.NodeError as err:
            plane.stop()
            print(
                f"gastown cluster up: the local node failed to start: {err}\n"
                "(`gastown cluster up --no-node` starts the control plane alone)",
                file=sys.stderr,
            )
            return 1
        print(
            f"node {node.name} Ready in {node.startup_seconds:.1f}s "
            f"(containerd {node.containerd_address}, namespace {node.containerd_namespace})",
            file=sys.stderr,
        )
    print(f"export KUBECONFIG={plane.kubeconfig.resolve()}")
    return 0


def _cluster_down(args: argparse.Namespace) -> int:
    from gastown.devtools.controlplane import ControlPlane

    directory: Path = args.dir
    if not (directory / "state.json").exists():
        print(f"no control plane in {directory}", file=sys.stderr)
        return 0
    plane = ControlPlane.load(directory)
    if (directory / "node" / "state.json").exists():
        from gastown.devtools.node import Node, NodeError

        try:
            Node.load(plane, directory / "node").stop()
        except NodeError as err:
            plane.stop()
            print(f"gastown cluster down: {err}", file=sys.stderr)
            return 1
        print("node stopped", file=sys.stderr)
    plane.stop()
    print("control plane stopped", file=sys.stderr)
    return 0


def _cluster_import_image(args: argparse.Namespace) -> int:
    from gastown.devtools.controlplane import ControlPlane
    from gastown.devtools.node import Node, NodeError

    directory: Path = args.dir
    if not (directory / "node" / "state.json").exists():
        print(f"no local node in {directory}; `gastown cluster up` first", file=sys.stderr)
        return 1
    node = Node.load(ControlPlane.load(directory), directory / "node")
    try:
        for archive in args.archives:
            node.import_image(archive)
    except NodeError as err:
        print(f"gastown cluster import-image: {err}", file=sys.stderr)
        return 1
    return 0


def _crds(args: argparse.Namespace) -> int:
    from gastown import crdgen

    return crdgen.main([*(["--check"] if args.check else []), *map(str, args.dirs)])


def _run(args: argparse.Namespace) -> int:
    import kopf

    import gastown.handlers  # noqa: F401 - registers the handlers
    from gastown.agent.redaction import install_log_redaction
    from gastown.kube.labels import parse_selector
    from gastown.kube.redaction import log_redactor

    if args.metrics_port:
        os.environ["GASTOWN_METRICS_PORT"] = str(args.metrics_port)
    if args.leader_elect:
        os.environ["GASTOWN_LEADER_ELECT"] = "1"  # read by gastown.handlers.startup
        # The Lease lives in the operator's namespace (the chart sets it), else the first
        # watched namespace.
        os.environ.setdefault("GASTOWN_LEASE_NAMESPACE", (args.namespace or ["default"])[0])
        if args.lease_name:
            os.environ["GASTOWN_LEASE_NAME"] = args.lease_name
    if args.allow_insecure_provider_urls:
        os.environ["GASTOWN_ALLOW_INSECURE_PROVIDER_URLS"] = "1"  # read by gastown.kube.deputy
    try:
        parse_selector(args.town_selector)
    except ValueError as err:
        print(f"gastown run: invalid --town-selector: {err}", file=sys.stderr)
        return 2
    os.environ["GASTOWN_TOWN_SELECTOR"] = args.town_selector  # read by gastown.handlers.towns
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
        log_refkey="k8s",
    )
    if not args.verbose:
        # kopf logs every handled watch event at INFO; our own pass logs say what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # No log line (nor kopf's Events posted from log records) may carry a town's secret values.
    install_log_redaction(log_redactor, loggers=("", "kopf.objects"))
    namespaces = args.namespace or []
    kopf.run(
        standalone=not args.peering,
        peering_name=args.peering or None,
        namespaces=namespaces,
        clusterwide=not namespaces,
        liveness_endpoint=args.liveness or None,
    )
    return 0


def _agent_run(args: argparse.Namespace) -> int:
    from gastown.agent.runtime import main as agent_main

    return agent_main(args.extra)


def _docs(args: argparse.Namespace) -> int:
    from gastown import docgen

    return docgen.main([*(["--check"] if args.check else []), str(args.path)])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `gastown`."""
    parser = argparse.ArgumentParser(prog="gastown", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig/cluster")
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("GASTOWN_METRICS_PORT", "0") or 0),
        help="serve Prometheus /metrics on this port (0: off)",
    )
    run.add_argument(
        "--liveness",
        default=os.environ.get("GASTOWN_LIVENESS", ""),
        help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz",
    )
    run.add_argument(
        "--log-format",
        choices=["json", "plain"],
        default=os.environ.get("GASTOWN_LOG_FORMAT", "json"),
    )
    run.add_argument(
        "--peering",
        default=os.environ.get("GASTOWN_PEERING", ""),
        help="kopf peering object name (default: standalone, one replica)",
    )
    run.add_argument(
        "--leader-elect",
        action="store_true",
        default=os.environ.get("GASTOWN_LEADER_ELECT", "").lower() in ("1", "true", "yes"),
        help="run as one of several replicas: only the holder of a coordination.k8s.io Lease "
        "reconciles, the others watch and stand by (timings: GASTOWN_LEASE_DURATION_SECONDS, "
        "GASTOWN_LEASE_RENEW_DEADLINE_SECONDS, GASTOWN_LEASE_RETRY_PERIOD_SECONDS)",
    )
    run.add_argument(
        "--lease-name",
        default=os.environ.get("GASTOWN_LEASE_NAME", ""),
        help="name of the leader Lease (default gastown-operator; one per operator release)",
    )
    run.add_argument(
        "--town-selector",
        default=os.environ.get("GASTOWN_TOWN_SELECTOR", ""),
        help="reconcile only Towns whose labels match this selector (e.g. gastown.dev/shard=a), "
        "to split the towns of shared namespaces over several operator releases; default: all",
    )
    run.add_argument(
        "--allow-insecure-provider-urls",
        action="store_true",
        help="accept plain-http pullRequests.apiUrl (local testing only: the provider token "
        "would travel unencrypted); same as GASTOWN_ALLOW_INSECURE_PROVIDER_URLS=1",
    )
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=_run)

    agent = sub.add_parser("agent", help="the in-pod agent runtime")
    agent_sub = agent.add_subparsers(dest="action", required=True)
    agent_run = agent_sub.add_parser("run", help="run this pod's agent (reads GASTOWN_* env)")
    agent_run.add_argument("extra", nargs=argparse.REMAINDER)
    agent_run.set_defaults(func=_agent_run)

    cluster = sub.add_parser("cluster", help="local control plane (development and tests)")
    cluster_sub = cluster.add_subparsers(dest="action", required=True)
    up = cluster_sub.add_parser(
        "up",
        help="build if needed and start etcd, apiserver, KCM, and (Linux, root) a real node: "
        "containerd, kubelet, kube-scheduler",
    )
    up.add_argument("--dir", type=Path, default=DEFAULT_CLUSTER_DIR)
    up.add_argument("--no-controller-manager", action="store_true")
    up.add_argument("--no-node", action="store_true", help="start the control plane alone")
    up.set_defaults(func=_cluster_up)
    down = cluster_sub.add_parser("down", help="stop every process `up` started")
    down.add_argument("--dir", type=Path, default=DEFAULT_CLUSTER_DIR)
    down.set_defaults(func=_cluster_down)
    import_image = cluster_sub.add_parser(
        "import-image", help="import OCI image archives into the local node's containerd"
    )
    import_image.add_argument("archives", nargs="+", type=Path)
    import_image.add_argument("--dir", type=Path, default=DEFAULT_CLUSTER_DIR)
    import_image.set_defaults(func=_cluster_import_image)

    crds = sub.add_parser("crds", help="write the CRDs generated from the models")
    crds.add_argument("dirs", nargs="+", type=Path)
    crds.add_argument("--check", action="store_true", help="fail if the files differ")
    crds.set_defaults(func=_crds)

    docs = sub.add_parser(
        "docs", help="write the configuration reference generated from the models"
    )
    docs.add_argument("path", type=Path)
    docs.add_argument("--check", action="store_true", help="fail if the file differs")
    docs.set_defaults(func=_docs)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `gastown` console script."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
