"""Gates read from the forge: status records posted as commit statuses on a fake GitHub, Gitea and
GitLab (tests/forge_fake.py, real HTTP on loopback), read back as records, give the gate the same
reports, and so the same decisions, as the records in Git."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from forge_fake import FakeForge, serve

from reconciler.errors import Transient
from reconciler.gates import GateDecision, SiteReport, decide_gate, site_report
from reconciler.manifests.models import Rollout
from reconciler.status.forge import ForgeConfig, ForgeStatuses, ShownStatus, statuses_for_record
from reconciler.status.forge_gate import FORGE_REASON, fleet_status_from_forge, records_from_statuses
from reconciler.status.record import DeploymentStatus, State, StatusRecord

TOKEN = "tok-forge-gate-test"
TOKEN_ENV = "RECONCILER_TEST_FORGE_GATE_TOKEN"
SHA = hashlib.sha1(b"fleet commit with a rollout").hexdigest()
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
RID = "3f2a1c9e0b7d"
DEPLOYMENT = "demand-forecast"
KINDS = ["github", "gitea", "gitlab"]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture(params=KINDS)
def forge(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeForge]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with serve(request.param, TOKEN) as fake:
        yield fake


@pytest.fixture
def client(forge: FakeForge) -> Iterator[ForgeStatuses]:
    config = ForgeConfig(kind=forge.kind, apiUrl=forge.api_url, allowHttp=True, repository=forge.repository,
                         tokenEnv=TOKEN_ENV)
    with ForgeStatuses(config, sleep=lambda _: None) as forge_client:
        yield forge_client


def post_at(forge: FakeForge, client: ForgeStatuses, record: StatusRecord) -> None:
    """Publish the record as the agent does, with the forge's clock at the record's write time."""
    forge.clock = lambda: record.writtenAt.timestamp()
    client.publish(SHA, statuses_for_record(record, "https://dash.example/{deployment}/{site}"))


def deployment(state: State, version: str | None = "1.1.0", active: str | None = "1.0.0", wave: str | None = "pilot",
               rollout: str | None = RID, minutes: float = 0, message: str = "") -> DeploymentStatus:
    return DeploymentStatus(model="forecaster", state=state, version=version, activeVersion=active,
                            previousVersion="1.0.0" if active == version else None, wave=wave, rollout=rollout,
                            reason="Converged" if state == "success" else "Testing", message=message,
                            weights={"1.0.0": 80, "1.1.0": 20} if state == "progressing" else {}, since=at(minutes))


def record(site: str, minutes: float, **deployments: DeploymentStatus) -> StatusRecord:
    return StatusRecord(site=site, observedCommit=SHA, state="success", reason="Converged", agentVersion="0.1.0",
                        writtenAt=at(minutes), deployments=deployments)


# Each record's deployments entered their state when the record was written, as the agent posts then.
RECORDS = [
    record("p1", 3, **{DEPLOYMENT: deployment("success", active="1.1.0", minutes=3),
                       "fraud": deployment("progressing", "2.0.0", "1.9.0", rollout="0ddba11c0ffe", minutes=3)}),
    record("e1", 5, **{DEPLOYMENT: deployment("aborted", wave="early", minutes=5,
                                              message="rolled back: 2 of 3 executed sites failed " * 4)}),
    record("e2", 6, **{DEPLOYMENT: deployment("error", wave="early", minutes=6, message="fetch timed out")}),
    record("a1", 7, **{DEPLOYMENT: deployment("pending", active=None, wave="all", minutes=7)}),
    record("a2", 8, **{DEPLOYMENT: deployment("failure", wave="all", minutes=8, message="output 0 differs")}),
    record("a3", 9, **{DEPLOYMENT: deployment("success", active="1.1.0", wave=None, rollout=None, minutes=9)}),
]


def test_records_read_from_the_forge_give_the_gate_the_reports_of_the_git_records(
        forge: FakeForge, client: ForgeStatuses) -> None:
    for original in RECORDS:
        post_at(forge, client, original)
    read = fleet_status_from_forge(client, SHA)
    assert sorted(read) == sorted(r.site for r in RECORDS)
    for original in RECORDS:
        for name in original.deployments:
            assert site_report(read[original.site], name) == site_report(original, name), (original.site, name)
    assert site_report(read["a3"], DEPLOYMENT) is None  # no rollout id: nothing for a gate, on both sides


@pytest.mark.parametrize(("site", "state", "written", "deployments"), [
    ("p1", "progressing", 3, {DEPLOYMENT: ("success", "1.1.0", "1.1.0", "pilot"),
                              "fraud": ("progressing", "2.0.0", "1.9.0", "pilot")}),
    ("e1", "aborted", 5, {DEPLOYMENT: ("aborted", "1.1.0", "1.0.0", "early")}),
    ("e2", "error", 6, {DEPLOYMENT: ("error", "1.1.0", "1.0.0", "early")}),
    ("a1", "pending", 7, {DEPLOYMENT: ("pending", "1.1.0", None, "all")}),
    ("a3", "success", 9, {DEPLOYMENT: ("success", "1.1.0", "1.1.0", None)}),
])
def test_what_a_record_read_from_the_forge_holds(
        site: str, state: State, written: float, deployments: dict[str, tuple], forge: FakeForge,
        client: ForgeStatuses) -> None:
    for original in RECORDS:
        post_at(forge, client, original)
    read = fleet_status_from_forge(client, SHA, agent_version="0.2.0")[site]
    assert (read.state, read.writtenAt, read.observedCommit, read.agentVersion) == (state, at(written), SHA, "0.2.0")
    assert {name: (d.state, d.version, d.activeVersion, d.wave) for name, d in read.deployments.items()} == deployments
    assert all(d.reason == FORGE_REASON and d.since == at(written) for d in read.deployments.values())


def test_the_message_is_what_the_status_tells_people(forge: FakeForge, client: ForgeStatuses) -> None:
    post_at(forge, client, RECORDS[4])
    message = fleet_status_from_forge(client, SHA)["a2"].deployments[DEPLOYMENT].message
    assert message == "failure: Testing on 1.1.0, serving 1.0.0: output 0 differs"


def test_a_version_too_long_for_githubs_limit_is_dropped_the_rollout_kept(
        forge: FakeForge, client: ForgeStatuses) -> None:
    long_version = "1.1.0-rc.1+" + "b" * 117  # 128 characters, the most a manifest allows
    post_at(forge, client, record("p1", 3, **{DEPLOYMENT: deployment("success", long_version, long_version,
                                                                      minutes=3)}))
    report = site_report(fleet_status_from_forge(client, SHA)["p1"], DEPLOYMENT)
    assert report == SiteReport(RID, "success", None if forge.kind == "github" else long_version, at(3), at(3))


def test_a_later_change_is_read_with_the_forges_time_of_it(forge: FakeForge, client: ForgeStatuses) -> None:
    post_at(forge, client, record("p1", 1, **{DEPLOYMENT: deployment("pending", minutes=1)}))
    post_at(forge, client, record("p1", 2, **{DEPLOYMENT: deployment("progressing", minutes=2)}))
    post_at(forge, client, record("p1", 4, **{DEPLOYMENT: deployment("success", active="1.1.0", minutes=4)}))
    assert site_report(fleet_status_from_forge(client, SHA)["p1"], DEPLOYMENT) == \
        SiteReport(RID, "success", "1.1.0", at(4), at(4))


def test_an_unreachable_forge_raises_instead_of_reporting_no_sites(forge: FakeForge, client: ForgeStatuses) -> None:
    forge.answer_next(503, times=5)
    with pytest.raises(Transient) as caught:
        fleet_status_from_forge(client, SHA)
    assert caught.value.reason == "ForgeUnavailable"


# --- statuses that are not a site's record ------------------------------------------------------

def shown(context: str, description: str, state: State = "success", minutes: float = 1) -> ShownStatus:
    return ShownStatus(context=context, state=state, description=description, at=at(minutes))


GOOD = shown(f"reconciler/{DEPLOYMENT}/p1", f"1.1.0 serving · state=success rollout={RID} version=1.1.0")


@pytest.mark.parametrize(("context", "description", "warning"), [
    (f"reconciler/{DEPLOYMENT}", "state=success", "not reconciler/<deployment>/<site>"),
    (f"reconciler/{DEPLOYMENT}/p2/extra", "state=success", "not reconciler/<deployment>/<site>"),
    (f"reconciler/{DEPLOYMENT}/Store_2", "state=success", "not reconciler/<deployment>/<site>"),
    ("reconciler//p2", "state=success", "not reconciler/<deployment>/<site>"),
    (f"ci/{DEPLOYMENT}/p2", "state=success", "not reconciler/<deployment>/<site>"),
    (f"reconciler/{DEPLOYMENT}/p2", "1.1.0 serving", "no state=… pairs"),  # an older agent's status
    (f"reconciler/{DEPLOYMENT}/p2", "1.1.0 serving · state=success version=1 version=2", "no state=… pairs"),
    (f"reconciler/{DEPLOYMENT}/wave-pilot", "1.1.0: 2/2 healthy", None),  # a wave's combined status, by design
])
def test_statuses_that_are_not_a_sites_record_are_skipped(
        context: str, description: str, warning: str | None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    read = records_from_statuses({GOOD.context: GOOD, context: shown(context, description)}, SHA)
    assert list(read) == ["p1"] and site_report(read["p1"], DEPLOYMENT) == SiteReport(
        RID, "success", "1.1.0", at(1), at(1))
    if warning is None:
        assert caplog.text == ""
    else:
        assert warning in caplog.text and context in caplog.text


def test_a_site_named_like_a_wave_is_read_when_it_carries_pairs() -> None:
    context = f"reconciler/{DEPLOYMENT}/wave-3-store"
    read = records_from_statuses({context: shown(context, f"x · state=failure rollout={RID}", "failure")}, SHA)
    assert read["wave-3-store"].deployments[DEPLOYMENT].state == "failure"


def test_no_statuses_no_records() -> None:
    assert records_from_statuses({}, SHA) == {}


# --- the gate decides the same from the forge as from Git ---------------------------------------

# pilot: p1 p2, early: e1 e2, all: a1 a2 (selectors, so membership does not hang on hashes)
SITES = {**{s: {"ring": "pilot"} for s in ("p1", "p2")}, **{s: {"ring": "early"} for s in ("e1", "e2")},
         **{s: {"ring": "rest"} for s in ("a1", "a2")}}
WAVE = {"pilot": "pilot", "early": "early", "rest": "all"}
ROLLOUT = Rollout.model_validate({
    "waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}},
              {"name": "early", "selector": {"matchLabels": {"ring": "early"}}},
              {"name": "all", "percent": 100}],
    "gate": {"minHealthyRatio": 1.0, "bakeTime": "5m", "progressDeadline": "30m", "unreported": "fail"},
    "abort": {"failureThreshold": 0.5, "minExecuted": 2},
})
PILOT_HEALTHY = [(1, "p1", "progressing"), (3, "p1", "success"), (2, "p2", "progressing"), (4, "p2", "success")]


def event_record(site: str, minutes: float, state: State) -> StatusRecord:
    active = "1.1.0" if state == "success" else "1.0.0"
    wave = WAVE[SITES[site]["ring"]]
    return record(site, minutes, **{DEPLOYMENT: deployment(state, active=active, wave=wave, minutes=minutes)})


@pytest.mark.parametrize(("case", "events", "site", "now", "kind", "reason"), [
    ("pilot still progressing", [(1, "p1", "progressing"), (2, "p2", "progressing"), (3, "p1", "success")],
     "e1", 20, "wait", "WaitingForEarlierWaves"),
    ("pilot healthy, baking", PILOT_HEALTHY, "e1", 8, "wait", "Baking"),
    ("pilot healthy and baked", PILOT_HEALTHY, "e2", 9, "proceed", "GateHeld"),
    ("the last wave waits on early", [*PILOT_HEALTHY, (10, "e1", "success")], "a1", 30,
     "wait", "WaitingForEarlierWaves"),
    ("early healthy and baked", [*PILOT_HEALTHY, (10, "e1", "success"), (12, "e2", "success")], "a2", 17,
     "proceed", "GateHeld"),
    ("a pilot site that failed aborts the later waves",
     [(1, "p1", "progressing"), (3, "p1", "success"), (4, "p2", "failure")], "a1", 10,
     "abort", "FailureThresholdReached"),
    ("an early site that failed aborts the sites that moved",
     [*PILOT_HEALTHY, (10, "e1", "failure"), (11, "e2", "failure")], "p1", 12, "abort", "FailureThresholdReached"),
    ("a site that rolled back keeps the rollout aborted",
     [(3, "p1", "failure"), (4, "p2", "aborted")], "e1", 10, "abort", "RolloutAborted"),
    ("a pilot site silent until its deadline", [(3, "p1", "success")], "e1", 32.5, "wait", "WaitingForEarlierWaves"),
    ("a pilot site silent past its deadline counts as failed", [(3, "p1", "success")], "e1", 33,
     "abort", "FailureThresholdReached"),
    ("an error is not a failure", [(3, "p1", "success"), (4, "p2", "error")], "e1", 20,
     "wait", "WaitingForEarlierWaves"),
])
def test_the_gate_decides_the_same_from_the_forge_as_from_git(
        case: str, events: list[tuple[float, str, State]], site: str, now: float, kind: str, reason: str,
        forge: FakeForge, client: ForgeStatuses) -> None:
    in_git: dict[str, StatusRecord] = {}
    for minutes, name, state in sorted(events):
        in_git[name] = event_record(name, minutes, state)
        post_at(forge, client, in_git[name])
    from_forge = fleet_status_from_forge(client, SHA)
    from_git_decision = decide(site, in_git, now)
    assert (from_git_decision.kind, from_git_decision.reason) == (kind, reason), from_git_decision.message
    assert decide(site, from_forge, now) == from_git_decision


def decide(site: str, records: dict[str, StatusRecord], now: float) -> GateDecision:
    reports = {s: r for s, record in records.items() if (r := site_report(record, DEPLOYMENT)) is not None}
    return decide_gate(ROLLOUT, DEPLOYMENT, RID, site, SITES, reports, at(now))

