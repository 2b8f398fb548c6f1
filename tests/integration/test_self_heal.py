"""Git's own words, and an agent that heals what a killed run left: stale git locks in its cache,
temp state files, staging trees and validation directories. Real git remote, real agent."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from reconciler.agent.loop import Agent
from reconciler.agent.wiring import build_agent
from reconciler.devtools.githttp import init_bare_repo
from reconciler.devtools.processes import free_port, stop_all
from reconciler.devtools.testing import EXAMPLE, copy_example, git
from reconciler.errors import Stalled, Transient
from reconciler.gitdoor.source import describe_git_failure, git_words
from reconciler.runtime.validation import WORKDIR_PREFIX
from reconciler.settings import SiteConfig
from reconciler.status.gitref import StatusRefs, status_ref

SITE = "store-boston-01"

DUBIOUS = """fatal: detected dubious ownership in repository at '/srv/fleet.git'
To add an exception for this directory, call:

\tgit config --global --add safe.directory /srv/fleet.git
fatal: Could not read from remote repository.

Please make sure you have the correct access rights
and the repository exists.
"""
LOCKED = """error: cannot lock ref 'refs/reconciler/status/a': Unable to create '/c/refs/reconciler/status/a.lock': File exists.

Another git process seems to be running in this repository, e.g.
an editor opened by 'git commit'. Please make sure all processes
are terminated then try again. If it still fails, a git process
may have crashed in this repository earlier:
remove the file manually to continue.
"""


@pytest.mark.parametrize(("stderr", "words"), [
    (DUBIOUS, "fatal: detected dubious ownership in repository at '/srv/fleet.git'; "
              "fatal: Could not read from remote repository."),
    (LOCKED, "error: cannot lock ref 'refs/reconciler/status/a': Unable to create "
             "'/c/refs/reconciler/status/a.lock': File exists."),
    ("remote: error: denied by policy\nerror: failed to push some refs to 'x'\n",
     "remote: error: denied by policy; error: failed to push some refs to 'x'"),
    ("warning: something\nno prefix on the last line\n", "no prefix on the last line"),
    ("fatal: same\nfatal: same\n", "fatal: same"),
])
def test_git_words_keep_every_fatal_and_error_line(stderr, words):
    assert git_words(stderr) == words


@pytest.mark.parametrize(("words", "access", "reason", "advice"), [
    (git_words(DUBIOUS), "read", "DubiousOwnership", "safe.directory"),
    ("error: remote unpack failed: unable to create temporary object directory", "write to",
     "PermissionDenied", "may not write to this repository"),
    ("fatal: unable to access 'https://h/f.git/': The requested URL returned error: 403", "read",
     "PermissionDenied", "may not read this repository"),
    ("git@h: Permission denied (publickey).", "read", "PermissionDenied", "credentials"),
    (git_words(LOCKED), "read", "StatusFetchFailed", "File exists"),
])
def test_access_problems_are_named_with_what_to_do(words, access, reason, advice):
    error = describe_git_failure(words, "git fetch x", "StatusFetchFailed", access=access)
    assert isinstance(error, Transient) and error.reason == reason
    assert words in error.message and advice in error.message


def make_agent(fleet, tmp_path) -> Agent:
    config = SiteConfig(site=SITE, repo=fleet.url, state=tmp_path / "state", interval="1s",
                        trust_keys=[EXAMPLE / "keys" / "demo.pub"])
    agent = build_agent(config, None)
    agent.start()
    return agent


def remote_record(fleet):
    return StatusRefs(_remote_source(fleet)).read_own(SITE)


def _remote_source(fleet):
    from reconciler.gitdoor.source import GitSource

    return GitSource(fleet.url, "main", fleet.bare.parent / "reader.git")


GIT_LOCKS = [f"refs/reconciler/status/{SITE}.lock", "refs/remotes/origin/main.lock", "packed-refs.lock",
             "index.lock", "HEAD.lock", "objects/maintenance.lock"]


@pytest.mark.parametrize("lock", GIT_LOCKS)
def test_a_run_killed_while_git_held_a_lock_does_not_stop_the_next(fleet, tmp_path, lock, caplog):
    agent = make_agent(fleet, tmp_path)
    assert agent.reconcile_once().record.state == "success"
    agent.stop()  # what kill -9 left, as git and the agent would have left it:
    cache = tmp_path / "state" / "cache"
    (cache / "fleet.git" / lock).write_text("")
    (tmp_path / "state" / ".state.json.k1ll3d.tmp").write_text("{")
    (cache / ".tree.k1ll3d" / "models").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    validation = tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{dead.pid}-")
    other_agent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    running = tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{other_agent.pid}-")  # another site's, validating now
    fleet.bump("deployments/demand-forecast.yaml", "1.0.0", "1.1.0")
    fleet.push("bump")

    with caplog.at_level(logging.INFO, logger="reconciler"):
        restarted = make_agent(fleet, tmp_path)
    result = restarted.reconcile_once()
    restarted.stop()

    assert result.error is None and result.record.state == "success"
    assert result.record.deployments["demand-forecast"].activeVersion == "1.1.0"
    assert remote_record(fleet).deployments["demand-forecast"].activeVersion == "1.1.0"
    assert not (cache / "fleet.git" / lock).exists()
    assert f"removed {cache / 'fleet.git' / lock}" in caplog.text
    assert not (tmp_path / "state" / ".state.json.k1ll3d.tmp").exists()
    assert not (cache / ".tree.k1ll3d").exists() and not os.path.exists(validation)
    assert os.path.isdir(running)
    other_agent.kill()
    other_agent.wait()
    os.rmdir(running)


def test_a_stale_status_ref_lock_with_a_current_ref_is_removed_not_fatal(fleet, tmp_path, caplog):
    agent = make_agent(fleet, tmp_path)
    agent.reconcile_once()
    fleet.bump("deployments/demand-forecast.yaml", "1.0.0", "1.1.0")
    fleet.push("bump")
    lock = tmp_path / "state" / "cache" / "fleet.git" / (status_ref(SITE) + ".lock")
    lock.write_text("")  # the local ref is current: the write pushes, then updates the locked ref

    with caplog.at_level(logging.WARNING, logger="reconciler"):
        failed = agent.reconcile_once()
    assert isinstance(failed.error, Transient) and failed.error.reason == "GitCommandFailed"
    assert "cannot lock ref" in failed.error.message and not lock.exists()
    assert "a lock a killed git left" in caplog.text
    healed = agent.reconcile_once()
    agent.stop()
    assert healed.error is None and healed.record.state == "success"
    record = remote_record(fleet)
    assert (record.state, record.deployments["demand-forecast"].activeVersion) == ("success", "1.1.0")


def test_a_corrupt_cache_is_rebuilt_from_the_remote(fleet, tmp_path, caplog):
    agent = make_agent(fleet, tmp_path)
    agent.reconcile_once()
    fleet.bump("deployments/demand-forecast.yaml", "1.0.0", "1.1.0")
    head = fleet.push("bump")
    objects = tmp_path / "state" / "cache" / "fleet.git" / "objects"
    for pack in (objects / "pack").glob("*"):
        pack.unlink()
    for loose in objects.glob("??/*"):
        loose.write_bytes(b"garbage")

    with caplog.at_level(logging.WARNING, logger="reconciler"):
        failed = agent.reconcile_once()
    assert failed.error is not None and failed.error.reason == "SourceCacheCorrupt", failed.error
    assert "rebuilds it from" in caplog.text
    healed = agent.reconcile_once()
    agent.stop()
    assert healed.error is None and healed.record.observedCommit == head
    assert healed.record.deployments["demand-forecast"].activeVersion == "1.1.0"


def test_a_stalled_error_is_not_mistaken_for_a_repair(fleet, tmp_path):
    agent = make_agent(fleet, tmp_path)
    agent.reconcile_once()
    (fleet.clone / "deployments" / "broken.yaml").write_text("apiVersion: nope\n")
    head = fleet.push("broken")
    result = agent.reconcile_once()
    agent.stop()
    assert isinstance(result.error, Stalled) and agent.reconciled_head == head


def test_kill_9_while_git_holds_its_locks_then_the_next_start_converges(fleet, tmp_path):
    state = tmp_path / "state"
    command = [sys.executable, "-m", "reconciler", "run", "--repo", fleet.url, "--site", SITE, "--state", str(state),
               "--trust-key", str(EXAMPLE / "keys" / "demo.pub")]
    agent = subprocess.Popen([*command, "--interval", "200ms"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (remote_record(fleet) or None) and remote_record(fleet).state == "success")
    finally:
        agent.kill()
        agent.wait()
    cache = state / "cache" / "fleet.git"
    for lock in GIT_LOCKS:  # what git leaves when it dies holding each of its locks
        (cache / lock).write_text("")
    (state / ".state.json.k1ll3d.tmp").write_text("{")
    fleet.bump("deployments/demand-forecast.yaml", "1.0.0", "1.1.0")
    fleet.push("bump")

    restarted = subprocess.run([*command, "--once"], capture_output=True, text=True, timeout=120)
    assert restarted.returncode == 0, restarted.stderr
    assert all(f"removed {cache / lock}: a lock a killed git left" in restarted.stderr for lock in GIT_LOCKS)
    assert remote_record(fleet).deployments["demand-forecast"].activeVersion == "1.1.0"
    assert not any(cache.rglob("*.lock")) and not (state / ".state.json.k1ll3d.tmp").exists()


NOBODY = 65534


@pytest.fixture
def unwritable_fleet():
    """The example fleet in a local bare repository the agent may read but not write: as root the
    agent runs as nobody (setpriv), otherwise the repository is made read-only. Outside pytest's
    private temp dir, which nobody could not enter."""
    if os.geteuid() == 0 and shutil.which("setpriv"):
        tried = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                sys.executable, "-c", "import reconciler"], capture_output=True, text=True)
        if tried.returncode != 0:
            pytest.skip(f"nobody cannot run {sys.executable} (a venv made from a Python under /root?): "
                        f"{tried.stderr.strip()[-200:]}")
    root = Path(tempfile.mkdtemp(prefix="reconciler-unwritable-"))
    root.chmod(0o755)
    bare = init_bare_repo(root, "fleet", source_dir=copy_example(root / "example", progressive=False))
    home, state = root / "home", root / "state"
    home.mkdir()
    state.mkdir()
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot start the agent as another user")
        os.chown(home, NOBODY, NOBODY)
        os.chown(state, NOBODY, NOBODY)
        as_agent = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    else:
        for path in [bare, *bare.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        as_agent = []
    # Its own global git config: pytest's isolated one is in a directory the agent may not enter.
    yield bare, home, state, [*as_agent, "env", f"HOME={home}", f"GIT_CONFIG_GLOBAL={home / '.gitconfig'}"]
    for path in [bare, *bare.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    shutil.rmtree(root)


def test_an_agent_that_may_not_write_the_repo_says_so_and_still_converges_and_serves(unwritable_fleet):
    bare, home, state, as_agent = unwritable_fleet
    port = free_port()
    (home / ".gitconfig").write_text("[safe]\n\tdirectory = *\n")  # ownership is the next test's
    log = state.parent / "agent.log"
    with log.open("wb") as out:
        agent = subprocess.Popen(
            [*as_agent, sys.executable, "-m", "reconciler", "run", "--repo", str(bare),
             "--site", SITE, "--state", str(state), "--listen", f"127.0.0.1:{port}", "--interval", "300ms",
             "--trust-key", str(EXAMPLE / "keys" / "demo.pub")], stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_for(lambda: _ready(port, "demand-forecast") and "PermissionDenied" in log.read_text(), log)
        finally:
            stop_all([agent])
    text = log.read_text()
    assert f"git push {bare}: error: remote unpack failed" in text or f"git push {bare}: " in text
    assert "the agent's user may not write to this repository: grant it access" in text
    assert "Traceback" not in text
    assert not git("for-each-ref", "refs/reconciler/", cwd=bare).strip()  # nothing written, nothing broken


def test_a_repo_of_another_owner_is_named_as_such(unwritable_fleet):
    bare, home, state, as_agent = unwritable_fleet
    if "setpriv" not in as_agent:
        pytest.skip("the repository is this user's own: git's ownership check needs another user")
    done = subprocess.run(
        [*as_agent, sys.executable, "-m", "reconciler", "run", "--once", "--repo", str(bare),
         "--site", SITE, "--state", str(state)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"DubiousOwnership: git ls-remote {bare}: fatal: detected dubious ownership" in done.stderr
    assert "git config --global --add safe.directory" in done.stderr and "Traceback" not in done.stderr


def _ready(port: int, model: str) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/models/{model}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_for(condition, log: Path | None = None, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out; the agent said: {log.read_text() if log else '-'}"
        time.sleep(0.3)


def test_locks_are_left_alone_while_a_background_gc_runs(tmp_path):
    from reconciler.agent.selfheal import stale_git_locks

    git_dir = tmp_path / "fleet.git"
    (git_dir / "refs" / "heads").mkdir(parents=True)
    (git_dir / "packed-refs.lock").write_text("")
    (git_dir / "refs" / "heads" / "main.lock").write_text("")
    gc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (git_dir / "gc.pid").write_text(f"{gc.pid} this-host")
        assert stale_git_locks(git_dir) == []
    finally:
        gc.kill()
        gc.wait()
    assert stale_git_locks(git_dir) == [git_dir / "packed-refs.lock", git_dir / "refs" / "heads" / "main.lock"]
