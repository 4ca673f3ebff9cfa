"""Build the gastown images locally, with no container registry, and load them into containerd.

The recipe (dev and test tooling, run as root on Linux):

1. **Base.** A Debian bookworm root filesystem made by `debootstrap --variant=minbase` with
   Python 3 (venv, pip) and ca-certificates, `python` linked to `python3`, the machine's local CA
   certificates and pip's global configuration copied in (so HTTPS from image builds works behind a
   TLS-intercepting proxy, and nothing changes where there is none), committed with buildah as
   `localhost/gastown/base:<key>`. It stands in for the `python:3.11-slim-bookworm` image the
   Dockerfiles name by default.
2. **Images.** `images/agent.Dockerfile` and `images/operator.Dockerfile` built unmodified by
   `buildah bud --isolation chroot --layers --pull=never --build-arg PYTHON_IMAGE=<base>`.
3. **Archives.** Each image pushed to an OCI archive, and a JSON manifest naming image refs and
   archive paths (`Manifest`), which `import_images` loads into a containerd (`ctr images import`).

Everything lives under `cache_root()` (`~/.cache/gastown/images`, or `$GASTOWN_IMAGES_CACHE`):
buildah's own storage, the archives, the manifest. Each image is keyed by a content hash of its
inputs (Dockerfile, build args, pyproject.toml, README.md, every file under operator/, the base
key), so an unchanged tree rebuilds nothing, and a changed one reuses buildah's layer cache (the
coding-agent CLIs are installed in layers that do not depend on the project's sources).

    python -m gastown.devtools.images build [--image agent] [--build-arg agent:WITH_AIDER=0]
    python -m gastown.devtools.images import --address /run/containerd/containerd.sock
    python -m gastown.devtools.images run agent -- claude --version
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
CACHE_ENV = "GASTOWN_IMAGES_CACHE"
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
# Bump when the base recipe below changes in a way its inputs do not show.
BASE_RECIPE = "1"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Where update-ca-certificates takes local CAs from, and where pip reads a global config.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
PIP_CONFIGS = (Path("/etc/pip.conf"), Path("/etc/xdg/pip/pip.conf"))
# Files of the build context the Dockerfiles COPY (besides the Dockerfile itself).
CONTEXT_FILES = ("pyproject.toml", "README.md", ".dockerignore")
CONTEXT_TREES = ("operator",)
CLI_VERSIONS = "images/cli-versions.env"
IGNORED_PARTS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
IGNORED_SUFFIXES = (".pyc", ".pyo")
IMAGES = ("agent", "operator")
MANIFEST_VERSION = 1
# The uid/gid agent and operator pods run as (gastown.kube.pods.AGENT_UID, the chart's default).
POD_USER = "1000:1000"


class ImageBuildError(RuntimeError):
    """An image could not be built, checked or imported; the message says which step and why."""


# -- locations and keys ------------------------------------------------------------------------


def cache_root() -> Path:
    """The cache directory for images: $GASTOWN_IMAGES_CACHE, else ~/.cache/gastown/images."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "gastown" / "images"


def project_version(repo: Path = REPO_ROOT) -> str:
    """The project's version from pyproject.toml (the images' tag)."""
    with (repo / "pyproject.toml").open("rb") as handle:
        version: str = tomllib.load(handle)["project"]["version"]
    return version


def _digest(parts: Sequence[tuple[str, bytes]]) -> str:
    sha = hashlib.sha256()
    for name, data in parts:
        # Length-prefixed, so that no two different inputs hash alike.
        for chunk in (name.encode(), data):
            sha.update(len(chunk).to_bytes(8, "big"))
            sha.update(chunk)
    return sha.hexdigest()[:16]


def _ignored(path: Path) -> bool:
    return (
        bool(IGNORED_PARTS.intersection(path.parts))
        or path.name.endswith(IGNORED_SUFFIXES)
        or (any(part.endswith(".egg-info") for part in path.parts))
    )


def tree_files(repo: Path = REPO_ROOT) -> list[Path]:
    """The build-context files the images are made from, relative to `repo`, sorted."""
    files = [Path(name) for name in CONTEXT_FILES if (repo / name).is_file()]
    for tree in CONTEXT_TREES:
        for path in sorted((repo / tree).rglob("*")):
            rel = path.relative_to(repo)
            if path.is_file() and not _ignored(rel):
                files.append(rel)
    return sorted(files)


def _local_cas() -> list[Path]:
    if not LOCAL_CA_DIR.is_dir():
        return []
    return sorted(path for path in LOCAL_CA_DIR.rglob("*.crt") if path.is_file())


def base_key() -> str:
    """Content key of the base image: recipe, suite, packages, local CAs, pip config."""
    parts: list[tuple[str, bytes]] = [
        ("recipe", BASE_RECIPE.encode()),
        ("suite", SUITE.encode()),
        ("packages", ",".join(BASE_PACKAGES).encode()),
    ]
    parts += [(f"ca:{path.name}", path.read_bytes()) for path in _local_cas()]
    parts += [(f"pip:{path}", path.read_bytes()) for path in PIP_CONFIGS if path.is_file()]
    return _digest(parts)


def image_key(name: str, build_args: Mapping[str, str], base: str, repo: Path = REPO_ROOT) -> str:
    """Content key of one image: its Dockerfile, build args, the context files, the base key."""
    parts: list[tuple[str, bytes]] = [
        ("base", base.encode()),
        ("dockerfile", dockerfile(name, repo).read_bytes()),
        ("args", json.dumps(dict(sorted(build_args.items()))).encode()),
    ]
    for rel in tree_files(repo):
        path = repo / rel
        mode = b"x" if os.access(path, os.X_OK) else b"-"
        parts.append((str(rel), mode + path.read_bytes()))
    return _digest(parts)


def dockerfile(name: str, repo: Path = REPO_ROOT) -> Path:
    """The Dockerfile of image `name` (agent or operator)."""
    return repo / "images" / f"{name}.Dockerfile"


def cli_versions(repo: Path = REPO_ROOT) -> dict[str, str]:
    """The pinned coding-agent CLI versions (images/cli-versions.env), passed as build args.

    The one place the versions live: the agent image and the host install of the CLIs for tests
    both read it; the Dockerfile's ARG defaults repeat it for plain `docker build`.
    """
    path = repo / CLI_VERSIONS
    found: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            match = re.match(r"\s*([A-Z_][A-Z0-9_]*)=(\S+)\s*$", line)
            if match:
                found[match.group(1)] = match.group(2)
    return found


def default_build_args(name: str, repo: Path = REPO_ROOT) -> dict[str, str]:
    """Build args every build of image `name` gets unless the caller overrides them."""
    return cli_versions(repo) if name == "agent" else {}


def dockerfile_args(name: str, repo: Path = REPO_ROOT) -> dict[str, str]:
    """The ARG defaults a Dockerfile declares (the pinned CLI versions live there)."""
    found: dict[str, str] = {}
    for line in dockerfile(name, repo).read_text().splitlines():
        match = re.match(r"\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(\S+)\s*$", line)
        if match:
            found.setdefault(match.group(1), match.group(2))
    return found


# -- records -----------------------------------------------------------------------------------


@dataclass
class ImageRecord:
    """One built image: its refs, its OCI archive and how it was made."""

    name: str
    ref: str
    """Content-keyed ref (`localhost/gastown/<name>:<version>-<key>`): changes with the inputs."""
    aliases: list[str]
    """Stable refs the product names by default (`docker.io/gastown/<name>:<version>`)."""
    archive: str
    key: str
    build_args: dict[str, str] = field(default_factory=dict)
    size_bytes: int = 0
    """Size of the image's layers (uncompressed), as buildah reports it."""
    archive_bytes: int = 0
    build_seconds: float = 0.0
    """Time the last `build` spent on this image (about zero when it came from the cache)."""
    cached: bool = False
    steps: list[str] = field(default_factory=list)
    """Ids of the layer-cache images its build used; kept while this record is current."""

    @property
    def refs(self) -> list[str]:
        """Every ref the image should carry once imported."""
        return [self.ref, *self.aliases]


@dataclass
class Manifest:
    """What `build` produced: the base image and every built image, by name."""

    base_ref: str
    base_seconds: float
    images: dict[str, ImageRecord]
    version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        """The manifest as JSON (the file `build` writes)."""
        data = {
            "version": self.version,
            "base": {"ref": self.base_ref, "build_seconds": round(self.base_seconds, 2)},
            "images": {name: asdict(record) for name, record in self.images.items()},
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read a manifest written by `build`."""
        data = json.loads(path.read_text())
        if data.get("version") != MANIFEST_VERSION:
            raise ImageBuildError(f"{path}: unknown manifest version {data.get('version')!r}")
        return cls(
            base_ref=data["base"]["ref"],
            base_seconds=data["base"]["build_seconds"],
            images={name: ImageRecord(**rec) for name, rec in data["images"].items()},
        )


# -- processes ---------------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


def _run(
    argv: Sequence[str], *, capture: bool = False, check: bool = True, what: str = ""
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv),
        stdout=subprocess.PIPE if capture else sys.stderr,
        stderr=subprocess.PIPE if capture else sys.stderr,
        stdin=subprocess.DEVNULL,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        detail = f":\n{proc.stderr.strip()[-3000:]}" if capture and proc.stderr else ""
        raise ImageBuildError(
            f"{what or shlex.join(argv[:3])} failed (exit {proc.returncode}): "
            f"{shlex.join(argv)}{detail}"
        )
    return proc


def ensure_tools() -> None:
    """Install buildah and debootstrap from Debian's packages when they are missing (needs root)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        raise ImageBuildError(
            "building images needs root on Linux (debootstrap and buildah's chroot isolation)"
        )
    needed = {"buildah": "buildah", "debootstrap": "debootstrap", "unshare": "util-linux"}
    missing = sorted({pkg for tool, pkg in needed.items() if shutil.which(tool) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise ImageBuildError(f"{', '.join(missing)} missing and no apt-get to install them")
    _log(f"installing {' '.join(missing)} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        # With recommends: debootstrap checks signatures with gnupg and the archive keyring.
        ["apt-get", "install", "-y", "-qq", *missing],
    ):
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise ImageBuildError(f"{shlex.join(argv)} failed (exit {proc.returncode})")


@dataclass
class Buildah:
    """buildah on a private storage under the image cache (never the machine's default one)."""

    root: Path

    def argv(self, *args: str) -> list[str]:
        """The full command line of `buildah <args>` on this storage."""
        return [
            "buildah",
            "--root",
            str(self.root / "storage"),
            "--runroot",
            str(self.root / "run"),
            "--storage-driver",
            "overlay",
            *args,
        ]

    def run(self, *args: str, what: str = "") -> str:
        """Run buildah, return its stdout; raise with its stderr on failure."""
        return _run(self.argv(*args), capture=True, what=what or f"buildah {args[0]}").stdout

    def bud(self, *args: str, what: str) -> set[str]:
        """`buildah bud`, its output on our stderr; returns the ids of every step's image.

        Those are the layer cache this build used or made (`--> Using cache <id>`, `--> <id>`).
        """
        proc = subprocess.Popen(
            self.argv("bud", *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        used: set[str] = set()
        for line in proc.stdout:
            sys.stderr.write(line)
            match = re.match(r"--> (?:Using cache )?([0-9a-f]{11,64})\s*$", line)
            if match:
                used.add(match.group(1))
        if proc.wait() != 0:
            raise ImageBuildError(f"{what} failed (exit {proc.returncode}); its output is above")
        return used

    def prune_cache(self, keep: set[str]) -> None:
        """Remove untagged (layer cache) images that no step of `keep` is, freeing old layers.

        Called after a build with the steps the current build of every image used: the
        coding-agent CLIs' layers are used by every build and stay; steps over sources that have
        changed since are dropped.
        """
        for image in json.loads(self.run("images", "--json", "--all") or "[]"):
            ident = str(image.get("id", ""))
            if image.get("names") or not ident:
                continue
            if any(ident.startswith(k) or k.startswith(ident) for k in keep):
                continue
            _run(self.argv("rmi", ident), capture=True, check=False)

    def has_image(self, ref: str) -> bool:
        """Whether the storage holds an image named `ref`."""
        proc = _run(self.argv("inspect", "--type", "image", ref), capture=True, check=False)
        return proc.returncode == 0

    def image_size(self, ref: str) -> int:
        """Uncompressed size of an image's layers in bytes (from its manifest in the storage)."""
        manifest = json.loads(json.loads(self.run("inspect", "--type", "image", ref))["Manifest"])
        return sum(int(layer.get("size", 0)) for layer in manifest.get("layers", []))


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Serialise builds sharing one cache (concurrent test sessions, `make images`)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- base --------------------------------------------------------------------------------------


def _apt_uris() -> list[str]:
    """The URIs of the machine's apt sources (one-line and deb822 formats)."""
    uris: list[str] = []
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("deb "):
                words = [w for w in line.split()[1:] if not w.startswith("[")]
                if words:
                    uris.append(words[0])
            elif line.startswith("URIs:"):
                uris.extend(line.split()[1:])
    return uris


def debian_mirrors() -> tuple[str, str]:
    """The Debian archive and security mirrors apt already uses here (Debian's own otherwise)."""
    uris = [uri.rstrip("/") for uri in _apt_uris()]
    archive = next((uri for uri in uris if uri.endswith("/debian")), DEFAULT_MIRROR)
    security = next(
        (uri for uri in uris if uri.endswith("/debian-security")), f"{archive}-security"
    )
    return archive, security


def _mounts_under(path: Path) -> list[Path]:
    """Mount points at or below `path`, deepest first."""
    found: list[Path] = []
    prefix = str(path.resolve())
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _unmount_all(path: Path) -> None:
    # debootstrap can leave /proc (and others) mounted inside its target if it stops early.
    for point in _mounts_under(path):
        _run(["umount", "--lazy", str(point)], check=False)


def _make_rootfs(rootfs: Path) -> None:
    archive, security = debian_mirrors()
    include = ",".join(BASE_PACKAGES)
    _run(
        ["debootstrap", "--variant=minbase", f"--include={include}", SUITE, str(rootfs), archive],
        what="debootstrap",
    )
    _unmount_all(rootfs)
    # Same suites as the official Debian images: security and point-release updates.
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {archive} {SUITE} main\n"
        f"deb {archive} {SUITE}-updates main\n"
        f"deb {security} {SUITE}-security main\n"
    )
    python = rootfs / "usr/bin/python"
    if not python.exists():
        python.symlink_to("python3")
    target = rootfs / LOCAL_CA_DIR.relative_to("/")
    target.mkdir(parents=True, exist_ok=True)
    for cert in _local_cas():
        shutil.copy2(cert, target / cert.name)
    for conf in PIP_CONFIGS:
        if conf.is_file():
            (rootfs / conf.relative_to("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(conf, rootfs / conf.relative_to("/"))
    _run(["chroot", str(rootfs), "update-ca-certificates"], capture=True, what="update-ca-certs")
    for junk in ("var/lib/apt/lists", "var/cache/apt/archives", "var/log"):
        for child in (rootfs / junk).glob("*"):
            if child.is_file() or child.is_symlink():
                child.unlink()


def build_base(buildah: Buildah, key: str, work: Path) -> tuple[str, float]:
    """The local base image for `key` (built now unless present); returns (ref, seconds spent)."""
    ref = f"localhost/gastown/base:{key}"
    if buildah.has_image(ref):
        return ref, 0.0
    started = time.monotonic()
    _log(f"building base image {ref} (debootstrap {SUITE}, a few minutes)")
    with tempfile.TemporaryDirectory(dir=work, prefix="base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        tarball = Path(tmp) / "rootfs.tar"
        try:
            _make_rootfs(rootfs)
            _run(
                ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(tarball), "."],
                what="tar rootfs",
            )
        finally:
            _unmount_all(rootfs)
        container = buildah.run("from", "--pull=never", "scratch").strip()
        try:
            buildah.run("add", container, str(tarball), "/")
            buildah.run(
                "config",
                "--env",
                "LANG=C.UTF-8",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--cmd",
                "python3",
                "--label",
                f"org.opencontainers.image.title=gastown-base-{SUITE}",
                container,
            )
            buildah.run("commit", "--quiet", "--rm", container, ref)
        except BaseException:
            _run(buildah.argv("rm", container), capture=True, check=False)
            raise
    return ref, time.monotonic() - started


# -- images ------------------------------------------------------------------------------------


def _build_one(
    buildah: Buildah,
    name: str,
    base_ref: str,
    base: str,
    build_args: Mapping[str, str],
    out: Path,
    repo: Path,
) -> ImageRecord:
    version = project_version(repo)
    key = image_key(name, build_args, base, repo)
    ref = f"localhost/gastown/{name}:{version}-{key}"
    directory = out / f"{name}-{key}"
    archive = directory / f"{name}.oci.tar"
    record = ImageRecord(
        name=name,
        ref=ref,
        aliases=[f"docker.io/gastown/{name}:{version}"],
        archive=str(archive),
        key=key,
        build_args=dict(build_args),
    )
    done = directory / "record.json"
    if done.is_file() and archive.is_file():
        cached = ImageRecord(**json.loads(done.read_text()))
        if not buildah.has_image(ref):
            # The storage was cleaned but the archive survived: load it back, still no registry.
            image_id = buildah.run(
                "pull", "--quiet", f"oci-archive:{archive}", what="restore from archive"
            ).split()[-1]
            buildah.run("tag", image_id, ref)
        cached.cached, cached.build_seconds = True, 0.0
        return cached
    started = time.monotonic()
    _log(f"building {ref}")
    args = [
        "--isolation",
        "chroot",
        "--layers",
        "--pull=never",
        "--build-arg",
        f"PYTHON_IMAGE={base_ref}",
    ]
    for arg, value in sorted(build_args.items()):
        args += ["--build-arg", f"{arg}={value}"]
    args += ["-f", str(dockerfile(name, repo)), "-t", ref, str(repo)]
    used = buildah.bud(*args, what=f"building the {name} image")
    directory.mkdir(parents=True, exist_ok=True)
    tmp_archive = archive.with_suffix(".tmp")
    tmp_archive.unlink(missing_ok=True)
    # Fastest gzip: the archive never leaves this machine, and the default level spends about
    # twice the time on a multi-GB image for 10% less disk.
    buildah.run(
        "push",
        "--quiet",
        "--compression-format",
        "gzip",
        "--compression-level",
        "1",
        ref,
        f"oci-archive:{tmp_archive}:{ref}",
        what="oci archive",
    )
    tmp_archive.rename(archive)
    record.steps = sorted(used)
    record.build_seconds = time.monotonic() - started
    record.size_bytes = buildah.image_size(ref)
    record.archive_bytes = archive.stat().st_size
    done.write_text(json.dumps(asdict(record), indent=2, sort_keys=True) + "\n")
    _prune(buildah, out, record, keep=directory)
    buildah.prune_cache(_current_steps(out))
    return record


def _current_steps(out: Path) -> set[str]:
    """The layer-cache images the current build of every image and variant used."""
    steps: set[str] = set()
    for done in out.glob("*/record.json"):
        with contextlib.suppress(OSError, ValueError):
            steps.update(json.loads(done.read_text()).get("steps", []))
    return steps


def _prune(buildah: Buildah, out: Path, record: ImageRecord, keep: Path) -> None:
    """Drop older archives and tags of the same image and build args (other variants stay).

    buildah's layer cache is left alone, so the next change rebuilds only what it touches.
    """
    for old in out.glob(f"{record.name}-*"):
        if old == keep or not old.is_dir():
            continue
        try:
            previous = json.loads((old / "record.json").read_text())
        except (OSError, ValueError):
            previous = {}
        if previous and previous.get("build_args") != record.build_args:
            continue
        if previous.get("ref"):
            _run(buildah.argv("rmi", previous["ref"]), capture=True, check=False)
        shutil.rmtree(old, ignore_errors=True)


def build(
    names: Sequence[str] = IMAGES,
    build_args: Mapping[str, Mapping[str, str]] | None = None,
    *,
    repo: Path = REPO_ROOT,
    manifest_path: Path | None = None,
) -> tuple[Manifest, Path]:
    """Build (or take from the cache) the named images; write and return the manifest.

    `build_args` maps an image name to its extra `--build-arg`s (for example
    ``{"agent": {"WITH_AIDER": "0"}}``). Raises `ImageBuildError` saying which step failed.
    """
    unknown = sorted(set(names) - set(IMAGES))
    if unknown:
        raise ImageBuildError(f"unknown image(s) {unknown}; known: {list(IMAGES)}")
    root = cache_root()
    with _locked(root):
        buildah = Buildah(root)
        key = base_key()
        needs_build = True
        records: dict[str, ImageRecord] = {}
        base_ref, base_seconds = f"localhost/gastown/base:{key}", 0.0
        for name in names:
            args = {**default_build_args(name, repo), **(build_args or {}).get(name, {})}
            directory = root / "out" / f"{name}-{image_key(name, args, key, repo)}"
            needs_build = not (directory / "record.json").is_file()
            if needs_build:
                break
        if needs_build:
            ensure_tools()
            base_ref, base_seconds = build_base(buildah, key, root)
        for name in names:
            args = {**default_build_args(name, repo), **(build_args or {}).get(name, {})}
            records[name] = _build_one(buildah, name, base_ref, key, args, root / "out", repo)
        manifest = Manifest(base_ref=base_ref, base_seconds=base_seconds, images=records)
        path = manifest_path or root / "manifest.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(manifest.to_json())
        tmp.replace(path)
    return manifest, path


# -- containerd --------------------------------------------------------------------------------


def import_images(
    manifest: Manifest | Path,
    address: str,
    *,
    namespace: str = "k8s.io",
    ctr: str = "ctr",
    names: Sequence[str] | None = None,
) -> list[str]:
    """Import the manifest's archives into the containerd at `address`; return the refs made.

    Each image gets its content-keyed ref and its stable aliases (`docker.io/gastown/agent:0.1.0`),
    so a Pod naming either finds it with imagePullPolicy IfNotPresent or Never. Namespace
    `k8s.io` is the one the kubelet's CRI uses.
    """
    if isinstance(manifest, Path):
        manifest = Manifest.load(manifest)
    base = [ctr, "--address", address, "--namespace", namespace]
    made: list[str] = []
    for name, record in manifest.images.items():
        if names is not None and name not in names:
            continue
        _run(
            # Unpacked at import (containerd's default), so a pod's first start does not wait.
            [*base, "images", "import", record.archive],
            capture=True,
            what=f"importing the {name} image",
        )
        listed = _run([*base, "images", "list", "--quiet"], capture=True).stdout.split()
        if record.ref not in listed:
            raise ImageBuildError(f"{record.archive} imported but {record.ref} is not listed")
        for alias in record.aliases:
            _run([*base, "images", "tag", "--force", record.ref, alias], capture=True)
        made += record.refs
    return made


# -- running a command in an image (checks without a node) --------------------------------------

_CHROOT_SCRIPT = r"""
set -eu
root=$1; user=$2; shift 2
mount --make-rprivate /
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
for dir in /tmp /workspace "$HOME"; do
  [ -d "$root$dir" ] && mount -t tmpfs -o mode=1777 tmpfs "$root$dir"
done
exec chroot --userspec="$user" "$root" "$@"
"""


def image_env(buildah: Buildah, ref: str) -> dict[str, str]:
    """The environment an image's config sets (PATH, HOME, ...)."""
    data = json.loads(buildah.run("inspect", "--type", "image", ref))
    pairs: list[str] = (data.get("OCIv1", {}).get("config") or {}).get("Env") or []
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


def run_in_image(
    ref: str,
    argv: Sequence[str],
    *,
    user: str = POD_USER,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` in image `ref` as a pod would: as `user`, read-only root, tmpfs /tmp and HOME.

    A private mount namespace over the image's root filesystem (mounted by buildah), chroot, no
    network isolation. Returns the finished process (stdout and stderr captured).
    """
    buildah = Buildah(cache_root())
    base_env = image_env(buildah, ref)
    full_env = {**base_env, **(env or {})}
    full_env.setdefault("HOME", "/tmp")
    container = buildah.run("from", "--pull=never", ref).strip()
    try:
        mountpoint = buildah.run("mount", container).strip()
        command = [
            "unshare",
            "--mount",
            "--fork",
            "--",
            "sh",
            "-c",
            _CHROOT_SCRIPT,
            "image-run",
            mountpoint,
            user,
            "/usr/bin/env",
            "-i",
            *(f"{k}={v}" for k, v in sorted(full_env.items())),
            *argv,
        ]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "HOME": full_env["HOME"]},
        )
    finally:
        _run(buildah.argv("umount", container), capture=True, check=False)
        _run(buildah.argv("rm", container), capture=True, check=False)


# -- command line ------------------------------------------------------------------------------


def _parse_build_args(values: Sequence[str]) -> dict[str, dict[str, str]]:
    parsed: dict[str, dict[str, str]] = {}
    for value in values:
        target, sep, rest = value.partition(":")
        if not sep or "=" not in rest or target not in IMAGES:
            raise SystemExit(f"--build-arg wants IMAGE:NAME=VALUE with IMAGE in {IMAGES}: {value}")
        arg, _, arg_value = rest.partition("=")
        parsed.setdefault(target, {})[arg] = arg_value
    return parsed


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gastown.devtools.images build|import|run ...`."""
    parser = argparse.ArgumentParser(
        prog="gastown.devtools.images", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build the images (cached) and write the manifest")
    p_build.add_argument("--image", action="append", choices=IMAGES, help="default: all")
    p_build.add_argument(
        "--build-arg",
        action="append",
        default=[],
        metavar="IMAGE:NAME=VALUE",
        help="e.g. agent:WITH_AIDER=0",
    )
    p_build.add_argument("--manifest", type=Path, help="where to write the manifest")
    p_import = sub.add_parser("import", help="import the built images into a containerd")
    p_import.add_argument("--address", required=True, help="containerd socket address")
    p_import.add_argument("--manifest", type=Path, default=None)
    p_import.add_argument("--namespace", default="k8s.io")
    p_import.add_argument("--ctr", default="ctr", help="the ctr binary")
    p_run = sub.add_parser("run", help="run a command in a built image as uid 1000, read-only")
    p_run.add_argument("image", choices=IMAGES)
    p_run.add_argument("argv", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            manifest, path = build(
                args.image or IMAGES, _parse_build_args(args.build_arg), manifest_path=args.manifest
            )
            for record in manifest.images.items():
                name, rec = record
                how = "cached" if rec.cached else f"built in {rec.build_seconds:.1f}s"
                _log(f"{name}: {rec.ref} ({how}, {rec.size_bytes / 1e6:.0f} MB) -> {rec.archive}")
            print(path)
        elif args.command == "import":
            path = args.manifest or cache_root() / "manifest.json"
            for ref in import_images(path, args.address, namespace=args.namespace, ctr=args.ctr):
                print(ref)
        else:
            manifest = Manifest.load(cache_root() / "manifest.json")
            proc = run_in_image(manifest.images[args.image].ref, args.argv)
            sys.stdout.write(proc.stdout)
            sys.stderr.write(proc.stderr)
            return proc.returncode
    except ImageBuildError as err:
        print(f"images: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
