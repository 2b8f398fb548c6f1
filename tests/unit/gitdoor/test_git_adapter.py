"""The one door to git, against repositories on disk (no server): each command's answer, and the
parsing of git's output written once."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.errors import Transient
from reconciler.gitdoor.git import Git, GitError, batch_contents, common_git_dir, in_worktree, ls_remote


def commit(work: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    in_worktree(work, "add", "-A")
    in_worktree(work, "commit", "-q", "-m", message)
    return in_worktree(work, "rev-parse", "HEAD").strip()


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, list[str]]:
    """A bare repository whose main has three commits, the second adding a symlink."""
    work = tmp_path / "work"
    work.mkdir()
    in_worktree(work, "init", "-q", "-b", "main")
    first = commit(work, {"a.yaml": "a: 1\n", "dir/b.txt": "b\n"}, "first")
    os.symlink("a.yaml", work / "link.yaml")
    second = commit(work, {"a.yaml": "a: 2\n"}, "second")
    third = commit(work, {"c.txt": "c\n"}, "third")
    bare = tmp_path / "bare.git"
    in_worktree(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    return bare, [first, second, third]


def test_a_new_directory_becomes_a_bare_repository(tmp_path: Path) -> None:
    repo = Git(tmp_path / "cache")
    assert (tmp_path / "cache" / "HEAD").is_file() and Path(repo.git_dir) == tmp_path / "cache"
    repo.close()


def test_commits_ancestry_and_walks(history: tuple[Path, list[str]]) -> None:
    bare, (first, second, third) = history
    repo = Git(bare)
    assert repo.resolve_commit("main") == third
    assert repo.has_commit(first) and not repo.has_commit("0" * 40)
    assert repo.first_parents(third, 1) == [third, second]
    assert repo.is_ancestor(first, third) and not repo.is_ancestor(third, first)
    assert repo.log("--format=%s", "main").split("\n") == ["third", "second", "first"]
    walked = repo.log_bytes("-z", "--format=%H", "main").split(b"\0")
    assert walked == [third.encode(), second.encode(), first.encode(), b""]
    assert repo.commit_info(first).message.strip() == "first"
    with pytest.raises(GitError):
        repo.resolve_commit("no-such-branch")
    repo.close()


def test_log_leaves_the_users_git_config_out(history: tuple[Path, list[str]], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "user-gitconfig"
    config.write_text("[core]\n\tabbrev = 20\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    bare, _ = history
    assert len(in_worktree(bare, "log", "-1", "--format=%h").strip()) == 20  # git itself reads it
    repo = Git(bare)
    assert len(repo.log("-1", "--format=%h", "main").strip()) < 20
    repo.close()


def test_regular_files_leave_symlinks_out_and_objects_read_one_or_many(
        history: tuple[Path, list[str]]) -> None:
    bare, (_, second, _) = history
    repo = Git(bare)
    files = dict(repo.regular_files(second))
    assert sorted(files) == ["a.yaml", "dir/b.txt"]
    assert repo.read_object(files["a.yaml"]) == b"a: 2\n"
    assert repo.read_object(f"{second}:dir/b.txt") == b"b\n"
    assert repo.read_objects([files["dir/b.txt"], "0" * 40, f"{second}:a.yaml"]) == [b"b\n", None, b"a: 2\n"]
    assert repo.read_objects([]) == []
    assert repo.present([files["a.yaml"], "1" * 40]) == {files["a.yaml"]}
    with pytest.raises(ValueError):
        repo.read_object("0" * 40)
    repo.close()


def test_a_blob_streams_through_a_pipe_and_a_missing_one_is_refused(history: tuple[Path, list[str]]) -> None:
    bare, (first, _, _) = history
    repo = Git(bare)
    blob = dict(repo.regular_files(first))["a.yaml"]
    with repo.stream_blob(blob, "a.yaml") as fd:
        assert os.read(fd, 100) == b"a: 1\n"
    with pytest.raises(Transient, match="missing.yaml") as refused, repo.stream_blob("0" * 40, "missing.yaml"):
        pass
    assert refused.value.reason == "SourceCacheCorrupt"
    repo.close()


def test_a_written_commit_moves_a_ref_only_when_asked(history: tuple[Path, list[str]]) -> None:
    bare, _ = history
    repo = Git(bare)
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    made = repo.write_commit([("status.json", b"{}\n")], "s1: ok\n", None, ("agent", "s1@example"), when)
    ref = "refs/reconciler/status/s1"
    assert repo.ref_tip(ref) is None
    repo.update_ref(ref, made)
    child = repo.write_commit([("status.json.sig", b"sig\n"), ("status.json", b"{ }\n")], "s1: ok again\n", made,
                              ("agent", "s1@example"), when)
    repo.update_ref(ref, child)
    assert repo.ref_tip(ref) == child and repo.first_parents(child, 5) == [child, made]
    assert repo.read_object(f"{child}:status.json.sig") == b"sig\n"  # files in any order, the tree in git's
    assert repo.read_object(f"{child}:status.json") == b"{ }\n"
    assert repo.for_each_ref("refs/reconciler/status/", "%(refname) %(objectname)") == [f"{ref} {child}"]
    assert repo.commit_info(made).date == when and repo.commit_info(made).author == "agent <s1@example>"
    repo.delete_ref(ref)
    assert repo.ref_tip(ref) is None and repo.for_each_ref("refs/reconciler/status/", "%(refname)") == []
    repo.close()


def test_fetch_ls_remote_and_push_against_a_repository_on_disk(
        history: tuple[Path, list[str]], tmp_path: Path) -> None:
    bare, (first, _, third) = history
    assert ls_remote(str(bare), "refs/heads/main", 30) == f"{third}\trefs/heads/main"
    cache = Git(tmp_path / "cache")
    cache.fetch(str(bare), "+refs/heads/main:refs/remotes/origin/main", timeout=30)
    assert cache.resolve_commit("refs/remotes/origin/main") == third
    status, _, _ = cache.push(str(bare), [f"{first}:refs/reconciler/status/s1"], 30)
    assert status == 0 and Git(bare).ref_tip("refs/reconciler/status/s1") == first
    status, out, _ = cache.push(str(bare), [f"{first}:refs/heads/main"], 30)  # not a fast-forward
    assert status != 0 and "[rejected]" in out
    with pytest.raises(GitError):
        cache.fetch(str(bare), "refs/heads/nowhere:refs/heads/nowhere", timeout=30)
    cache.close()


def test_config_values_and_merges(history: tuple[Path, list[str]], tmp_path: Path) -> None:
    bare, (first, second, third) = history
    repo = Git(bare)
    assert repo.config_value('remote "mirror"', "url") is None
    repo.set_config("remote.mirror.url", "https://example.com/fleet.git")
    assert repo.config_value('remote "mirror"', "url") == "https://example.com/fleet.git"
    assert repo.merge_tree(second, third) == repo.log("-1", "--format=%T", third)
    repo.close()


def test_merge_tree_of_conflicting_parents_fails_with_status_1(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    in_worktree(work, "init", "-q", "-b", "main")
    commit(work, {"a": "base\n"}, "base")
    in_worktree(work, "checkout", "-q", "-b", "side")
    side = commit(work, {"a": "side\n"}, "side")
    in_worktree(work, "checkout", "-q", "main")
    main = commit(work, {"a": "main\n"}, "main")
    repo = Git(common_git_dir(work))
    with pytest.raises(GitError) as failed:
        repo.merge_tree(main, side)
    assert failed.value.status == 1
    repo.close()


def test_a_directory_outside_any_repository_is_no_git_dir(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(Exception) as failed:
        common_git_dir(tmp_path / "plain")
    assert b"not a git repository" in failed.value.stderr


@pytest.mark.parametrize(("output", "count", "contents"), [
    (b"", 0, []),
    (b"abc blob 3\nxyz\n", 1, [b"xyz"]),
    (b"abc blob 0\n\n", 1, [b""]),
    (b"abc missing\nd blob 2\n\n\n\n", 2, [None, b"\n\n"]),  # contents may hold newlines
    (b"x:y ambiguous\nabc blob 1\nz\n", 2, [None, b"z"]),
])
def test_batch_contents_splits_cat_file_output(output: bytes, count: int,
                                               contents: list[bytes | None]) -> None:
    assert list(batch_contents(output, count)) == contents
