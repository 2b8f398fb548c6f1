"""Signed status records on a real git smart-HTTP remote: what a signing site writes, what each
reader (the gates' read_all, the archive behind `status`, `audit` and `report`) admits, and what a
site takes as its own record when someone else wrote on its ref."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from reconciler import trust
from reconciler.devtools.githttp import run_git
from reconciler.gitdoor.source import GitSource
from reconciler.history.archive import StatusArchive
from reconciler.history.html_report import collect_report, render_html
from reconciler.history.report import trail_text
from reconciler.history.timeline import audit_trail
from reconciler.manifests.loader import load_directory
from reconciler.status.gitref import STATUS_REF_PREFIX, StatusRefs
from reconciler.status.record import DeploymentStatus, StatusRecord
from reconciler.status.signed import RecordCheck, RecordSigner

if TYPE_CHECKING:
    from conftest import FleetRemote

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KEY, OTHER_KEY = trust.generate_private_key(), trust.generate_private_key()


def record(site: str, state: str = "success", minutes: int = 0) -> StatusRecord:
    deployment = DeploymentStatus(model="fraud", state=state, version="1.0.0", activeVersion="1.0.0",
                                  reason="Converged", since=T0)
    return StatusRecord(site=site, state=state, reason="Converged", deployments={"fraud": deployment},
                        agentVersion="0.1.0", writtenAt=T0 + timedelta(minutes=minutes))


def site_doc(name: str, key=None) -> str:
    spec = {"statusKeys": [{"id": "k1", "publicKey": trust.public_key_pem(key).decode()}]} if key else {}
    return yaml.safe_dump({"apiVersion": "reconciler/v1", "kind": "Site", "metadata": {"name": name}, "spec": spec})


@pytest.fixture
def signed_fleet(fleet_remote: FleetRemote, tmp_path: Path):
    """store-1 enrolls KEY; store-2 enrolls nothing (unsigned mode)."""
    fleet_remote.commit_and_push({"sites/store-1.yaml": site_doc("store-1", KEY),
                                  "sites/store-2.yaml": site_doc("store-2")}, "enroll store-1")
    sources: list[GitSource] = []

    def refs(cache: str, signer: RecordSigner | None = None) -> StatusRefs:
        sources.append(GitSource(fleet_remote.url, "main", tmp_path / cache))
        return StatusRefs(sources[-1], signer)

    yield refs
    for source in sources:
        source.close()


def check_of(fleet_remote: FleetRemote) -> RecordCheck:
    run_git(fleet_remote.clone, "pull", "--quiet")
    check = RecordCheck.of_fleet(load_directory(fleet_remote.clone).repo)
    assert check is not None
    return check


def test_a_signing_site_writes_the_signature_beside_the_record(fleet_remote, signed_fleet):
    commit = signed_fleet("store-1", RecordSigner((KEY,))).write(record("store-1"))
    run_git(fleet_remote.clone, "fetch", "--quiet", "origin", f"{STATUS_REF_PREFIX}store-1")
    assert run_git(fleet_remote.clone, "ls-tree", "--name-only", commit).split() == ["status.json", "status.json.sig"]
    check = check_of(fleet_remote)
    assert signed_fleet("reader").read_all(check) == {"store-1": record("store-1")} and not check.ignored


def test_a_forged_tip_is_ignored_by_readers_and_the_site_writes_over_it(fleet_remote, signed_fleet):
    site = signed_fleet("store-1", RecordSigner((KEY,)))
    site.write(record("store-1"))
    forged = signed_fleet("forger", RecordSigner((OTHER_KEY,))).write(record("store-1", "failure", minutes=1))
    signed_fleet("store-2").write(record("store-2"))  # unsigned mode: counts

    check = check_of(fleet_remote)
    assert set(signed_fleet("reader").read_all(check)) == {"store-2"}
    assert [(i.site, i.commit) for i in check.ignored] == [("store-1", forged)]

    # The site does not take the forged record for its own: it publishes its record again, on top.
    assert signed_fleet("restarted", RecordSigner((KEY,))).read_own("store-1") is None
    rewritten = signed_fleet("restarted-2", RecordSigner((KEY,))).write(record("store-1", minutes=2))
    assert rewritten is not None
    check = check_of(fleet_remote)
    assert signed_fleet("reader-2").read_all(check)["store-1"] == record("store-1", minutes=2)


def test_the_archive_audit_and_report_leave_out_records_that_do_not_verify_and_say_so(fleet_remote, signed_fleet, tmp_path):
    site = signed_fleet("store-1", RecordSigner((KEY,)))
    site.write(record("store-1"))
    forged = signed_fleet("forger", RecordSigner((OTHER_KEY,))).write(record("store-1", "failure", minutes=1))
    site_again = signed_fleet("store-1-again", RecordSigner((KEY,)))
    site_again.write(record("store-1", minutes=2))

    check = check_of(fleet_remote)
    with GitSource(fleet_remote.url, "main", tmp_path / "archive") as source:
        archive = StatusArchive(source, check=check)
        history = archive.histories()["store-1"]
    assert [r.writtenAt for _, r in history] == [T0, T0 + timedelta(minutes=2)]
    assert [(i.site, i.commit) for i in check.ignored] == [("store-1", forged)]

    trail = audit_trail(fleet_remote.url, "main")
    assert {i.state for i in trail.intervals if i.site == "store-1"} == {"success"}
    assert [(i.site, i.commit) for i in trail.ignored] == [("store-1", forged)]
    assert trail.to_json()["ignoredStatusRecords"][0]["commit"] == forged
    assert any(line.split()[:3] == ["store-1", forged[:12], "forged/unknown"] for line in trail_text(trail).splitlines())

    report = collect_report(fleet_remote.url, "main", None, T0)
    assert [(i.site, i.commit) for i in report.ignored] == [("store-1", forged)]
    assert forged[:12] in render_html(report) and "Status records ignored" in render_html(report)


def test_require_signed_status_refuses_unsigned_sites(fleet_remote, signed_fleet):
    signed_fleet("store-2").write(record("store-2"))
    fleet = yaml.safe_dump({"apiVersion": "reconciler/v1", "kind": "Fleet", "metadata": {"name": "f"},
                            "spec": {"requireSignedStatus": True}})
    fleet_remote.commit_and_push({"fleet.yaml": fleet}, "require signed status")
    check = check_of(fleet_remote)
    assert signed_fleet("reader").read_all(check) == {}
    assert [i.site for i in check.ignored] == ["store-2"] and "requires signed status" in check.ignored[0].why
