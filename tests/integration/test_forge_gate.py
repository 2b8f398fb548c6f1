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

from reconciler.delivery.gates import GateDecision, SiteReport, decide_gate, site_report
from reconciler.errors import Transient
from reconciler.manifests.models import Rollout
from reconciler.settings import ForgeConfig
from reconciler.status.forge import ShownStatus, statuses_for_record
from reconciler.status.forge_client import ForgeStatuses
from reconciler.status.forge_gate import FORGE_REASON, ForgeFleetStatus, carried_back, records_from_statuses
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
    config = ForgeConfig(kind=forge.kind, api_url=forge.api_url, allow_http=True, repository=forge.repository,
                         token_env=TOKEN_ENV)
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
                            reason={"success": "Converged", "failure": "ValidationFailed"}.get(state, "Testing"),
                            failureKind="version" if state == "failure" else None, message=message,
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
    read = ForgeFleetStatus(client).read([SHA])
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
    read = ForgeFleetStatus(client, "0.2.0").read([SHA])[site]
    assert (read.state, read.writtenAt, read.observedCommit, read.agentVersion) == (state, at(written), SHA, "0.2.0")
    assert {name: (d.state, d.version, d.activeVersion, d.wave) for name, d in read.deployments.items()} == deployments
    assert all(d.reason == FORGE_REASON and d.since == at(written) for d in read.deployments.values())


def test_the_message_is_what_the_status_tells_people(forge: FakeForge, client: ForgeStatuses) -> None:
    post_at(forge, client, RECORDS[4])
    read = ForgeFleetStatus(client).read([SHA])["a2"].deployments[DEPLOYMENT]
    # on GitHub's 140 characters the pairs (with the failure's kind and reason) come first, the human part is cut
    assert "failure: ValidationFailed on 1.1.0, serving 1.0.0: output 0 differs".startswith(read.message.rstrip("…"))
    assert (read.reason, read.failureKind) == ("ValidationFailed", "version")


def test_a_version_too_long_for_githubs_limit_is_dropped_the_rollout_kept(
        forge: FakeForge, client: ForgeStatuses) -> None:
    long_version = "1.1.0-rc.1+" + "b" * 117  # 128 characters, the most a manifest allows
    post_at(forge, client, record("p1", 3, **{DEPLOYMENT: deployment("success", long_version, long_version,
                                                                      minutes=3)}))
    report = site_report(ForgeFleetStatus(client).read([SHA])["p1"], DEPLOYMENT)
    assert report == SiteReport(RID, "success", None if forge.kind == "github" else long_version, at(3), at(3))


def test_a_later_change_is_read_with_the_forges_time_of_it(forge: FakeForge, client: ForgeStatuses) -> None:
    post_at(forge, client, record("p1", 1, **{DEPLOYMENT: deployment("pending", minutes=1)}))
    post_at(forge, client, record("p1", 2, **{DEPLOYMENT: deployment("progressing", minutes=2)}))
    post_at(forge, client, record("p1", 4, **{DEPLOYMENT: deployment("success", active="1.1.0", minutes=4)}))
    assert site_report(ForgeFleetStatus(client).read([SHA])["p1"], DEPLOYMENT) == \
        SiteReport(RID, "success", "1.1.0", at(4), at(4))


def test_an_unreachable_forge_raises_instead_of_reporting_no_sites(forge: FakeForge, client: ForgeStatuses) -> None:
    forge.answer_next(503, times=5)
    with pytest.raises(Transient) as caught:
        ForgeFleetStatus(client).read([SHA])
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


# --- a status's time carried back through earlier commits ---------------------------------------

CONTEXT = f"reconciler/{DEPLOYMENT}/p1"


def on_commit(state: State = "success", minutes: float = 1, rollout: str = RID, version: str = "1.1.0",
              changes: int = 1) -> dict[str, ShownStatus]:
    status = shown(CONTEXT, f"x · state={state} rollout={rollout} version={version}", state, minutes)
    return {CONTEXT: status.model_copy(update={"changes": changes})}


@pytest.mark.parametrize(("case", "newest", "earlier", "since"), [
    ("unchanged over three commits", on_commit(minutes=9), [on_commit(minutes=5), on_commit(minutes=2)], 2),
    ("a commit the site never read is passed over", on_commit(minutes=9), [{}, on_commit(minutes=2)], 2),
    ("another state ends the run", on_commit(minutes=9), [on_commit("progressing", 5), on_commit(minutes=2)], 9),
    ("another version ends the run", on_commit(minutes=9), [on_commit(minutes=5, version="1.0.0")], 9),
    ("another rollout ends the run", on_commit(minutes=9), [on_commit(minutes=5, rollout="0ddba11c0ffe")], 9),
    ("a change on the newest commit: what came before is unknown", on_commit(minutes=9, changes=2),
     [on_commit(minutes=5)], 9),
    ("a change on an earlier commit ends the run there", on_commit(minutes=9),
     [on_commit(minutes=5, changes=3), on_commit(minutes=2)], 5),
    ("no earlier commit", on_commit(minutes=9), [], 9),
])
def test_a_status_is_carried_back_while_the_site_showed_it_unchanged(
        case: str, newest: dict[str, ShownStatus], earlier: list[dict[str, ShownStatus]], since: float) -> None:
    assert carried_back(newest, earlier)[CONTEXT].at == at(since)


def test_a_status_without_a_rollout_is_not_carried_back() -> None:
    no_rollout = {CONTEXT: shown(CONTEXT, "x · state=success version=1.1.0", minutes=9)}
    assert carried_back(no_rollout, [on_commit(minutes=2)])[CONTEXT].at == at(9)


def test_earlier_commits_are_read_only_while_a_run_goes_on() -> None:
    read: list[int] = []

    def commits():
        for n, statuses in enumerate([on_commit(minutes=5), on_commit("failure", 3), on_commit(minutes=1)]):
            read.append(n)
            yield statuses

    assert carried_back(on_commit(minutes=9), commits())[CONTEXT].at == at(5)
    assert read == [0, 1]


def test_an_unrelated_commit_during_the_bake_does_not_restart_it(forge: FakeForge, client: ForgeStatuses) -> None:
    """Sites post again on every fleet commit they read; the wave still bakes from when it turned healthy."""
    older, newer = SHA, hashlib.sha1(b"an unrelated commit").hexdigest()
    for name, minutes in (("p1", 3), ("p2", 4)):
        post_at(forge, client, event_record(name, minutes, "success"))
    for name, minutes in (("p1", 7), ("p2", 7.5)):  # the same records, observed on the newer commit
        forge.clock = lambda minutes=minutes: at(minutes).timestamp()
        newer_record = event_record(name, minutes, "success").model_copy(update={"observedCommit": newer})
        client.publish(newer, statuses_for_record(newer_record))

    only_newest = ForgeFleetStatus(client).read([newer])
    assert (decide("e1", only_newest, 9).kind, decide("e1", only_newest, 9).reason) == ("wait", "Baking")
    carried = ForgeFleetStatus(client).read([newer, older])
    assert decide("e1", carried, 9).kind == "proceed"  # baked 5 minutes from minute 4
    assert site_report(carried["p2"], DEPLOYMENT).since == at(4)


def test_earlier_commits_are_read_again_only_while_they_may_miss_a_post(
        forge: FakeForge, client: ForgeStatuses) -> None:
    older, newer = SHA, hashlib.sha1(b"an unrelated commit").hexdigest()
    post_at(forge, client, event_record("p1", 3, "success"))
    forge.clock = lambda: at(7).timestamp()
    client.publish(newer, statuses_for_record(event_record("p1", 7, "success").model_copy(
        update={"observedCommit": newer})))
    clock = [at(8)]
    reader = ForgeFleetStatus(client, now=lambda: clock[0])

    def reads_of(commit: str) -> int:
        return sum(1 for seen in forge.gets() if commit in seen.path)

    before = reads_of(older), reads_of(newer)
    reader.read([newer, older])
    reader.read([newer, older])
    assert reads_of(older) - before[0] == 2  # read at minute 8: a post on it may not be visible yet (clock skew)
    clock[0] = at(7 + 6)
    reader.read([newer, older])
    reader.read([newer, older])
    assert reads_of(older) - before[0] == 3  # read after the newest post plus the skew: kept from then on
    assert reads_of(newer) - before[1] == 4


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
    from_forge = ForgeFleetStatus(client).read([SHA])
    from_git_decision = decide(site, in_git, now)
    assert (from_git_decision.kind, from_git_decision.reason) == (kind, reason), from_git_decision.message
    assert decide(site, from_forge, now) == from_git_decision


def decide(site: str, records: dict[str, StatusRecord], now: float) -> GateDecision:
    reports = {s: r for s, record in records.items() if (r := site_report(record, DEPLOYMENT)) is not None}
    return decide_gate(ROLLOUT, DEPLOYMENT, RID, site, SITES, reports, at(now))

