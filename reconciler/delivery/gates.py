"""PURE: the fleet-wide half of progressive delivery. Each site decides for itself, from the other
sites' status records (read from Git) and its own ``now``, whether it may start a rollout, must
wait, or must roll back because the rollout is aborted. There is no controller: the instants below
come from the records alone, so every site reading the same records derives the same ones, and the
sites of one wave start together.

Rules (the vocabulary of Argo Rollouts and AWS IoT Jobs):

- A rollout is one version of a Deployment's spec, named by ``rollout_id``. Only reports carrying
  that id count; a changed spec is a new rollout and everything starts over (so an aborted rollout
  stays aborted until the Deployment changes).
- A site belongs to the first of the rollout's waves that holds it (``rollout.wave_index``); a site
  in no wave never starts (``NotInAnyWave``).
- The rollout starts at the earliest ``since`` of any targeted site's report for it. The first wave,
  and any wave whose earlier waves hold no targeted site, opens then (``FirstWave``: such a site
  proceeds at once).
- Wave k opens ``bakeTime`` after its gate first held, never before the wave before it opened
  (waves that hold no targeted site take no time). The gate
  is over every targeted site of the waves before k: it holds once the healthy ones (state
  ``success``) make up ``minHealthyRatio`` of the counted ones, that is from the
  ceil(ratio x counted)-th earliest healthy ``since`` on.
- A site with no report for this rollout is silent. Its deadline is its wave's opening plus
  ``progressDeadline``: a site cannot be late for work it was not yet allowed to do. Before its
  deadline a silent site is counted and not healthy. From the deadline on, ``unreported: fail``
  keeps counting it and also counts it as failed for the abort rule (a site that never reports has
  not proven the version); ``unreported: ignore`` drops it from the count, and a late report brings
  it back in.
- Sites reporting pending, progressing or error are counted, neither healthy nor failed, and never
  timed out here: they are alive and say why (a maintenance window, a retry), and the in-site
  canary bounds its own time.
- Only version evidence fails a site (``reconciler.delivery.evidence``): a ``failure`` whose reason is a
  condition of the site (no trust roots, disk full, network) counts like ``error``.
- Abort (AWS IoT Jobs ``abortConfig``), over every targeted site of any wave: executed = success +
  failure (+ silent past their deadline under ``fail``); the rollout aborts once the evidence is
  real and failed >= ``failureThreshold`` x executed. The evidence is real once executed >=
  ``minExecuted``; without one, once DEFAULT_MIN_EXECUTED sites ran, or every site that may run by
  now: the sites of the open waves, less those reporting a site condition and those silent past
  their deadline under ``ignore`` (so a one-site first wave that fails still aborts, and one
  failing store of three waits for the other two).
  A site reporting ``aborted`` for this rollout aborts it for everyone, so the abort sticks after
  the failed sites roll back and their records change; the first abort's message (its cause and
  how to retry) travels with it.
- Abort is judged first, because it concerns every site that moved, whatever its wave.
- Drift (``maxDriftedSites``): a wave also waits while more sites of the earlier waves than the
  limit report DriftDetected on the new version. Drift holds; it never aborts or rolls back.
- Evaluation (``evaluation``, reconciler.delivery.evaluation_gate): a wave whose earlier waves'
  example-weighted score of the new version misses the bound stops at its gate
  (EvaluationBelowMinimum), whatever their health; one whose gate would let it start waits while
  too few sites or examples have been scored (EvaluationPending). Neither aborts nor rolls back.

A site that has already started the rollout needs only the abort verdict: a later ``wait`` (a gate
that stopped holding) does not undo a start.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Literal

from reconciler import reasons
from reconciler.delivery.evaluation_gate import fleet_score, judge
from reconciler.delivery.evidence import FailureKind, failure_kind
from reconciler.delivery.rollout import wave_groups, wave_index
from reconciler.manifests.models import Gate, Rollout
from reconciler.manifests.types import format_duration
from reconciler.monitoring.evaluation import EvaluationSummary
from reconciler.monitoring.windows import DRIFT_DETECTED
from reconciler.status.record import State, StatusRecord

GateKind = Literal["proceed", "wait", "abort"]

ABORT_REASONS = (reasons.FailureThresholdReached, reasons.RolloutAborted)
DEFAULT_MIN_EXECUTED = 3  # without ``abort.minExecuted``: see README, "Defaults of a rollout"


@dataclass(frozen=True)
class SiteReport:
    """What the gate reads from one site's status record about one deployment."""

    rollout_id: str
    state: State
    version: str | None
    since: datetime  # when the site entered ``state`` in this rollout
    written_at: datetime
    reason: str = field(default="", compare=False)  # a gate read from the forge sees neither of these two
    message: str = field(default="", compare=False)
    kind: FailureKind | None = None  # as the record says; records of older agents have only the reason
    drifted: bool = field(default=False, compare=False)  # DriftDetected on the version it reports
    # What the site served before this rollout's version: the rollout's "from" version, which a
    # site with nothing installed serves while its wave waits (plan._serve_proven).
    ran_before: str | None = field(default=None, compare=False)
    evaluation: EvaluationSummary | None = field(default=None, compare=False)  # its scores of that version

    @property
    def failed(self) -> bool:
        """A failure that is evidence against the version; a site condition is not."""
        return self.state == "failure" and (self.kind or failure_kind(self.reason)) == "version"


@dataclass(frozen=True)
class GateDecision:
    kind: GateKind
    reason: str  # FirstWave, GateHeld, Baking, WaitingForEarlierWaves, ProgressDeadlineExceeded,
    #              NotInAnyWave, RolloutAborted, FailureThresholdReached, DriftedSites,
    #              EvaluationPending, EvaluationBelowMinimum
    message: str
    wave: str | None
    earliest_start: datetime | None  # when the site's wave opened or will open, when the records tell


def rollout_id(deployment_spec_json: str) -> str:
    """Short, stable name of one version of a Deployment's spec: equal JSON, equal id."""
    canonical = json.dumps(json.loads(deployment_spec_json), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def site_report(record: StatusRecord, deployment: str) -> SiteReport | None:
    """None when the record says nothing about the deployment in any rollout."""
    status = record.deployments.get(deployment)
    if status is None or status.rollout is None:
        return None
    drifted = status.drift is not None and status.drift.state == DRIFT_DETECTED and \
        status.drift.version == status.version
    ran_before = status.previousVersion if status.activeVersion == status.version else status.activeVersion
    evaluation = status.evaluation if status.evaluation is not None and status.evaluation.version == status.version \
        else None
    return SiteReport(status.rollout, status.state, status.version, status.since, record.writtenAt,
                      status.reason, status.message, status.failureKind, drifted, ran_before, evaluation)


def decide_gate(rollout: Rollout, deployment: str, rollout_id: str, site: str,
                sites: Mapping[str, Mapping[str, str]], records: Mapping[str, SiteReport],
                now: datetime) -> GateDecision:
    """May ``site`` start this rollout now? ``sites`` holds every site the deployment targets with
    its labels, ``records`` the latest report of each site that has one (this site's own included),
    all read from the same fleet commit and status refs."""
    if site not in sites:
        raise ValueError(f"site {site!r} is not among the deployment's targeted sites")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    progress = _Progress.of(rollout, deployment, rollout_id, sites, records)
    index = wave_index(rollout, deployment, site, sites[site])
    wave = None if index is None else rollout.waves[index].name
    aborted = _abort(rollout, deployment, progress, now, wave)
    if aborted is not None:
        return aborted
    if index is None:
        return GateDecision("wait", reasons.NotInAnyWave, f"site {site} is in none of the waves "
                            f"{', '.join(w.name for w in rollout.waves)}", None, None)
    if not any(progress.members[:index]):
        return GateDecision("proceed", reasons.FirstWave, f"wave {wave} goes first: no targeted site is in an earlier wave",
                            wave, progress.opened[index])
    held = _drift_hold(rollout, progress, index)
    if held is not None:
        return held
    scored = _evaluation_verdict(rollout, progress, index)
    if scored is not None and scored.reason == reasons.EvaluationBelowMinimum:
        return scored
    decision = _gate(rollout, progress, index, now)
    return scored if scored is not None and decision.kind == "proceed" else decision


def _evaluation_verdict(rollout: Rollout, progress: _Progress, index: int) -> GateDecision | None:
    gate = rollout.gate.evaluation
    if gate is None:
        return None
    earlier = [s for w in range(index) for s in progress.members[w]]
    # One rollout is one version, and a report keeps only the scores of the version it reports.
    summaries = {s: r.evaluation for s in earlier if (r := progress.reports.get(s)) is not None and r.evaluation}
    verdict = judge(gate, fleet_score(gate.metric, summaries))
    wave = rollout.waves[index].name
    if verdict.kind == "below":
        return GateDecision("wait", reasons.EvaluationBelowMinimum, f"the rollout stops at wave {wave}: {verdict.message}; "
                            "the earlier waves keep the version: revert the Deployment or ship a better version", wave, None)
    if verdict.kind == "pending":
        return GateDecision("wait", reasons.EvaluationPending, f"wave {wave} waits: {verdict.message}", wave, None)
    return None


def _drift_hold(rollout: Rollout, progress: _Progress, index: int) -> GateDecision | None:
    limit = rollout.gate.maxDriftedSites
    if limit is None:
        return None
    drifted = sorted(s for w in range(index) for s in progress.members[w]
                     if (r := progress.reports.get(s)) is not None and r.drifted)
    if len(drifted) <= limit:
        return None
    wave = rollout.waves[index].name
    return GateDecision("wait", reasons.DriftedSites, f"wave {wave} waits: {len(drifted)} site(s) of earlier waves report "
                        f"DriftDetected on the new version ({_list(drifted)}), at most {limit} allowed; drift holds "
                        "a rollout, it never rolls one back", wave, None)


@dataclass(frozen=True)
class _Progress:
    """The rollout as the records show it."""

    members: tuple[tuple[str, ...], ...]  # targeted sites of each wave, in wave order
    reports: Mapping[str, SiteReport]  # reports for this rollout from targeted sites
    held: tuple[datetime | None, ...]  # when each wave's gate first held; None: not yet, or a leading wave
    opened: tuple[datetime | None, ...]  # when each wave opened; None: not yet, or the rollout has no report

    @classmethod
    def of(cls, rollout: Rollout, deployment: str, rollout_id: str,
           sites: Mapping[str, Mapping[str, str]], records: Mapping[str, SiteReport]) -> _Progress:
        members = wave_groups(rollout, deployment, sites)[:-1]  # the sites of no wave never count
        reports = {s: r for s, r in records.items() if s in sites and r.rollout_id == rollout_id}
        start = min((r.since for r in reports.values()), default=None)
        held: list[datetime | None] = []
        opened: list[datetime | None] = []
        for index in range(len(rollout.waves)):
            if not any(members[:index]):
                held.append(None)
                opened.append(start)
                continue
            previous = next(opened[w] for w in reversed(range(index)) if members[w])  # empty waves take no time
            at = None if previous is None else _held_at(rollout.gate, members[:index], opened, reports, previous)
            held.append(at)
            opened.append(None if at is None else at + rollout.gate.bakeTime)
        return cls(tuple(tuple(sorted(m)) for m in members), reports, tuple(held), tuple(opened))

    def silent(self, wave: int) -> list[str]:
        return [s for s in self.members[wave] if s not in self.reports]

    def deadline(self, gate: Gate, wave: int) -> datetime | None:
        opened = self.opened[wave]
        return None if opened is None else opened + gate.progressDeadline

    def late(self, gate: Gate, waves: range, now: datetime) -> list[str]:
        """Silent sites of ``waves`` whose deadline has passed."""
        return [s for w in waves if (d := self.deadline(gate, w)) is not None and d <= now for s in self.silent(w)]


def _held_at(gate: Gate, earlier: list[list[str]], opened: list[datetime | None],
             reports: Mapping[str, SiteReport], floor: datetime) -> datetime | None:
    """The first instant, not before ``floor``, at which the healthy share of the sites of the
    ``earlier`` waves reached the ratio. The count only drops (``ignore`` leaving silent sites out
    at their deadlines), so the instant is found segment by segment between those drops."""
    sites = [s for wave in earlier for s in wave]
    healthy = sorted(r.since for s in sites if (r := reports.get(s)) is not None and r.state == "success")
    drops: list[tuple[datetime, int]] = []
    if gate.unreported == "ignore":
        for wave, members in enumerate(earlier):
            silent = sum(1 for s in members if s not in reports)
            if silent and opened[wave] is not None:
                drops.append((opened[wave] + gate.progressDeadline, silent))
    counted, start = len(sites), floor
    for drop_at, silent in [*sorted(drops), (None, 0)]:
        needed = _share(gate.minHealthyRatio, counted)
        if needed <= len(healthy):
            at = max(start, healthy[needed - 1]) if needed else start
            if drop_at is None or at < drop_at:
                return at
        if drop_at is not None:
            start, counted = max(start, drop_at), counted - silent
    return None


def _gate(rollout: Rollout, progress: _Progress, index: int, now: datetime) -> GateDecision:
    gate, wave = rollout.gate, rollout.waves[index].name
    held, opened = progress.held[index], progress.opened[index]
    if held is not None and opened is not None and held <= now:
        if now >= opened:
            return GateDecision("proceed", reasons.GateHeld, f"wave {wave} starts: the gate on earlier waves held "
                                f"at {held.isoformat()} and baked {format_duration(gate.bakeTime)}", wave, opened)
        return GateDecision("wait", reasons.Baking, f"wave {wave} waits: the gate on earlier waves held at "
                            f"{held.isoformat()}, baking until {opened.isoformat()}", wave, opened)
    earlier = range(index)
    sites = [s for w in earlier for s in progress.members[w]]
    late = progress.late(gate, earlier, now)
    counted = len(sites) - (len(late) if gate.unreported == "ignore" else 0)
    healthy = sum(1 for s in sites if (r := progress.reports.get(s)) is not None and r.state == "success")
    names = [rollout.waves[w].name for w in earlier if progress.members[w]]
    message = (f"wave {wave} waits: {healthy}/{counted} sites of wave{'s' if len(names) > 1 else ''} "
               f"{', '.join(names)} healthy, need {gate.minHealthyRatio:.0%}")
    silent = [s for w in earlier for s in progress.silent(w) if s not in late]
    if silent:  # silent is not failed: they have not reported for this rollout yet
        message += f"; silent: {_list(silent)}"
    if late and gate.unreported == "fail":
        return GateDecision("wait", reasons.ProgressDeadlineExceeded,
                            f"{message}; {_list(late)} did not report within {format_duration(gate.progressDeadline)}",
                            wave, None)
    return GateDecision("wait", reasons.WaitingForEarlierWaves, message, wave, opened)


def retry_hint(deployment: str) -> str:
    return (f"retry it on purpose with `reconciler rollout retry {deployment}` "
            "(a commit that bumps spec.rollout.attempt)")


def _abort(rollout: Rollout, deployment: str, progress: _Progress, now: datetime,
           wave: str | None) -> GateDecision | None:
    aborted = sorted((r.since, s) for s, r in progress.reports.items() if r.state == "aborted")
    if aborted:
        first = progress.reports[aborted[0][1]]
        if first.reason in ABORT_REASONS and first.message:  # the first abort's cause and how to retry
            return GateDecision("abort", reasons.RolloutAborted, first.message, wave, None)
        return GateDecision("abort", reasons.RolloutAborted, f"the rollout is aborted: {_list([s for _, s in aborted])} "
                            f"reported it aborted; {retry_hint(deployment)}", wave, None)
    gate, rule = rollout.gate, rollout.abort
    failed = sorted(s for s, r in progress.reports.items() if r.failed)
    succeeded = sum(1 for r in progress.reports.values() if r.state == "success")
    late = progress.late(gate, range(len(rollout.waves)), now) if gate.unreported == "fail" else []
    executed = succeeded + len(failed) + len(late)
    if executed < _evidence_needed(rollout, progress, now) or \
            len(failed) + len(late) < _exact(rule.failureThreshold) * executed:
        return None
    why = [f"{_list(failed)} failed ({_reasons(progress, failed)})"] if failed else []
    why += [f"{_list(late)} did not report within {format_duration(gate.progressDeadline)}"] if late else []
    return GateDecision("abort", reasons.FailureThresholdReached,
                        f"the rollout is aborted: {len(failed) + len(late)} of {executed} executed sites failed, "
                        f"threshold {rule.failureThreshold:.0%} ({'; '.join(why)}); {retry_hint(deployment)}",
                        wave, None)


def _evidence_needed(rollout: Rollout, progress: _Progress, now: datetime) -> int:
    """``minExecuted`` when the rollout sets it. By default DEFAULT_MIN_EXECUTED, or fewer when
    fewer sites may run by now: every site of the open waves that neither reports a site condition
    nor stays silent past its deadline under ``ignore``."""
    if rollout.abort.minExecuted is not None:
        return rollout.abort.minExecuted
    ignored = set(progress.late(rollout.gate, range(len(rollout.waves)), now)) \
        if rollout.gate.unreported == "ignore" else set()
    may_run = [s for w, members in enumerate(progress.members)
               if (opened := progress.opened[w]) is not None and opened <= now for s in members
               if s not in ignored and not _site_condition(progress.reports.get(s))]
    return max(1, min(DEFAULT_MIN_EXECUTED, len(may_run)))


def _site_condition(report: SiteReport | None) -> bool:
    return report is not None and report.state in ("error", "failure") and not report.failed


def _reasons(progress: _Progress, sites: list[str]) -> str:
    return ", ".join(sorted({progress.reports[s].reason for s in sites if progress.reports[s].reason})) or "failure"


def _exact(ratio: float) -> Fraction:
    """The ratio as the decimal the manifest wrote, so 0.1 x 30 is 3, not 3.0000000000000004."""
    return Fraction(repr(ratio))


def _share(ratio: float, count: int) -> int:
    return math.ceil(_exact(ratio) * count)


def _list(sites: list[str], shown: int = 5) -> str:
    more = len(sites) - shown
    return ", ".join(sites[:shown]) + (f" and {more} more" if more > 0 else "")
