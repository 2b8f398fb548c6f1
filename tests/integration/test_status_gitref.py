from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from reconciler.devtools.githttp import run_git
from reconciler.errors import Transient
from reconciler.gitdoor.source import GitSource
from reconciler.status.gitref import STATUS_REF_PREFIX, StatusRefs, _commit_message, record_json
from reconciler.status.record import DeploymentStatus, StatusRecord

if TYPE_CHECKING:
    from reconciler.devtools.testing import FleetRemote

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def record(site: str, version: str = "1.0.0", state: str = "success", at: datetime = T0) -> StatusRecord:
    deployment = DeploymentStatus(model="fraud", state=state, version=version, activeVersion=version,
                                  reason="Converged", since=T0)
    return StatusRecord(site=site, observedCommit="a" * 40, appliedCommit="a" * 40, state=state,
                        reason="Converged", deployments={"fraud": deployment}, agentVersion="0.1.0",
                        writtenAt=at)


@pytest.fixture
def open_refs(fleet_remote: FleetRemote, tmp_path: Path) -> Iterator[Callable[[str], StatusRefs]]:
    """StatusRefs over the fleet remote, each with its own cache, as separate agents have."""
    sources: list[GitSource] = []

    def open_one(cache: str) -> StatusRefs:
        sources.append(GitSource(fleet_remote.url, "main", tmp_path / cache))
        return StatusRefs(sources[-1])

    yield open_one
    for source in sources:
        source.close()


def remote_tip(fleet_remote: FleetRemote, site: str) -> str:
    return run_git(None, "ls-remote", fleet_remote.url, STATUS_REF_PREFIX + site).split("\t")[0]


def push_raw_status(fleet_remote: FleetRemote, tmp_path: Path, site: str, files: dict[str, bytes]) -> None:
    """Put an arbitrary commit on a site's status ref, as a broken or hostile writer could."""
    scratch = tmp_path / f"raw-{site}"
    run_git(None, "init", "--quiet", str(scratch))
    for name, content in files.items():
        (scratch / name).write_bytes(content)
    run_git(scratch, "add", "--all")
    run_git(scratch, "commit", "--quiet", "--allow-empty", "-m", "raw")
    run_git(scratch, "push", "--quiet", "--force", fleet_remote.url, f"HEAD:{STATUS_REF_PREFIX}{site}")


def test_write_publishes_a_commit_on_the_site_ref(fleet_remote: FleetRemote, open_refs) -> None:
    refs = open_refs("agent")
    written = record("store-1")

    commit = refs.write(written)

    assert commit is not None and remote_tip(fleet_remote, "store-1") == commit
    run_git(fleet_remote.clone, "fetch", "--quiet", "origin", f"{STATUS_REF_PREFIX}store-1")
    show = run_git(fleet_remote.clone, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%at|%s", commit)
    assert show == (f"reconciler-agent <store-1@reconciler.local>|reconciler-agent <store-1@reconciler.local>"
                    f"|{int(T0.timestamp())}|store-1: fraud 1.0.0 success (Converged)")
    assert run_git(fleet_remote.clone, "ls-tree", "--name-only", commit) == "status.json"
    stored = run_git(fleet_remote.clone, "cat-file", "blob", f"{commit}:status.json")
    assert stored + "\n" == record_json(written).decode()
    assert open_refs("reader").read_own("store-1") == written


def test_unchanged_record_writes_nothing(fleet_remote: FleetRemote, open_refs) -> None:
    refs = open_refs("agent")
    first = refs.write(record("store-1"))

    later = record("store-1", at=T0 + timedelta(minutes=5))
    assert refs.write(later) is None
    assert open_refs("restarted-agent").write(later) is None  # an empty cache learns the tip first
    assert remote_tip(fleet_remote, "store-1") == first


def test_changed_records_build_the_site_history(open_refs) -> None:
    refs = open_refs("agent")
    records = [record("store-1", "1.0.0"), record("store-1", "1.1.0", "progressing", T0 + timedelta(hours=1)),
               record("store-1", "1.1.0", "success", T0 + timedelta(hours=2))]

    commits = [refs.write(r) for r in records]

    history = open_refs("auditor").history("store-1")
    assert history == list(zip(commits, records, strict=True))
    assert refs.read_own("store-1") == records[-1]


def test_sites_write_their_own_refs_concurrently(fleet_remote: FleetRemote, open_refs) -> None:
    sites = [f"store-{n}" for n in range(4)]
    agents = {site: open_refs(f"agent-{site}") for site in sites}
    failures: list[BaseException] = []

    def publish(site: str) -> None:
        try:
            for step in range(3):
                agents[site].write(record(site, f"1.{step}.0", at=T0 + timedelta(minutes=step)))
        except BaseException as error:  # surfaced below: a thread's exception is otherwise lost
            failures.append(error)

    threads = [threading.Thread(target=publish, args=(site,)) for site in sites]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    fleet = open_refs("operator").read_all()
    assert {site: r.deployments["fraud"].version for site, r in fleet.items()} == dict.fromkeys(sites, "1.2.0")
    assert all(len(open_refs(f"audit-{site}").history(site)) == 3 for site in sites)


def test_a_moved_remote_ref_is_reparented_not_overwritten(open_refs) -> None:
    agent, intruder = open_refs("agent"), open_refs("intruder")
    first = agent.write(record("store-1", "1.0.0"))
    second = intruder.write(record("store-1", "2.0.0", at=T0 + timedelta(hours=1)))

    third = agent.write(record("store-1", "3.0.0", at=T0 + timedelta(hours=2)))

    assert [commit for commit, _ in agent.history("store-1")] == [first, second, third]


def test_a_moved_remote_ref_saying_the_same_thing_is_left_alone(open_refs) -> None:
    agent, intruder = open_refs("agent"), open_refs("intruder")
    agent.write(record("store-1", "1.0.0"))
    moved = intruder.write(record("store-1", "2.0.0"))

    assert agent.write(record("store-1", "2.0.0", at=T0 + timedelta(hours=1))) is None
    assert agent.read_own("store-1") == record("store-1", "2.0.0")
    assert agent.history("store-1")[-1][0] == moved


def test_refs_written_beside_the_record_go_in_its_push_or_alone_when_it_is_not_written(
        fleet_remote: FleetRemote, open_refs) -> None:
    """``also``: refs only the site writes (its summary entries), set whatever the remote holds
    there: with the record, even when it had to be re-parented on a moved tip, or alone when the
    record says what the current one says."""
    agent, intruder = open_refs("agent"), open_refs("intruder")
    side = "refs/reconciler/entry/fraud/store-1"

    def entry(text: str) -> str:  # parentless: each replaces the last
        return agent.commit_files([("0000.json", text.encode())], None, f"{text}\n", record("store-1"))

    agent.write(record("store-1", "1.0.0"), also=[(side, entry("one"))])
    intruder.write(record("store-1", "2.0.0", at=T0 + timedelta(hours=1)))
    third = agent.write(record("store-1", "3.0.0", at=T0 + timedelta(hours=2)), also=[(side, entry("two"))])
    assert remote_tip(fleet_remote, "store-1") == third
    assert run_git(None, "ls-remote", fleet_remote.url, side).split("\t")[0] == entry("two")
    assert agent.write(record("store-1", "3.0.0", at=T0 + timedelta(hours=3)), also=[(side, entry("three"))]) is None
    assert remote_tip(fleet_remote, "store-1") == third
    assert run_git(None, "ls-remote", fleet_remote.url, side).split("\t")[0] == entry("three")


@pytest.mark.parametrize(
    "files, complaint",
    [
        ({"status.json": b"{not json"}, "Invalid JSON"),
        ({"status.json": b'{"site": "bad"}'}, "validation error"),
        ({"status.json": record_json(record("someone-else"))}, "names site someone-else"),
        ({"other.txt": b"no status here"}, "missing"),
    ],
)
def test_unreadable_records_are_skipped_with_a_warning(
    fleet_remote: FleetRemote, tmp_path: Path, open_refs, caplog: pytest.LogCaptureFixture,
    files: dict[str, bytes], complaint: str,
) -> None:
    refs = open_refs("agent")
    refs.write(record("store-1"))
    push_raw_status(fleet_remote, tmp_path, "bad", files)

    with caplog.at_level(logging.WARNING, logger="reconciler.status.gitref"):
        assert refs.read_all() == {"store-1": record("store-1")}
        assert refs.read_own("bad") is None
        assert refs.history("bad") == []
    assert complaint in caplog.text and "bad" in caplog.text

    replaced = refs.write(record("bad"))  # the site's next write repairs its ref on top
    assert refs.read_own("bad") == record("bad") and remote_tip(fleet_remote, "bad") == replaced


def test_missing_refs_read_as_nothing(fleet_remote: FleetRemote, open_refs) -> None:
    refs = open_refs("agent")
    assert refs.read_all() == {}
    assert refs.read_own("store-1") is None
    assert refs.history("store-1") == []

    refs.write(record("store-1"))
    run_git(fleet_remote.clone, "push", "--quiet", "origin", f":{STATUS_REF_PREFIX}store-1")
    assert refs.read_all() == {}  # pruned: a deleted ref is gone from the cache too
    assert refs.read_own("store-1") is None


def test_remote_down_is_transient(fleet_remote: FleetRemote, open_refs) -> None:
    refs = open_refs("agent")
    refs.write(record("store-1"))
    fleet_remote.server.stop()

    failures = {}
    for name, call in [("write", lambda: refs.write(record("store-1", "2.0.0"))),
                       ("read_own", lambda: refs.read_own("store-1")),
                       ("read_all", refs.read_all),
                       ("first write", lambda: open_refs("fresh").write(record("store-2")))]:
        with pytest.raises(Transient) as error:
            call()
        failures[name] = error.value.reason
    assert failures == {"write": "StatusPushFailed", "read_own": "StatusFetchFailed",
                        "read_all": "StatusFetchFailed", "first write": "StatusFetchFailed"}


def test_a_remote_that_keeps_refusing_the_push_is_transient(fleet_remote: FleetRemote, open_refs) -> None:
    hook = fleet_remote.server.root / "fleet.git/hooks/pre-receive"
    hook.write_text("#!/bin/sh\necho 'status refs are frozen' >&2\nexit 1\n")
    hook.chmod(0o755)

    with pytest.raises(Transient) as refused:
        open_refs("agent").write(record("store-1"))

    assert refused.value.reason == "StatusPushFailed"
    assert run_git(None, "ls-remote", fleet_remote.url, STATUS_REF_PREFIX + "store-1") == ""


def test_read_all_scales_to_a_thousand_sites(fleet_remote: FleetRemote, open_refs) -> None:
    """Thousands of refs are made server-side with one fast-import, then read back in one go."""
    sites = [f"site-{n:04d}" for n in range(1000)]
    stream = []
    for mark, site in enumerate(sites, start=1):
        data = record_json(record(site))
        stream.append(
            f"commit {STATUS_REF_PREFIX}{site}\nmark :{mark}\n"
            f"committer a <a@b> {int(T0.timestamp())} +0000\ndata 1\nx\n"
            f"M 100644 inline status.json\ndata {len(data)}\n".encode() + data + b"\n"
        )
    bare = fleet_remote.server.root / "fleet.git"
    subprocess.run(["git", "--git-dir", str(bare), "fast-import", "--quiet"], input=b"".join(stream), check=True)

    start = time.perf_counter()
    fleet = open_refs("operator").read_all()
    elapsed = time.perf_counter() - start

    assert sorted(fleet) == sites and fleet["site-0999"] == record("site-0999")
    print(f"\nread_all of {len(sites)} sites: {elapsed * 1000:.0f} ms")


@pytest.mark.parametrize(("state", "reason", "subject"), [
    ("success", "Converged", "store-1: fraud 1.0.0 success (Converged)"),
    ("error", "InvalidManifests", "store-1: error (InvalidManifests); fraud 1.0.0 success (Converged)"),
    ("error", "Converged", "store-1: fraud 1.0.0 success (Converged)"),  # a deployment's own error says it
])
def test_a_site_level_error_leads_the_subject(state: str, reason: str, subject: str) -> None:
    """git log of a status ref is the audit trail: its one-line subjects must not read as all well
    while the site could not even read the fleet repo."""
    site_record = record("store-1").model_copy(update={"state": state, "reason": reason})
    assert _commit_message(site_record).splitlines()[0] == subject
