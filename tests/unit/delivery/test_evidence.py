"""Only evidence about the version counts against it: the failure table is complete and each
reason is in one column; the gate and the abort rule over records that mix version evidence and
site conditions; a property check that no sequence of site-condition records ever aborts; and the
abort rule's default minimum of evidence."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.delivery.evidence import SITE_CONDITIONS, VERSION_EVIDENCE, failure_kind
from reconciler.delivery.gates import SiteReport, decide_gate
from reconciler.manifests.models import Rollout
from reconciler.reasons import CATALOGUE

PACKAGE = Path(__file__).resolve().parents[3] / "reconciler"

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
RID = "a1b2c3d4e5f6"
DEPLOYMENT = "demand-forecast"
STORES = {"store-lyon-01": {}, "store-paris-01": {}, "store-nice-01": {}}
FLAT = {"waves": [{"name": "all", "percent": 100}]}
PILOTED = {"waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}},
                     {"name": "all", "percent": 100}]}


# The release commands run on a person's machine, never at a site: their refusals reach no record.
RELEASE_COMMANDS = {"add_version.py", "model_yaml.py", "scaffold.py"}


def reasons_in_code() -> set[str]:
    """The failure reasons (``reasons.X`` of the catalogue) the code outside the release commands names."""
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name in RELEASE_COMMANDS | {"reasons.py", "evidence.py"}:
            continue
        found |= {node.attr for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "reasons"
                  and node.attr in CATALOGUE and CATALOGUE[node.attr].raised}
    return found


def test_every_reason_the_code_raises_is_classified_once():
    raised = reasons_in_code()
    assert {"NoTrustedKeys", "ValidationFailed", "ErrorRateTooHigh", "ArtifactDigestMismatch"} <= raised
    assert not VERSION_EVIDENCE & SITE_CONDITIONS
    assert raised - VERSION_EVIDENCE - SITE_CONDITIONS == set()


@pytest.mark.parametrize("reason,kind", [
    ("ValidationFailed", "version"), ("ValidationCrashed", "version"), ("ValidationTimeout", "version"),
    ("ModelInterfaceMismatch", "version"), ("ErrorRateTooHigh", "version"), ("LatencyTooHigh", "version"),
    ("DisagreesWithStable", "version"), ("ArtifactDigestMismatch", "version"), ("BundleDigestMismatch", "version"),
    ("ArtifactIsLfsPointer", "version"),
    ("NoTrustedKeys", "site"), ("SignatureInvalid", "site"), ("DiskFull", "site"), ("ArtifactUnavailable", "site"),
    ("ArtifactSchemeUnsupported", "site"), ("StateWriteFailed", "site"), ("SourceUnreachable", "site"),
    ("SomethingNew", "site"), ("", "site"), ("DigestMismatch", "version"),  # the retired name, in old records
])
def test_failure_kind(reason, kind):
    assert failure_kind(reason) == kind


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def report(state: str, minutes: float, reason: str = "") -> SiteReport:
    return SiteReport(RID, state, "1.1.0", at(minutes), at(minutes), reason)  # type: ignore[arg-type]


def decide(records: dict[str, SiteReport], now: float, rollout: dict | None = None, site: str = "store-nice-01",
           sites: dict | None = None):
    return decide_gate(Rollout.model_validate(rollout or FLAT), DEPLOYMENT, RID, site, sites or STORES, records,
                       at(now))


@pytest.mark.parametrize("case,records,now,rollout,kind,reason", [
    ("story 1: a trial run without trust key reported failure NoTrustedKeys",
     {"store-lyon-01": report("failure", 1, "NoTrustedKeys")}, 5, None, "proceed", "FirstWave"),
    ("the same, reported as error by this version",
     {"store-lyon-01": report("error", 1, "NoTrustedKeys")}, 5, None, "proceed", "FirstWave"),
    ("every store with a site condition", {s: report("failure", 1, "DiskFull") for s in STORES}, 90, None,
     "proceed", "FirstWave"),
    ("one real failure of three waits for the others (default minimum)",
     {"store-lyon-01": report("failure", 1, "ValidationFailed")}, 5, None, "proceed", "FirstWave"),
    ("one real failure, one site condition, one pending: still waiting",
     {"store-lyon-01": report("failure", 1, "ValidationFailed"), "store-paris-01": report("error", 1, "DiskFull"),
      "store-nice-01": report("pending", 1)}, 5, None, "proceed", "FirstWave"),
    ("one real failure once the other two ran: real evidence",
     {"store-lyon-01": report("failure", 1, "ValidationFailed"), "store-paris-01": report("success", 2),
      "store-nice-01": report("success", 3)}, 5, None, "abort", "FailureThresholdReached"),
    ("one real failure when the others have a site condition: all that may run ran",
     {"store-lyon-01": report("failure", 1, "ValidationFailed"), "store-paris-01": report("error", 1, "DiskFull"),
      "store-nice-01": report("failure", 1, "NoTrustedKeys")}, 5, None, "abort", "FailureThresholdReached"),
    ("a one-store pilot that fails validation aborts at once",
     {"store-lyon-01": report("failure", 1, "ValidationFailed")}, 5, PILOTED, "abort", "FailureThresholdReached"),
    ("a one-store pilot with a site condition does not",
     {"store-lyon-01": report("failure", 1, "NoTrustedKeys")}, 5, PILOTED, "wait", "WaitingForEarlierWaves"),
    ("a silent store is not failed (unreported: ignore by default)",
     {"store-lyon-01": report("success", 1), "store-paris-01": report("success", 2)}, 600, None,
     "proceed", "FirstWave"),
    ("a silent pilot is left out at its deadline (1h): the next wave goes on, nothing aborts",
     {"store-paris-01": report("pending", 1)}, 61, PILOTED, "proceed", "GateHeld"),
    ("not before its deadline",
     {"store-paris-01": report("pending", 1)}, 60.9, PILOTED, "wait", "WaitingForEarlierWaves"),
])
def test_gate_over_mixed_records(case, records, now, rollout, kind, reason):
    sites = {"store-lyon-01": {"ring": "pilot"}, "store-paris-01": {}, "store-nice-01": {}} if rollout else None
    decision = decide(records, now, rollout, sites=sites)
    assert (decision.kind, decision.reason) == (kind, reason), decision.message


def test_the_abort_names_its_cause_and_how_to_retry_and_the_cause_sticks():
    records = {"store-lyon-01": report("failure", 1, "ValidationFailed"), "store-paris-01": report("success", 2),
               "store-nice-01": report("success", 3)}
    first = decide(records, 5)
    assert first.message == ("the rollout is aborted: 1 of 3 executed sites failed, threshold 20% "
                             "(store-lyon-01 failed (ValidationFailed)); retry it on purpose with "
                             "`reconciler rollout retry demand-forecast` (a commit that bumps spec.rollout.attempt)")
    # Every site reports the abort; the failed one rolls back and its record changes: the first
    # abort's message is what every later decision says.
    later = {s: SiteReport(RID, "aborted", "1.1.0", at(6 + i), at(6 + i),  # type: ignore[arg-type]
                           "FailureThresholdReached" if i == 0 else "RolloutAborted",
                           first.message if i == 0 else "something later") for i, s in enumerate(STORES)}
    decision = decide(later, 9)
    assert (decision.kind, decision.reason, decision.message) == ("abort", "RolloutAborted", first.message)


def test_an_explicit_minimum_is_kept():
    records = {"store-lyon-01": report("failure", 1, "ValidationFailed")}
    assert decide(records, 5, {**FLAT, "abort": {"minExecuted": 1}}).kind == "abort"
    sites = {"store-lyon-01": {"ring": "pilot"}, "store-paris-01": {}, "store-nice-01": {}}
    assert decide(records, 5, {**PILOTED, "abort": {"minExecuted": 2}}, sites=sites).kind == "wait"


SITE_CONDITION_RECORDS = st.lists(
    st.tuples(
        st.sampled_from(sorted(STORES)),
        st.sampled_from(["failure", "error", "pending", "progressing", "success"]),
        st.sampled_from(sorted(SITE_CONDITIONS)),
        st.floats(min_value=0, max_value=600),
    ),
    max_size=20,
)


@settings(max_examples=150, deadline=None)
@given(records=SITE_CONDITION_RECORDS, now=st.floats(min_value=0, max_value=2000),
       rollout=st.sampled_from([FLAT, PILOTED]),
       threshold=st.sampled_from([0.01, 0.2, 1.0]), minimum=st.sampled_from([None, 1, 3]))
def test_no_sequence_of_site_condition_records_ever_aborts(records, now, rollout, threshold, minimum):
    """Each site's newest record wins, as when the agent reads the refs; whatever the states and
    site-condition reasons, and wherever the clock stands, no site is told to abort."""
    rollout = {**rollout, "abort": {"failureThreshold": threshold,
                                    **({"minExecuted": minimum} if minimum else {})}}
    sites = {"store-lyon-01": {"ring": "pilot"}, "store-paris-01": {}, "store-nice-01": {}}
    newest: dict[str, SiteReport] = {}
    for site, state, reason, minutes in records:
        newest[site] = report(state, minutes, reason if state in ("failure", "error") else "")
        for deciding in sites:
            decision = decide(newest, max(now, minutes), rollout, site=deciding, sites=sites)
            assert decision.kind != "abort", decision.message
