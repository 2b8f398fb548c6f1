"""PURE: (fleet, site, actual state, now) -> Plan. Decides, per deployment, what this site should
run and what has to happen to get there. No I/O, no clock: everything comes in as arguments."""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from reconciler import reasons
from reconciler.delivery.fleet_reports import FleetReports
from reconciler.delivery.gates import GateDecision, decide_gate, rollout_id
from reconciler.delivery.model import DeploymentState, SiteState
from reconciler.delivery.rollout import in_maintenance_window, wave_of
from reconciler.delivery.same_version import needs_recheck, why_deploy
from reconciler.errors import Stalled
from reconciler.flags import evaluate, site_context
from reconciler.manifests.deployments import CanaryStep, Deployment, DeploymentSpec, FlagRef
from reconciler.manifests.evaluation import ModelEvaluation
from reconciler.manifests.fleet import FleetRepo
from reconciler.manifests.models import (
    Artifact,
    ModelInterface,
    Platform,
    ReferenceProfile,
    Rollout,
    Signers,
    Site,
    ValidationCase,
)
from reconciler.manifests.selectors import matches
from reconciler.status.record import StatusRecord

ActionKind = Literal["deploy", "prefetch", "canary", "wait", "revert", "rollback", "halt", "remove", "error"]


@dataclass(frozen=True)
class Target:
    """What one deployment should serve at this site."""

    deployment: str
    model: str
    version: str
    artifact: Artifact
    interface: ModelInterface
    cases: tuple[ValidationCase, ...]
    wave: str | None
    rollout_id: str  # one rollout = one spec of the Deployment; the status records carry it
    signers: Signers | None = None
    canary_steps: tuple[CanaryStep, ...] = ()
    rollback_window: timedelta | None = None  # DeploymentSpec.rollbackWindow
    profile: ReferenceProfile | None = None  # ModelVersion.profile: what drift is measured against
    serves: bool = True  # DeploymentSpec.serve: false runs the version only as its batch job
    evaluation: ModelEvaluation | None = None  # ModelSpec.evaluation: how sites with labeled data score it


@dataclass(frozen=True)
class Action:
    """deploy: fetch, verify, validate, then activate or start a canary. prefetch: fetch and verify
    now, activate in the maintenance window. canary: take the running canary a step further.
    wait: an earlier wave has not proven the version yet. revert: the fleet asks again for the
    version this site served before (``rollbackWindow``): stop a canary, or activate that version
    from the kept blob, with no canary and no gate. rollback: the rollout is aborted and
    this site moved: back to the previous version. halt: aborted, and this site never moved.
    remove: stop serving. error: the fleet asks for something this site cannot do; keep serving."""

    kind: ActionKind
    deployment: str
    model: str
    from_version: str | None
    target: Target | None
    reason: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "deployment": self.deployment,
            "model": self.model,
            "fromVersion": self.from_version,
            "toVersion": self.target.version if self.target else None,
            "digest": self.target.artifact.digest if self.target else None,
            "wave": self.target.wave if self.target else None,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True)
class Plan:
    site: str
    commit: str | None
    actions: tuple[Action, ...]
    converged: tuple[Target, ...]  # desired and already served: nothing to do
    watching: bool = False  # a rollout or canary is in flight: plan again even if the repo is unchanged
    batch_only: frozenset[str] = frozenset()  # planned deployments with `serve: false`: nothing to serve

    @property
    def empty(self) -> bool:
        return not self.actions

    @property
    def serving(self) -> list[str]:
        """Deployments the fleet plans for this site: what readiness waits for. Every one but those
        it stops serving, including one the site cannot serve yet (a wave that has not reached it, a
        maintenance window, an error): until it serves them all, the site is not ready. Batch-only
        deployments are not among them: their version is active for the batch runs alone."""
        wanted = {t.deployment for t in self.converged}
        wanted |= {a.deployment for a in self.actions if a.kind != "remove"}
        return sorted(wanted - self.batch_only)

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "commit": self.commit,
            "actions": [a.to_json() for a in self.actions],
            "converged": [
                {"deployment": t.deployment, "model": t.model, "version": t.version, "wave": t.wave}
                for t in self.converged
            ],
        }


class Unplannable(Stalled):
    """The fleet asks something of a site that it cannot do (a dangling reference, no fitting
    artifact, a flag that does not evaluate): the plan reports it for that deployment and the site
    waits for a commit that changes it."""


def plan_site(repo: FleetRepo, site_name: str, actual: SiteState, now: datetime, commit: str | None,
              fleet_status: Mapping[str, StatusRecord] | FleetReports | None = None) -> Plan:
    """``fleet_status`` holds every site's newest status record, or the reports merged from the
    shard summaries of the deployments that gate this site (the same reports: the same plan);
    without it waves are not gated (every targeted site may move at once), as for a plan read from
    a repo alone."""
    if fleet_status is not None and not isinstance(fleet_status, FleetReports):
        fleet_status = FleetReports.of_records(fleet_status)
    site = repo.sites.get(site_name)
    if site is None:
        close = difflib.get_close_matches(site_name, repo.sites, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        error = Action("error", "*", "*", None, None, reasons.SiteNotInFleet,
                       f"no Site named {site_name!r} in the fleet repo{hint}")
        return Plan(site_name, commit, (error,), ())
    actions: list[Action] = []
    converged: list[Target] = []
    wanted: set[str] = set()
    batch_only: set[str] = set()
    watching = False
    for name in sorted(repo.deployments):
        deployment = repo.deployments[name]
        if not matches(deployment.spec.targets, site.metadata.labels):
            continue
        if not deployment.spec.serve:
            batch_only.add(name)
        current = actual.deployments.get(name)
        from_version = current.active.version if current and current.active else None
        try:
            target = target_for(repo, deployment, site, now)
        except Unplannable as why:
            wanted.add(name)
            actions.append(Action("error", name, deployment.spec.model, from_version, None, why.reason, why.message))
            continue
        if target is None:
            continue
        wanted.add(name)
        gate, complete = wave_gate(repo, deployment, target, site_name, fleet_status, now)
        watching |= not complete
        action = _next_step(site, current, from_version, target, gate, now)
        if action is not None and action.kind == "wait" and from_version is None and action.reason != reasons.NotInAnyWave:
            action = _serve_proven(repo, deployment, site, target, action, fleet_status or FleetReports({}), now)
        if action is None:
            converged.append(target)
        else:
            actions.append(action)
            watching |= action.kind in ("canary", "wait") or _starts_canary(action)
    for name in sorted(set(actual.deployments) - wanted):
        current = actual.deployments[name]
        from_version = current.active.version if current.active else None
        actions.append(Action("remove", name, current.model, from_version, None, reasons.NotTargeted,
                              "the fleet no longer asks this site to serve this deployment"))
    return Plan(site_name, commit, tuple(actions), tuple(converged), watching, frozenset(batch_only))


def _starts_canary(action: Action) -> bool:
    """A deploy with canary steps starts a canary whose later steps come with time, not commits."""
    return action.kind == "deploy" and action.target is not None and bool(action.target.canary_steps)


def targeted_sites(repo: FleetRepo, deployment: Deployment, now: datetime) -> dict[str, dict[str, str]]:
    """The sites a deployment runs at (selector and flag), with their labels. Selectors are
    matched once per distinct label set: fleets have thousands of sites but few kinds of site."""
    if deployment.spec.enabled is False:
        return {}
    by_flag = isinstance(deployment.spec.enabled, FlagRef)
    targeted = {}
    for labels, names in repo.label_groups:
        if matches(deployment.spec.targets, labels):
            for name in names:
                if not by_flag or _enabled_or_false(repo, deployment, repo.sites[name], now):
                    targeted[name] = labels
    return targeted


def wave_members(repo: FleetRepo, deployment: Deployment, now: datetime) -> dict[str, list[str]]:
    """Each wave's sites, for the combined status of a wave."""
    rollout = rollout_of(repo, deployment)
    members: dict[str, list[str]] = {}
    if rollout is None:
        return members
    for site, labels in targeted_sites(repo, deployment, now).items():
        wave = wave_of(rollout, deployment.metadata.name, site, labels)
        if wave is not None:
            members.setdefault(wave.name, []).append(site)
    return members


def _enabled_or_false(repo: FleetRepo, deployment: Deployment, site: Site, now: datetime) -> bool:
    """A site whose flag does not evaluate takes no part in the rollout (it reports its error)."""
    try:
        return enabled_at(repo, deployment, site, now)
    except Unplannable:
        return False


def _next_step(site: Site, current: DeploymentState | None, from_version: str | None, target: Target,
               gate: GateDecision | None, now: datetime) -> Action | None:
    """None when the site serves the target, validated as the fleet defines it, and nothing is
    asked of it. The same version with other bytes or other checks is deployed again (same_version.py)."""
    name, model, digest = target.deployment, target.model, target.artifact.digest
    active = current.active if current is not None else None
    moved = active is not None and active.digest == digest
    canarying = current is not None and current.canary is not None and current.canary.digest == digest
    going_back = _going_back(current, target, now)
    if going_back is not None:
        return Action("revert", name, model, from_version, target, reasons.RolledBack, going_back)
    if gate is not None and gate.kind == "abort":
        if canarying or (moved and current.previous is not None):
            return Action("rollback", name, model, from_version, target, gate.reason, gate.message)
        return Action("halt", name, model, from_version, target, gate.reason, gate.message)
    if moved and not needs_recheck(active, target):
        return None
    if canarying:
        return Action("canary", name, model, from_version, target, reasons.CanaryInProgress, "")
    if gate is not None and gate.kind == "wait":
        return Action("wait", name, model, from_version, target, gate.reason, gate.message)
    if not in_maintenance_window(site.spec.maintenanceWindows, now):
        return Action("prefetch", name, model, from_version, target, reasons.OutsideMaintenanceWindow,
                      f"{target.version} is fetched and verified now, activated in the next window")
    return Action("deploy", name, model, from_version, target, *why_deploy(active, target))


def _going_back(current: DeploymentState | None, target: Target, now: datetime) -> str | None:
    """Why going to ``target`` is a rollback, or None when it is not: the site serves it and runs
    a canary of another version, or it is the version the site served before its current one
    (within the rollback window), whose blob the site kept."""
    if current is None or current.active is None:
        return None
    digest, active, canary = target.artifact.digest, current.active, current.canary
    if active.digest == digest:
        return None if canary is None else (f"the canary of {canary.version} stopped: the fleet asks for "
                                            f"{active.version} again, which serves all traffic")
    previous, window = current.previous, target.rollback_window
    if previous is None or previous.digest != digest or (window is not None and now - active.installedAt > window):
        return None
    if active.version == target.version:  # the active version redefined with the previous one's bytes
        return None
    return (f"{active.version} -> {previous.version}: served here until {active.installedAt:%Y-%m-%d %H:%M:%S}Z, "
            "activated again from the kept blob, without canary or wave gate")


def _serve_proven(repo: FleetRepo, deployment: Deployment, site: Site, target: Target, wait: Action,
                  fleet_status: FleetReports, now: datetime) -> Action:
    """A site with nothing installed whose wave waits serves the rollout's *from* version meanwhile:
    the version the sites that report this rollout ran before it (the one most of them name). It
    is a rollout of its own (another id), so it never counts as this rollout's progress."""
    before = Counter(report.ran_before for report in fleet_status.of(target.deployment).values()
                     if report.rollout_id == target.rollout_id and report.ran_before not in (None, target.version))
    proven = [version for version, _ in sorted(before.items(), key=lambda item: (-item[1], item[0]))]
    if not proven:
        return wait
    try:
        meanwhile = target_for(repo, deployment, site, now, version=proven[0])
    except Unplannable:
        return wait  # the fleet no longer defines it: nothing proven to serve
    if meanwhile is None:
        return wait
    meanwhile = replace(meanwhile, wave=target.wave, canary_steps=())
    return Action("deploy", target.deployment, target.model, None, meanwhile, wait.reason,
                  f"serving {meanwhile.version}, what the earlier waves ran before this rollout, until wave "
                  f"{target.wave} may move to {target.version}")


def wave_gate(repo: FleetRepo, deployment: Deployment, target: Target, site: str,
          fleet_status: FleetReports | None, now: datetime) -> tuple[GateDecision | None, bool]:
    """The wave gate for this site, and whether every targeted site already reports the rollout
    healthy (then nothing about it can change any more)."""
    rollout = rollout_of(repo, deployment)
    if rollout is None or fleet_status is None:
        return None, True
    name = deployment.metadata.name
    targeted = targeted_sites(repo, deployment, now)
    reports = {s: report for s, report in fleet_status.of(name).items() if s in targeted}
    complete = all(s in reports and reports[s].rollout_id == target.rollout_id and reports[s].state == "success"
                   for s in targeted)
    return decide_gate(rollout, name, target.rollout_id, site, targeted, reports, now), complete


def target_for(repo: FleetRepo, deployment: Deployment, site: Site, now: datetime,
               version: str | None = None) -> Target | None:
    """What the deployment asks of a site it targets (or, given ``version``, what serving that
    version would take); None when a flag switches it off there."""
    spec = deployment.spec
    if not enabled_at(repo, deployment, site, now):
        return None
    context = site_context(site.metadata.name, site.metadata.labels)
    version = version or spec.version
    if isinstance(version, FlagRef):
        version = _flag_value(repo, version.flag, context, now, str)
    model = repo.models.get(spec.model)
    if model is None:
        raise Unplannable(reasons.ModelNotFound, f"deployment {deployment.metadata.name!r} names model {spec.model!r}, which the fleet does not define")
    model_version = model.spec.version(version)
    if model_version is None:
        known = ", ".join(v.version for v in model.spec.versions)
        raise Unplannable(reasons.VersionNotFound, f"model {spec.model!r} has no version {version!r} (known: {known})")
    artifact = pick_artifact(model_version.artifacts, site.metadata.labels)
    if artifact is None:
        raise Unplannable(reasons.NoMatchingArtifact, f"no artifact of {spec.model} {version} fits this site's labels "
                                 f"(arch={site.metadata.labels.get('arch')}, accelerator={site.metadata.labels.get('accelerator')})")
    wave = None
    rollout = rollout_of(repo, deployment)
    if rollout is not None:
        found = wave_of(rollout, deployment.metadata.name, site.metadata.name, site.metadata.labels)
        wave = found.name if found else None
    steps = tuple(spec.canary.steps) if spec.canary else ()
    return Target(deployment.metadata.name, spec.model, version, artifact, model.spec.interface,
                  tuple(model_version.validation), wave, _rollout_of_version(spec, version), model_version.signers,
                  steps, spec.rollbackWindow, model_version.profile, spec.serve, model.spec.evaluation)


def enabled_at(repo: FleetRepo, deployment: Deployment, site: Site, now: datetime) -> bool:
    """Whether the deployment is switched on at a site it targets (literally or by a flag)."""
    enabled = deployment.spec.enabled
    if isinstance(enabled, FlagRef):
        return bool(_flag_value(repo, enabled.flag, site_context(site.metadata.name, site.metadata.labels), now, bool))
    return enabled


def _rollout_of_version(spec: DeploymentSpec, version: str) -> str:
    """A rollout is one spec of the Deployment and the version it resolves to, so a version
    chosen by a flag starts a new rollout when the flag moves it. How requests are batched, or
    whether they are served at all, is no rollout: the agent applies it at once (and ids stay those
    of specs written before it existed)."""
    serving_only = {"max_batch_size", "max_queue_delay", "serve"}
    return rollout_id(json.dumps({"spec": spec.model_dump(mode="json", exclude=serving_only), "version": version}))


def rollout_of(repo: FleetRepo, deployment: Deployment) -> Rollout | None:
    if deployment.spec.rollout is not None:
        return deployment.spec.rollout
    return repo.fleet.spec.defaultRollout if repo.fleet else None


def _flag_value(repo: FleetRepo, key: str, context: dict[str, Any], now: datetime, kind: type) -> Any:
    resolution = evaluate(repo.flags, key, context, now, expected_type=kind)
    if resolution.error_code is not None or resolution.value is None:
        raise Unplannable(reasons.FlagEvaluationFailed,
                                 f"flag {key!r}: {resolution.error_code or 'no value'} {resolution.error_message or ''}".strip())
    return resolution.value


def pick_artifact(artifacts: list[Artifact], labels: dict[str, str]) -> Artifact | None:
    """The artifact whose platform fits the site's labels; the most specific fit wins, so a
    generic artifact serves sites no specific one covers."""
    fitting = [a for a in artifacts if _fits(a.platform, labels)]
    return max(fitting, key=lambda a: _specificity(a.platform), default=None)


def _fits(platform: Platform | None, labels: dict[str, str]) -> bool:
    if platform is None:
        return True
    return all(labels.get(field) == value for field, value in platform.model_dump(exclude_none=True).items())


def _specificity(platform: Platform | None) -> int:
    return 0 if platform is None else len(platform.model_dump(exclude_none=True))
