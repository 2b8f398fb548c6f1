"""The audit against a scripted history in a real git repository (reconciler/devtools/audit_history.py): the
deployment changes with authors and signature states, the site timelines, and what every site
served at chosen moments, boundaries included; plus the pure parts, table-driven."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from audit_commands import run_command
from fleetfactory import DIGEST_A, DIGEST_B, artifact, deployment, fleet_repo, model, site

from reconciler.devtools.audit_history import (
    ALICE,
    CAROL,
    DAVE,
    ERIN,
    FAILING_SITE,
    LATE_SITE,
    SCORER_EVENTS,
    SILENT_SITE,
    SITES,
    T0,
    ScriptedHistory,
    bulk_history,
    bulk_record,
    bulk_site,
    expected_served_at,
    minutes,
    scripted_history,
)
from reconciler.devtools.githttp import GitHttpServer
from reconciler.errors import UsageError
from reconciler.history.audit import deployment_aspects, diff_deployments, fleet_trail
from reconciler.history.report import AT_COLUMNS, TRAIL_COLUMNS
from reconciler.history.timeline import (
    audit_at,
    audit_trail,
    fleet_at,
    open_fleet,
    parse_time,
    serving_at,
    shown_location,
    site_timeline,
)
from reconciler.manifests.loader import DocumentCache
from reconciler.settings import CommitPolicy
from reconciler.status.gitref import STATUS_REF_PREFIX
from reconciler.status.record import DeploymentStatus, StatusRecord

needs_ssh = pytest.mark.skipif(shutil.which("ssh-keygen") is None,
                               reason="ssh-keygen is not installed (Debian package openssh-client)")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> ScriptedHistory:
    return scripted_history(tmp_path_factory.mktemp("audit"))




def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})})
    return done.stdout.strip()


# --- the pure parts -----------------------------------------------------------------------------

MODEL = model("m", {"1.0.0": [artifact(DIGEST_A)], "1.1.0": [artifact(DIGEST_B)]})
SITE = site("s-1", tier="store")
WAVES = {"waves": [{"name": "all", "percent": 100}]}


def fleet(*deployments, models=(MODEL,), default_rollout=None):
    return fleet_repo([SITE], list(models), list(deployments), fleet={"defaultRollout": default_rollout}
                      if default_rollout else None)


@pytest.mark.parametrize(("before", "after", "expected"), [
    (fleet(), fleet(deployment("d")), [("d", None, "1.0.0", ("created",))]),
    (fleet(deployment("d")), fleet(), [("d", "1.0.0", None, ("deleted",))]),
    (fleet(deployment("d")), fleet(deployment("d", version="1.1.0")), [("d", "1.0.0", "1.1.0", ("version",))]),
    (fleet(deployment("d")), fleet(deployment("d", targets={"matchLabels": {"tier": "store"}})),
     [("d", "1.0.0", "1.0.0", ("targets",))]),
    (fleet(deployment("d")), fleet(deployment("d"), default_rollout=WAVES), [("d", "1.0.0", "1.0.0", ("rollout",))]),
    (fleet(deployment("d", rollout=WAVES)), fleet(deployment("d", rollout=WAVES), default_rollout=WAVES), []),
    (fleet(deployment("d")), fleet(deployment("d", enabled=False)), [("d", "1.0.0", "1.0.0", ("enabled",))]),
    (fleet(deployment("d")), fleet(deployment("d", canary={"steps": [{"setWeight": 10}]})),
     [("d", "1.0.0", "1.0.0", ("canary",))]),
    (fleet(deployment("d", version={"flag": "v"})), fleet(deployment("d", version="1.0.0")),
     [("d", "flag:v", "1.0.0", ("version",))]),
    # the served version's artifact replaced under the same version
    (fleet(deployment("d")), fleet(deployment("d"), models=[model("m", {"1.0.0": [artifact(DIGEST_B)]})]),
     [("d", "1.0.0", "1.0.0", ("artifacts",))]),
    # a version added to the model changes nothing the deployment runs
    (fleet(deployment("d")), fleet(deployment("d"), models=[model("m", {"1.0.0": [artifact(DIGEST_A)],
                                                                         "2.0.0": [artifact(DIGEST_B)]})]), []),
    (fleet(deployment("d")), fleet(deployment("d", model_name="other"), models=[MODEL, model("other")]),
     [("d", "1.0.0", "1.0.0", ("model",))]),
    (fleet(deployment("a"), deployment("b")), fleet(deployment("a", version="1.1.0"), deployment("b")),
     [("a", "1.0.0", "1.1.0", ("version",))]),
])
def test_diff_deployments_names_what_changed(before, after, expected) -> None:
    changes = diff_deployments(deployment_aspects(before), deployment_aspects(after), commit=None)
    assert [(c.deployment, c.version_from, c.version_to, c.changed) for c in changes] == expected


def status(at: datetime, state: str = "success", active: str | None = "1.0.0", desired: str | None = "1.0.0",
           **more: tuple[str, str | None, str | None]) -> StatusRecord:
    cells = {"d": (state, active, desired), **more}
    return StatusRecord(site="s", observedCommit=f"c{at.minute}", state="success", reason="r", agentVersion="t",
                        writtenAt=at, deployments={
                            name: DeploymentStatus(model="m", state=s, activeVersion=a, version=v, reason="r", since=at)
                            for name, (s, a, v) in cells.items()})


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


@pytest.mark.parametrize(("records", "expected"), [
    ([], []),
    # an unchanged deployment is one interval, still lasting
    ([status(at(0)), status(at(5))], [("d", 0, None, "1.0.0", "success", "c0")]),
    ([status(at(0)), status(at(5), "progressing", "1.0.0", "1.1.0"), status(at(9), "success", "1.1.0", "1.1.0")],
     [("d", 0, 5, "1.0.0", "success", "c0"), ("d", 5, 9, "1.0.0", "progressing", "c5"),
      ("d", 9, None, "1.1.0", "success", "c9")]),
    # a deployment that leaves the record ends there; another one goes on
    ([status(at(0), e=("success", "2", "2")), status(at(3))],
     [("d", 0, None, "1.0.0", "success", "c0"), ("e", 0, 3, "2", "success", "c0")]),
    ([status(at(0)), status(at(2), "failure", "1.0.0", "1.1.0"), status(at(4), "failure", "1.0.0", "1.1.0")],
     [("d", 0, 2, "1.0.0", "success", "c0"), ("d", 2, None, "1.0.0", "failure", "c2")]),
])
def test_site_timeline_splits_where_served_desired_or_state_change(records, expected) -> None:
    history = [(f"commit-{i}", record) for i, record in enumerate(records)]
    intervals = site_timeline("s", history)
    assert [(i.deployment, (i.start - T0).seconds // 60, (i.end - T0).seconds // 60 if i.end else None, i.version,
             i.state, i.observed_commit) for i in intervals] == expected
    assert all(i.site == "s" for i in intervals)


def test_a_failure_interval_says_its_kind():
    failed = status(at(2), "error", "1.0.0", "1.1.0")
    cell = failed.deployments["d"].model_copy(update={"reason": "NoTrustedKeys", "failureKind": "site"})
    history = [("c0", status(at(0))), ("c2", failed.model_copy(update={"deployments": {"d": cell}}))]
    intervals = site_timeline("s", history)
    assert [(i.state, i.failure_kind) for i in intervals] == [("success", None), ("error", "site")]
    assert intervals[1].to_json()["failureKind"] == "site"


HISTORY = [("c1", status(at(10))), ("c2", status(at(20), active="1.1.0")), ("c3", status(at(30), active="1.2.0"))]


@pytest.mark.parametrize(("moment", "commit"), [
    (at(9), None), (at(10) - timedelta(microseconds=1), None), (at(10), "c1"), (at(19), "c1"), (at(20), "c2"),
    (at(30), "c3"), (at(600), "c3"),
])
def test_serving_at_takes_the_newest_record_written_at_or_before(moment, commit) -> None:
    found = serving_at(HISTORY, moment)
    assert (found[0] if found else None) == commit


def test_a_site_clock_that_went_back_still_counts_in_ref_order() -> None:
    skewed = [("c1", status(at(10))), ("c2", status(at(5), active="1.1.0")), ("c3", status(at(30)))]
    assert serving_at(skewed, at(7))[0] == "c2"
    assert serving_at(skewed, at(20))[0] == "c2"


def test_fleet_at_lists_silent_sites_as_unknown() -> None:
    rows = fleet_at({"s": HISTORY}, ["s", "quiet"], at(25))
    assert [(row.site, row.state, row.status_commit) for row in rows] == [("quiet", "unknown", None),
                                                                          ("s", "success", "c2")]


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ("2024-05-01 12:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ("2024-05-01T14:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ("2024-05-01T12:00:00.250000", datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)),
])
def test_parse_time(text, expected) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01", "12:00", ""])
def test_parse_time_refuses_what_is_not_a_time(text) -> None:
    with pytest.raises(UsageError, match="is not a time"):
        parse_time(text)


@pytest.mark.parametrize(("location", "shown"), [
    ("https://ci:s3cret@git.example.com/fleet.git", "https://git.example.com/fleet.git"),
    ("https://token@git.example.com:8443/fleet", "https://git.example.com:8443/fleet"),
    ("https://git.example.com/fleet.git", "https://git.example.com/fleet.git"),
    ("/srv/git/fleet.git", "/srv/git/fleet.git"),
    ("git@example.com:fleet.git", "git@example.com:fleet.git"),  # scp-like: the user is no secret
])
def test_locations_are_shown_without_credentials(location, shown) -> None:
    assert shown_location(location) == shown


# --- deployment changes -------------------------------------------------------------------------

def test_deployment_changes_name_author_versions_and_signatures(history: ScriptedHistory) -> None:
    policy = CommitPolicy(ssh_allowed_signers=history.allowed_signers) if history.signed else None
    trail = audit_trail(str(history.bare), "main", policy)
    got = [(c.deployment, c.commit.sha, c.commit.author, c.version_from, c.version_to, c.changed, c.signature.state)
           for c in trail.changes]
    carol, dave = ("good", "unknown-key") if history.signed else ("unsigned", "unsigned")
    assert got == [
        ("ranker", history.commits["initial"], f"{ALICE.name} <{ALICE.email}>", None, "2.0.0", ("created",), "unsigned"),
        ("scorer", history.commits["initial"], f"{ALICE.name} <{ALICE.email}>", None, "1.0.0", ("created",), "unsigned"),
        ("scorer", history.commits["rollout"], f"{CAROL.name} <{CAROL.email}>", "1.0.0", "1.1.0", ("version",), carol),
        ("scorer", history.commits["rollback"], f"{DAVE.name} <{DAVE.email}>", "1.1.0", "1.0.0", ("version",), dave),
        # the branch merged with a merge commit: one change, by whoever merged
        ("scorer", history.commits["merge"], f"{ERIN.name} <{ERIN.email}>", "1.0.0", "1.0.0", ("rollout",), "unsigned"),
    ]
    rollback = trail.changes[3]
    assert rollback.commit.subject == "Roll back scorer to 1.0.0"
    assert rollback.commit.message == "Roll back scorer to 1.0.0\n\nsite-05 failed validation."
    assert rollback.commit.committer_date == minutes(240) and rollback.commit.author_date == minutes(240)


@needs_ssh
def test_a_good_signature_names_its_signer_and_needs_a_trust_root(history: ScriptedHistory) -> None:
    trusted = audit_trail(str(history.bare), "main", CommitPolicy(ssh_allowed_signers=history.allowed_signers))
    signature = trusted.changes[2].signature
    assert (signature.state, signature.signer) == ("good", CAROL.email) and signature.key.startswith("SHA256:")
    untrusted = audit_trail(str(history.bare), "main")
    assert [c.signature.state for c in untrusted.changes] == ["unsigned", "unsigned", "unknown-key", "unknown-key",
                                                              "unsigned"]
    assert untrusted.changes[2].signature.signer == ""


def test_a_commit_that_does_not_load_is_listed_apart_and_its_fix_changes_nothing(history: ScriptedHistory) -> None:
    trail = audit_trail(str(history.bare), "main")
    assert [(bad.commit.sha, bad.errors) for bad in trail.invalid] == [(history.commits["broken"], 1)]
    assert trail.invalid[0].first_error.startswith("deployments/ranker.yaml:")
    assert history.commits["fixed"] not in {c.commit.sha for c in trail.changes}


def test_each_commit_parses_only_the_files_it_changed(history: ScriptedHistory) -> None:
    cache = DocumentCache()
    with open_fleet(str(history.bare), "main") as opened:
        fleet_trail(opened.source, opened.head, cache=cache)
    # 17 files at first, then one file per commit (the merge brings one, the broken commit and its
    # fix one each); a file put back as it was two commits ago is parsed again.
    assert cache.misses == 17 + 7


def test_deployment_filter_keeps_that_deployment_only(history: ScriptedHistory) -> None:
    trail = audit_trail(str(history.bare), "main", deployment="ranker")
    assert [c.deployment for c in trail.changes] == ["ranker"]
    assert {i.deployment for i in trail.intervals} == {"ranker"}
    assert {i.site for i in trail.intervals} == {"site-07", "site-08", "site-09", "site-10", "site-11"}


# --- timelines ----------------------------------------------------------------------------------

def test_timelines_follow_the_scripted_rollout_and_rollback(history: ScriptedHistory) -> None:
    trail = audit_trail(str(history.bare), "main", site="site-01", deployment="scorer")
    assert [(i.start, i.end, i.version, i.desired, i.state, i.wave) for i in trail.intervals] == [
        (minutes(5), minutes(130), "1.0.0", "1.0.0", "success", "canary"),
        (minutes(130), minutes(132), "1.0.0", "1.1.0", "progressing", "canary"),
        (minutes(132), minutes(245 - 1 / 6), "1.1.0", "1.1.0", "success", "canary"),
        (minutes(245 - 1 / 6), None, "1.0.0", "1.0.0", "success", "canary"),
    ]
    assert [i.observed_commit for i in trail.intervals] == [history.commits[s] for s in
                                                           ("initial", "rollout", "rollout", "rollback")]


def test_the_failing_site_never_served_the_new_version(history: ScriptedHistory) -> None:
    trail = audit_trail(str(history.bare), "main", site=FAILING_SITE)
    assert [(i.version, i.desired, i.state) for i in trail.intervals] == [
        ("1.0.0", "1.0.0", "success"), ("1.0.0", "1.1.0", "failure"), ("1.0.0", "1.0.0", "success")]


def test_every_site_that_reported_has_a_timeline(history: ScriptedHistory) -> None:
    trail = audit_trail(str(history.bare), "main", deployment="scorer")
    assert {i.site for i in trail.intervals} == set(SITES) - {SILENT_SITE}
    assert min(i.start for i in trail.intervals if i.site == LATE_SITE) == minutes(60)


# --- the fleet at a moment ----------------------------------------------------------------------

MOMENTS = [
    minutes(4),  # before any record
    minutes(5) - timedelta(microseconds=1),
    minutes(5),  # exactly site-01's first writtenAt
    minutes(59),
    minutes(60),  # the late site's first record
    minutes(131),
    minutes(132),  # site-01's success exactly; site-02's comes half a second later
    minutes(132) + timedelta(seconds=0.4),
    minutes(132) + timedelta(seconds=0.5),
    minutes(183),
    minutes(244) + timedelta(seconds=50),
    minutes(246) - timedelta(seconds=1),
    minutes(246),
    minutes(600),
]


@pytest.mark.parametrize("moment", MOMENTS, ids=lambda m: m.strftime("%H:%M:%S.%f"))
def test_at_matches_the_scripted_truth(history: ScriptedHistory, moment: datetime) -> None:
    view = audit_at(str(history.bare), "main", moment)
    got = {row.site: (row.deployments["scorer"].state, row.deployments["scorer"].activeVersion,
                      row.deployments["scorer"].version) if row.record else None for row in view.sites}
    assert got == expected_served_at(moment)
    assert view.fleet_commit == history.fleet_commit_at(moment)
    ranker = {row.site for row in view.sites if "ranker" in row.deployments}
    assert ranker == {s for s, truth in got.items() if truth} & {f"site-{n:02d}" for n in range(7, 12)}


def test_at_reads_the_branch_as_it_was(history: ScriptedHistory) -> None:
    assert audit_at(str(history.bare), "main", minutes(150)).desired == {"ranker": "2.0.0", "scorer": "1.1.0"}
    assert audit_at(str(history.bare), "main", minutes(250)).desired == {"ranker": "2.0.0", "scorer": "1.0.0"}
    before = audit_at(str(history.bare), "main", T0 - timedelta(seconds=1))
    assert (before.fleet_commit, before.desired) == (None, {})
    assert {row.state for row in before.sites} == {"unknown"}


def test_one_record_per_site_gives_the_same_answer_as_the_whole_history(history: ScriptedHistory) -> None:
    """The quick read (commit dates as an index) against the pure rule over every record, at
    every record's time and a microsecond either side."""
    with open_fleet(str(history.bare), "main") as opened:
        archive = opened.status()
        full = archive.histories()
        times = sorted({minutes(m) + timedelta(microseconds=d) for events in SCORER_EVENTS.values()
                        for m, *_ in events for d in (-1, 0, 1)})
        for moment in times:
            assert fleet_at(archive.histories_as_of(moment), SITES, moment) == fleet_at(full, SITES, moment)


def test_records_whose_commit_dates_disagree_are_read_in_full(history: ScriptedHistory, tmp_path: Path) -> None:
    """A status ref written by something else than StatusRefs: commit dates say nothing."""
    bare = tmp_path / "copy.git"
    shutil.copytree(history.bare, bare)
    written = [minutes(10), minutes(20), minutes(30)]
    parent = None
    for number, moment in enumerate(written):
        record = StatusRecord(site="odd", state="success", reason="r", agentVersion="t", writtenAt=moment,
                              deployments={"scorer": DeploymentStatus(model="scorer", state="success",
                                                                      activeVersion=f"9.{number}", reason="r",
                                                                      since=moment)})
        blob = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=bare, check=True, capture_output=True,
                              input=record.model_dump_json().encode()).stdout.decode().strip()
        tree = subprocess.run(["git", "mktree"], cwd=bare, check=True, capture_output=True,
                              input=f"100644 blob {blob}\tstatus.json\n".encode()).stdout.decode().strip()
        date = (T0 + timedelta(days=1)).isoformat()  # every commit dated a day later than its record
        parent = git(bare, "commit-tree", tree, "-m", "odd", *(["-p", parent] if parent else []),
                     env={"GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date})
    git(bare, "update-ref", STATUS_REF_PREFIX + "odd", parent)

    for moment, served in [(minutes(15), "9.0"), (minutes(25), "9.1"), (minutes(30), "9.2"), (minutes(5), None)]:
        row = next(r for r in audit_at(str(bare), "main", moment).sites if r.site == "odd")
        assert (row.deployments["scorer"].activeVersion if row.record else None) == served


def test_a_broken_record_is_skipped_and_the_rest_still_read(history: ScriptedHistory, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    bare = tmp_path / "copy.git"
    shutil.copytree(history.bare, bare)
    tip = git(bare, "rev-parse", STATUS_REF_PREFIX + "site-03")
    blob = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=bare, check=True, capture_output=True,
                          input=b"{not json").stdout.decode().strip()
    tree = subprocess.run(["git", "mktree"], cwd=bare, check=True, capture_output=True,
                          input=f"100644 blob {blob}\tstatus.json\n".encode()).stdout.decode().strip()
    broken = git(bare, "commit-tree", tree, "-p", tip, "-m", "broken",
                 env={"GIT_COMMITTER_DATE": minutes(300).isoformat()})
    git(bare, "update-ref", STATUS_REF_PREFIX + "site-03", broken)
    caplog.set_level(logging.WARNING)

    view = audit_at(str(bare), "main", minutes(400))
    row = next(r for r in view.sites if r.site == "site-03")
    assert row.deployments["scorer"].activeVersion == "1.0.0" and row.status_commit == tip
    assert any("skipping status record" in message and "site-03" in message for message in caplog.messages)
    assert len(audit_trail(str(bare), "main", site="site-03").intervals) == 3


def test_many_sites_written_by_fast_import_read_back_exactly(tmp_path: Path) -> None:
    bare = bulk_history(tmp_path, sites=20, records=15)
    step = timedelta(minutes=10)
    for moment in [T0 - timedelta(seconds=1), T0 + timedelta(seconds=7), T0 + 7 * step + timedelta(seconds=30),
                   T0 + 14 * step + timedelta(minutes=5)]:
        view = audit_at(str(bare), "main", moment)
        assert len(view.sites) == 20
        for row in view.sites:
            written = [bulk_record(row.site, i, T0, step) for i in range(15)]
            expected = [r for r in written if r.writtenAt <= moment]
            assert row.record == (expected[-1] if expected else None), (row.site, moment)
    assert bulk_site(20) in {row.site for row in view.sites}


def test_a_remote_over_smart_http_reads_like_the_local_path(history: ScriptedHistory) -> None:
    with GitHttpServer(history.bare.parent) as server:
        remote = audit_at(server.url("fleet"), "main", minutes(183))
        requests = server.requests
        trail = audit_trail(server.url("fleet"), "main", site="site-04")
        trail_requests = server.requests - requests
    local = audit_at(str(history.bare), "main", minutes(183))
    assert remote.sites == local.sites and remote.fleet_commit == local.fleet_commit
    assert len(trail.intervals) == 3
    # The throwaway cache is a partial clone: the manifests of every change come in one fetch
    # (two requests), not one fetch per change.
    assert len(trail.changes) == 5 and trail_requests < 2 * len(trail.changes)


def test_a_relative_path_and_a_working_clone_read_like_the_bare_repository(history: ScriptedHistory,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    expected = audit_trail(str(history.bare), "main").changes
    monkeypatch.chdir(history.bare.parent)
    assert audit_trail("fleet.git", "main").changes == expected
    monkeypatch.chdir(history.bare.parent / "clone")
    assert audit_trail(".", "main").changes == expected  # a clone has no status refs: changes only


def test_the_repositorys_own_git_config_does_not_change_the_answer(history: ScriptedHistory,
                                                                   tmp_path: Path) -> None:
    policy = CommitPolicy(ssh_allowed_signers=history.allowed_signers) if history.signed else None
    expected = audit_trail(str(history.bare), "main", policy)
    bare = tmp_path / "configured.git"
    shutil.copytree(history.bare, bare)
    for key, value in [("log.showSignature", "true"), ("diff.renames", "copies"), ("color.ui", "always"),
                       ("log.showRoot", "false"), ("core.quotePath", "true")]:
        git(bare, "config", key, value)
    trail = audit_trail(str(bare), "main", policy)
    assert (trail.changes, trail.intervals) == (expected.changes, expected.intervals)


def test_reading_a_local_repository_changes_nothing_in_it(history: ScriptedHistory) -> None:
    def snapshot() -> tuple[str, list[str]]:
        return git(history.bare, "for-each-ref"), sorted(p.name for p in history.bare.iterdir())

    before = snapshot()
    audit_trail(str(history.bare), "main")
    audit_at(str(history.bare), "main", minutes(100))
    assert snapshot() == before


# --- the command --------------------------------------------------------------------------------

def test_audit_json_is_the_documented_shape(history: ScriptedHistory, capsys) -> None:
    code, out = run_command(capsys, "audit", "--repo", str(history.bare), "--format", "json")
    data = json.loads(out)
    assert code == 0
    assert set(data) == {"kind", "repo", "branch", "head", "changes", "timelines", "invalidCommits", "ignoredStatusRecords",
                         "batchRuns"}
    assert data["ignoredStatusRecords"] == []  # no Site enrolls a key: unsigned mode
    assert data["kind"] == "AuditTrail" and data["head"] == history.commits["fixed"]
    assert set(data["changes"][0]) == {"deployment", "commit", "author", "authorDate", "committer", "committerDate",
                                       "subject", "message", "signature", "model", "versionFrom", "versionTo",
                                       "changed"}
    assert set(data["changes"][0]["signature"]) == {"state", "signer", "key"}
    assert set(data["timelines"][0]) == {"site", "deployment", "from", "to", "version", "desiredVersion", "state",
                                         "wave", "failureKind", "observedCommit", "statusCommit"}
    assert set(data["invalidCommits"][0]) == {"commit", "committerDate", "author", "subject", "errors", "firstError"}
    assert data["changes"][2]["versionTo"] == "1.1.0" and data["changes"][2]["committerDate"] == minutes(120).isoformat()


def test_audit_at_json_is_the_documented_shape(history: ScriptedHistory, capsys) -> None:
    code, out = run_command(capsys, "audit", "--repo", str(history.bare), "--at", "2024-05-01 10:12", "--format", "json")
    data = json.loads(out)
    assert code == 0
    assert set(data) == {"kind", "at", "repo", "branch", "fleetCommit", "desired", "sites"}
    assert data["kind"] == "FleetAt" and data["at"] == "2024-05-01T10:12:00+00:00"
    by_site = {row["site"]: row for row in data["sites"]}
    assert set(by_site["site-01"]) == {"site", "state", "writtenAt", "statusCommit", "observedCommit", "deployments"}
    assert by_site["site-01"]["deployments"]["scorer"] == {"version": "1.1.0", "desiredVersion": "1.1.0",
                                                           "state": "success", "wave": "canary", "failureKind": None}
    assert by_site["site-02"]["deployments"]["scorer"]["state"] == "progressing"
    assert by_site[SILENT_SITE] == {"site": SILENT_SITE, "state": "unknown", "writtenAt": None, "statusCommit": None,
                                    "observedCommit": None, "deployments": {}}


def test_audit_csv_has_a_row_per_change_and_interval(history: ScriptedHistory, capsys) -> None:
    code, out = run_command(capsys, "audit", "--repo", str(history.bare), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and tuple(csv.reader(io.StringIO(out)).__next__()) == TRAIL_COLUMNS
    changes = [r for r in rows if r["kind"] == "change"]
    intervals = [r for r in rows if r["kind"] == "interval"]
    assert len(changes) == 5 and len(intervals) == len(rows) - 5
    assert changes[2]["version_from"] == "1.0.0" and changes[2]["version"] == "1.1.0"
    assert changes[0]["changed"] == "created" and changes[0]["site"] == ""
    failing = [r for r in intervals if r["site"] == FAILING_SITE and r["state"] == "failure"]
    assert len(failing) == 1 and failing[0]["version"] == "1.0.0" and failing[0]["desired_version"] == "1.1.0"


def test_audit_at_csv_has_a_row_per_site_and_deployment(history: ScriptedHistory, capsys) -> None:
    code, out = run_command(capsys, "audit", "--repo", str(history.bare), "--at", "2024-05-01T11:03:00Z",
                       "--format", "csv")
    reader = csv.reader(io.StringIO(out))
    assert tuple(next(reader)) == AT_COLUMNS
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["site"], r["deployment"], r["version"], r["state"]) for r in rows if r["site"] in
            ("site-05", "site-07", SILENT_SITE)] == [("site-05", "scorer", "1.0.0", "failure"),
                                                     ("site-07", "ranker", "2.0.0", "success"),
                                                     ("site-07", "scorer", "1.0.0", "success"),
                                                     (SILENT_SITE, "", "", "unknown")]


def test_audit_text_tables(history: ScriptedHistory, capsys) -> None:
    code, out = run_command(capsys, "audit", "--repo", str(history.bare), "--site", "site-02")
    assert code == 0
    assert "version 1.0.0 -> 1.1.0" in out and "Carol Release <carol@example.com>" in out
    assert "Commits whose manifests did not load" in out
    assert {line.split()[0] for line in out.split("Site timelines")[1].splitlines()[2:]} == {"site-02"}
    code, out = run_command(capsys, "audit", "--repo", str(history.bare), "--at", "2024-05-01 11:03", "--site", FAILING_SITE)
    assert code == 0 and "1.0.0 (wants 1.1.0) failure" in out and "site-01" not in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--at", "soon"], "is not a time"),
    (["--site", "nowhere"], "site 'nowhere': not in the fleet"),
    (["--deployment", "nothing"], "deployment 'nothing'"),
    (["--at", "2024-05-01 12:00", "--site", "nowhere"], "site 'nowhere'"),
    (["--branch", "nope"], "has no branch 'nope'"),
    (["--allowed-signers", "/nonexistent/allowed"], "cannot read allowed signers"),
])
def test_bad_usage_exits_2_with_a_clear_message(history: ScriptedHistory, capsys, argv, message) -> None:
    code, out = run_command(capsys, "audit", "--repo", str(history.bare), *argv)
    assert code == 2 and message in out


def test_a_directory_that_is_not_a_repository_exits_2(tmp_path: Path, capsys) -> None:
    code, out = run_command(capsys, "audit", "--repo", str(tmp_path))
    assert code == 2 and "is not a git repository" in out


@needs_ssh
def test_a_commit_altered_after_signing_is_bad_and_a_finding(history: ScriptedHistory, tmp_path: Path,
                                                              capsys) -> None:
    bare = tmp_path / "copy.git"
    shutil.copytree(history.bare, bare)
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(bare), str(clone))
    (clone / "deployments/scorer.yaml").write_text((clone / "deployments/scorer.yaml").read_text()
                                                   .replace("version: 1.0.0", "version: 1.1.0"))
    key = history.allowed_signers.parent / "carol"
    git(clone, "-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "commit", "--quiet", "-S", "-am",
        "Roll out scorer 1.1.0 again")
    signed = git(clone, "cat-file", "commit", "HEAD")
    altered = subprocess.run(["git", "hash-object", "-t", "commit", "-w", "--stdin"], cwd=bare, check=True,
                             capture_output=True, input=signed.replace("again", "AGAIN").encode() + b"\n")
    git(clone, "push", "--quiet", "origin", "HEAD:main")
    git(bare, "update-ref", "refs/heads/main", altered.stdout.decode().strip())

    code, out = run_command(capsys, "audit", "--repo", str(bare), "--allowed-signers", str(history.allowed_signers),
                       "--format", "json")
    changes = json.loads(out)["changes"]
    assert code == 1
    assert (changes[-1]["subject"], changes[-1]["signature"]["state"]) == ("Roll out scorer 1.1.0 AGAIN", "bad")


def test_status_matrix_of_the_scripted_history_matches_the_known_final_state(history: ScriptedHistory) -> None:
    done = subprocess.run([sys.executable, "-m", "reconciler", "status", "--repo", str(history.bare), "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {row["site"]: row for row in json.loads(done.stdout)["sites"]}
    final = expected_served_at(datetime(2100, 1, 1, tzinfo=UTC))
    assert sorted(rows) == SITES
    for name in SITES:
        if final[name] is None:
            assert (rows[name]["state"], rows[name]["stale"]) == ("unknown", True)
            continue
        state, served, desired = final[name]
        scorer = rows[name]["deployments"]["scorer"]
        assert (scorer["state"], scorer["activeVersion"], scorer["version"]) == (state, served, desired)
        assert rows[name]["stale"]  # written in 2024: far older than the fleet's staleAfter of 10m
