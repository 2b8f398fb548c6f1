"""The operator's commands read the roll-ups of the sites' shard summaries (``--summary-repo``),
as the gates do, and answer as they do from the full status records: ``plan --base/--head``,
a trial run (``run --once --dry-run``) and ``status``, for the example fleet's defect-detector
moving to 2.0.0 in waves, one site reporting the new version healthy, one failing it, and one
never reporting. The summaries live in a repository of their own on a real git smart-HTTP
server; what they cannot say, or a summary repository that says nothing, is said or refused."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from reconciler.cli.main import main
from reconciler.delivery.plan import target_for, targeted_sites
from reconciler.delivery.summary import gated_shards
from reconciler.devtools.githttp import init_bare_repo
from reconciler.devtools.processes import free_port
from reconciler.devtools.testing import FleetRemote, copy_example, git, serve_fleet
from reconciler.gitdoor.source import GitSource
from reconciler.manifests.fleet import FleetRepo
from reconciler.manifests.loader import load_directory
from reconciler.status.gitref import StatusRefs
from reconciler.status.record import DeploymentStatus, StatusRecord
from reconciler.status.signed import RecordSigner
from reconciler.status.summary_refs import SummaryRefs, rollup_file, rollup_ref
from reconciler.trust import generate_private_key, public_key_pem

DEPLOYMENT = "defect-detector"
FAILING = "factory-pune-01"  # of the three sites defect-detector targets: healthy, failing, silent
ENROLLED = generate_private_key()
UNSUMMARISED = "defect-detector-cpu"  # gated too (a rollout of its own), but no site reported on it
Also = Callable[[StatusRecord, RecordSigner | None, FleetRepo], None]


@dataclass
class Fleet:
    remote: FleetRemote
    base: str  # branches of the remote
    head: str
    sites: list[str]  # the sites defect-detector targets: healthy, failing, silent
    summaries: str  # the URL of the summary repository

    def url(self, name: str) -> str:
        return self.remote.server.url(name)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    yield from serve(tmp_path, forged=False)


@pytest.fixture
def forged_fleet(tmp_path: Path) -> Iterator[Fleet]:
    """The failing site enrolls a status key, and its record and entry are signed by another."""
    yield from serve(tmp_path, forged=True)


def serve(tmp_path: Path, forged: bool, also: Also | None = None) -> Iterator[Fleet]:
    """``also``: called with each record, its signer and the head's fleet, to write it elsewhere too."""
    remote = serve_fleet(tmp_path, copy_example(tmp_path / "example"))
    try:
        git("push", "-q", "origin", "HEAD:refs/heads/before", cwd=remote.clone)
        remote.bump("deployments/defect-detector.yaml", "1.0.0", "2.0.0")
        if forged:
            site_doc = remote.clone / "sites" / f"{FAILING}.yaml"
            document = yaml.safe_load(site_doc.read_text())
            document["spec"]["statusKeys"] = [{"id": "k1", "publicKey": public_key_pem(ENROLLED).decode()}]
            site_doc.write_text(yaml.safe_dump(document))
        remote.push("defect-detector 2.0.0")
        repo, now = load_directory(remote.clone).repo, datetime.now(UTC)
        targeted = targeted_sites(repo, repo.deployments[DEPLOYMENT], now)
        sites = sorted(targeted)
        assert len(sites) == 3 and sites[1] == FAILING
        rollout = target_for(repo, repo.deployments[DEPLOYMENT], repo.sites[sites[0]], now).rollout_id
        records = [record(sites[0], "success", "2.0.0", rollout), record(sites[1], "failure", "1.0.0", rollout)]
        init_bare_repo(remote.server.root, "summaries")
        init_bare_repo(remote.server.root, "empty")
        with GitSource(remote.url, "main", tmp_path / "status-cache") as status, \
                GitSource(remote.server.url("summaries"), "main", tmp_path / "summary-cache") as summaries:
            for one in records:  # as each site writes: its record, then its entry, then the roll-up
                signer = RecordSigner((generate_private_key(),)) if forged and one.site == FAILING else None
                shard = gated_shards(repo, one.site, now)[DEPLOYMENT]
                SummaryRefs(summaries, StatusRefs(status, signer), signer=signer).write(one, {DEPLOYMENT: shard})
                if also is not None:
                    also(one, signer, repo)
        yield Fleet(remote, "before", "main", sites, remote.server.url("summaries"))
    finally:
        remote.server.stop()


def record(site: str, state: str, active: str, rollout: str) -> StatusRecord:
    reason = "ValidationFailed" if state == "failure" else "Converged"  # a failure that is evidence against 2.0.0
    status = DeploymentStatus(model=DEPLOYMENT, state=state, version="2.0.0", activeVersion=active, reason=reason,
                              failureKind="version" if state == "failure" else None, rollout=rollout,
                              since=datetime.now(UTC) - timedelta(minutes=20))
    return StatusRecord(site=site, state=state, reason=reason, deployments={DEPLOYMENT: status},
                        agentVersion="test", writtenAt=datetime.now(UTC) - timedelta(minutes=10))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_of_a_change_answers_from_the_summaries_as_from_the_records(fleet: Fleet, capsys) -> None:
    plan = ("plan", "--repo", fleet.remote.url, "--base", fleet.base, "--head", fleet.head, "--format", "json")
    code, from_records, err = run(capsys, *plan)
    assert code == 0, from_records + err
    code, from_summaries, err = run(capsys, *plan, "--summary-repo", fleet.summaries)
    assert code == 0, err
    assert json.loads(from_summaries) == json.loads(from_records)
    impact = json.loads(from_summaries)
    healthy, failing, silent = fleet.sites
    moves = {site: m["next"] for d in impact["deployments"] if d["name"] == DEPLOYMENT for m in d["moves"]
             for site in m["sites"]}
    # one failed of two that ran reaches the failure threshold: the healthy site rolls back
    assert moves == {healthy: "rollback (FailureThresholdReached)", failing: "halt (FailureThresholdReached)",
                     silent: "halt (FailureThresholdReached)"}
    assert impact["unreported"] == [silent]
    assert f"read the roll-ups of {DEPLOYMENT} from {fleet.summaries}" in err


def test_an_entry_the_site_document_does_not_admit_is_ignored_as_its_record_is(forged_fleet: Fleet,
                                                                                capsys) -> None:
    fleet = forged_fleet
    plan = ("plan", "--repo", fleet.remote.url, "--base", fleet.base, "--head", fleet.head, "--format", "json")
    code, from_records, _ = run(capsys, *plan)
    assert code == 0
    code, from_summaries, err = run(capsys, *plan, "--summary-repo", fleet.summaries)
    assert code == 0, err
    assert json.loads(from_summaries) == json.loads(from_records)
    assert json.loads(from_summaries)["unreported"] == [FAILING, fleet.sites[2]]  # no abort: the failure is forged
    assert f"ignored the summary entry of site {FAILING}" in err


@pytest.mark.parametrize("which", [0, 1, 2])
def test_a_trial_run_decides_from_the_summaries_as_from_the_records(fleet: Fleet, tmp_path: Path, capsys,
                                                                    which: int) -> None:
    site = fleet.sites[which]
    trial = ("run", "--once", "--dry-run", "--repo", fleet.remote.url, "--site", site,
             "--state", str(tmp_path / "state"))
    code, from_records, _ = run(capsys, *trial)
    code_from_summaries, from_summaries, err = run(capsys, *trial, "--summary-repo", fleet.summaries)
    assert (code_from_summaries, from_summaries) == (code, from_records)
    # read from nowhere, the gate would let the first wave deploy: the summaries say the rollout aborted
    assert f"halt     {DEPLOYMENT}" in from_summaries and "1 of 2 executed sites failed" in from_summaries
    assert f"read the roll-ups of {DEPLOYMENT} from {fleet.summaries}" in err
    assert not (tmp_path / "state").exists()


def test_status_shows_each_sites_report_as_the_records_say_it(fleet: Fleet, capsys) -> None:
    status = ("status", "--repo", fleet.remote.url, "--format", "json")
    code, from_records, _ = run(capsys, *status)
    assert code == 0
    code, from_summaries, err = run(capsys, *status, "--summary-repo", fleet.summaries)
    assert code == 0, err

    def reported(matrix: dict) -> dict[str, tuple[str, str | None]]:
        return {row["site"]: (cell["state"], cell["version"]) for row in matrix["sites"]
                for name, cell in row["deployments"].items() if name == DEPLOYMENT}

    assert reported(json.loads(from_summaries)) == reported(json.loads(from_records)) == {
        fleet.sites[0]: ("success", "2.0.0"), fleet.sites[1]: ("failure", "2.0.0")}
    matrix = json.loads(from_summaries)
    assert matrix["summary"][DEPLOYMENT] == {"failure": 1, "success": 1, "unknown": 1}
    assert f"holds no roll-up of {UNSUMMARISED} yet" in err  # said, not passed off as silence
    code, text, _ = run(capsys, "status", "--repo", fleet.remote.url, "--summary-repo", fleet.summaries)
    assert "2.0.0 FAILED (version: ValidationFailed)" in text
    assert "not shown: what a summary does not hold" in text


def commands(fleet: Fleet, tmp_path: Path) -> dict[str, tuple[str, ...]]:
    return {
        "plan": ("plan", "--repo", fleet.remote.url, "--base", fleet.base, "--head", fleet.head),
        "trial": ("run", "--once", "--dry-run", "--repo", fleet.remote.url, "--site", fleet.sites[0],
                  "--state", str(tmp_path / "state")),
        "status": ("status", "--repo", fleet.remote.url),
    }


@pytest.mark.parametrize("command", ["plan", "trial", "status"])
def test_a_summary_repo_with_no_roll_up_is_refused(fleet: Fleet, tmp_path: Path, capsys, command: str) -> None:
    code, out, err = run(capsys, *commands(fleet, tmp_path)[command], "--summary-repo", fleet.url("empty"))
    assert (code, out) == (2, "")
    assert "SummaryRepoEmpty" in err and "holds no roll-up of any deployment" in err


@pytest.mark.parametrize("command", ["plan", "trial", "status"])
def test_an_unreachable_summary_repo_is_refused(fleet: Fleet, tmp_path: Path, capsys, command: str) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/summaries.git"
    code, out, err = run(capsys, *commands(fleet, tmp_path)[command], "--summary-repo", nowhere)
    assert (code, out) == (1, "")
    assert "StatusFetchFailed" in err and nowhere in err


def test_a_roll_up_that_does_not_parse_is_said_and_its_sites_count_as_silent(fleet: Fleet, tmp_path: Path,
                                                                             capsys) -> None:
    with GitSource(fleet.summaries, "main", tmp_path / "breaker") as source:  # a broken writer
        refs = StatusRefs(source)
        tip = refs.fetch_tip(rollup_ref(DEPLOYMENT))
        broken = refs.commit_files([(rollup_file(0), b"not a summary")], tip, "broken\n",
                                   record(fleet.sites[0], "success", "2.0.0", "r"))
        assert refs.push_if_unchanged(broken, rollup_ref(DEPLOYMENT), tip, lease=True)
    code, out, err = run(capsys, "status", "--repo", fleet.remote.url, "--summary-repo", fleet.summaries,
                         "--format", "json")
    assert code == 0
    assert f"skipped {DEPLOYMENT}'s roll-up file {rollup_file(0)} (not a summary" in err
    assert json.loads(out)["summary"][DEPLOYMENT] == {"unknown": 3}


@pytest.mark.parametrize(("argv", "words"), [
    (("status", "--drift"), "--drift read the status records"),
    (("status", "--inventory"), "--inventory read the status records"),
    (("plan", "--site", "s1"), "--summary-repo goes with --base/--head"),
])
def test_what_needs_whole_records_is_refused_with_summaries(fleet: Fleet, capsys, argv, words) -> None:
    code, out, err = run(capsys, *argv, "--repo", fleet.remote.url, "--summary-repo", fleet.summaries)
    assert (code, out) == (2, "")
    assert words in err
