"""What a site's git traffic costs in a repository of a large fleet (10 000 status refs), counted
at the real git smart-HTTP server, and the summaries' entry refs and compare-and-swap roll-ups under
concurrent writers."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from reconciler.delivery.gates import site_report
from reconciler.delivery.summary import encode, fold
from reconciler.devtools.githttp import GitHttpServer, run_git
from reconciler.gitdoor.source import GitSource
from reconciler.status.gitref import STATUS_REF_PREFIX, StatusRefs
from reconciler.status.record import DeploymentStatus, StatusRecord
from reconciler.status.signed import RecordCheck, RecordSigner, StatusKeyring
from reconciler.status.summary_refs import SummaryRefs, entry_ref, rollup_file, rollup_ref
from reconciler.trust import TrustedKey, generate_private_key

if TYPE_CHECKING:
    from conftest import FleetRemote

FLEET_REFS = 10_000
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DEPLOYMENT = "fraud"


def record(site: str, minutes: float = 0, state: str = "success") -> StatusRecord:
    status = DeploymentStatus(model="fraud", state=state, version="1.1.0", rollout="a1b2c3d4e5f6",
                              reason="Converged", since=T0)
    return StatusRecord(site=site, state=state, reason="Converged", deployments={DEPLOYMENT: status},
                        agentVersion="0.1.0", writtenAt=T0 + timedelta(minutes=minutes))


def add_status_refs(bare: Path, count: int) -> None:
    """``count`` status refs, each on a commit of its own, packed, as a fleet of that size leaves
    them (distinct commits: a server that dedupes what it advertises by commit must not look cheap)."""
    commands = "".join(f"commit {STATUS_REF_PREFIX}site-{n:05d}\ncommitter a <a@b> 1772445600 +0000\n"
                       f"data 8\nsite{n:04d}\n\n" for n in range(count))
    subprocess.run(["git", "fast-import", "--quiet"], cwd=bare, input=commands, text=True, check=True)
    run_git(bare, "pack-refs", "--all")


@pytest.fixture
def large_fleet(fleet_remote: FleetRemote) -> FleetRemote:
    add_status_refs(fleet_remote.server.root / "fleet.git", FLEET_REFS)
    return fleet_remote


def bytes_served(server: GitHttpServer, action) -> int:
    before = server.bytes_sent
    action()
    return server.bytes_sent - before


def test_a_no_op_poll_is_told_of_the_branch_alone(large_fleet: FleetRemote, tmp_path: Path) -> None:
    server = large_fleet.server
    with GitSource(large_fleet.url, "main", tmp_path / "cache") as source:
        cheap = bytes_served(server, source.remote_head)
    # The form the poll had: a pattern git matches on the client, after the server sent every ref.
    every_ref = bytes_served(server, lambda: run_git(None, "ls-remote", large_fleet.url, "refs/heads/main"))
    assert cheap <= 1024
    assert every_ref > 50 * FLEET_REFS  # the measurement sees the advertisement when it is sent


def test_a_status_push_into_a_namespace_is_told_of_that_namespace_alone(
        large_fleet: FleetRemote, tmp_path: Path) -> None:
    server = large_fleet.server
    shard_url = server.url("fleet", namespace="status-07")
    with GitSource(shard_url, "main", tmp_path / "shard") as shard, \
            GitSource(large_fleet.url, "main", tmp_path / "plain") as plain:
        into_namespace = bytes_served(server, lambda: StatusRefs(shard).write(record("store-1", 1)))
        into_fleet_repo = bytes_served(server, lambda: StatusRefs(plain).write(record("store-1", 1)))
        bytes_served(server, lambda: StatusRefs(shard).write(record("store-1", 2, "failure")))
        history = StatusRefs(shard).history("store-1")
    assert into_namespace < 8 * 1024 < 50 * FLEET_REFS < into_fleet_repo
    assert [r.state for _, r in history] == ["success", "failure"]  # the site's audit trail, from git
    bare = server.root / "fleet.git"
    namespaced = f"refs/namespaces/status-07/{STATUS_REF_PREFIX}store-1"
    assert run_git(bare, "rev-list", "--count", namespaced) == "2"


# --- summaries: entry refs, compare-and-swap roll-ups --------------------------------------------

@pytest.fixture
def summaries(fleet_remote: FleetRemote, tmp_path: Path) -> Iterator:
    """Each writer with caches of its own; all write their entries to one status repository (a
    namespace, as one shard's status repository)."""
    opened: list[tuple[SummaryRefs, StatusRefs]] = []

    def open_one(name: str, **kwargs) -> SummaryRefs:
        url = fleet_remote.server.url
        records = StatusRefs(GitSource(url("fleet", "status-0000"), "main", tmp_path / f"{name}-status"))
        opened.append((SummaryRefs(GitSource(url("fleet", "summaries"), "main", tmp_path / name), records, **kwargs),
                       records))
        return opened[-1][0]

    yield open_one
    for summary_refs, records in opened:
        summary_refs.close()
        records.close()


def test_a_summary_gathers_the_sites_reports(summaries) -> None:
    writer, reader = summaries("writer"), summaries("reader")
    assert writer.write(record("s1", 1, "progressing"), {DEPLOYMENT: 0})
    assert writer.write(record("s2", 1), {DEPLOYMENT: 1})
    assert writer.write(record("s1", 2), {DEPLOYMENT: 0})
    assert writer.write(record("s1", 2), {DEPLOYMENT: 0}) is None  # said already: nothing written
    reports = reader.reports(DEPLOYMENT)
    assert reports == {"s1": site_report(record("s1", 2), DEPLOYMENT), "s2": site_report(record("s2", 1), DEPLOYMENT)}
    assert reader.reports("other") == {}


def test_signed_entries_count_and_a_forged_one_does_not(summaries) -> None:
    key = generate_private_key()
    keyring = StatusKeyring({site: (TrustedKey(f"{site}/a", key.public_key()),) for site in ("s1", "s2")})
    summaries("s1", signer=RecordSigner((key,))).write(record("s1", 1), {DEPLOYMENT: 0})
    summaries("forger", signer=RecordSigner((generate_private_key(),))).write(record("s2", 1), {DEPLOYMENT: 0})
    reader = summaries("reader")
    assert set(reader.reports(DEPLOYMENT)) == {"s1", "s2"}  # unchecked
    assert reader.reports(DEPLOYMENT, RecordCheck(keyring)) == {"s1": site_report(record("s1", 1), DEPLOYMENT)}


def test_a_stale_lease_is_refused_and_the_ref_stays(fleet_remote: FleetRemote, summaries, tmp_path: Path) -> None:
    first = summaries("first")
    first.write(record("s1", 1), {DEPLOYMENT: 0})
    url = fleet_remote.server.url("fleet", "summaries")
    with GitSource(url, "main", tmp_path / "late") as late_source:
        late = StatusRefs(late_source)
        seen = late.fetch_tip(rollup_ref(DEPLOYMENT))
        first.write(record("s2", 1), {DEPLOYMENT: 0})
        moved = late.fetch_tip(rollup_ref(DEPLOYMENT))
        stale = late.commit_files([(rollup_file(0), b"{}")], seen, "stale\n", record("s3"))
        assert not late.push_if_unchanged(stale, rollup_ref(DEPLOYMENT), seen, lease=True)
        assert late.fetch_tip(rollup_ref(DEPLOYMENT)) == moved
        assert not late.push_if_unchanged(stale, rollup_ref("absent"), seen, lease=True)  # absent, not seen


@pytest.mark.parametrize("read_first", [False, True], ids=["unread", "after-a-read"])
def test_concurrent_writers_lose_no_update(summaries, read_first: bool) -> None:
    """Without a read, a writer fetches the roll-up; after one (as a gate's), it leases the tip it
    read, which the others move under it."""
    sites = [f"s{n}" for n in range(8)]
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        time.sleep(seconds)

    writers = [summaries(f"w-{site}", pause=pause) for site in sites]
    shard = {site: n % 3 for n, site in enumerate(sites)}  # writers race on the roll-up, and carry their shard's
    start = threading.Barrier(len(sites))
    failures: list[BaseException] = []

    def write(writer: SummaryRefs, site: str) -> None:
        start.wait()
        try:
            for minute in (1, 2):
                if read_first:
                    writer.reports(DEPLOYMENT)
                writer.write(record(site, minute, "success" if minute == 2 else "progressing"), {DEPLOYMENT: shard[site]})
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            failures.append(error)

    threads = [threading.Thread(target=write, args=(w, s)) for w, s in zip(writers, sites, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    for writer in writers:  # each site's next read rolls up what the others kept out, if nothing carried it
        writer.reports(DEPLOYMENT)
    reports = summaries("reader").reports(DEPLOYMENT)
    assert {site: report.state for site, report in reports.items()} == dict.fromkeys(sites, "success")
    assert pauses, "the writers never collided: the test did not exercise the retry"


def test_a_roll_up_other_writers_keep_out_lands_at_the_writers_next_read(summaries) -> None:
    """Every roll-up push of ``kept_out`` meets a roll-up another writer (another shard's) moved
    just before it: it stops after its tries, its entry stays on its entry ref, and its next read
    rolls it up."""
    kept_out, busy = summaries("kept-out"), summaries("busy")
    busy.write(record("s2", 1), {DEPLOYMENT: 1})
    refs, minutes = kept_out._refs, iter(range(2, 10))
    push = refs.push_if_unchanged

    def overtaken(commit: str, ref: str, expected: str | None = None, lease: bool = False, also=()) -> bool:
        if ref == rollup_ref(DEPLOYMENT):
            busy.write(record("s2", next(minutes)), {DEPLOYMENT: 1})
        return push(commit, ref, expected, lease, also)

    refs.push_if_unchanged = overtaken
    kept_out.write(record("s1", 1), {DEPLOYMENT: 0})
    refs.push_if_unchanged = push
    assert set(summaries("reader").reports(DEPLOYMENT)) == {"s2"}
    assert kept_out.reports(DEPLOYMENT)["s1"] == site_report(record("s1", 1), DEPLOYMENT)
    assert set(summaries("reader").reports(DEPLOYMENT)) == {"s1", "s2"}


def push_entry(fleet_remote: FleetRemote, scratch: Path, written: StatusRecord, shard: int, ref_site: str = "") -> None:
    """An entry ref as a site writes it, and no roll-up after it (the site stopped there)."""
    with GitSource(fleet_remote.server.url("fleet", "status-0000"), "main", scratch) as source:
        refs = StatusRefs(source)
        commit = refs.commit_files([(rollup_file(shard), encode(DEPLOYMENT, fold({}, written, DEPLOYMENT)))], None,
                                   "entry\n", written)
        assert refs.push_if_unchanged(commit, entry_ref(DEPLOYMENT, ref_site or written.site))


def test_a_roll_up_push_carries_its_shards_entries_and_no_other_shards(
        fleet_remote: FleetRemote, summaries, tmp_path: Path) -> None:
    """A writer gathers its shard from the entry refs in its status repository: its push carries
    the entry of a shard-mate that never rolled up, and not that of a site of another shard."""
    push_entry(fleet_remote, tmp_path / "mate", record("s2", 1), 0)
    push_entry(fleet_remote, tmp_path / "elsewhere", record("s3", 1), 1)
    summaries("writer").write(record("s1", 1), {DEPLOYMENT: 0})
    assert set(summaries("reader").reports(DEPLOYMENT)) == {"s1", "s2"}
    files = run_git(fleet_remote.bare, "ls-tree", "--name-only", f"refs/namespaces/summaries/{rollup_ref(DEPLOYMENT)}")
    assert files.split() == [rollup_file(0)]


def test_an_entry_ref_carries_its_own_sites_entry_alone(fleet_remote: FleetRemote, summaries, tmp_path: Path) -> None:
    """Whoever can push to the status repository can write any ref there: a ref named after one
    site that holds another's entry is not gathered as the other's."""
    push_entry(fleet_remote, tmp_path / "impostor", record("s4", 1), 0, ref_site="s3")
    summaries("writer").write(record("s1", 1), {DEPLOYMENT: 0})
    assert set(summaries("reader").reports(DEPLOYMENT)) == {"s1"}


def test_an_entry_ref_holds_the_newest_entry_alone(fleet_remote: FleetRemote, summaries) -> None:
    """Each entry replaces the last (a parentless commit, forced): a gatherer downloads one commit
    per site however often the site wrote. The history is on the status ref."""
    writer = summaries("writer")
    for minute, state in ((1, "progressing"), (2, "success"), (3, "failure")):
        assert writer.write(record("s1", minute, state), {DEPLOYMENT: 0})
    stored = f"refs/namespaces/status-0000/{entry_ref(DEPLOYMENT, 's1')}"
    assert run_git(fleet_remote.bare, "rev-list", "--count", stored).strip() == "1"
    assert summaries("reader").reports(DEPLOYMENT)["s1"].state == "failure"


def test_a_server_that_denies_rewriting_branches_still_takes_entry_refs(fleet_remote: FleetRemote, summaries) -> None:
    """Each entry replaces the last with a forced update; ``receive.denyNonFastForwards`` guards
    branches alone (git's receive-pack checks ``refs/heads/``), so a status repository that sets
    it still takes them."""
    writer = summaries("writer")
    writer.write(record("s1", 1, "progressing"), {DEPLOYMENT: 0})
    run_git(fleet_remote.bare, "config", "receive.denyNonFastForwards", "true")
    writer.write(record("s1", 2), {DEPLOYMENT: 0})
    assert summaries("reader").reports(DEPLOYMENT)["s1"].state == "success"


def test_a_shard_that_is_no_summary_is_skipped_with_a_warning(
        fleet_remote: FleetRemote, summaries, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer = summaries("writer")
    writer.write(record("s1", 1), {DEPLOYMENT: 0})
    scratch = tmp_path / "raw"
    url = fleet_remote.server.url("fleet", "summaries")
    run_git(None, "init", "--quiet", str(scratch))
    run_git(scratch, "fetch", "--quiet", url, rollup_ref(DEPLOYMENT))
    run_git(scratch, "checkout", "--quiet", "FETCH_HEAD")
    (scratch / "0001.json").write_text("not a summary\n")
    run_git(scratch, "add", "--all")
    run_git(scratch, "commit", "--quiet", "-m", "raw")
    run_git(scratch, "push", "--quiet", url, f"HEAD:{rollup_ref(DEPLOYMENT)}")
    with caplog.at_level("WARNING"):
        reports = summaries("reader").reports(DEPLOYMENT)
    assert list(reports) == ["s1"]  # the broken shard's sites read as silent, the rest as they are
    assert "not a summary" in caplog.text


@pytest.mark.parametrize("shards", [1, 30])
def test_a_gate_read_costs_one_ref_however_many_shards(fleet_remote: FleetRemote, summaries, shards: int) -> None:
    """A read is one fetch of the roll-up: told of one ref, sent the shard files it lacks."""
    writer = summaries("writer")
    for shard in range(shards):
        writer.write(record(f"s{shard:03d}", 1), {DEPLOYMENT: shard})
    reader = summaries("reader")
    assert len(reader.reports(DEPLOYMENT)) == shards
    unchanged = bytes_served(fleet_remote.server, lambda: reader.reports(DEPLOYMENT))
    writer.write(record("s000", 2, "progressing"), {DEPLOYMENT: 0})
    one_changed = bytes_served(fleet_remote.server, lambda: reader.reports(DEPLOYMENT))
    assert reader.reports(DEPLOYMENT)["s000"].state == "progressing"
    print(f"{shards} shards: a read with nothing new {unchanged} B, with one shard changed {one_changed} B")
    assert unchanged < 1500  # the advertisement of one ref, whatever the number of shards
    assert one_changed < unchanged + 3000 + 40 * shards  # the new tree (one line per shard) and one shard file



def test_a_write_after_a_read_rolls_up_without_fetching_the_roll_up_again(
        fleet_remote: FleetRemote, summaries) -> None:
    """The gate read before a write fetched the roll-up: the roll-up's push leases that tip."""
    server, writer = fleet_remote.server, summaries("writer")
    writer.write(record("s1", 1), {DEPLOYMENT: 0})
    writer.reports(DEPLOYMENT)
    before = server.requests
    writer.write(record("s1", 2), {DEPLOYMENT: 0})
    after_read = server.requests - before
    fresh = summaries("fresh")  # a cache that never read the roll-up fetches it first
    before = server.requests
    fresh.write(record("s2", 1), {DEPLOYMENT: 0})
    unread = server.requests - before
    assert after_read < unread
    assert summaries("reader").reports(DEPLOYMENT) == {
        site: site_report(record(site, minutes), DEPLOYMENT) for site, minutes in (("s1", 2), ("s2", 1))}


def test_a_stale_roll_up_read_loses_nothing(summaries) -> None:
    """A writer whose read is older than another writer's roll-up push: its lease fails, it reads
    again and rolls up on the new tip, and both entries stay."""
    late, early = summaries("late"), summaries("early")
    late.write(record("s1", 1), {DEPLOYMENT: 0})
    late.reports(DEPLOYMENT)  # its cache's roll-up tip, soon stale
    early.write(record("s2", 1), {DEPLOYMENT: 1})
    late.write(record("s1", 2), {DEPLOYMENT: 0})
    assert summaries("reader").reports(DEPLOYMENT) == {
        "s1": site_report(record("s1", 2), DEPLOYMENT), "s2": site_report(record("s2", 1), DEPLOYMENT)}


def test_tips_of_several_refs_come_in_one_fetch_and_a_missing_one_is_none(
        fleet_remote: FleetRemote, summaries, tmp_path: Path) -> None:
    writer = summaries("writer")
    writer.write(record("s1", 1), {DEPLOYMENT: 0})
    writer.write(record("s1", 1), {"other": 0})  # its record says nothing of it: a tombstone entry
    server, url = fleet_remote.server, fleet_remote.server.url("fleet", "summaries")
    shard, rollup, absent = rollup_ref("other"), rollup_ref(DEPLOYMENT), rollup_ref("absent")
    with GitSource(url, "main", tmp_path / "one") as one_by_one, GitSource(url, "main", tmp_path / "both") as both:
        separate_refs, together_refs = StatusRefs(one_by_one), StatusRefs(both)
        before = server.requests
        tips = {shard: separate_refs.fetch_tip(shard), rollup: separate_refs.fetch_tip(rollup)}
        separately = server.requests - before
        before = server.requests
        assert together_refs.fetch_tips(shard, rollup) == tips and None not in tips.values()
        together = server.requests - before
        assert together < separately  # one round of requests for both, not one per ref
        assert together_refs.fetch_tips(shard, absent) == {shard: tips[shard], absent: None}
