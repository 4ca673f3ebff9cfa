"""The smart-HTTP git server of the dev tooling, with real git on both ends.

Clients authenticate the way agent pods do: `gastown.agent.git.Credentials` reading a directory
with `username` and `password` files (the rig's Secret, mounted), and the operator's claim
checker (`gastown.kube.verify.check_claim`) reads the same remote over http.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from gastown.agent.git import Credentials, Git, GitError, clone
from gastown.devtools.gitserver import GitServer, Request, parse_listen
from gastown.kube.verify import RemoteUnreachableError, cache_repository, check_claim
from gastown.model import Rig
from gastown.reconcile.writes import BranchClaim, MergeClaim
from tests.support.api import eventually
from tests.support.git import git

USER = "agent-bot"
PASSWORD = "pa55-w0rd-for-tests"


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """git on this side commits as a test identity and ignores the machine's git config."""
    for name, value in {
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    """A git server on a free loopback port with one repository, `app.git`, whose main has a
    README."""
    with GitServer(tmp_path / "srv", USER, PASSWORD) as srv:
        seed(srv, "app.git")
        yield srv


def seed(srv: GitServer, name: str) -> Path:
    """Create `name` under the server's root with one commit on main (written on disk)."""
    bare = srv.create_repository(name)
    work = bare.parent / (bare.name + "-seed")
    git("clone", "--quiet", str(bare), str(work))
    (work / "README.md").write_text("# app\n")
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", "initial", cwd=work)
    git("push", "--quiet", "origin", "HEAD:main", cwd=work)
    return bare


def credentials_dir(path: Path, username: str = USER, password: str = PASSWORD) -> Path:
    """A directory as the rig's Secret is mounted into a pod (read-only files)."""
    path.mkdir(parents=True)
    for key, value in {"username": username, "password": password}.items():
        (path / key).write_text(value + "\n")
        (path / key).chmod(0o400)
    return path


@pytest.fixture
def creds(tmp_path: Path) -> Iterator[Credentials]:
    """The right credentials."""
    credentials = Credentials(credentials_dir(tmp_path / "creds"))
    yield credentials
    credentials.cleanup()


def commit_file(repo: Git, name: str, text: str) -> str:
    """Write, add and commit one file; return the new commit."""
    (repo.cwd / name).write_text(text)
    repo.run("add", name)
    repo.run("commit", "--quiet", "-m", f"add {name}")
    return repo.head()


def test_clone_push_and_ls_remote_with_mounted_credentials(
    server: GitServer, creds: Credentials, tmp_path: Path
) -> None:
    repo = clone(server.url("app.git"), tmp_path / "work", credentials=creds, timeout=60)
    assert (repo.cwd / "README.md").read_text() == "# app\n"
    sha = commit_file(repo, "hello.txt", "hello\n")
    repo.push("HEAD", "polecat/hello")
    assert repo.ls_remote_branch("polecat/hello") == sha
    # A compare-and-set push (what the refinery does) and a branch delete work too.
    repo.push("HEAD", "main", expect=repo.ls_remote_branch("main"))
    repo.delete_remote_branch("polecat/hello", expect=sha)
    assert repo.ls_remote_branch("polecat/hello") is None
    on_disk = server.root / "app.git"
    assert git("rev-parse", "main", cwd=on_disk).strip() == sha
    # A second clone sees what the first pushed.
    other = clone(server.url("app.git"), tmp_path / "other", credentials=creds, timeout=60)
    assert (other.cwd / "hello.txt").read_text() == "hello\n"
    # git asked without credentials first, got the challenge, then answered it as the user.
    requests = server.requests
    assert any(r.status == 401 and r.user is None for r in requests)
    pushes = [r for r in requests if r.method == "POST" and r.service == "git-receive-pack"]
    assert len(pushes) == 3
    assert all(r.status == 200 and r.user == USER for r in pushes)


def test_large_push_is_streamed_and_stored(
    server: GitServer, creds: Credentials, tmp_path: Path
) -> None:
    # Over git's 1 MiB post buffer the push body is sent with chunked transfer encoding.
    repo = clone(server.url("app.git"), tmp_path / "work", credentials=creds, timeout=60)
    blob = os.urandom(3 * 1024 * 1024)
    (repo.cwd / "blob.bin").write_bytes(blob)
    repo.run("add", "blob.bin")
    repo.run("commit", "--quiet", "-m", "blob")
    repo.push("HEAD", "main")
    stored = subprocess.run(
        ["git", "show", "main:blob.bin"], cwd=server.root / "app.git", capture_output=True
    ).stdout
    assert stored == blob


def _get_refs(server: GitServer, authorization: str | None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {"Authorization": authorization} if authorization else {}
    conn.request("GET", "/app.git/info/refs?service=git-upload-pack", headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        _basic(USER, "wrong-password"),
        _basic("someone-else", PASSWORD),
        _basic(USER, PASSWORD + "x"),
        "Basic !!!not-base64",
        "Bearer " + PASSWORD,
    ],
    ids=["none", "wrong-password", "wrong-user", "longer-password", "garbage", "bearer"],
)
def test_requests_without_the_right_credentials_get_401(
    server: GitServer, authorization: str | None
) -> None:
    response = _get_refs(server, authorization)
    assert response.status == 401
    assert response.getheader("WWW-Authenticate", "").startswith("Basic realm=")


def test_the_right_credentials_get_the_ref_advertisement(server: GitServer) -> None:
    response = _get_refs(server, _basic(USER, PASSWORD))
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/x-git-upload-pack-advertisement"


def test_git_fails_cleanly_without_or_with_wrong_credentials(
    server: GitServer, tmp_path: Path
) -> None:
    with pytest.raises(GitError) as no_creds:
        clone(server.url("app.git"), tmp_path / "a", timeout=30)
    assert "could not read Username" in str(no_creds.value)
    wrong = Credentials(credentials_dir(tmp_path / "wrong", password="not-the-password"))
    try:
        with pytest.raises(GitError) as bad:
            clone(server.url("app.git"), tmp_path / "b", credentials=wrong, timeout=30)
    finally:
        wrong.cleanup()
    assert "Authentication failed" in str(bad.value)
    assert "not-the-password" not in str(bad.value)


def test_other_methods_get_501_and_are_recorded(server: GitServer) -> None:
    auth = _basic(USER, PASSWORD).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"DELETE /app.git HTTP/1.1\r\nAuthorization: " + auth + b"\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 501")
    assert server.requests[-1] == Request("DELETE", "/app.git", 501, None)


def test_paths_outside_the_root_are_not_served(server: GitServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request(
        "GET",
        "/../app.git/info/refs?service=git-upload-pack",
        headers={"Authorization": _basic(USER, PASSWORD)},
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 404


def test_clone_of_a_repository_with_1000_commits(
    server: GitServer, creds: Credentials, tmp_path: Path
) -> None:
    bare = server.create_repository("big.git")
    stream = []
    for i in range(1000):
        message, content = f"change {i}\n", f"{i}\n"
        parent = f"from :{i}\n" if i else ""
        stream.append(
            f"commit refs/heads/main\nmark :{i + 1}\n"
            f"committer test <test@example.invalid> {1_700_000_000 + i} +0000\n"
            f"data {len(message)}\n{message}{parent}"
            f"M 644 inline file-{i % 50}.txt\ndata {len(content)}\n{content}\n"
        )
    subprocess.run(
        ["git", "fast-import", "--quiet"],
        cwd=bare,
        input="".join(stream).encode(),
        check=True,
        timeout=120,
    )
    started = time.monotonic()
    repo = clone(server.url("big.git"), tmp_path / "big", credentials=creds, timeout=120)
    elapsed = time.monotonic() - started
    assert repo.count("HEAD") == 1000
    assert (repo.cwd / "file-49.txt").read_text() == "999\n"
    print(f"clone of 1000 commits over smart HTTP: {elapsed:.2f}s")


def test_concurrent_pushes_one_wins_the_other_is_rejected(
    server: GitServer, creds: Credentials, tmp_path: Path
) -> None:
    first = clone(server.url("app.git"), tmp_path / "one", credentials=creds, timeout=60)
    second = clone(server.url("app.git"), tmp_path / "two", credentials=creds, timeout=60)
    shas = [commit_file(first, "one.txt", "1\n"), commit_file(second, "two.txt", "2\n")]
    barrier = threading.Barrier(2, timeout=30)
    errors: list[GitError | None] = [None, None]

    def push(index: int, repo: Git) -> None:
        barrier.wait()
        try:
            repo.push("HEAD", "main")
        except GitError as exc:
            errors[index] = exc

    threads = [threading.Thread(target=push, args=(i, r)) for i, r in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not any(thread.is_alive() for thread in threads)
    failed = [i for i, error in enumerate(errors) if error is not None]
    assert len(failed) == 1, errors
    loser = failed[0]
    winner = 1 - loser
    tip = git("rev-parse", "main", cwd=server.root / "app.git").strip()
    assert tip == shas[winner]
    # Rejected as not a fast-forward: by the client when its ref advertisement already showed
    # the winner's commit, or by receive-pack's compare-and-swap on the ref ("is at X but
    # expected Y") when the tip moved after the advertisement.
    message = str(errors[loser])
    assert re.search(r"rejected|cannot lock ref 'refs/heads/main': is at", message), message
    # The loser catches up and pushes again: nothing was lost.
    repo = (first, second)[loser]
    repo.fetch()
    repo.run("rebase", "--quiet", "origin/main")
    repo.push("HEAD", "main")
    files = git("ls-tree", "--name-only", "main", cwd=server.root / "app.git").split()
    assert {"one.txt", "two.txt"} <= set(files)


def test_the_operators_claim_checker_works_over_http(
    server: GitServer, creds: Credentials, tmp_path: Path
) -> None:
    url = server.url("app.git")
    work = clone(url, tmp_path / "work", credentials=creds, timeout=60)
    branch_sha = commit_file(work, "feature.txt", "feature\n")
    work.push("HEAD", "polecat/feature")
    work.run("checkout", "--quiet", "-b", "merge", "origin/main")
    work.run("merge", "--quiet", "--no-ff", "-m", "merge feature", branch_sha)
    merge_sha = work.head()
    work.push("HEAD", "main")

    checker = Git(cache_repository(tmp_path / "cache", url), credentials=creds)
    assert check_claim(checker, url, BranchClaim("app", "polecat/feature", branch_sha)).ok
    wrong = check_claim(checker, url, BranchClaim("app", "polecat/feature", "ab" * 20))
    assert not wrong.ok
    assert "not on it" in wrong.message
    merged = check_claim(checker, url, MergeClaim("app", "main", merge_sha, (branch_sha,)))
    assert merged.ok, merged.message
    missing = check_claim(checker, url, BranchClaim("app", "polecat/none", branch_sha))
    assert not missing.ok
    assert "does not exist" in missing.message

    # Without credentials the remote cannot be asked: the check is retried, never believed.
    anonymous = Git(cache_repository(tmp_path / "cache2", url))
    with pytest.raises(RemoteUnreachableError):
        check_claim(anonymous, url, BranchClaim("app", "polecat/feature", branch_sha))


def test_a_stalled_request_body_is_cut_off(tmp_path: Path) -> None:
    with GitServer(tmp_path / "srv", USER, PASSWORD, io_timeout=1.0) as srv:
        seed(srv, "app.git")
        with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as sock:
            sock.sendall(
                b"POST /app.git/git-upload-pack HTTP/1.1\r\n"
                b"Host: test\r\n"
                b"Authorization: " + _basic(USER, PASSWORD).encode() + b"\r\n"
                b"Content-Type: application/x-git-upload-pack-request\r\n"
                b"Content-Length: 100000\r\n\r\n"
                b"0032want "
            )
            started = time.monotonic()
            received = b""
            while chunk := sock.recv(4096):  # until the server closes the connection
                received += chunk
            elapsed = time.monotonic() - started
        assert elapsed < 10, f"the connection stayed open {elapsed:.1f}s"
        assert b"want" not in received


def test_an_idle_connection_is_closed(tmp_path: Path) -> None:
    with (
        GitServer(tmp_path / "srv", USER, PASSWORD, io_timeout=1.0) as srv,
        socket.create_connection(("127.0.0.1", srv.port), timeout=15) as sock,
    ):
        started = time.monotonic()
        assert sock.recv(4096) == b""
        assert time.monotonic() - started < 10


def test_a_git_operation_past_the_deadline_is_killed_with_its_hooks(
    tmp_path: Path, creds: Credentials
) -> None:
    with GitServer(tmp_path / "srv", USER, PASSWORD, request_timeout=2.0) as srv:
        bare = seed(srv, "app.git")
        pid_file = tmp_path / "hook.pid"
        hook = bare / "hooks" / "pre-receive"
        # A hook that hangs (as a stuck server-side check would).
        hook.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 300\n")
        hook.chmod(0o755)
        repo = clone(srv.url("app.git"), tmp_path / "work", credentials=creds, timeout=60)
        commit_file(repo, "x.txt", "x\n")
        started = time.monotonic()
        with pytest.raises(GitError):
            repo.push("HEAD", "main")
        assert time.monotonic() - started < 30
        hook_pid = int(
            eventually(
                lambda: pid_file.exists() and pid_file.read_text().strip(), 10, "the hook's pid"
            )
        )
        eventually(lambda: not _alive(hook_pid), 10, "the hung hook to be killed")
        assert git("log", "--format=%s", "-1", "main", cwd=bare).strip() == "initial"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (its parent, killed with it, left it to init to reap).
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("0.0.0.0:9418") == ("0.0.0.0", 9418)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    for bad in ("127.0.0.1", ":80", "host:http", "h:70000"):
        with pytest.raises(Exception, match=r"ADDR:PORT|out of range"):
            parse_listen(bad)


def test_command_line_serves_until_sigterm(tmp_path: Path, creds: Credentials) -> None:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "gastown.devtools.gitserver",
            "--root", str(tmp_path / "root"), "--listen", "127.0.0.1:0",
            "--user", USER, "--password", PASSWORD, "--create", "team/app.git",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        line = _read_line(proc, 30)
        assert line.startswith("serving "), line
        base = line.rsplit(" at ", 1)[1].strip().rstrip("/")
        url = f"{base}/team/app.git"
        repo = clone(url, tmp_path / "work", credentials=creds, timeout=60)
        commit_file(repo, "a.txt", "a\n")
        repo.push("HEAD", "main")
        assert repo.ls_remote_branch("main") == repo.head()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"no output from the git server in {timeout}s")
    return proc.stdout.readline()


def test_the_town_schema_accepts_the_servers_urls_and_rejects_git_protocol() -> None:
    url = "http://10.244.0.1:41234/t-0123456789/app.git"
    assert Rig.model_validate({"name": "app", "gitUrl": url}).git_url == url
    with pytest.raises(ValidationError):
        Rig.model_validate({"name": "app", "gitUrl": "git://127.0.0.1/app.git"})
