"""Executes a Plan against the state directory and the runtime. Each action is idempotent and
crash-safe: a version is served only after its bytes are hashed, its signature verified and its
validation cases passed in a child process, and state.json is replaced atomically afterwards, so
a crash at any instant leaves the site on the old version or the new one."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from reconciler import reasons
from reconciler.agent.ports import CanaryMetrics, DriftWatch, Runtime, Vetting
from reconciler.agent.scoring import Scoring
from reconciler.agent.statedir import StateDir
from reconciler.cancel import CancelToken
from reconciler.delivery.canary import CanaryDecision, CanaryProgress, decide_canary, measured_since
from reconciler.delivery.model import DeploymentState, HistoryEntry, Installed, SiteState
from reconciler.delivery.plan import Action, Plan, Target
from reconciler.delivery.same_version import CHECKS_CHANGED, VERSION_REDEFINED, checks_digest, rollback_target
from reconciler.errors import Cancelled, NeedsOperator, ReconcilerError, Stalled, Transient
from reconciler.ingest.artifacts import ArtifactStore
from reconciler.ingest.fetch import RepoRoot
from reconciler.monitoring.evaluation import EvaluationSummary
from reconciler.monitoring.windows import DriftSummary
from reconciler.runtime.metrics import window_stats
from reconciler.status.record import State

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What became of one action; summary.py turns outcomes into the status record. ``state`` and
    ``reason`` are set where the action itself decides them (a canary step, a rollback); a failed
    canary is ``failure`` with the analysis's reason, returned like an aborted gate, not raised."""

    action: Action
    error: ReconcilerError | None = None
    state: State | None = None
    reason: str | None = None
    message: str = ""
    weights: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.state != "failure"


class Applier:
    """Receives its collaborators (agent/wiring.py builds them): the state directory, the blob
    store, the vetting of new bytes, the runtime that serves (None: a site without ``--listen``)
    the metrics a canary analysis reads and the drift counting of served versions that have a profile."""

    def __init__(self, state_dir: StateDir, store: ArtifactStore, vetting: Vetting, runtime: Runtime | None = None,
                 metrics: CanaryMetrics | None = None, stop: CancelToken | None = None, drift: DriftWatch | None = None,
                 evaluation_interval: timedelta | None = None):
        self.state_dir = state_dir
        self.store = store
        self.vetting = vetting
        self.stop = stop or CancelToken()  # once set, nothing more is fetched, validated or activated
        self.runtime = runtime
        self.metrics = metrics
        self.drift = drift
        # Federated evaluation's schedule; no interval (tests, `serve`): only before activation.
        self.scoring = Scoring(vetting, lambda digest: self.store.model_path(digest), evaluation_interval)
        self._drift_marks: frozenset[tuple[str, str, int]] = frozenset()
        self._baselines: dict[tuple[str, datetime], object] = {}  # (deployment, step start) -> snapshot
        self._batch_only: frozenset[str] = frozenset()  # the last plan's `serve: false` deployments

    def apply(self, plan: Plan, state: SiteState, repo_tree: RepoRoot, now: datetime
              ) -> tuple[SiteState, list[Outcome]]:
        """``repo_tree`` holds the commit's files, for repo-relative artifact URIs; only the
        files an artifact names are read from it."""
        self._serve_as_planned(plan, state)
        outcomes = []
        for action in plan.actions:
            self.stop.check(f"{action.kind} {action.deployment}")
            try:
                state, outcome = self._apply_one(action, state, repo_tree, plan.commit, now)
            except (Cancelled, NeedsOperator):
                raise
            except ReconcilerError as error:
                outcome = Outcome(action, error)
            outcomes.append(outcome)
        rescored = self.scoring.rescore(plan, state, now)
        if rescored != state:
            state = self._save(rescored)
        self._collect_garbage(plan, state)
        return state, outcomes

    def _serve_as_planned(self, plan: Plan, state: SiteState) -> None:
        """`serve` switched without a new version: a deployment that became batch-only leaves the
        runtime (or was restored into it at start-up), one served again gets its active version."""
        served_again = self._batch_only - plan.batch_only
        self._batch_only = plan.batch_only
        if self.runtime is None:
            return
        self.runtime.expect(plan.serving)
        for name in sorted(plan.batch_only & set(state.deployments)):
            self.runtime.remove(name)
        for name in sorted(served_again & set(state.deployments)):
            current = state.deployments[name]
            if current.active is None:
                continue
            try:
                self._activate(name, current.model, current.active, current.interface)
            except ReconcilerError as error:  # not ready until it loads; the next apply tries again
                self._batch_only |= {name}
                log.warning("%s: cannot serve %s again: %s", name, current.active.version, error)

    def _collect_garbage(self, plan: Plan, state: SiteState) -> None:
        """Blobs and part files nothing asks for any more go, so old versions do not fill a small
        disk. Each deployment's previous version stays, for a rollback without a download."""
        kept = [installed for deployment in state.deployments.values()
                for installed in (deployment.active, deployment.previous, deployment.canary) if installed is not None]
        keep = {installed.digest for installed in kept} | {installed.profile for installed in kept if installed.profile}
        keep |= {action.target.artifact.digest for action in plan.actions if action.target is not None}
        keep |= {file.digest for action in plan.actions if action.target is not None for file in action.target.artifact.files}
        keep |= {action.target.profile.digest for action in plan.actions
                 if action.target is not None and action.target.profile is not None}
        try:
            removed = self.store.garbage_collect(keep)
        except OSError as exc:  # the next apply tries again; serving is not at stake
            log.warning("could not remove unused blobs: %s", exc)
            return
        if removed:
            log.info("removed %d unused blob(s): %s", len(removed), ", ".join(removed))

    def restore(self, state: SiteState) -> None:
        """On start-up, serve what state.json says was active before (the last good state), and
        resume a running canary at its weight; its analysis measures afresh from here. Without a
        runtime, the active versions' drift is still watched, for the batch runs."""
        self._batch_only = frozenset(name for name, deployment in state.deployments.items() if not deployment.served)
        for name, deployment in state.deployments.items():
            if deployment.active is not None:
                self._activate(name, deployment.model, deployment.active, deployment.interface)
            if self.runtime is not None and deployment.canary is not None and deployment.canaryProgress is not None:
                self.runtime.start_canary(name, deployment.model, deployment.canary.version,
                                          self.store.model_path(deployment.canary.digest), deployment.interface,
                                          digest=deployment.canary.digest, weight=deployment.canaryProgress.weight)
                self._watch_drift(name, deployment.canary, compare_with=deployment.active)

    def _apply_one(self, action: Action, state: SiteState, repo_tree: RepoRoot, commit: str | None,
                   now: datetime) -> tuple[SiteState, Outcome]:
        match action.kind:
            case "deploy" | "prefetch" | "canary":
                target = action.target
                try:
                    if action.kind == "prefetch":
                        self.vetting.verified(target, repo_tree)
                        return state, Outcome(action, state="pending", reason=action.reason, message=action.message)
                    if action.kind == "canary":
                        return self._advance_canary(target, state, commit, now, action)
                    return self._deploy(target, state, repo_tree, commit, now, action)
                except ReconcilerError as error:
                    raise error.add_context(f"{target.model} {target.version}") from error
            case "wait":
                return state, Outcome(action, state="pending", reason=action.reason, message=action.message)
            case "revert":
                return self._revert(action, state, commit, now), Outcome(action, state="success", reason=action.reason,
                                                                         message=action.message)
            case "rollback":
                return self._roll_back(action, state, now), Outcome(action, state="aborted", reason=action.reason,
                                                                     message=action.message)
            case "halt":
                return state, Outcome(action, state="aborted", reason=action.reason, message=action.message)
            case "remove":
                if self.runtime is not None:
                    self.runtime.remove(action.deployment)
                if self.drift is not None:
                    self.drift.forget(action.deployment)
                remaining = {k: v for k, v in state.deployments.items() if k != action.deployment}
                return self._save(state.model_copy(update={"deployments": remaining})), Outcome(action)
            case "error":
                raise Stalled(action.reason, action.message)
        raise AssertionError(f"unknown action kind {action.kind}")

    def _deploy(self, target: Target, state: SiteState, repo_tree: RepoRoot, commit: str | None, now: datetime,
                action: Action) -> tuple[SiteState, Outcome]:
        """Also the same version again (same_version.py): redefined bytes are deployed, with a
        warning, or the kept blob is validated against changed checks; either switches at once."""
        ingested = self.vetting.verified(target, repo_tree)
        self.vetting.validate(target, ingested)
        profile = self.vetting.verified_profile(target, repo_tree)
        current = state.deployments.get(target.deployment)
        evaluation = self.scoring.before_activation(target, ingested.path, current, now)
        self.stop.check(f"activating {target.model} {target.version}")
        same_bytes = current is not None and current.active is not None and current.active.digest == target.artifact.digest
        installed = Installed(version=target.version, digest=target.artifact.digest, uri=target.artifact.uri,
                              installedAt=current.active.installedAt if same_bytes else now,
                              checks=checks_digest(target.interface, target.cases),
                              profile=profile.digest if profile else None)
        if action.reason == VERSION_REDEFINED:
            log.warning("%s: %s", target.model, action.message,
                        extra={"deployment": target.deployment, "reason": VERSION_REDEFINED})
        if target.canary_steps and current is not None and current.active is not None and self.runtime is not None \
                and current.active.version != target.version:
            # A stable version serves beside the canary; with nothing to compare against (a new
            # site), no traffic to measure (no runtime) or a version of the same name (redefined,
            # or its checks changed: same_version.py) the version switches at once.
            self.runtime.start_canary(target.deployment, target.model, target.version, ingested.path,
                                      target.interface, digest=installed.digest)
            self._watch_drift(target.deployment, installed, compare_with=current.active)
            started = current.model_copy(update={"canary": installed, "canaryProgress": CanaryProgress.start(now),
                                                 "rollout": target.rollout_id, "wave": target.wave,
                                                 "evaluation": evaluation})
            state = self._with(state, target.deployment, started, HistoryEntry(at=now, event="canaryStarted",
                                                                               version=target.version, commit=commit))
            return self._advance_canary(target, state, commit, now, action)
        reason = action.reason if action.reason in (VERSION_REDEFINED, CHECKS_CHANGED) else reasons.Activated
        return self._switch(target, state, installed, commit, now, evaluation), \
            Outcome(action, reason=reason, message=action.message)

    def _switch(self, target: Target, state: SiteState, installed: Installed, commit: str | None,
                now: datetime, evaluation: EvaluationSummary | None = None) -> SiteState:
        current = state.deployments.get(target.deployment)
        updated = DeploymentState(model=target.model, interface=target.interface, active=installed,
                                  previous=rollback_target(current, installed), rollout=target.rollout_id,
                                  wave=target.wave, served=target.serves, history=current.history if current else [],
                                  evaluation=evaluation)
        self._activate(target.deployment, target.model, installed, target.interface)
        try:
            return self._save(self._with(state, target.deployment, updated,
                                         HistoryEntry(at=now, event="activated", version=target.version, commit=commit)))
        except OSError as exc:
            self._undo_activation(target.deployment, current)
            raise Transient(reasons.StateWriteFailed, f"cannot record the activation of {target.version}: {exc}") from exc

    def _advance_canary(self, target: Target, state: SiteState, commit: str | None, now: datetime,
                        action: Action) -> tuple[SiteState, Outcome]:
        """One or more steps of the canary: set weights at once, wait out pauses and analysis
        windows, promote at the end or roll back to the stable version."""
        name = target.deployment
        if self.runtime is None:
            raise NeedsOperator(reasons.RuntimeNotServing, "a running canary needs this site's inference server (--listen)")
        current = state.deployments[name]
        decision = self._decide(name, target, current.canaryProgress, now)
        while decision.kind == "set_weight":
            self.runtime.set_weight(name, decision.weight)
            decision = self._decide(name, target, decision.next, now)
        self.runtime.set_mirror(name, decision.mirror)
        if decision.kind == "promote":
            self.runtime.set_weight(name, 100)
            self.runtime.promote(name)
            promoted = current.model_copy(update={"active": current.canary, "previous": current.active,
                                                  "canary": None, "canaryProgress": None})
            state = self._with(state, name, promoted, HistoryEntry(at=now, event="promoted", version=target.version,
                                                                   commit=commit, reason=decision.reason))
            return self._save(state), Outcome(action, state="success", reason=decision.reason, message=decision.message)
        if decision.kind == "rollback":
            state = self._save(self._drop_canary(state, name, now, decision.reason))
            return state, Outcome(action, state="failure", reason=decision.reason,
                                  message=f"{target.model} {target.version}: {decision.message}")
        waiting = current.model_copy(update={"canaryProgress": decision.next})
        weights = {current.active.version: 100 - decision.weight, target.version: decision.weight}
        return self._save(self._with(state, name, waiting)), Outcome(action, state="progressing", reason=decision.reason,
                                                                     message=decision.message, weights=weights)

    def _decide(self, name: str, target: Target, progress: CanaryProgress, now: datetime) -> CanaryDecision:
        """The step machine on the traffic since the current step began. Without a snapshot of
        that instant (the agent restarted and the counters with it) the analysis measures from now."""
        stats = None
        if self.metrics is not None:
            if (name, measured_since(progress)) not in self._baselines:
                progress = progress.model_copy(update={"baseline": now})
                self._baselines[(name, now)] = self.metrics.snapshot()
            before = self._baselines[(name, measured_since(progress))]
            stats = window_stats(before, self.metrics.snapshot(), name, target.version)
        decision = decide_canary(list(target.canary_steps), progress, stats, now)
        if self.metrics is not None and measured_since(decision.next) != measured_since(progress):
            self._baselines = {k: v for k, v in self._baselines.items() if k[0] != name}
            self._baselines[(name, measured_since(decision.next))] = self.metrics.snapshot()
        return decision

    def _roll_back(self, action: Action, state: SiteState, now: datetime) -> SiteState:
        """The rollout was aborted: drop a running canary, or go back to the previous version."""
        current = state.deployments[action.deployment]
        if current.canary is not None:
            return self._save(self._drop_canary(state, action.deployment, now, action.reason))
        self._activate(action.deployment, current.model, current.previous, current.interface)
        back = current.model_copy(update={"active": current.previous, "previous": None})
        entry = HistoryEntry(at=now, event="rolledBack", version=current.previous.version, reason=action.reason)
        return self._save(self._with(state, action.deployment, back, entry))

    def _revert(self, action: Action, state: SiteState, commit: str | None, now: datetime) -> SiteState:
        """Back to a version this site served: stop a canary, and unless the target is active
        already, activate the previous version from its kept blob (the runtime checks its digest)."""
        name, target = action.deployment, action.target
        if state.deployments[name].canary is not None:
            state = self._drop_canary(state, name, now, action.reason)
        current = state.deployments[name]
        if current.active.digest == target.artifact.digest:
            back = current.model_copy(update={"rollout": target.rollout_id, "wave": target.wave})
            return self._save(self._with(state, name, back))
        self._activate(name, current.model, current.previous, current.interface)
        back = current.model_copy(update={"active": current.previous, "previous": current.active,
                                          "rollout": target.rollout_id, "wave": target.wave})
        entry = HistoryEntry(at=now, event="rolledBack", version=target.version, commit=commit, reason=action.reason)
        return self._save(self._with(state, name, back, entry))

    def _drop_canary(self, state: SiteState, name: str, now: datetime, reason: str) -> SiteState:
        current = state.deployments[name]
        if self.runtime is not None:
            self.runtime.abort_canary(name)
        dropped = current.model_copy(update={"canary": None, "canaryProgress": None})
        return self._with(state, name, dropped, HistoryEntry(at=now, event="canaryRolledBack",
                                                            version=current.canary.version, reason=reason))

    def _undo_activation(self, deployment: str, previous: DeploymentState | None) -> None:
        if self.runtime is None:
            return
        if previous is None or previous.active is None:
            self.runtime.remove(deployment)
        else:
            self._activate(deployment, previous.model, previous.active, previous.interface)

    def _activate(self, deployment: str, model: str, installed: Installed, interface) -> None:
        """The runtime loads the very bytes that were hashed, and checks the digest once more. A
        batch-only version is active in state.json alone: the batch runs load it from its blob.
        Either way its drift is watched: served requests and batch runs count into it."""
        if self.runtime is not None and deployment not in self._batch_only:
            self.runtime.activate(deployment, model, installed.version, self.store.model_path(installed.digest),
                                  interface, digest=installed.digest)
        self._watch_drift(deployment, installed)

    def _watch_drift(self, deployment: str, installed: Installed, compare_with: Installed | None = None) -> None:
        """Drift only informs: a profile that cannot be read now leaves the version served, uncounted.
        A canary (``compare_with`` its stable version) is also compared with stable's predictions."""
        if self.drift is None or installed.profile is None:
            return
        try:
            self.drift.watch(deployment, installed.version, installed.profile, self.store.path_for(installed.profile))
            if compare_with is not None:
                self.drift.compare(deployment, compare_with.version, installed.version)
        except ReconcilerError as error:
            log.warning("%s %s: drift is not counted: %s", deployment, installed.version, error,
                        extra={"deployment": deployment, "reason": error.reason})

    def drift_news(self) -> bool:
        """A drift window closed (or a version is watched anew) since the last call: worth a record."""
        if self.drift is None:
            return False
        marks, self._drift_marks = self._drift_marks, self.drift.window_marks()
        return marks != self._drift_marks

    def drift_summaries(self, state: SiteState) -> dict[str, DriftSummary]:
        """The drift of each deployment's active version, where it is watched and a window closed."""
        if self.drift is None:
            return {}
        summaries = self.drift.summaries()
        return {name: summary for name, deployment in state.deployments.items() if deployment.active is not None
                and (summary := summaries.get((name, deployment.active.version))) is not None}

    def _save(self, state: SiteState) -> SiteState:
        self.state_dir.save(state)
        return state

    @staticmethod
    def _with(state: SiteState, name: str, deployment: DeploymentState, entry: HistoryEntry | None = None) -> SiteState:
        if entry is not None:
            deployment = deployment.model_copy(update={"history": [*deployment.history, entry]})
        return state.model_copy(update={"deployments": {**state.deployments, name: deployment}})
