"""Signed shard summaries: a site with status keys signs its entry, and a reader counts only the
entries the fleet's keyring admits (a forged, edited, replayed or, for an enrolled site, unsigned
entry is ignored with StatusRecordIgnored), before choosing each site's newest."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from reconciler import reasons, trust
from reconciler.delivery.summary import decode, encode, fold, merged_reports
from reconciler.status.record import DeploymentStatus, StatusRecord
from reconciler.status.signed import RecordCheck, RecordSigner, StatusKeyring
from reconciler.status.summary_refs import admitted_by

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DEPLOYMENT = "demand-forecast"
KEY, OTHER_KEY = trust.generate_private_key(), trust.generate_private_key()
SIGNER, FORGER = RecordSigner((KEY,)), RecordSigner((OTHER_KEY,))
KEYRING = StatusKeyring({site: (trust.TrustedKey(f"{site}/a", KEY.public_key()),) for site in ("s1", "s2")})


def record(site: str, minutes: float, state: str = "success", deployment: str = DEPLOYMENT) -> StatusRecord:
    status = DeploymentStatus(model="m", state=state, version="1.1.0", rollout="r1", reason="Converged", since=T0)
    return StatusRecord(site=site, state=state, reason="Converged", deployments={deployment: status},
                        agentVersion="0", writtenAt=T0 + timedelta(minutes=minutes))


def stored(summary, deployment: str = DEPLOYMENT) -> dict:
    """The summary as a reader finds it: encoded, then decoded."""
    return decode(encode(deployment, summary), deployment)


def reports(summaries, keyring: StatusKeyring = KEYRING) -> dict:
    return merged_reports(summaries, admitted_by(RecordCheck(keyring), DEPLOYMENT))


def edited(summary, site: str, old: str, new: str) -> dict:
    document = json.loads(encode(DEPLOYMENT, summary))
    document["sites"][site] = json.loads(json.dumps(document["sites"][site]).replace(old, new))
    return decode(json.dumps(document).encode(), DEPLOYMENT)


def ignored(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "reason", None) == reasons.StatusRecordIgnored]


def test_a_signed_entry_reads_back_with_its_signature_and_counts(caplog):
    summary = stored(fold({}, record("s1", 1), DEPLOYMENT, SIGNER.sign))
    assert summary["s1"].signature is not None
    assert reports([summary])["s1"].state == "success" and ignored(caplog) == []


def test_folding_a_signed_record_twice_is_folding_once():
    once = fold({}, record("s1", 1), DEPLOYMENT, SIGNER.sign)
    assert fold(once, record("s1", 1), DEPLOYMENT, SIGNER.sign) == once


@pytest.mark.parametrize("forge, why", [
    (lambda: stored(fold({}, record("s1", 1), DEPLOYMENT, FORGER.sign)), "forged/unknown key"),
    (lambda: edited(fold({}, record("s1", 1), DEPLOYMENT, SIGNER.sign), "s1", "success", "failure"),
     "forged/unknown key"),
    (lambda: stored(fold({}, record("s1", 1), DEPLOYMENT)), "unsigned, but the Site document enrolls a key"),
    # s2's genuine entry put under s1's name: signed over s2, so it does not verify as s1's
    (lambda: {"s1": stored(fold({}, record("s2", 1), DEPLOYMENT, SIGNER.sign))["s2"]}, "forged/unknown key"),
])
def test_an_entry_the_keyring_does_not_admit_is_ignored(forge, why, caplog):
    assert reports([forge()]) == {}
    assert len(ignored(caplog)) == 1 and why in ignored(caplog)[0]


def test_an_entry_signed_for_another_deployment_does_not_count_for_this_one():
    other = fold({}, record("s1", 1, deployment="other"), "other", SIGNER.sign)
    replayed = decode(encode(DEPLOYMENT, stored(other, "other")), DEPLOYMENT)
    assert reports([replayed]) == {}


def test_a_forged_entry_dated_later_does_not_hide_the_genuine_one():
    genuine = stored(fold({}, record("s1", 1), DEPLOYMENT, SIGNER.sign))
    forged = stored(fold({}, record("s1", 99, "failure"), DEPLOYMENT, FORGER.sign))
    assert reports([forged, genuine])["s1"].state == "success"
    assert merged_reports([forged, genuine])["s1"].state == "failure"  # unchecked, the later entry wins


@pytest.mark.parametrize("keyring, counts", [(StatusKeyring(), True), (StatusKeyring(require_signed=True), False)])
def test_unsigned_entries_of_keyless_sites_count_unless_the_fleet_requires_signed_status(keyring, counts):
    summary = stored(fold({}, record("s3", 1), DEPLOYMENT))
    assert ("s3" in reports([summary], keyring)) is counts
