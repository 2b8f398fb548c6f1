"""Shard summaries: the fold, the stored form, and the differential property that a gate decided
from summaries is the gate decided from the sites' newest records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.delivery.gates import decide_gate, site_report
from reconciler.delivery.summary import (
    SHARD_SIZE,
    SummaryEntry,
    decode,
    encode,
    fold,
    merged_reports,
    shard_of,
    shards,
)
from reconciler.manifests.models import Rollout
from reconciler.status.record import DeploymentStatus, StatusRecord

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DEPLOYMENT = "demand-forecast"
RID, OLD_RID = "a1b2c3d4e5f6", "0ld0ld0ld0ld"


def record(site: str, minutes: float, state: str = "success", rollout: str | None = RID, reason: str = "Converged",
           message: str = "", kind: str | None = None, deployment: str = DEPLOYMENT, since: float = 0,
           zone: timezone = UTC) -> StatusRecord:
    status = DeploymentStatus(model="m", state=state, version="1.1.0", rollout=rollout, reason=reason,
                              message=message, failureKind=kind,
                              since=(T0 + timedelta(minutes=since)).astimezone(zone))
    return StatusRecord(site=site, state=state, reason=reason, deployments={deployment: status},
                        agentVersion="0.1.0", writtenAt=T0 + timedelta(minutes=minutes))


def test_fold_keeps_each_sites_newest_record():
    summary = fold({}, record("s1", 1, "progressing"), DEPLOYMENT)
    summary = fold(summary, record("s2", 2, "failure", reason="ValidationFailed"), DEPLOYMENT)
    summary = fold(summary, record("s1", 3, "success"), DEPLOYMENT)
    assert {site: entry.report.state for site, entry in summary.items() if entry.report} == \
        {"s1": "success", "s2": "failure"}


def test_an_older_record_folded_late_changes_nothing():
    newer = fold({}, record("s1", 5, "success"), DEPLOYMENT)
    assert fold(newer, record("s1", 4, "failure"), DEPLOYMENT) == newer


def test_folding_twice_is_folding_once():
    once = fold({}, record("s1", 5), DEPLOYMENT)
    assert fold(once, record("s1", 5), DEPLOYMENT) == once


def test_a_record_without_the_deployment_leaves_a_tombstone():
    summary = fold({}, record("s1", 1), DEPLOYMENT)
    summary = fold(summary, record("s1", 2, deployment="other"), DEPLOYMENT)
    assert summary["s1"] == SummaryEntry(T0 + timedelta(minutes=2), None)
    assert merged_reports([summary]) == {}


def test_the_newest_entry_wins_across_shards():
    old_shard = fold({}, record("s1", 1, "success"), DEPLOYMENT)
    new_shard = fold({}, record("s1", 2, "failure", reason="ValidationFailed"), DEPLOYMENT)
    for order in ([old_shard, new_shard], [new_shard, old_shard]):
        assert merged_reports(order)["s1"].state == "failure"


@pytest.mark.parametrize("entry", [
    record("s1", 1),
    record("s1", 1, "aborted", reason="FailureThresholdReached", message="the rollout is aborted: ..."),
    record("s1", 1, "failure", reason="DiskFull", kind="site", zone=timezone(timedelta(hours=2))),
    record("s1", 1, rollout=None),
    record("s1", 1, deployment="other"),
])
def test_the_stored_form_reads_back_equal(entry):
    summary = fold({}, entry, DEPLOYMENT)
    assert merged_reports([decode(encode(DEPLOYMENT, summary), DEPLOYMENT)]) == merged_reports([summary])
    decoded = decode(encode(DEPLOYMENT, summary), DEPLOYMENT)["s1"]
    if decoded.report is not None:
        assert decoded.report.since.utcoffset() == entry.deployments[DEPLOYMENT].since.utcoffset()


def test_only_an_aborted_report_keeps_its_message():
    summary = fold({}, record("s1", 1, "failure", reason="ValidationFailed", message="accuracy 0.2"), DEPLOYMENT)
    assert decode(encode(DEPLOYMENT, summary), DEPLOYMENT)["s1"].report.message == ""


@pytest.mark.parametrize("data", [b"not json", b"{}", b'{"format": "reconciler/summary/v1", "deployment": "other",'
                                  b' "sites": {}}', b'{"format": "reconciler/summary/v1", "deployment": '
                                  b'"demand-forecast", "sites": {"s1": []}}', b"[1]"])
def test_what_is_no_summary_is_refused(data):
    with pytest.raises(ValueError):
        decode(data, DEPLOYMENT)


def test_shards_hold_at_most_shard_size_sites_of_one_wave():
    sites = [f"store-{n:05d}" for n in range(2 * SHARD_SIZE + 1)]
    assert [shard_of(site, [reversed(sites)]) for site in sites] == \
        [0] * SHARD_SIZE + [1] * SHARD_SIZE + [2]
    with pytest.raises(ValueError):
        shard_of("stranger", [sites])


@pytest.mark.parametrize(("sizes", "first_shards"), [
    ((1, 10, 89), [0, 1, 2]),  # each wave's shards begin where the wave before ended
    ((3, 150, 1000), [0, 1, 3]),  # a wave of 150 takes two shards, of 1 000 ten
    ((0, 100, 101), [None, 0, 1]),  # an empty wave takes none; exactly SHARD_SIZE takes one
    ((2, 0, 5), [0, None, 1]),
])
def test_a_wave_fills_shards_of_its_own(sizes, first_shards):
    waves = [[f"w{wave}-{n:04d}" for n in range(size)] for wave, size in enumerate(sizes)]
    numbered = shards(waves)
    for members, first in zip(waves, first_shards, strict=True):
        own = {numbered[site] for site in members}
        assert own == set() if first is None else min(own) == first
        assert all(sum(1 for site in members if numbered[site] == shard) <= SHARD_SIZE for shard in own)
    for earlier, later in zip(waves, waves[1:], strict=False):
        assert not {numbered[s] for s in earlier} & {numbered[s] for s in later}


# --- the differential property -------------------------------------------------------------------

STATES = ("success", "success", "progressing", "pending", "failure", "error", "aborted")
REASONS = ("Converged", "ValidationFailed", "DiskFull", "FailureThresholdReached")


@st.composite
def fleets(draw):
    """A rollout, the targeted sites, and a history: each site's records in its own order, the
    sites' writes interleaved at random, each folded into a shard that may change between writes
    (the fleet grew or shrank)."""
    names = draw(st.lists(st.sampled_from([f"s{n:02d}" for n in range(40)]), min_size=1, max_size=25, unique=True))
    sites = {name: {"ring": draw(st.sampled_from(["pilot", "rest"]))} for name in names}
    first = draw(st.integers(5, 60))
    rollout = Rollout.model_validate({
        "waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}},
                  {"name": "w1", "percent": first}, {"name": "all", "percent": 100}],
        "gate": {"minHealthyRatio": draw(st.sampled_from([0.5, 0.8, 1.0])),
                 "bakeTime": f"{draw(st.integers(0, 10))}m", "progressDeadline": "30m",
                 "unreported": draw(st.sampled_from(["fail", "ignore"]))},
        "abort": {"failureThreshold": draw(st.sampled_from([0.1, 0.5])),
                  "minExecuted": draw(st.sampled_from([None, 1, 3]))},
    })
    writes = []
    clock = {name: 0 for name in names}
    for _ in range(draw(st.integers(0, 60))):
        site = draw(st.sampled_from(names))
        clock[site] += draw(st.integers(1, 20))
        if draw(st.integers(0, 9)) == 0:
            entry = record(site, clock[site], deployment="other")
        else:
            state = draw(st.sampled_from(STATES))
            entry = record(site, clock[site], state, rollout=draw(st.sampled_from([RID, RID, RID, OLD_RID, None])),
                           reason=draw(st.sampled_from(REASONS)), message=draw(st.sampled_from(["", "why"])),
                           kind=draw(st.sampled_from([None, "version", "site"])),
                           since=clock[site] - draw(st.integers(0, 5)))
        writes.append((entry, draw(st.integers(0, 2))))
    return rollout, sites, writes


@settings(max_examples=300, deadline=None)
@given(fleets(), st.lists(st.integers(0, 400), min_size=1, max_size=4))
def test_gates_from_summaries_decide_as_gates_from_records(fleet, minutes):
    rollout, sites, writes = fleet
    newest: dict[str, StatusRecord] = {}
    stored: dict[int, bytes] = {}
    for entry, shard in writes:
        newest[entry.site] = entry
        current = decode(stored[shard], DEPLOYMENT) if shard in stored else {}
        stored[shard] = encode(DEPLOYMENT, fold(current, entry, DEPLOYMENT))
    from_records = {site: r for site, rec in newest.items() if (r := site_report(rec, DEPLOYMENT)) is not None}
    from_summaries = merged_reports(decode(data, DEPLOYMENT) for data in stored.values())
    for minute in minutes:
        now = T0 + timedelta(minutes=minute)
        for site in sites:
            assert decide_gate(rollout, DEPLOYMENT, RID, site, sites, from_summaries, now) == \
                decide_gate(rollout, DEPLOYMENT, RID, site, sites, from_records, now)
