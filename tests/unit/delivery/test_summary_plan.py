"""The agent's path with summaries: a plan made from the gating deployments' shard summaries is the
plan made from every site's full record, whatever the histories (waves, drift holds, aborts, a
joining site serving the version the earlier waves ran before); and FleetReports, what the plan
reads, from records and with the site's own newest record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fleetfactory import DIGEST_A, deployment, fleet_repo, model, site
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.delivery.fleet_reports import FleetReports
from reconciler.delivery.gates import site_report
from reconciler.delivery.model import DeploymentState, Installed, SiteState
from reconciler.delivery.plan import plan_site
from reconciler.delivery.same_version import checks_digest
from reconciler.delivery.summary import decode, encode, fold, gated_shards, merged_reports, says_the_same
from reconciler.monitoring.evaluation import EvaluationSummary
from reconciler.monitoring.windows import DriftSummary
from reconciler.status.record import DeploymentStatus, StatusRecord

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
NAMES = [f"s{n:02d}" for n in range(12)]
ROLLOUT = {"waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}},
                     {"name": "early", "percent": 40}, {"name": "all", "percent": 100}],
           "gate": {"minHealthyRatio": 0.5, "bakeTime": "10m", "progressDeadline": "30m", "maxDriftedSites": 0,
                    "evaluation": {"metric": "accuracy", "min": 0.6, "minGainOverPrevious": 0.0, "minSites": 1,
                                   "minExamples": 20}},
           "abort": {"failureThreshold": 0.5, "minExecuted": 2}}
STATES = ("success", "success", "progressing", "pending", "failure", "error", "aborted")
VERSIONS = ("1.0.0", "1.1.0", None)


def drift(version: str) -> DriftSummary:
    return DriftSummary(version=version, profile="p", state="DriftDetected", windows=1, rows=10, features={})


def scores(version: str, examples: int, accuracy: float, previous: float | None) -> EvaluationSummary:
    return EvaluationSummary(version=version, numExamples=examples, metrics={"accuracy": accuracy},
                             previousVersion="1.0.0" if previous is not None else None,
                             previousMetrics={"accuracy": previous} if previous is not None else {},
                             evaluatedAt=T0)


def record(site_name: str, minute: int, state: str, rollout: str | None, active: str | None, previous: str | None,
           drifted: bool, reason: str = "Converged", deployment_name: str = "d", since: int | None = None,
           evaluation: EvaluationSummary | None = None) -> StatusRecord:
    status = DeploymentStatus(model="m", state=state, version="1.1.0", activeVersion=active, previousVersion=previous,
                              rollout=rollout, reason=reason,
                              since=T0 + timedelta(minutes=minute - 1 if since is None else since),
                              drift=drift(active) if drifted and active else None,
                              failureKind="version" if state == "failure" else None, evaluation=evaluation)
    return StatusRecord(site=site_name, state=state, reason=reason, deployments={deployment_name: status},
                        agentVersion="0.1.0", writtenAt=T0 + timedelta(minutes=minute))


@st.composite
def histories(draw):
    names = draw(st.lists(st.sampled_from(NAMES), min_size=2, max_size=len(NAMES), unique=True))
    rings = {name: draw(st.sampled_from(["pilot", "rest"])) for name in names}
    repo = fleet_repo([site(name, ring=ring) for name, ring in rings.items()], [model()],
                      [deployment(version="1.1.0", rollout=ROLLOUT)])
    first = min(names)
    rid = plan_site(repo, first, SiteState(site=first), T0, None, {}).actions[0].target.rollout_id
    writes, clock = [], dict.fromkeys(names, 0)
    for _ in range(draw(st.integers(0, 40))):
        name = draw(st.sampled_from(names))
        clock[name] += draw(st.integers(1, 15))
        entry = record(name, clock[name], draw(st.sampled_from(STATES)),
                       draw(st.sampled_from([rid, rid, rid, "0ld0ld0ld0ld", None])),
                       draw(st.sampled_from(VERSIONS)), draw(st.sampled_from(VERSIONS)), draw(st.booleans()),
                       draw(st.sampled_from(["Converged", "ValidationFailed", "FailureThresholdReached"])),
                       "d" if draw(st.integers(0, 9)) else "other",
                       evaluation=draw(st.none() | st.builds(scores, st.sampled_from(["1.1.0", "1.0.0"]),
                                                             st.sampled_from([0, 10, 50]),
                                                             st.sampled_from([0.4, 0.7, 0.9]),
                                                             st.sampled_from([None, 0.5, 0.8]))))
        writes.append((entry, draw(st.integers(0, 2))))
    return repo, writes


def installed(version: str) -> Installed:
    return Installed(version=version, digest=DIGEST_A, uri="u", installedAt=T0,
                     checks=checks_digest(model().spec.interface, []))


@settings(max_examples=200, deadline=None)
@given(histories(), st.integers(0, 300))
def test_plans_from_summaries_are_plans_from_records(history, minute):
    repo, writes = history
    newest: dict[str, StatusRecord] = {}
    stored: dict[int, bytes] = {}
    for entry, shard in writes:
        newest[entry.site] = entry
        current = decode(stored[shard], "d") if shard in stored else {}
        stored[shard] = encode("d", fold(current, entry, "d"))
    from_summaries = FleetReports({"d": merged_reports(decode(data, "d") for data in stored.values())})
    now = T0 + timedelta(minutes=minute)
    for name in repo.sites:
        for state in (SiteState(site=name), SiteState(site=name, deployments={"d": DeploymentState(
                model="m", interface=model().spec.interface, active=installed("1.0.0"))})):
            assert plan_site(repo, name, state, now, None, from_summaries) == \
                plan_site(repo, name, state, now, None, newest)


def test_fleet_reports_hold_each_sites_report_per_deployment():
    one = record("s1", 1, "success", "r1", "1.1.0", "1.0.0", False)
    other = record("s2", 2, "progressing", "r1", "1.0.0", None, False, deployment_name="other")
    reports = FleetReports.of_records({"s1": one, "s2": other})
    assert reports.of("d") == {"s1": site_report(one, "d")}
    assert reports.of("other") == {"s2": site_report(other, "other")}
    assert reports.of("unknown") == {}
    assert reports.of("d")["s1"].ran_before == "1.0.0"  # it serves the rollout's version: its previous one


def test_the_sites_own_record_replaces_what_the_channel_held():
    held = FleetReports.of_records({"s1": record("s1", 1, "progressing", "r1", "1.0.0", None, False),
                                    "s2": record("s2", 1, "success", "r1", "1.1.0", "1.0.0", True)})
    own = record("s1", 5, "success", "r1", "1.1.0", "1.0.0", False, deployment_name="other")
    updated = held.with_record(own)
    assert set(updated.of("d")) == {"s2"}  # its newest record says nothing of d any more
    assert updated.of("other") == {"s1": site_report(own, "other")}
    assert updated.of("d")["s2"].drifted


def test_an_entry_is_rewritten_only_when_it_would_store_something_else():
    before = site_report(record("s1", 1, "success", "r1", "1.1.0", "1.0.0", False, since=0), "d")
    assert says_the_same(before, site_report(record("s1", 9, "success", "r1", "1.1.0", "1.0.0", False, since=0), "d"))
    assert not says_the_same(before, site_report(record("s1", 9, "success", "r1", "1.1.0", "1.0.0", True, since=0), "d"))
    assert not says_the_same(before, site_report(record("s1", 9, "success", "r1", "1.1.0", "1.0.0", False, since=8), "d"))
    assert not says_the_same(before, None)
    assert says_the_same(None, None)


def test_gated_shards_name_the_deployments_with_a_rollout_that_target_the_site():
    sites = [site("p000", ring="pilot")] + [site(f"s{n:03d}", ring="rest") for n in range(250)]
    repo = fleet_repo(sites, [model()], [deployment("waved", rollout=ROLLOUT), deployment("plain"),
                                         deployment("elsewhere", rollout=ROLLOUT, targets={"matchLabels": {"ring": "x"}})])
    # waves of "waved": pilot p000; early 98 sites (s001 first); all 152 sites (s000 first, s177 the 101st)
    assert gated_shards(repo, "p000", T0) == {"waved": 0}
    assert gated_shards(repo, "s001", T0) == {"waved": 1}
    assert gated_shards(repo, "s000", T0) == {"waved": 2}
    assert gated_shards(repo, "s177", T0) == {"waved": 3}
    assert gated_shards(repo, "stranger", T0) == {}


def test_drift_and_the_version_served_before_survive_the_stored_form():
    entry = record("s1", 3, "success", "r1", "1.1.0", "1.0.0", True)
    report = decode(encode("d", fold({}, entry, "d")), "d")["s1"].report
    assert (report.drifted, report.ran_before) == (True, "1.0.0")


def test_evaluation_scores_survive_the_stored_form_and_its_signature_detection():
    scored = scores("1.1.0", 50, 0.7, 0.8)
    entry = record("s1", 3, "success", "r1", "1.1.0", "1.0.0", False, evaluation=scored)
    report = decode(encode("d", fold({}, entry, "d")), "d")["s1"].report
    assert (report.drifted, report.ran_before, report.evaluation) == (False, "1.0.0", scored)


def test_an_entry_written_before_they_existed_reads_with_neither():
    data = ('{"format": "reconciler/summary/v1", "deployment": "d", "sites": {"s1": ["2026-03-02T10:01:00+00:00", '
            '"r1", "success", "1.1.0", "2026-03-02T10:00:00+00:00", "Converged", "", null]}}')
    report = decode(data.encode(), "d")["s1"].report
    assert (report.state, report.drifted, report.ran_before) == ("success", False, None)


@pytest.mark.parametrize(("accuracy", "decided"), [(0.4, ("wait", "EvaluationBelowMinimum")),
                                                   (0.9, ("deploy", "NewVersion"))])
def test_the_evaluation_gate_decides_the_same_from_summaries(accuracy, decided):
    """Random histories reach a baked wave with scores too rarely to catch a summary that drops them."""
    repo = fleet_repo([site("s00", ring="pilot"), site("s01", ring="pilot"), site("s02", ring="rest")], [model()],
                      [deployment(version="1.1.0", rollout=ROLLOUT)])
    rid = plan_site(repo, "s00", SiteState(site="s00"), T0, None, {}).actions[0].target.rollout_id
    newest = {name: record(name, 1, "success", rid, "1.1.0", "1.0.0", False, since=0,
                           evaluation=scores("1.1.0", 50, accuracy, 0.5)) for name in ("s00", "s01")}
    stored = encode("d", fold(fold({}, newest["s00"], "d"), newest["s01"], "d"))
    from_summaries = FleetReports({"d": merged_reports([decode(stored, "d")])})
    state = SiteState(site="s02", deployments={"d": DeploymentState(model="m", interface=model().spec.interface,
                                                                  active=installed("1.0.0"))})
    now = T0 + timedelta(hours=1)
    plan = plan_site(repo, "s02", state, now, None, from_summaries)
    assert plan == plan_site(repo, "s02", state, now, None, newest)
    assert [(action.kind, action.reason) for action in plan.actions] == [decided]
