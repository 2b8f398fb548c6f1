"""``plan --base/--head --nats-server`` and a trial run of a site with ``nats:`` read each gated
deployment's reports from the NATS summaries bucket, as the NATS gates read them, and answer as
from the sites' full status records: the example fleet's defect-detector moving to 2.0.0 in waves,
one site reporting the new version healthy, one failing it, one never reporting (the fleet of
test_summary_cli.py, each record also put in a real nats-server's records bucket and folded into
its shard of the summaries bucket, as a NATS site does). A bucket that does not exist or holds no
summary, and a server that does not answer, are refused; a missing bucket is not created."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from reconciler.delivery.summary import gated_shards
from reconciler.devtools.natsserver import NatsServer
from reconciler.devtools.processes import free_port
from reconciler.manifests.fleet import FleetRepo
from reconciler.settings import NatsSettings
from reconciler.status.nats_channel import NatsChannel
from reconciler.status.nats_summaries import NatsSummaries
from reconciler.status.record import StatusRecord
from reconciler.status.signed import RecordSigner
from tests.integration.test_summary_cli import DEPLOYMENT, FAILING, Fleet, run, serve


@dataclass
class NatsFleet:
    fleet: Fleet
    nats: NatsServer


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats") as server:
        yield server


def served(tmp_path: Path, nats: NatsServer, forged: bool) -> Iterator[NatsFleet]:
    def put(record: StatusRecord, signer: RecordSigner | None, fleet: FleetRepo) -> None:
        """As a NATS site publishes: its record, then its entry in its shard of the summary."""
        channel = NatsChannel(NatsSettings(servers=[nats.url], timeout=10), record.site, signer=signer)
        try:
            channel.put_record(record)
            shard = gated_shards(fleet, record.site, datetime.now(UTC))[DEPLOYMENT]  # the shard its gates make
            assert NatsSummaries(channel, signer).publish(record, DEPLOYMENT, shard)
        finally:
            channel.close()

    for fleet in serve(tmp_path, forged, also=put):
        yield NatsFleet(fleet, nats)


@pytest.fixture
def fleet(tmp_path: Path, nats: NatsServer) -> Iterator[NatsFleet]:
    yield from served(tmp_path, nats, forged=False)


@pytest.fixture
def forged_fleet(tmp_path: Path, nats: NatsServer) -> Iterator[NatsFleet]:
    yield from served(tmp_path, nats, forged=True)


def plan(fleet: Fleet) -> tuple[str, ...]:
    return "plan", "--repo", fleet.remote.url, "--base", fleet.base, "--head", fleet.head, "--format", "json"


def read_from(nats: str, bucket: str = "reconciler-summaries") -> str:
    return f"read the summaries of {DEPLOYMENT} from NATS bucket {bucket} at {nats}"


def site_yaml(tmp_path: Path, fleet: Fleet, site: str, server: str, **nats: object) -> Path:
    config = tmp_path / f"{site}.yaml"
    config.write_text(yaml.safe_dump({"site": site, "repo": fleet.remote.url, "state": str(tmp_path / "state"),
                                      "nats": {"servers": [server], "timeout": 2, **nats}}))
    return config


def test_plan_of_a_change_answers_from_the_nats_summaries_as_from_the_records(fleet: NatsFleet, capsys) -> None:
    code, from_records, err = run(capsys, *plan(fleet.fleet))
    assert code == 0, from_records + err
    code, from_summaries, err = run(capsys, *plan(fleet.fleet), "--nats-server", fleet.nats.url)
    assert code == 0, err
    assert json.loads(from_summaries) == json.loads(from_records)
    healthy, failing, silent = fleet.fleet.sites
    impact = json.loads(from_summaries)
    moves = {site: m["next"] for d in impact["deployments"] if d["name"] == DEPLOYMENT for m in d["moves"]
             for site in m["sites"]}
    assert moves == {healthy: "rollback (FailureThresholdReached)", failing: "halt (FailureThresholdReached)",
                     silent: "halt (FailureThresholdReached)"}
    assert impact["unreported"] == [silent]
    assert read_from(fleet.nats.url) in err


def test_an_entry_the_site_document_does_not_admit_is_ignored_as_its_record_is(forged_fleet: NatsFleet,
                                                                                capsys) -> None:
    fleet = forged_fleet
    code, from_records, _ = run(capsys, *plan(fleet.fleet))
    assert code == 0
    code, from_summaries, err = run(capsys, *plan(fleet.fleet), "--nats-server", fleet.nats.url)
    assert code == 0, err
    assert json.loads(from_summaries) == json.loads(from_records)
    assert json.loads(from_summaries)["unreported"] == [FAILING, fleet.fleet.sites[2]]  # the failure is forged
    assert f"ignored the summary entry of site {FAILING}" in err


@pytest.mark.parametrize("which", [0, 1, 2])
def test_a_trial_run_of_a_nats_site_decides_from_the_summaries_as_from_the_records(
        fleet: NatsFleet, tmp_path: Path, capsys, which: int) -> None:
    site = fleet.fleet.sites[which]
    code, from_records, _ = run(capsys, "run", "--once", "--dry-run", "--repo", fleet.fleet.remote.url,
                                "--site", site, "--state", str(tmp_path / "state"))
    config = site_yaml(tmp_path, fleet.fleet, site, fleet.nats.url)
    code_from_summaries, from_summaries, err = run(capsys, "run", "--once", "--dry-run", "--config", str(config))
    assert (code_from_summaries, from_summaries) == (code, from_records)
    assert f"halt     {DEPLOYMENT}" in from_summaries and "1 of 2 executed sites failed" in from_summaries
    assert read_from(fleet.nats.url) in err
    assert not (tmp_path / "state").exists()


def commands(fleet: NatsFleet, tmp_path: Path, server: str, bucket: str) -> dict[str, tuple[str, ...]]:
    config = site_yaml(tmp_path, fleet.fleet, fleet.fleet.sites[0], server, summariesBucket=bucket)
    return {"plan": (*plan(fleet.fleet), "--nats-server", server, "--summaries-bucket", bucket, "--nats-timeout", "2"),
            "trial": ("run", "--once", "--dry-run", "--config", str(config))}


def bucket_exists(server: str, bucket: str) -> bool:
    channel = NatsChannel(NatsSettings(servers=[server], timeout=5), create_buckets=False)
    try:
        return channel.has_bucket(bucket)
    finally:
        channel.close()


@pytest.mark.parametrize("command", ["plan", "trial"])
def test_a_summaries_bucket_that_does_not_exist_is_refused_and_not_made(fleet: NatsFleet, tmp_path: Path,
                                                                         capsys, command: str) -> None:
    code, out, err = run(capsys, *commands(fleet, tmp_path, fleet.nats.url, "no-such-bucket")[command])
    assert (code, out) == (2, "")
    assert "SummaryBucketEmpty" in err and "NATS bucket no-such-bucket" in err and "does not exist" in err
    assert not bucket_exists(fleet.nats.url, "no-such-bucket")
    assert bucket_exists(fleet.nats.url, "reconciler-summaries")  # the check itself can say yes


@pytest.mark.parametrize("command", ["plan", "trial"])
def test_a_summaries_bucket_with_no_summary_is_refused(fleet: NatsFleet, tmp_path: Path, capsys,
                                                       command: str) -> None:
    made = NatsChannel(NatsSettings(servers=[fleet.nats.url], timeout=5, summaries_bucket="empty"))
    try:
        assert made.has_bucket("empty")  # a channel that creates buckets made it
    finally:
        made.close()
    code, out, err = run(capsys, *commands(fleet, tmp_path, fleet.nats.url, "empty")[command])
    assert (code, out) == (2, "")
    assert "SummaryBucketEmpty" in err and "holds no summary of any deployment" in err


@pytest.mark.parametrize("command", ["plan", "trial"])
def test_a_nats_server_that_does_not_answer_is_refused(fleet: NatsFleet, tmp_path: Path, capsys,
                                                       command: str) -> None:
    nowhere = f"nats://127.0.0.1:{free_port()}"
    code, out, err = run(capsys, *commands(fleet, tmp_path, nowhere, "reconciler-summaries")[command])
    assert (code, out) == (1, "")
    assert "StatusChannelUnreachable" in err and nowhere in err


@pytest.mark.parametrize(("argv", "words"), [
    (("--site", "s1"), "--nats-server goes with --base/--head"),
    (("--base", "before", "--head", "main", "--summary-repo", "x"), "give one"),
])
def test_nats_summaries_where_they_do_not_fit_are_refused(fleet: NatsFleet, capsys, argv, words) -> None:
    code, out, err = run(capsys, "plan", "--repo", fleet.fleet.remote.url, *argv, "--nats-server", fleet.nats.url)
    assert (code, out) == (2, "")
    assert words in err
