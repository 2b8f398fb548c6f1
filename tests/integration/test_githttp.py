from __future__ import annotations

import gzip
import http.client
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from reconciler.devtools.githttp import GitHttpServer, init_bare_repo, run_git

if TYPE_CHECKING:
    from reconciler.devtools.testing import FleetRemote

LS_REFS_REQUEST = b"0014command=ls-refs\n0000"  # protocol v2 pkt-lines: one command, then flush


def test_clone_push_and_ls_remote_round_trip(fleet_remote: FleetRemote, tmp_path: Path) -> None:
    pushed = fleet_remote.commit_and_push({"sites/store-2.yaml": "name: store-2\n"}, "add store-2")

    assert run_git(None, "ls-remote", fleet_remote.url, "refs/heads/main") == f"{pushed}\trefs/heads/main"
    clone = tmp_path / "second"
    run_git(None, "clone", "--quiet", fleet_remote.url, str(clone))
    assert (clone / "sites/store-2.yaml").read_text() == "name: store-2\n"
    assert (clone / "models/weights.bin").read_bytes() == (fleet_remote.clone / "models/weights.bin").read_bytes()


def test_push_larger_than_post_buffer_arrives_whole(fleet_remote: FleetRemote, tmp_path: Path) -> None:
    # git sends request bodies over http.postBuffer (1 MiB) with chunked transfer encoding.
    payload = os.urandom(3 * 1024 * 1024)
    fleet_remote.commit_and_push({"models/big.onnx": payload}, "big model")

    clone = tmp_path / "second"
    run_git(None, "clone", "--quiet", fleet_remote.url, str(clone))
    assert (clone / "models/big.onnx").read_bytes() == payload


def _post_upload_pack(url: str, body: bytes, headers: dict[str, str], chunked: bool) -> tuple[int, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        chunks = (body[i:i + 7] for i in range(0, len(body), 7)) if chunked else body
        connection.request("POST", parts.path + "/git-upload-pack", body=chunks, encode_chunked=chunked,
                           headers={"Content-Type": "application/x-git-upload-pack-request",
                                    "Git-Protocol": "version=2", **headers})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    "encoding, chunked",
    [("identity", False), ("gzip", False), ("identity", True), ("gzip", True)],
)
def test_request_bodies_reach_the_backend_decoded(fleet_remote: FleetRemote, encoding: str, chunked: bool) -> None:
    body = gzip.compress(LS_REFS_REQUEST) if encoding == "gzip" else LS_REFS_REQUEST
    headers = {"Content-Encoding": "gzip"} if encoding == "gzip" else {}
    head = run_git(fleet_remote.clone, "rev-parse", "HEAD")

    status, answer = _post_upload_pack(fleet_remote.url, body, headers, chunked)

    assert status == 200
    assert f"{head} refs/heads/main".encode() in answer


def test_unknown_repository_is_not_found(git_http: GitHttpServer) -> None:
    parts = urlsplit(git_http.url("missing"))
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("GET", parts.path + "/info/refs?service=git-upload-pack")
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status == 404


def test_stop_closes_the_port_and_leaves_no_thread(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    server = GitHttpServer(tmp_path).start()
    init_bare_repo(tmp_path, "fleet")
    run_git(None, "ls-remote", server.url("fleet"))

    server.stop()

    assert set(threading.enumerate()) == before
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass


def test_init_bare_repo_commits_the_source_directory_to_main(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "nested").mkdir(parents=True)
    (source / "nested/a.txt").write_text("a\n")
    (source / "b.txt").write_text("b\n")

    bare = init_bare_repo(tmp_path / "srv", "fleet", source)

    assert bare == (tmp_path / "srv/fleet.git").resolve()
    listing = run_git(None, "--git-dir", str(bare), "ls-tree", "-r", "--name-only", "main").splitlines()
    assert listing == ["b.txt", "nested/a.txt"]
    author = run_git(None, "--git-dir", str(bare), "log", "-1", "--format=%an <%ae>|%cn <%ce>", "main")
    assert author == "reconciler demo <demo@localhost>|reconciler demo <demo@localhost>"


def test_init_bare_repo_without_source_is_empty(tmp_path: Path) -> None:
    bare = init_bare_repo(tmp_path, "empty")
    assert run_git(None, "--git-dir", str(bare), "for-each-ref") == ""
    assert run_git(None, "--git-dir", str(bare), "symbolic-ref", "HEAD") == "refs/heads/main"
