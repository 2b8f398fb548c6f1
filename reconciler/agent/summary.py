"""What one reconcile found, summarised into the site's status record: the one mapping from step
results to the record (loop.py calls it once per reconcile, on success and error paths alike).

What became of an action, per deployment (``outcome_status``):

    outcome                                   state                    reason, message       failureKind
    an error the action raised                failure (version         the error's           failure_kind(reason)
                                              evidence) or error
    a state the action decided (a canary      that state               the outcome's, else   failure_kind(reason)
    step, a rollback, a halted gate, a                                 the action's reason   when failure
    failed canary)
    nothing said                              success                  the action's reason   -
    a converged target (no action)            success                  Converged             -

The site's state is its worst deployment's (WORST_FIRST), with that deployment's reason; a
reconcile that failed as a whole is ``error`` with the failure's reason, and keeps the last
record's deployments. A deployment's ``since`` holds while its state, version and rollout do."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from reconciler import __version__, reasons
from reconciler.agent.apply import Outcome
from reconciler.delivery.evidence import FailureKind, failure_kind
from reconciler.delivery.model import SiteState
from reconciler.delivery.plan import Plan, Target, wave_members
from reconciler.errors import ReconcilerError
from reconciler.manifests.fleet import FleetRepo
from reconciler.monitoring.windows import DriftSummary
from reconciler.status.forge import CommitStatus, wave_status
from reconciler.status.record import (
    WORST_FIRST,
    BatchRunSummary,
    DeploymentStatus,
    SiteInventory,
    State,
    StatusRecord,
)


def outcome_status(outcome: Outcome) -> tuple[State, str, str, FailureKind | None]:
    """State, reason, message and failure kind of the deployment an outcome is about (table above)."""
    if outcome.error is not None:
        reason, message = outcome.error.reason, outcome.error.message
        kind = failure_kind(reason)
        return ("failure" if kind == "version" else "error"), reason, message, kind
    state: State = outcome.state or "success"
    reason = outcome.reason or outcome.action.reason
    return state, reason, outcome.message, failure_kind(reason) if state == "failure" else None


def deployment_statuses(now: datetime, state: SiteState, plan: Plan, outcomes: list[Outcome],
                        before: StatusRecord | None,
                        batch_run: Callable[[str], BatchRunSummary | None] = lambda name: None,
                        provider: Callable[[str], str | None] = lambda name: None,
                        ) -> dict[str, DeploymentStatus]:
    """Per deployment, as the table above says, with the last batch run of a batch deployment and
    the execution provider that serves it."""
    deployments = _deployment_statuses(now, state, plan, outcomes, before)
    return {name: status.model_copy(update={"lastBatchRun": batch_run(name), "executionProvider": provider(name)})
            for name, status in deployments.items()}


def _deployment_statuses(now: datetime, state: SiteState, plan: Plan, outcomes: list[Outcome],
                         before: StatusRecord | None) -> dict[str, DeploymentStatus]:
    deployments: dict[str, DeploymentStatus] = {}
    for target in plan.converged:
        deployments[target.deployment] = _deployment_status(
            now, state, before, target.deployment, target.model, "success", target, reasons.Converged, "")
    for outcome in outcomes:
        action = outcome.action
        if action.kind == "remove" and outcome.ok:
            continue
        state_name, reason, message, kind = outcome_status(outcome)
        deployments[action.deployment] = _deployment_status(
            now, state, before, action.deployment, action.model, state_name, action.target, reason, message,
            outcome.weights, kind)
    return deployments


def _deployment_status(now: datetime, state: SiteState, last: StatusRecord | None, name: str, model: str,
                       state_name: State, target: Target | None, reason: str, message: str,
                       weights: dict[str, int] | None = None, kind: FailureKind | None = None) -> DeploymentStatus:
    installed = state.deployments.get(name)
    version = target.version if target else None
    rollout = target.rollout_id if target else None
    before = last.deployments.get(name) if last else None
    keep_since = before is not None and (before.state, before.version, before.rollout) == (state_name, version, rollout)
    return DeploymentStatus(
        model=model,
        state=state_name,
        version=version,
        activeVersion=installed.active.version if installed and installed.active else None,
        previousVersion=installed.previous.version if installed and installed.previous else None,
        wave=target.wave if target else None,
        rollout=rollout,
        reason=reason,
        message=message,
        failureKind=kind,
        weights=weights or {},
        evaluation=installed.evaluation if installed else None,
        since=before.since if keep_since else now,
    )


def with_drift(deployments: dict[str, DeploymentStatus], drift: Mapping[str, DriftSummary]
               ) -> dict[str, DeploymentStatus]:
    """Each deployment with the drift of its active version, where a window has closed."""
    return {name: status.model_copy(update={"drift": drift[name]}) if name in drift else status
            for name, status in deployments.items()}


def site_record(site: str, now: datetime, commit: str | None, state: SiteState,
                deployments: dict[str, DeploymentStatus], *, stale: bool, last_contact: datetime | None,
                error: ReconcilerError | None = None, inventory: SiteInventory | None = None) -> StatusRecord:
    if error is not None:
        site_state: State = "error"
        reason, message = error.reason, error.message
        if stale:
            message += f" (no contact with the fleet repo since {last_contact:%Y-%m-%d %H:%M:%S}Z)"
    else:
        site_state = min((d.state for d in deployments.values()), key=WORST_FIRST.index, default="success")
        worst = next((d for d in deployments.values() if d.state == site_state and site_state != "success"), None)
        reason, message = (worst.reason, worst.message) if worst else (reasons.Converged, "")
    return StatusRecord(
        site=site,
        observedCommit=commit,
        appliedCommit=state.appliedCommit,
        state=site_state,
        reason=reason,
        message=message,
        stale=stale,
        deployments=deployments,
        agentVersion=__version__,
        writtenAt=now,
        inventory=inventory,
    )


def wave_statuses(record: StatusRecord, fleet: FleetRepo, fleet_status: dict[str, StatusRecord],
                  now: datetime) -> list[CommitStatus]:
    """The combined status of each wave in which this site just finished its part."""
    fleet_status = {**fleet_status, record.site: record}
    combined = []
    for name, status in sorted(record.deployments.items()):
        if status.wave is None or status.state not in ("success", "failure", "aborted") or name not in fleet.deployments:
            continue
        members = wave_members(fleet, fleet.deployments[name], now).get(status.wave, [])
        reports = {site: fleet_status[site].deployments.get(name) if site in fleet_status else None for site in members}
        combined.append(wave_status(name, status.wave, reports, len(members), version=status.version))
    return combined
