from __future__ import annotations

import os
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SEED_FILES

from reconciler.devtools.githttp import GitHttpServer, init_bare_repo, run_git
from reconciler.devtools.testing import FleetRemote, write_tree
from reconciler.errors import Stalled, Transient
from reconciler.gitdoor.source import GitSource
from reconciler.manifests.loader import DocumentCache, RepoFile, load_tree


@pytest.fixture
def source(fleet_remote: FleetRemote, tmp_path: Path) -> Iterator[GitSource]:
    with GitSource(fleet_remote.url, "main", tmp_path / "cache") as source:
        yield source


def head(fleet_remote: FleetRemote) -> str:
    return run_git(fleet_remote.clone, "rev-parse", "HEAD")


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/fleet.git"


def test_remote_head_is_the_pushed_commit(fleet_remote: FleetRemote, source: GitSource) -> None:
    assert source.remote_head() == head(fleet_remote)
    pushed = fleet_remote.commit_and_push({"README.md": "changed\n"})
    assert source.remote_head() == pushed


def test_remote_head_ignores_refs_that_only_end_like_the_branch(
    fleet_remote: FleetRemote, source: GitSource
) -> None:
    # ls-remote matches patterns on the tail, so refs/heads/x/main would also answer "main".
    run_git(fleet_remote.clone, "push", "--quiet", "origin", "HEAD:refs/heads/x/main")
    fleet_remote.commit_and_push({"README.md": "moved on\n"})
    assert source.remote_head() == head(fleet_remote)


def test_unknown_branch_stalls(fleet_remote: FleetRemote, tmp_path: Path) -> None:
    with GitSource(fleet_remote.url, "no-such-branch", tmp_path / "cache") as source:
        with pytest.raises(Stalled) as remote_check:
            source.remote_head()
        with pytest.raises(Stalled) as fetch:
            source.fetch()
    assert remote_check.value.reason == fetch.value.reason == "BranchNotFound"


@pytest.mark.parametrize("where", ["server down", "repository missing"])
def test_unreachable_remote_is_transient(git_http, tmp_path: Path, where: str) -> None:
    url = closed_port_url() if where == "server down" else git_http.url("missing")
    with GitSource(url, "main", tmp_path / "cache", timeout=10) as source:
        with pytest.raises(Transient) as remote_check:
            source.remote_head()
        with pytest.raises(Transient) as fetch:
            source.fetch()
    assert remote_check.value.reason == "SourceUnreachable"
    assert fetch.value.reason == "SourceFetchFailed"
    assert url in remote_check.value.message


def test_fetch_then_files_lists_blob_ids_and_reads_contents(fleet_remote: FleetRemote, source: GitSource) -> None:
    sha = fleet_remote.commit_and_push({"deployments/fraud.yaml": "kind: Deployment\n", "README.md": None})

    assert source.fetch(sha) == sha
    files = {f.path: f for f in source.files(sha)}

    assert sorted(files) == ["deployments/fraud.yaml", "models/weights.bin", "sites/store-1.yaml"]
    for path, file in files.items():
        assert file.key == run_git(fleet_remote.clone, "rev-parse", f"{sha}:{path}")
        assert file.read() == (fleet_remote.clone / path).read_bytes()


def test_read_blobs_reads_many_blobs_at_once(fleet_remote: FleetRemote, source: GitSource) -> None:
    sha = source.fetch(fleet_remote.commit_and_push({"sites/empty.yaml": "", "sites/copy.yaml": "kind: Site\n"}))
    files = source.files(sha)
    keys = [f.key for f in files]

    contents = source.read_blobs([*keys, keys[0]])  # asking twice for one blob is harmless

    assert contents == {f.key: f.read() for f in files}
    assert contents[run_git(fleet_remote.clone, "rev-parse", f"{sha}:sites/empty.yaml")] == b""
    assert source.read_blobs([]) == {}


@pytest.mark.parametrize("blob", ["0" * 40, "no-such-object", "two words"])
def test_read_blobs_refuses_what_the_cache_lacks(source: GitSource, blob: str) -> None:
    sha = source.fetch()
    present = source.files(sha)[0].key
    with pytest.raises(Transient) as refused:
        source.read_blobs([present, blob])
    assert refused.value.reason == "SourceCacheCorrupt"
    assert blob in refused.value.message


def site(name: str, region: str) -> str:
    return f"apiVersion: reconciler/v1\nkind: Site\nmetadata:\n  name: {name}\n  labels: {{region: {region}}}\n"


def test_a_load_reads_its_cache_misses_in_one_batch(fleet_remote: FleetRemote, source: GitSource) -> None:
    first = source.fetch(fleet_remote.commit_and_push({"sites/store-1.yaml": site("store-1", "eu"),
                                                       "sites/store-2.yaml": site("store-2", "eu")}))
    second = source.fetch(fleet_remote.commit_and_push({"sites/store-2.yaml": site("store-2", "us")}))
    batches: list[list[str]] = []

    def batched_only(files: list[RepoFile]) -> list[RepoFile]:
        """The files as files() lists them, with their shared bulk reader logged and no single reads."""
        bulk_readers = {f.read_many for f in files}
        assert len(bulk_readers) == 1 and None not in bulk_readers
        bulk = bulk_readers.pop()

        def read_many(keys: list[str]) -> dict[str, bytes]:
            batches.append(keys)
            return bulk(keys)

        def no_single_reads() -> bytes:
            raise AssertionError("a file was read on its own")

        return [RepoFile(f.path, f.key, no_single_reads, read_many) for f in files]

    cache = DocumentCache()
    assert load_tree(batched_only(source.files(first)), cache).findings == []
    loaded = load_tree(batched_only(source.files(second)), cache)

    assert loaded.repo.sites["store-2"].metadata.labels == {"region": "us"}
    first_keys = {f.path: f.key for f in source.files(first)}
    second_keys = {f.path: f.key for f in source.files(second)}
    assert batches == [[first_keys["sites/store-1.yaml"], first_keys["sites/store-2.yaml"]],
                       [second_keys["sites/store-2.yaml"]]]


def test_files_leaves_out_symlinks(fleet_remote: FleetRemote, source: GitSource) -> None:
    os.symlink("README.md", fleet_remote.clone / "link.md")
    sha = fleet_remote.commit_and_push({}, "add a symlink")
    source.fetch(sha)
    assert "link.md" not in {f.path for f in source.files(sha)}


def test_fetch_of_a_cached_commit_needs_no_network(fleet_remote: FleetRemote, source: GitSource) -> None:
    sha = source.fetch()
    fleet_remote.server.stop()
    assert source.fetch(sha) == sha
    with pytest.raises(Transient):
        source.fetch("0" * 40)


def test_fetch_returns_the_newer_head_when_the_branch_moved(fleet_remote: FleetRemote, source: GitSource) -> None:
    seen = source.remote_head()
    moved = fleet_remote.commit_and_push({"README.md": "moved\n"})
    assert source.fetch(seen) == moved


def test_is_ancestor_follows_history_and_sees_a_rewrite(fleet_remote: FleetRemote, source: GitSource) -> None:
    first = head(fleet_remote)
    second = fleet_remote.commit_and_push({"README.md": "two\n"})
    source.fetch(second)
    run_git(fleet_remote.clone, "reset", "--quiet", "--hard", first)
    rewritten = fleet_remote.commit_and_push({"README.md": "rewritten\n"}, force=True)
    assert source.fetch() == rewritten

    cases = [
        (first, second, True),
        (second, first, False),
        (second, second, True),
        (first, rewritten, True),
        (second, rewritten, False),  # the force push dropped `second`
        ("0123456789" * 4, rewritten, False),  # never seen: not in the fetched history
    ]
    assert [(old, new, source.is_ancestor(old, new)) for old, new, _ in cases] == cases


def test_first_parents_follow_the_branch_not_what_was_merged_into_it(fleet_remote: FleetRemote,
                                                                     source: GitSource) -> None:
    first = head(fleet_remote)
    run_git(fleet_remote.clone, "checkout", "--quiet", "-b", "topic")
    topic = fleet_remote.commit_and_push({"topic.md": "on a branch\n"}, message="topic")
    run_git(fleet_remote.clone, "checkout", "--quiet", "main")
    run_git(fleet_remote.clone, "reset", "--quiet", "--hard", first)
    second = fleet_remote.commit_and_push({"README.md": "two\n"}, force=True)
    run_git(fleet_remote.clone, "merge", "--quiet", "--no-ff", "-m", "merge topic", "topic")
    merge = fleet_remote.commit_and_push({"README.md": "three\n"}, message="after the merge")
    source.fetch()

    history = source.first_parents(merge, 10)
    assert history[:2] == [merge, run_git(fleet_remote.clone, "rev-parse", "HEAD~1").strip()]
    assert second in history and first in history and topic not in history
    assert source.first_parents(merge, 1) == history[:2]


def test_is_ancestor_refuses_an_unfetched_new_commit(source: GitSource) -> None:
    source.fetch()
    with pytest.raises(ValueError, match="fetch it first"):
        source.is_ancestor(source.remote_head(), "0123456789" * 4)


def read_path(source: GitSource, commit: str, path: str) -> bytes:
    with source.tree(commit).open_file(path, timeout=30) as fd:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    return b"".join(chunks)


def absent_blobs(cache: Path) -> set[str]:
    """The blobs of the cache's commits that it does not hold (asked without fetching them)."""
    listing = run_git(None, "--git-dir", str(cache), "rev-list", "--objects", "--all", "--missing=print")
    return {line[1:] for line in listing.splitlines() if line.startswith("?")}


def blob_of(fleet_remote: FleetRemote, commit: str, path: str) -> str:
    return run_git(fleet_remote.clone, "rev-parse", f"{commit}:{path}")


def test_tree_reads_files_by_path_following_links_inside_it(fleet_remote: FleetRemote, source: GitSource) -> None:
    (fleet_remote.clone / "models/v1").mkdir()
    os.symlink("v1", fleet_remote.clone / "models/current")
    os.symlink("../weights.bin", fleet_remote.clone / "models/v1/model.bin")
    os.symlink("models/current/model.bin", fleet_remote.clone / "latest.bin")
    sha = source.fetch(fleet_remote.commit_and_push({}, "links inside the tree"))
    weights = (fleet_remote.clone / "models/weights.bin").read_bytes()

    for path in ["models/weights.bin", "models/current/model.bin", "latest.bin", "models/../models/./weights.bin",
                 "models/current/../weights.bin"]:
        assert read_path(source, sha, path) == weights, path
    assert read_path(source, sha, "sites/store-1.yaml") == (fleet_remote.clone / "sites/store-1.yaml").read_bytes()


@pytest.mark.parametrize(("path", "reason"), [
    ("models/nothing.bin", "ArtifactNotFound"),
    ("models", "ArtifactNotFound"),  # a directory
    ("models/weights.bin/inside", "ArtifactNotFound"),  # a file used as a directory
    ("../fleet.git/config", "ArtifactPathEscapes"),
    ("models/../../x", "ArtifactPathEscapes"),
])
def test_tree_refuses_what_is_no_file_of_the_commit(source: GitSource, path: str, reason: str) -> None:
    sha = source.fetch()
    with pytest.raises(Stalled) as refused:
        read_path(source, sha, path)
    assert refused.value.reason == reason
    assert path in refused.value.message


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside.onnx", "../../../../../../etc/passwd", "escape.onnx"],
                         ids=["absolute", "relative", "far", "loop"])
def test_tree_refuses_a_symlink_out_of_the_tree(fleet_remote: FleetRemote, source: GitSource, target: str) -> None:
    os.symlink(target, fleet_remote.clone / "models/escape.onnx")
    bad = source.fetch(fleet_remote.commit_and_push({}, "point outside"))

    with pytest.raises(Stalled) as refused:
        read_path(source, bad, "models/escape.onnx")

    assert refused.value.reason == "UnsafeRepoPath"
    assert "models/escape.onnx" in refused.value.message
    # The link spoils nothing else: the commit's other files still read.
    assert read_path(source, bad, "models/weights.bin") == (fleet_remote.clone / "models/weights.bin").read_bytes()


def test_tree_of_an_unfetched_commit_is_refused(source: GitSource) -> None:
    source.fetch()
    with pytest.raises(ValueError, match="fetch it first"):
        source.tree("0123456789" * 4)


def test_a_partial_clone_fetches_a_blob_only_when_it_is_read(fleet_remote: FleetRemote, source: GitSource) -> None:
    sha = source.fetch(fleet_remote.commit_and_push({"models/other.bin": b"another site's model"}))
    blobs = {path: blob_of(fleet_remote, sha, path)
             for path in ["README.md", "sites/store-1.yaml", "models/weights.bin", "models/other.bin"]}
    assert absent_blobs(source.cache_dir) == set(blobs.values())  # commits and trees, no blob

    source.read_blobs([blobs["sites/store-1.yaml"]])
    read_path(source, sha, "models/weights.bin")

    assert absent_blobs(source.cache_dir) == {blobs["README.md"], blobs["models/other.bin"]}
    sent = fleet_remote.server.bytes_sent
    assert read_path(source, sha, "models/weights.bin") == b"\x00\x01\x02\xff"
    assert fleet_remote.server.bytes_sent == sent  # read again from the cache


def test_a_load_fetches_its_missing_blobs_in_one_request(fleet_remote: FleetRemote, source: GitSource) -> None:
    sha = source.fetch(fleet_remote.commit_and_push({f"sites/store-{n}.yaml": site(f"store-{n}", "eu")
                                                     for n in range(2, 12)}))
    requests = fleet_remote.server.requests

    loaded = load_tree(source.files(sha), DocumentCache())

    assert loaded.files == 11 and len(loaded.repo.sites) == 10  # the seed's store-1 has no apiVersion
    # One fetch: the capabilities and the one batch of wants (protocol v2 over HTTP).
    assert fleet_remote.server.requests - requests == 2


def test_a_server_that_refuses_filters_sends_everything_and_the_site_works(tmp_path: Path) -> None:
    with GitHttpServer(tmp_path / "srv", allow_filter=False) as server:
        init_bare_repo(server.root, "fleet", write_tree(tmp_path / "seed", SEED_FILES))
        with GitSource(server.url("fleet"), "main", tmp_path / "cache") as source:
            sha = source.fetch()
            assert absent_blobs(source.cache_dir) == set()  # a full fetch, as before partial clones
            server.stop()  # everything is local: no read needs the server
            assert read_path(source, sha, "models/weights.bin") == SEED_FILES["models/weights.bin"]
            assert {f.path: f.read() for f in source.files(sha)}["README.md"] == SEED_FILES["README.md"].encode()


def test_a_blob_the_remote_lacks_is_refused_as_a_corrupt_cache(fleet_remote: FleetRemote, source: GitSource) -> None:
    source.fetch()
    with pytest.raises(Transient) as refused:
        source.fetch_missing(["0123456789" * 4])
    assert refused.value.reason == "SourceCacheCorrupt"


def test_a_blob_fetch_that_does_not_finish_in_time_is_stopped(fleet_remote: FleetRemote, source: GitSource) -> None:
    sha = source.fetch()
    with socket.socket() as silent:  # takes the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        run_git(None, "--git-dir", str(source.cache_dir), "config", "remote.origin.url",
                f"http://127.0.0.1:{silent.getsockname()[1]}/fleet.git")
        started = time.monotonic()
        with pytest.raises(Transient) as stopped, source.tree(sha).open_file("models/weights.bin", timeout=1):
            pass
    assert stopped.value.reason == "SourceFetchFailed" and "not done in 1s" in stopped.value.message
    assert time.monotonic() - started < 10


def test_blobs_cannot_be_fetched_from_a_server_that_is_gone(fleet_remote: FleetRemote, source: GitSource) -> None:
    sha = source.fetch()
    fleet_remote.server.stop()
    with pytest.raises(Transient) as unreachable:
        read_path(source, sha, "models/weights.bin")
    assert unreachable.value.reason == "SourceFetchFailed"
    assert fleet_remote.url in unreachable.value.message


def test_commit_info(fleet_remote: FleetRemote, source: GitSource) -> None:
    sha = source.fetch(fleet_remote.commit_and_push({"README.md": "x\n"}, "Roll fraud to 1.1.0"))
    info = source.commit_info(sha)
    assert info.author == info.committer == "reconciler demo <demo@localhost>"
    assert info.message == "Roll fraud to 1.1.0\n"
    assert info.date.tzinfo is not None


def test_remote_head_cost_against_bare_ls_remote(fleet_remote: FleetRemote, source: GitSource) -> None:
    """The no-op reconcile budget is 1.5x a bare ls-remote; bench/ asserts it, this prints it."""
    bare_cmd = ["git", "ls-remote", fleet_remote.url, "refs/heads/main"]

    def median_seconds(call) -> float:
        samples = []
        for _ in range(20):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    bare = median_seconds(lambda: subprocess.run(bare_cmd, check=True, capture_output=True))
    ours = median_seconds(source.remote_head)
    listed = subprocess.run(bare_cmd, check=True, capture_output=True, text=True).stdout
    assert listed.split("\t")[0] == source.remote_head()
    print(f"\nremote_head {ours * 1000:.1f} ms, bare git ls-remote {bare * 1000:.1f} ms, ratio {ours / bare:.2f}")
