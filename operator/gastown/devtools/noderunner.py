"""The local node runner: a stand-in kubelet for machines without one (dev and test tooling).

It registers a Node, binds unscheduled agent pods (labelled `gastown.dev/town`; there is no
scheduler here either) to it, and runs
each bound pod's first container as a local process: the container's command and args, its
environment (plain values, Secret keys, downward-API fields), emptyDir and Secret volumes as
directories of a per-pod working directory, and a kubeconfig holding a token of the pod's own
ServiceAccount (TokenRequest, bound to the pod) — so code in the "pod" talks to the API server
with exactly the permissions a real pod would have. Paths under a volume's mountPath in the
environment are rewritten to the local directory.

It reports pod status like a kubelet (Running, then Succeeded/Failed with the exit code) and on
deletion sends SIGTERM to the process group, then SIGKILL after the grace period, and finally
removes the pod. On a real cluster the same pods run as containers; nothing of this ships.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from gastown.kube.client import Kube, connect

log = logging.getLogger("gastown.noderunner")
LEASE_SECONDS = 40
RENEW_SECONDS = 10


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class RunningPod:
    """One pod being run as a local process."""

    namespace: str
    name: str
    uid: str
    process: asyncio.subprocess.Process
    grace: int
    directory: Path
    stopping: bool = False
    waiter: asyncio.Task[None] | None = None


@dataclass
class NodeRunner:
    """Runs the pods bound to one node as local processes."""

    kube: Kube
    node: str
    root: Path
    server: str
    ca_data: str
    bind_unscheduled: bool = True
    extra_path: list[str] = field(default_factory=list)
    pods: dict[str, RunningPod] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    # -- node --------------------------------------------------------------------------------

    async def register(self) -> None:
        """Create (or refresh) the Node and mark it Ready."""
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": self.labels(),
            },
            # The runner binds its pods itself; the taint keeps a kube-scheduler (the real
            # local node's) from placing any other pod on this process launcher.
            "spec": {"taints": [{"key": "gastown.dev/node-runner", "effect": "NoSchedule"}]},
        }
        with contextlib.suppress(ApiException):
            await self.kube.core.create_node(body)  # type: ignore[arg-type]
        await self._node_ready()

    async def _node_ready(self) -> None:
        now = _now()
        status = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "LocalNodeRunner",
                        "message": "local node runner is running pods",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"},
                "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
                "nodeInfo": {
                    "kubeletVersion": "local",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "containerRuntimeVersion": "local://process",
                    "kernelVersion": "",
                    "osImage": "",
                    "kubeProxyVersion": "",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            }
        }
        await self.kube.core.patch_node_status(self.node, status)

    async def heartbeat(self) -> None:
        """Renew the node Lease and Ready condition so the node lifecycle controller is content."""
        coordination = client.CoordinationV1Api(self.kube.api)
        while True:
            lease = {
                "metadata": {"name": self.node, "namespace": "kube-node-lease"},
                "spec": {
                    "holderIdentity": self.node,
                    "leaseDurationSeconds": LEASE_SECONDS,
                    "renewTime": datetime.now(UTC).isoformat(),
                },
            }
            try:
                await coordination.replace_namespaced_lease(
                    self.node,
                    "kube-node-lease",
                    lease,  # type: ignore[arg-type]
                )
            except ApiException as exc:
                if exc.status == 404:
                    await coordination.create_namespaced_lease(
                        "kube-node-lease",
                        lease,  # type: ignore[arg-type]
                    )
            with contextlib.suppress(ApiException):
                await self._node_ready()
            await asyncio.sleep(RENEW_SECONDS)

    # -- binding -----------------------------------------------------------------------------

    async def bind_loop(self) -> None:
        """Bind pods that no scheduler will bind to this node."""
        w = watch.Watch()
        while True:
            async for event in w.stream(
                self.kube.core.list_pod_for_all_namespaces,
                field_selector="spec.nodeName=,status.phase=Pending",
                # Only agent pods: other pods in a shared test cluster are not ours to run.
                label_selector="gastown.dev/town",
                timeout_seconds=300,
            ):
                pod = event["object"]
                if event["type"] == "DELETED" or pod.metadata.deletion_timestamp:
                    continue
                if not self._selects_this_node(pod.spec.node_selector):
                    continue  # meant for another node (e.g. a real kubelet next to us)
                body = {
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": pod.metadata.name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": self.node},
                }
                try:
                    await self.kube.core.create_namespaced_pod_binding(
                        pod.metadata.name,
                        pod.metadata.namespace,
                        body,  # type: ignore[arg-type]
                        _preload_content=False,
                    )
                except ApiException as exc:
                    if exc.status not in (404, 409):
                        log.warning("binding %s failed: %s", pod.metadata.name, exc.reason)

    def labels(self) -> dict[str, str]:
        """The labels of this runner's Node."""
        return {
            "kubernetes.io/hostname": self.node,
            "kubernetes.io/os": "linux",
            "gastown.dev/local-node": "true",
        }

    def _selects_this_node(self, selector: dict[str, str] | None) -> bool:
        """A pod's nodeSelector admits this node's labels (as the scheduler would judge)."""
        labels = self.labels()
        return all(labels.get(key) == value for key, value in (selector or {}).items())

    # -- running -----------------------------------------------------------------------------

    async def run_loop(self) -> None:
        """Start bound pods, stop deleted ones."""
        w = watch.Watch()
        while True:
            async for event in w.stream(
                self.kube.core.list_pod_for_all_namespaces,
                field_selector=f"spec.nodeName={self.node}",
                timeout_seconds=300,
            ):
                pod = self.kube.api.sanitize_for_serialization(event["object"])
                await self._on_pod(event["type"], pod)

    async def _on_pod(self, event_type: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        if event_type == "DELETED":
            running = self.pods.get(uid)
            if running:
                await self._stop(running)
            return
        if meta.get("deletionTimestamp"):
            running = self.pods.get(uid)
            if running:
                await self._stop(running)
            else:
                await self._finalize(meta["namespace"], meta["name"], uid)
            return
        phase = (pod.get("status") or {}).get("phase")
        if uid in self.seen or phase in ("Succeeded", "Failed"):
            return
        self.seen.add(uid)
        try:
            await self._start(pod)
        except Exception as err:  # a broken pod spec fails that pod, not the runner
            log.warning("pod %s/%s cannot start: %s", meta["namespace"], meta["name"], err)
            await self._report_terminated(
                meta["namespace"], meta["name"], 128, "StartError", str(err)
            )

    async def _start(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        namespace, name = meta["namespace"], meta["name"]
        container = spec["containers"][0]
        directory = self.root / namespace / f"{name}-{meta['uid'][:8]}"
        directory.mkdir(parents=True, exist_ok=True)
        mounts = await self._volumes(pod, container, directory)
        env = await self._env(pod, container, mounts)
        env["KUBECONFIG"] = str(await self._kubeconfig(pod, directory))
        env["PATH"] = os.pathsep.join([*self.extra_path, os.environ.get("PATH", "")])
        argv = [*container.get("command", []), *container.get("args", [])]
        if not argv:
            raise ValueError("container has no command (images' entrypoints are not known here)")
        argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
        workdir = mounts.get(container.get("workingDir", ""), directory)
        log_file = (directory / "container.log").open("ab")
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(workdir),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        (directory / "pid").write_text(str(process.pid))  # tests kill "the container" by this
        running = RunningPod(
            namespace,
            name,
            meta["uid"],
            process,
            int(spec.get("terminationGracePeriodSeconds", 30)),
            directory,
        )
        self.pods[meta["uid"]] = running
        await self._report_running(namespace, name, container["name"])
        running.waiter = asyncio.create_task(self._wait(running, container["name"]))

    async def _wait(self, running: RunningPod, container: str) -> None:
        code = await running.process.wait()
        self.pods.pop(running.uid, None)
        if running.stopping:
            await self._finalize(running.namespace, running.name, running.uid)
            return
        exit_code = code if code >= 0 else 128 - code
        reason = "Completed" if exit_code == 0 else "Error"
        await self._report_terminated(
            running.namespace, running.name, exit_code, reason, "", container
        )

    async def _stop(self, running: RunningPod) -> None:
        if running.stopping:
            return
        running.stopping = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(running.process.wait()), running.grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.process.pid, signal.SIGKILL)

    async def _finalize(self, namespace: str, name: str, uid: str) -> None:
        """What the kubelet does last: remove the pod object for good."""
        with contextlib.suppress(ApiException):
            await self.kube.core.delete_namespaced_pod(
                name,
                namespace,
                grace_period_seconds=0,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
                ),
            )

    # -- status ------------------------------------------------------------------------------

    async def _patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        with contextlib.suppress(ApiException):
            await self.kube.core.patch_namespaced_pod_status(name, namespace, {"status": status})

    async def _report_running(self, namespace: str, name: str, container: str) -> None:
        now = _now()
        await self._patch_status(
            namespace,
            name,
            {
                "phase": "Running",
                "startTime": now,
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
                "containerStatuses": [
                    {
                        "name": container,
                        "ready": True,
                        "restartCount": 0,
                        "image": "local",
                        "imageID": "",
                        "started": True,
                        "state": {"running": {"startedAt": now}},
                    }
                ],
            },
        )

    async def _report_terminated(
        self,
        namespace: str,
        name: str,
        exit_code: int,
        reason: str,
        message: str,
        container: str = "agent",
    ) -> None:
        now = _now()
        await self._patch_status(
            namespace,
            name,
            {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
                "containerStatuses": [
                    {
                        "name": container,
                        "ready": False,
                        "restartCount": 0,
                        "image": "local",
                        "imageID": "",
                        "started": False,
                        "state": {
                            "terminated": {
                                "exitCode": exit_code,
                                "reason": reason,
                                "message": message[:1024],
                                "finishedAt": now,
                            }
                        },
                    }
                ],
            },
        )

    # -- environment and volumes -------------------------------------------------------------

    async def _volumes(
        self, pod: dict[str, Any], container: dict[str, Any], directory: Path
    ) -> dict[str, Path]:
        """Materialise emptyDir and Secret volumes; map each mountPath to a local directory."""
        namespace = pod["metadata"]["namespace"]
        local: dict[str, Path] = {}
        for volume in pod["spec"].get("volumes", []) or []:
            path = directory / "volumes" / volume["name"]
            path.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:
                secret = await self.kube.core.read_namespaced_secret(
                    volume["secret"]["secretName"], namespace
                )
                data = secret.data or {}
                items = volume["secret"].get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    target = path / item["path"]
                    target.write_bytes(base64.b64decode(data[item["key"]]))
                    target.chmod(0o400)
            local[volume["name"]] = path
        return {m["mountPath"]: local[m["name"]] for m in container.get("volumeMounts", []) or []}

    async def _env(
        self, pod: dict[str, Any], container: dict[str, Any], mounts: dict[str, Path]
    ) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = {"LANG": "C.UTF-8"}
        for var in container.get("env", []) or []:
            if "value" in var:
                value = str(var["value"])
            else:
                value = await self._value_from(pod, namespace, var.get("valueFrom", {}))
            env[var["name"]] = _rewrite_paths(value, mounts)
        return env

    async def _value_from(self, pod: dict[str, Any], namespace: str, source: dict[str, Any]) -> str:
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = await self.kube.core.read_namespaced_secret(ref["name"], namespace)
            return base64.b64decode((secret.data or {})[ref["key"]]).decode()
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            node: Any = pod
            for part in path.replace("']", "").replace("['", ".").split("."):
                node = node.get(part, "") if isinstance(node, dict) else ""
            return str(node)
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            cm = await self.kube.core.read_namespaced_config_map(ref["name"], namespace)
            return str((cm.data or {})[ref["key"]])
        raise ValueError(f"unsupported valueFrom: {sorted(source)}")

    async def _kubeconfig(self, pod: dict[str, Any], directory: Path) -> Path:
        """A kubeconfig with a token of the pod's ServiceAccount, bound to the pod."""
        meta, spec = pod["metadata"], pod["spec"]
        account = spec.get("serviceAccountName") or "default"
        request = {
            "spec": {
                "audiences": [],
                "expirationSeconds": 3600 * 6,
                "boundObjectRef": {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            }
        }
        token = await self.kube.core.create_namespaced_service_account_token(
            account,
            meta["namespace"],
            request,  # type: ignore[arg-type]
        )
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "pod",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": self.server, "certificate-authority-data": self.ca_data},
                }
            ],
            "users": [{"name": "pod", "user": {"token": token.status.token}}],
            "contexts": [
                {
                    "name": "pod",
                    "context": {"cluster": "local", "user": "pod", "namespace": meta["namespace"]},
                }
            ],
        }
        path = directory / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    async def shutdown(self) -> None:
        """Stop every running pod process (used when the runner itself stops)."""
        for running in list(self.pods.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.process.pid, signal.SIGKILL)


def _rewrite_paths(value: str, mounts: dict[str, Path]) -> str:
    for mount, local in sorted(mounts.items(), key=lambda item: -len(item[0])):
        if value == mount or value.startswith(mount.rstrip("/") + "/"):
            return str(local) + value[len(mount.rstrip("/")) :]
    return value


async def serve(node: str, root: Path) -> None:
    """Run the node runner until cancelled."""
    api = await connect()
    kube = Kube(api)
    config = yaml.safe_load(await asyncio.to_thread(Path(os.environ["KUBECONFIG"]).read_text))
    cluster = config["clusters"][0]["cluster"]
    runner = NodeRunner(
        kube=kube,
        node=node,
        root=root,
        server=cluster["server"],
        ca_data=cluster["certificate-authority-data"],
        extra_path=[str(Path(sys.executable).parent)],
    )
    await runner.register()
    log.info("node %s ready; pods run under %s", node, root)
    try:
        await asyncio.gather(runner.heartbeat(), runner.bind_loop(), runner.run_loop())
    finally:
        await runner.shutdown()
        await api.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m gastown.devtools.noderunner --node NAME --root DIR`."""
    parser = argparse.ArgumentParser(description="Run pods bound to a node as local processes.")
    parser.add_argument("--node", default="gastown-local")
    parser.add_argument("--root", type=Path, default=Path(".local/pods"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s noderunner %(message)s")
    asyncio.run(_serve_until_signalled(args.node, args.root.resolve()))
    return 0


async def _serve_until_signalled(node: str, root: Path) -> None:
    """Serve; SIGTERM or SIGINT stops the runner and kills the pod processes it started."""
    task = asyncio.create_task(serve(node, root))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


if __name__ == "__main__":
    raise SystemExit(main())
