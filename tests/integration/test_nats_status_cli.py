"""``reconciler status --nats-server`` and ``reconciler report --nats-server``: the fleet matrix from
the NATS records bucket (sites with ``nats:`` and ``audit: off`` leave no status ref), checked
against the Site documents' keys as a gate reads them, with a real nats-server on 127.0.0.1; bad
NATS options are refused clearly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from reconciler.devtools.natsserver import NatsServer
from reconciler.devtools.testing import copy_example, git
from reconciler.settings import NatsSettings
from reconciler.status.nats_channel import NatsChannel
from reconciler.status.record import DeploymentStatus, StatusRecord
from reconciler.status.signed import RecordSigner
from reconciler.trust import generate_private_key, public_key_pem

SITE = "store-berlin-01"


def reconciler(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, timeout=120)


def record(site: str, state: str = "success") -> StatusRecord:
    status = DeploymentStatus(model="demand-forecast", state=state, version="1.0.0", activeVersion="1.0.0",
                              reason="Active", since=datetime.now(UTC))
    return StatusRecord(site=site, state=state, reason="Converged", deployments={"demand-forecast": status},
                        agentVersion="0.1.0", writtenAt=datetime.now(UTC))


@pytest.fixture
def nats(tmp_path):
    with NatsServer(tmp_path / "nats") as running:
        yield running


def fleet_repo(root: Path) -> Path:
    repo = copy_example(root / "fleet")
    commit(repo)
    return repo


def commit(repo: Path) -> None:
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "fleet"]):
        git(*args, cwd=repo)


def put(nats: NatsServer, value: StatusRecord, signer: RecordSigner | None = None) -> None:
    channel = NatsChannel(NatsSettings(servers=[nats.url], timeout=5), value.site, signer=signer)
    try:
        channel.put_record(value)
    finally:
        channel.close()


def signed_by_a_stranger(nats: NatsServer, tmp_path: Path) -> Path:
    """A fleet whose SITE enrolls a status key, and a record of SITE signed by another key."""
    repo = copy_example(tmp_path / "fleet")
    site_yaml = repo / "sites" / f"{SITE}.yaml"
    site = yaml.safe_load(site_yaml.read_text())
    site["spec"]["statusKeys"] = [{"id": "k1", "publicKey": public_key_pem(generate_private_key()).decode()}]
    site_yaml.write_text(yaml.safe_dump(site))
    commit(repo)
    put(nats, record(SITE), RecordSigner((generate_private_key(),)))
    return repo


def test_status_reads_the_records_bucket(nats, tmp_path):
    repo = fleet_repo(tmp_path)
    put(nats, record(SITE))
    put(nats, record("store-munich-01", "failure"))
    put(nats, record("no-such-site"))
    done = reconciler("status", "--repo", str(repo), "--nats-server", nats.url, "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = {row["site"]: row for row in json.loads(done.stdout)["sites"]}
    assert (rows[SITE]["state"], rows["store-munich-01"]["state"]) == ("success", "failure")
    assert rows["store-vienna-01"]["state"] != "success"  # no record: not reported
    without = reconciler("status", "--repo", str(repo), "--format", "json")  # Git refs: none there
    assert {row["site"]: row["state"] for row in json.loads(without.stdout)["sites"]}[SITE] != "success"


def test_a_record_signed_by_a_key_the_site_does_not_enroll_is_ignored(nats, tmp_path):
    repo = signed_by_a_stranger(nats, tmp_path)
    done = reconciler("status", "--repo", str(repo), "--nats-server", nats.url, "--format", "json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert {row["site"]: row["state"] for row in shown["sites"]}[SITE] != "success"
    assert [entry["site"] for entry in shown["ignored"]] == [SITE]


def matrix_states(page: str) -> dict[str, str]:
    """site -> state, from the report page's matrix rows."""
    return dict(re.findall(r'<tr data-site="([^"]+)"[^>]*><th[^>]*>[^<]*(?:<span[^>]*>[^<]*</span>)?</th>'
                           r'<td><span class="state [^"]*">([^<]*)</span>', page))


def test_report_reads_the_records_bucket(nats, tmp_path):
    repo = fleet_repo(tmp_path)
    put(nats, record(SITE))
    put(nats, record("store-munich-01", "failure"))
    done = reconciler("report", "--html", str(tmp_path / "nats-page"), "--repo", str(repo), "--nats-server", nats.url)
    assert done.returncode == 0, done.stderr
    states = matrix_states((tmp_path / "nats-page" / "index.html").read_text())
    assert (states[SITE], states["store-munich-01"]) == ("success", "failure")
    assert states["store-vienna-01"] != "success"  # no record: not reported
    from_git = reconciler("report", "--html", str(tmp_path / "git-page"), "--repo", str(repo))
    assert from_git.returncode == 0, from_git.stderr  # Git refs: none there
    assert matrix_states((tmp_path / "git-page" / "index.html").read_text())[SITE] != "success"


def test_report_leaves_out_a_record_the_site_does_not_sign_for(nats, tmp_path):
    repo = signed_by_a_stranger(nats, tmp_path)
    done = reconciler("report", "--html", str(tmp_path / "page"), "--repo", str(repo), "--nats-server", nats.url)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "page" / "index.html").read_text()
    assert matrix_states(page)[SITE] != "success"
    assert 'id="ignored"' in page and SITE in page.split('id="ignored"')[1]


@pytest.mark.parametrize("command", ["status", "report"])
def test_a_records_bucket_that_does_not_exist_is_refused_and_not_made(nats, tmp_path, command):
    repo = fleet_repo(tmp_path)
    put(nats, record(SITE))  # the sites' bucket exists; the one asked for is mistyped
    output = ["--html", str(tmp_path / "page")] if command == "report" else []
    done = reconciler(command, *output, "--repo", str(repo), "--nats-server", nats.url, "--records-bucket", "reconciler-statsu")
    assert done.returncode == 2, done.stderr
    assert "RecordsBucketMissing" in done.stderr and "reconciler-statsu" in done.stderr
    reader = NatsChannel(NatsSettings(servers=[nats.url], timeout=5), create_buckets=False)
    try:
        assert not reader.has_bucket("reconciler-statsu")
    finally:
        reader.close()


@pytest.mark.parametrize("command", ["status", "report"])
@pytest.mark.parametrize("options,said", [
    (["--nats-server", "http://127.0.0.1:4222"], "invalid NATS settings"),
    (["--nats-server", "nats://127.0.0.1:4222", "--nats-token-env", "T", "--nats-nkey-seed", "/x"],
     "invalid NATS settings"),
])
def test_bad_nats_options_are_refused(tmp_path, command, options, said):
    page = ["--html", str(tmp_path / "page")] if command == "report" else []
    done = reconciler(command, "--repo", str(fleet_repo(tmp_path)), *page, *options)
    assert done.returncode != 0 and said in done.stderr
