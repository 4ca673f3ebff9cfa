"""The images build locally with no registry, come from the cache when nothing changed, and run
what pods run: as uid 1000 on a read-only root filesystem (the pod's securityContext).

The first run on a machine builds everything (a Debian base by debootstrap, then both
Dockerfiles with buildah; about 10 minutes on 2 cores); later runs take the images from the
cache under ~/.cache/gastown/images. If the images cannot be built these tests fail with the
step that broke; they never skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gastown.devtools import images

# A cold build (base, agent with every CLI, operator) takes minutes; a warm one seconds.
pytestmark = pytest.mark.timeout(3600)

# Each CLI's --version output, matched against the version the Dockerfile pins.
CLIS = {
    "claude": "CLAUDE_CODE_VERSION",
    "codex": "CODEX_VERSION",
    "opencode": "OPENCODE_VERSION",
    "aider": "AIDER_VERSION",
}


@pytest.fixture(scope="module")
def manifest() -> images.Manifest:
    """Both images with every CLI, built (or taken from the cache) once for this module."""
    built, path = images.build()
    assert path.is_file()
    return built


def run(ref: str, *argv: str) -> str:
    """Run argv in the image as uid 1000, read-only; fail with its output unless it exits 0."""
    proc = images.run_in_image(ref, argv)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_both_images_are_built_as_oci_archives(manifest: images.Manifest) -> None:
    assert set(manifest.images) == {"agent", "operator"}
    version = images.project_version()
    for name, record in manifest.images.items():
        assert Path(record.archive).is_file()
        assert Path(record.archive).stat().st_size == record.archive_bytes > 0
        assert record.ref == f"localhost/gastown/{name}:{version}-{record.key}"
        assert f"docker.io/gastown/{name}:{version}" in record.aliases
    # The manifest on disk says the same as the one returned.
    loaded = images.Manifest.load(images.cache_root() / "manifest.json")
    assert {n: r.ref for n, r in loaded.images.items()} == {
        n: r.ref for n, r in manifest.images.items()
    }


def test_an_unchanged_tree_rebuilds_nothing(manifest: images.Manifest) -> None:
    # Two builds back to back (the first catches up with any edit since the fixture ran).
    first, _ = images.build()
    started = time.monotonic()
    again, _ = images.build()
    elapsed = time.monotonic() - started
    assert all(record.cached for record in again.images.values())
    assert {n: r.key for n, r in again.images.items()} == {
        n: r.key for n, r in first.images.items()
    }
    assert {n: r.archive for n, r in again.images.items()} == {
        n: r.archive for n, r in first.images.items()
    }
    assert elapsed < 30, f"a cached build took {elapsed:.1f}s"


def test_the_key_follows_the_sources_and_the_build_args() -> None:
    base = images.base_key()
    key = images.image_key("agent", {}, base)
    assert images.image_key("agent", {"WITH_AIDER": "0"}, base) != key
    assert images.image_key("agent", {}, base + "x") != key
    # Bytecode and caches are not inputs (they change whenever tests run).
    assert not any("__pycache__" in str(path) for path in images.tree_files())
    assert Path("operator/gastown/devtools/images.py") in images.tree_files()


def test_the_dockerfile_defaults_match_the_pinned_versions() -> None:
    # `docker build` without build args must give the same CLIs as `make images`.
    pinned = images.cli_versions()
    assert set(CLIS.values()) <= set(pinned)
    defaults = images.dockerfile_args("agent")
    assert {k: defaults.get(k) for k in pinned} == pinned


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (("gastown", "--help"), "usage"),
        (("gt", "--help"), "usage"),
        (("git", "--version"), "git version"),
        (("id", "-u"), "1000"),
    ],
)
def test_agent_image_runs_the_runtime_as_uid_1000(
    manifest: images.Manifest, argv: tuple[str, ...], expect: str
) -> None:
    assert expect in run(manifest.images["agent"].ref, *argv).lower()


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_agent_image_carries_each_coding_agent_at_its_pinned_version(
    manifest: images.Manifest, cli: str
) -> None:
    pinned = images.cli_versions()[CLIS[cli]]
    out = run(manifest.images["agent"].ref, cli, "--version")
    assert re.search(rf"\b{re.escape(pinned)}\b", out), f"{cli} --version said {out!r}"


def test_agent_image_root_is_read_only_and_home_is_writable(manifest: images.Manifest) -> None:
    out = run(
        manifest.images["agent"].ref,
        "sh",
        "-c",
        "touch /opt/x 2>/dev/null && echo root-writable; git config --global user.name t && "
        'git config --global user.name; echo "home=$HOME"',
    )
    assert "root-writable" not in out
    assert "home=/home/gastown" in out
    assert out.splitlines()[0] == "t"
    # The checks above really ran on a read-only root: even root cannot write to it.
    as_root = images.run_in_image(manifest.images["agent"].ref, ["touch", "/x"], user="0:0")
    assert as_root.returncode != 0
    assert "read-only file system" in as_root.stderr.lower()


def test_operator_image_runs_gastown_and_has_git(manifest: images.Manifest) -> None:
    ref = manifest.images["operator"].ref
    assert "usage" in run(ref, "gastown", "--help").lower()
    assert "git version" in run(ref, "git", "--version")
    assert run(ref, "id", "-u").strip() == "1000"


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[str]:
    """A private containerd (no CRI plugin) with its own root and socket; its address."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        install = subprocess.run(
            ["bash", str(images.REPO_ROOT / "hack" / "install-node-deps.sh")], check=False
        )
        assert install.returncode == 0, "installing containerd failed"
    # Short paths: a unix socket path must stay under ~100 bytes.
    root = Path(tempfile.mkdtemp(prefix="gt-ctrd-"))
    socket = root / "sock"
    config = root / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{root / "root"}"\n'
        f'state = "{root / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{socket}"\n'
        f'[ttrpc]\n  address = "{socket}.ttrpc"\n'
    )
    log = (tmp_path / "containerd.log").open("wb")
    proc = subprocess.Popen(
        ["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            ready = subprocess.run(
                ["ctr", "--address", str(socket), "version"], capture_output=True, check=False
            )
            if ready.returncode == 0:
                break
            assert proc.poll() is None, (tmp_path / "containerd.log").read_text()
            assert time.monotonic() < deadline, "containerd did not answer within 30s"
            time.sleep(0.2)
        yield str(socket)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()
        # Unpacked snapshots are overlay directories; nothing stays mounted once it stopped.
        shutil.rmtree(root, ignore_errors=True)


def test_images_import_into_containerd_under_every_ref(
    manifest: images.Manifest, containerd: str
) -> None:
    made = images.import_images(manifest, containerd)
    listed = subprocess.run(
        ["ctr", "--address", containerd, "--namespace", "k8s.io", "images", "list", "--quiet"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for record in manifest.images.values():
        assert record.ref in made
        for ref in record.refs:
            assert ref in listed, f"{ref} not in {listed}"


def test_build_args_leave_every_cli_out(manifest: images.Manifest, tmp_path: Path) -> None:
    # The lean variant (the runtime, gt and git only) shares every other layer with the full one.
    off = {"WITH_CLAUDE": "0", "WITH_CODEX": "0", "WITH_OPENCODE": "0", "WITH_AIDER": "0"}
    lean, path = images.build(["agent"], {"agent": off}, manifest_path=tmp_path / "lean.json")
    assert path == tmp_path / "lean.json"
    record = lean.images["agent"]
    assert record.build_args["WITH_AIDER"] == "0"
    assert "usage" in run(record.ref, "gastown", "--help").lower()
    for cli in (*CLIS, "node"):
        proc = images.run_in_image(record.ref, [cli, "--version"])
        assert proc.returncode == 127, f"{cli} is in the lean image: {proc.stdout}"
    # A variant is an image of its own: the full one and the default manifest are untouched.
    assert manifest.images["agent"].ref != record.ref
    default = images.Manifest.load(images.cache_root() / "manifest.json")
    assert default.images["agent"].build_args.get("WITH_AIDER", "1") == "1"
