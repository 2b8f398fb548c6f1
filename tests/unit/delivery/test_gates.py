"""The wave gate and the abort rule: pure, table-driven over status records and times, plus
property checks over generated fleets (stability, determinism)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.delivery.gates import GateDecision, SiteReport, decide_gate, rollout_id, site_report
from reconciler.delivery.rollout import wave_index
from reconciler.manifests.deployments import Deployment
from reconciler.manifests.models import Rollout
from reconciler.status.record import DeploymentStatus, StatusRecord

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
RID = "a1b2c3d4e5f6"
DEPLOYMENT = "demand-forecast"

# pilot: p1 p2, early: e1 e2 e3, all: a1 a2 a3 a4 (selectors, so membership does not hang on hashes)
SITES = {
    **{s: {"ring": "pilot"} for s in ("p1", "p2")},
    **{s: {"ring": "early"} for s in ("e1", "e2", "e3")},
    **{s: {"ring": "rest"} for s in ("a1", "a2", "a3", "a4")},
}


def make_rollout(gate: dict | None = None, abort: dict | None = None) -> Rollout:
    return Rollout.model_validate({
        "waves": [
            {"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}},
            {"name": "early", "selector": {"matchLabels": {"ring": "early"}}},
            {"name": "all", "percent": 100},
        ],
        "gate": {"minHealthyRatio": 1.0, "bakeTime": "5m", "progressDeadline": "30m", "unreported": "fail",
                 **(gate or {})},
        "abort": {"failureThreshold": 0.5, "minExecuted": 3, **(abort or {})},
    })


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def report(state: str, minutes: float, rid: str = RID) -> SiteReport:
    reason = "ValidationFailed" if state == "failure" else ""  # failures here are evidence against the version
    return SiteReport(rid, state, "1.1.0", at(minutes), at(minutes), reason)  # type: ignore[arg-type]


def reports(**states: tuple[str, float]) -> dict[str, SiteReport]:
    return {site: report(state, minutes) for site, (state, minutes) in states.items()}


def decide(site: str, records: dict[str, SiteReport], now: float, gate: dict | None = None,
           abort: dict | None = None, sites: dict | None = None) -> GateDecision:
    return decide_gate(make_rollout(gate, abort), DEPLOYMENT, RID, site, sites or SITES, records, at(now))


PILOT_HEALTHY = reports(p1=("success", 3), p2=("success", 4))  # the gate on pilot holds at 4, early opens at 9
EARLY_HEALTHY = {**PILOT_HEALTHY, **reports(e1=("success", 12), e2=("success", 13), e3=("success", 14))}


@pytest.mark.parametrize("case,site,records,now,gate,kind,reason,earliest", [
    ("first wave without reports", "p1", {}, 0, None, "proceed", "FirstWave", None),
    ("first wave opens at the first report", "p2", reports(p1=("progressing", 2)), 5, None,
     "proceed", "FirstWave", 2),
    ("pilot not all healthy", "e1", reports(p1=("success", 3), p2=("progressing", 1)), 60, None,
     "wait", "WaitingForEarlierWaves", None),
    ("pilot failed counts, not healthy", "e1", reports(p1=("success", 3), p2=("failure", 1)), 60, None,
     "wait", "WaitingForEarlierWaves", None),
    ("pilot error counts, not healthy", "e1", reports(p1=("success", 3), p2=("error", 1)), 60, None,
     "wait", "WaitingForEarlierWaves", None),
    ("baking", "e1", PILOT_HEALTHY, 8.99, None, "wait", "Baking", 9),
    ("baked, exactly at the boundary", "e1", PILOT_HEALTHY, 9, None, "proceed", "GateHeld", 9),
    ("no bake time", "e1", PILOT_HEALTHY, 4, {"bakeTime": "0s"}, "proceed", "GateHeld", 4),
    ("half is enough: held at the first healthy", "e1", reports(p1=("success", 3), p2=("progressing", 1)), 8,
     {"minHealthyRatio": 0.5}, "proceed", "GateHeld", 8),
    ("ratio zero staggers by bake time", "e3", reports(p1=("pending", 2)), 7, {"minHealthyRatio": 0},
     "proceed", "GateHeld", 7),
    ("later waves wait on every earlier wave", "a1", {**PILOT_HEALTHY, **reports(e1=("success", 12))}, 30, None,
     "wait", "WaitingForEarlierWaves", None),
    ("second gate bakes from its own instant", "a1", EARLY_HEALTHY, 18.99, None, "wait", "Baking", 19),
    ("second gate opens", "a4", EARLY_HEALTHY, 19, None, "proceed", "GateHeld", 19),
    # early sites healthy before pilot's gate held (they ran the version already): wave all still
    # opens only after early opened (8) plus its bake time
    ("never before the previous wave opened", "a1",
     reports(p1=("success", 3), p2=("progressing", 1), e1=("success", 1), e2=("success", 2)), 12.99,
     {"minHealthyRatio": 0.4}, "wait", "Baking", 13),
    ("reports of another rollout do not count", "e1",
     {"p1": report("success", 3, "0ld0ld0ld0ld"), "p2": report("success", 4, "0ld0ld0ld0ld")}, 60, None,
     "wait", "WaitingForEarlierWaves", None),
    ("reports of untargeted sites do not count", "e1",
     {**reports(p1=("success", 3)), "gone": report("success", 1)}, 30, None,
     "wait", "WaitingForEarlierWaves", None),
])
def test_gate(case, site, records, now, gate, kind, reason, earliest):
    decision = decide(site, records, now, gate)
    assert (decision.kind, decision.reason) == (kind, reason), decision.message
    assert decision.earliest_start == (None if earliest is None else at(earliest))
    assert decision.wave == wave_name(site)


def wave_name(site: str) -> str:
    return {"pilot": "pilot", "early": "early", "rest": "all"}[SITES[site]["ring"]]


def test_wait_message_counts_the_earlier_waves():
    decision = decide("e1", reports(p1=("success", 3), p2=("progressing", 1)), 60)
    assert decision.message == "wave early waits: 1/2 sites of wave pilot healthy, need 100%"
    decision = decide("a1", {**PILOT_HEALTHY, **reports(e1=("success", 12))}, 30)
    assert decision.message == "wave all waits: 3/5 sites of waves pilot, early healthy, need 100%; silent: e2, e3"


# p2 never reports: pilot opened at 3 (p1's report), so p2 is late from 33 on
ONE_SILENT = reports(p1=("success", 3))


@pytest.mark.parametrize("policy,records,now,kind,reason,earliest", [
    ("fail", ONE_SILENT, 32.99, "wait", "WaitingForEarlierWaves", None),
    ("fail", ONE_SILENT, 33, "wait", "ProgressDeadlineExceeded", None),
    ("fail", ONE_SILENT, 600, "wait", "ProgressDeadlineExceeded", None),
    # ignore: the silent site leaves the count at its deadline, so the gate holds then and bakes
    ("ignore", ONE_SILENT, 20, "wait", "WaitingForEarlierWaves", 38),
    ("ignore", ONE_SILENT, 33, "wait", "Baking", 38),
    ("ignore", ONE_SILENT, 38, "proceed", "GateHeld", 38),
    # ... and a late report brings it back into the count, healthy from its own instant
    ("ignore", {**ONE_SILENT, **reports(p2=("success", 40))}, 41, "wait", "Baking", 45),
    ("ignore", {**ONE_SILENT, **reports(p2=("progressing", 40))}, 41, "wait", "WaitingForEarlierWaves", None),
    # a site that reports, whatever it says, is never late
    ("fail", {**ONE_SILENT, **reports(p2=("pending", 3))}, 600, "wait", "WaitingForEarlierWaves", None),
    ("ignore", {**ONE_SILENT, **reports(p2=("pending", 3))}, 600, "wait", "WaitingForEarlierWaves", None),
])
def test_progress_deadline(policy, records, now, kind, reason, earliest):
    decision = decide("e1", records, now, {"unreported": policy})
    assert (decision.kind, decision.reason) == (kind, reason), decision.message
    assert decision.earliest_start == (None if earliest is None else at(earliest))


def test_deadline_message_names_the_late_sites():
    assert decide("e1", ONE_SILENT, 33).message == (
        "wave early waits: 1/2 sites of wave pilot healthy, need 100%; p2 did not report within 30m")


@pytest.mark.parametrize("now,reason", [
    (38.99, "WaitingForEarlierWaves"),  # early opened at 9: e3 is late only from 39, not from the rollout's 33
    (39, "ProgressDeadlineExceeded"),
])
def test_each_wave_is_late_from_its_own_opening(now, reason):
    records = {**PILOT_HEALTHY, **reports(e1=("success", 12), e2=("success", 13))}
    assert decide("a1", records, now).reason == reason


@pytest.mark.parametrize("case,records,now,gate,abort,kind,reason", [
    ("at the threshold", reports(p1=("success", 3), p2=("failure", 4)), 10, None,
     {"failureThreshold": 0.5, "minExecuted": 2}, "abort", "FailureThresholdReached"),
    ("just under the threshold", reports(p1=("success", 3), p2=("failure", 4)), 10, None,
     {"failureThreshold": 0.51, "minExecuted": 2}, "wait", "WaitingForEarlierWaves"),
    ("minimum not executed", reports(p1=("success", 3), p2=("failure", 4)), 10, None,
     {"failureThreshold": 0.5, "minExecuted": 3}, "wait", "WaitingForEarlierWaves"),
    ("in progress is not executed", reports(p1=("failure", 3), p2=("progressing", 4), e1=("error", 5)), 10, None,
     {"failureThreshold": 0.1, "minExecuted": 2}, "wait", "WaitingForEarlierWaves"),
    ("late sites count as failed", reports(p1=("failure", 3)), 33, None,
     {"failureThreshold": 1.0, "minExecuted": 2}, "abort", "FailureThresholdReached"),
    ("not before their deadline", reports(p1=("failure", 3)), 32.99, None,
     {"failureThreshold": 1.0, "minExecuted": 2}, "wait", "WaitingForEarlierWaves"),
    ("ignored late sites do not count", reports(p1=("failure", 3)), 600, {"unreported": "ignore"},
     {"failureThreshold": 1.0, "minExecuted": 2}, "wait", "WaitingForEarlierWaves"),
    ("one aborted site aborts all", {**EARLY_HEALTHY, **reports(e2=("aborted", 20))}, 30, None, None,
     "abort", "RolloutAborted"),
    ("an abort of another rollout does not", {**EARLY_HEALTHY, "e2": report("aborted", 20, "0ld0ld0ld0ld")}, 30,
     None, None, "wait", "WaitingForEarlierWaves"),
])
def test_abort(case, records, now, gate, abort, kind, reason):
    for site in SITES:  # abort concerns every site, whatever its wave
        decision = decide(site, records, now, gate, abort)
        if kind == "abort" or site == "a1":
            assert (decision.kind, decision.reason) == (kind, reason), (site, decision.message)


def test_abort_messages():
    # p2 is late from 33 (pilot opened at 3); early never opened, so its silent sites are not late
    decision = decide("a1", reports(p1=("success", 3), e1=("failure", 9), a1=("failure", 10)), 33,
                      abort={"failureThreshold": 0.25, "minExecuted": 1})
    retry = ("retry it on purpose with `reconciler rollout retry demand-forecast` "
             "(a commit that bumps spec.rollout.attempt)")
    assert decision.message == ("the rollout is aborted: 3 of 4 executed sites failed, threshold 25% "
                                f"(a1, e1 failed (ValidationFailed); p2 did not report within 30m); {retry}")
    # records without a message (an older agent's) still name who aborted
    decision = decide("p1", {**EARLY_HEALTHY, **reports(e3=("aborted", 20), e1=("aborted", 21))}, 30)
    assert decision.message == f"the rollout is aborted: e3, e1 reported it aborted; {retry}"
    assert decision.wave == "pilot"


def test_shares_are_exact_decimals():
    # 0.28 x 25 is 7.000000000000001 and 0.56 x 25 is 14.000000000000002 in binary floating point
    sites = {f"s{i:02d}": {} for i in range(25)}
    flat = Rollout.model_validate({"waves": [{"name": "w0", "percent": 100}],
                                   "abort": {"failureThreshold": 0.28, "minExecuted": 1}})
    records = {s: report("failure" if i < 7 else "success", 1) for i, s in enumerate(sites)}
    assert decide_gate(flat, DEPLOYMENT, RID, "s00", sites, records, at(5)).reason == "FailureThresholdReached"
    pilots = [f"p{i:02d}" for i in range(25)]
    fleet = {s: {"ring": "pilot"} for s in pilots} | {"a1": {"ring": "rest"}}
    records = {s: report("success" if i < 14 else "progressing", 1) for i, s in enumerate(pilots)}
    decision = decide("a1", records, 6, {"minHealthyRatio": 0.56}, sites=fleet)
    assert decision.reason == "GateHeld", decision.message


def test_site_in_no_wave():
    rollout = Rollout.model_validate({"waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}}]})
    decision = decide_gate(rollout, DEPLOYMENT, RID, "a1", SITES, {}, at(0))
    assert (decision.kind, decision.reason, decision.wave) == ("wait", "NotInAnyWave", None)
    assert decision.message == "site a1 is in none of the waves pilot"


def test_waves_without_sites_are_skipped():
    no_pilots = {s: labels for s, labels in SITES.items() if labels["ring"] != "pilot"}
    assert decide("e1", {}, 0, sites=no_pilots).reason == "FirstWave"
    assert decide("a1", reports(e1=("success", 1), e2=("success", 1), e3=("success", 2)), 7,
                  sites=no_pilots).reason == "GateHeld"


@pytest.mark.parametrize("call,error", [
    (lambda: decide("nowhere", {}, 0), "not among the deployment's targeted sites"),
    (lambda: decide_gate(make_rollout(), DEPLOYMENT, RID, "p1", SITES, {}, datetime(2026, 3, 2)), "timezone-aware"),
    (lambda: rollout_id("{not json"), "Expecting property name"),
])
def test_bad_input_is_refused(call, error):
    with pytest.raises(ValueError, match=error):
        call()


# --- rollout identity and the status record -----------------------------------------------------

SPEC = {"model": "demand-forecast", "version": "1.0.0", "targets": {"matchLabels": {"tier": "store"}}}


def deployment(**spec_changes) -> Deployment:
    return Deployment.model_validate({"apiVersion": "reconciler/v1", "kind": "Deployment",
                                      "metadata": {"name": DEPLOYMENT}, "spec": {**SPEC, **spec_changes}})


def test_rollout_id_names_the_spec():
    same = rollout_id(deployment().spec.model_dump_json())
    assert same == rollout_id(deployment().spec.model_dump_json())
    assert len(same) == 12 and int(same, 16) >= 0
    assert rollout_id('{"b": 1, "a": [1, 2]}') == rollout_id('{ "a": [1,2], "b": 1 }')  # canonical JSON
    assert rollout_id(deployment(version="1.1.0").spec.model_dump_json()) != same
    assert rollout_id(deployment(canary={"steps": [{"setWeight": 10}]}).spec.model_dump_json()) != same


def test_site_report_from_a_status_record():
    status = DeploymentStatus(model="demand-forecast", state="success", version="1.1.0", rollout=RID,
                              reason="Converged", since=at(3))
    record = StatusRecord(site="p1", state="success", reason="Converged", agentVersion="0.1.0", writtenAt=at(4),
                          deployments={DEPLOYMENT: status,
                                        "legacy": status.model_copy(update={"rollout": None})})
    assert site_report(record, DEPLOYMENT) == SiteReport(RID, "success", "1.1.0", at(3), at(4), "Converged")
    assert site_report(record, "legacy") is None  # written before rollouts had ids: counts for none
    assert site_report(record, "other") is None
    assert StatusRecord.model_validate_json(record.model_dump_json()) == record


# --- properties over generated fleets ------------------------------------------------------------

STATES = ("progressing", "pending", "failure", "error")


def generated(seed: int) -> tuple[Rollout, dict[str, dict[str, str]], dict[str, SiteReport]]:
    rng = random.Random(seed)
    sites = {f"store-{rng.randrange(10**6):06d}": {"ring": "pilot" if rng.random() < 0.1 else "rest"}
             for _ in range(rng.randrange(5, 40))}
    first = rng.randrange(5, 40)
    rollout = Rollout.model_validate({
        "waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}},
                  {"name": "w1", "percent": first}, {"name": "w2", "percent": rng.randrange(first, 90)},
                  {"name": "all", "percent": 100}],
        "gate": {"minHealthyRatio": rng.choice([0.5, 0.8, 1.0]), "bakeTime": f"{rng.randrange(0, 10)}m",
                 "progressDeadline": "30m", "unreported": rng.choice(["fail", "ignore"])},
        "abort": {"failureThreshold": 0.5, "minExecuted": 3},
    })
    records = {}
    for site in sites:
        roll = rng.random()
        if roll < 0.1:
            continue  # silent
        state = "success" if roll < 0.85 else rng.choice(STATES)
        records[site] = report(state, rng.randrange(0, 90), RID if rng.random() < 0.95 else "0ld0ld0ld0ld")
    return rollout, sites, records


SEEDS = range(30)
TIMES = range(0, 240, 7)


def decisions(rollout, sites, records, now, among=None) -> dict[str, GateDecision]:
    return {s: decide_gate(rollout, DEPLOYMENT, RID, s, sites, records, at(now)) for s in among or sites}


def one_per_wave(rollout, sites) -> list[str]:
    """Every site of a wave decides alike (checked below), so one of each wave stands for all."""
    first: dict[int | None, str] = {}
    for site in sorted(sites):
        first.setdefault(wave_index(rollout, DEPLOYMENT, site, sites[site]), site)
    return list(first.values())


def test_every_site_of_a_wave_computes_the_same_decision():
    compared = 0
    for seed in SEEDS:
        rollout, sites, records = generated(seed)
        shuffled = dict(random.Random(seed).sample(sorted(records.items()), len(records)))
        for now in (30, 90, 150):
            by_site = decisions(rollout, sites, records, now)
            assert by_site == decisions(rollout, sites, shuffled, now)
            by_wave: dict[str | None, set[tuple]] = {}
            for decision in by_site.values():
                if decision.reason != "NotInAnyWave":
                    by_wave.setdefault(decision.wave, set()).add(
                        (decision.kind, decision.reason, decision.message, decision.earliest_start))
                    compared += 1
            assert all(len(kinds) == 1 for kinds in by_wave.values()), by_wave
    assert compared > 500


def test_a_site_that_may_start_may_still_start_later():
    started = 0
    for seed in SEEDS:
        rollout, sites, records = generated(seed)
        proceeding: set[str] = set()
        for now in TIMES:
            for site, decision in decisions(rollout, sites, records, now, one_per_wave(rollout, sites)).items():
                if site in proceeding:
                    assert decision.kind in ("proceed", "abort"), (seed, site, now, decision)
                if decision.kind == "proceed":
                    proceeding.add(site)
        started += len(proceeding)
    assert started > 30


def test_a_silent_site_reporting_healthy_never_holds_a_started_wave_back():
    checked = 0
    for seed in SEEDS:
        rollout, sites, records = generated(seed)
        rollout = rollout.model_copy(update={"gate": rollout.gate.model_copy(update={"unreported": "fail"})})
        silent = sorted(set(sites) - set(records))
        now, deciders = 150, one_per_wave(rollout, sites)
        before = decisions(rollout, sites, records, now, deciders)
        for site in silent:
            after = decisions(rollout, sites, {**records, site: report("success", now - 1)}, now, deciders)
            for name, decision in before.items():
                if decision.kind == "proceed":
                    assert after[name].kind in ("proceed", "abort"), (seed, site, name, after[name])
                    checked += 1
    assert checked > 30


def test_raising_percentages_or_adding_sites_never_moves_a_site_to_a_later_wave():
    for seed in SEEDS:
        rollout, sites, records = generated(seed)
        raised = rollout.model_copy(update={"waves": [
            w if w.percent is None else w.model_copy(update={"percent": min(100, w.percent + 15)})
            for w in rollout.waves]})
        more = {**sites, **{f"new-{i}": {"ring": "rest"} for i in range(20)}}
        for variant_rollout, variant_sites in ((raised, sites), (rollout, more), (raised, more)):
            for site in sites:
                before = wave_index(rollout, DEPLOYMENT, site, sites[site])
                after = wave_index(variant_rollout, DEPLOYMENT, site, variant_sites[site])
                assert after is not None and before is not None and after <= before
                decision = decide_gate(variant_rollout, DEPLOYMENT, RID, site, variant_sites, records, at(60))
                assert decision.wave == variant_rollout.waves[after].name
