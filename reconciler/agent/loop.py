"""One reconcile of one site, and the agent loop around it. reconcile_once reads top to bottom
like the data flow: source -> load -> plan -> apply -> report."""

from __future__ import annotations

import logging
import random
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from git import GitCommandError

from reconciler import __version__, reasons
from reconciler.agent.apply import Applier, CanaryMetrics, Outcome, Runtime
from reconciler.agent.config import SiteConfig
from reconciler.agent.selfheal import heal_after_failure, heal_at_start
from reconciler.agent.statedir import StateDir
from reconciler.agent.telemetry import SiteTelemetry
from reconciler.cancel import CancelToken
from reconciler.delivery.evidence import FailureKind, failure_kind
from reconciler.delivery.model import SiteState
from reconciler.delivery.plan import Plan, Target, plan_site, rollout_of, wave_members
from reconciler.errors import Cancelled, NeedsOperator, ReconcilerError, Stalled
from reconciler.flags import site_context
from reconciler.gitdoor.source import GitSource, cache_failure
from reconciler.manifests.fleet import FleetRepo
from reconciler.manifests.loader import DocumentCache, load_tree
from reconciler.status.forge import CommitStatus, statuses_for_record, wave_status
from reconciler.status.forge_client import ForgeStatuses
from reconciler.status.forge_gate import LOOKBACK, ForgeFleetStatus
from reconciler.status.gitref import StatusRefs
from reconciler.status.record import WORST_FIRST, DeploymentStatus, State, StatusRecord
from reconciler.trust import KeylessIdentity, TrustedKey, TrustRoots, load_public_key
from reconciler.trust.commitpolicy import verify_commits

log = logging.getLogger("reconciler.agent")

FINDINGS_IN_MESSAGE = 5


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ReconcileResult:
    head: str | None
    plan: Plan | None = None
    record: StatusRecord | None = None
    error: ReconcilerError | None = None

    @property
    def noop(self) -> bool:
        return self.plan is None and self.error is None

    @property
    def retry_soon(self) -> bool:
        return self.error is not None and self.error.retry


class Agent:
    def __init__(self, config: SiteConfig, runtime: Runtime | None, metrics: CanaryMetrics | None = None,
                 wake: threading.Event | None = None, stop: CancelToken | None = None,
                 telemetry: SiteTelemetry | None = None):
        self.config = config
        self.stopping = stop or CancelToken()  # set on SIGTERM: cut the work in flight short
        self.telemetry = telemetry or SiteTelemetry(config.site)
        self.state_dir = StateDir(config.state)
        self.source = GitSource(config.repo, config.branch, config.state / "cache" / "fleet.git")
        status_source = self.source if config.statusRepo is None else \
            GitSource(config.statusRepo, config.branch, config.state / "cache" / "status.git")
        self.status = StatusRefs(status_source)
        self.caches = [self.source] if status_source is self.source else [self.source, status_source]
        self.forge = ForgeStatuses(config.forge) if config.forge else None
        self.forge_fleet = ForgeFleetStatus(self.forge) if self.forge else None
        self.applier = Applier(self.state_dir, runtime, load_trust_roots(config), limits=config.fetch,
                               validation=config.validation, metrics=metrics, stop=self.stopping,
                               meter=self.telemetry)
        self.runtime = runtime
        self.documents = DocumentCache()
        self.reconciled_head: str | None = None  # head whose reconcile needs no retry
        self.last_record: StatusRecord | None = None
        self.last_contact: datetime | None = None  # when the fleet repo last answered
        self.watching = False  # a rollout or canary is in flight: plan each tick, not only on new commits
        self.wake = wake or threading.Event()  # set by the push webhook (or a stop): reconcile now

    def start(self, now: datetime | None = None) -> None:
        """Lock the state directory and serve the last good state before the repo is read."""
        self.state_dir.lock()
        # Sites before partial clones kept the whole tree of the fleet repo there; nothing reads it now.
        shutil.rmtree(self.config.state / "cache" / "tree", ignore_errors=True)
        heal_at_start(self.config.state, self.caches, started=time.time())
        self.applier.restore(self.state_dir.load(self.config.site))
        self.last_contact = now or utcnow()  # staleness counts from the agent's start

    def stop(self) -> None:
        self.state_dir.unlock()
        self.source.close()
        self.status.close()
        if self.forge is not None:
            self.forge.close()

    def reconcile_once(self, now: datetime | None = None) -> ReconcileResult:
        started = time.monotonic()
        result = self._reconcile(now or utcnow())
        self.telemetry.reconciled(time.monotonic() - started, utcnow(), result.record, result.plan, result.error)
        return result

    def _reconcile(self, now: datetime) -> ReconcileResult:
        head = None
        try:
            head = self.source.remote_head()
            self.last_contact = now
            if head == self.reconciled_head and not self.watching:
                return ReconcileResult(head)
            commit = self.source.fetch(head)
            state = self.state_dir.load(self.config.site)
            self._refuse_rollback(state, commit)
            self._require_signed(state, commit)
            loaded = load_tree(self.source.files(commit), self.documents)
            if loaded.errors:
                rendered = [f.render() for f in loaded.errors[:FINDINGS_IN_MESSAGE]]
                more = len(loaded.errors) - len(rendered)
                raise Stalled(reasons.InvalidManifests, "; ".join(rendered) + (f"; and {more} more" if more > 0 else ""))
            self._share_flags(loaded.repo)
            # Other sites' records matter only to waves: without rollouts, no fetch of every status ref.
            rollouts = any(rollout_of(loaded.repo, d) for d in loaded.repo.deployments.values())
            fleet_status = self._fleet_status(commit) if rollouts else {}
            plan = plan_site(loaded.repo, self.config.site, state, now, commit, fleet_status)
            state, outcomes = self.applier.apply(plan, state, self.source.tree(commit), now)
            state = self._record_applied(state, commit, outcomes)
            record = self._record(now, commit, state, plan, outcomes)
            before = self.last_record
            self._publish(record, loaded.repo, fleet_status, now)
            retry = any(o.error and o.error.retry for o in outcomes) or any(a.kind == "prefetch" for a in plan.actions)
            self.reconciled_head = None if retry else head
            self.watching = plan.watching
            self._log_plan(outcomes, record, before)
            return ReconcileResult(head, plan, record)
        except Cancelled as error:
            log.info("%s: reconcile stopped, nothing more applied: %s", self.config.site, error.message)
            return ReconcileResult(head, error=error)
        except ReconcilerError as error:
            return self._report_site_error(error, head, now)
        except GitCommandError as error:  # a git command no door turned into a typed error
            return self._report_site_error(cache_failure(error, self.source.cache_dir), head, now)

    def run(self, stop: threading.Event) -> None:
        """Reconcile every interval (with jitter, so a fleet does not poll in step), or at once
        when woken (the push webhook); after a transient error back off exponentially, capped at
        the interval. Whoever sets ``stop`` sets ``wake`` too."""
        failures = 0
        interval = self.config.interval_seconds
        while not stop.is_set():
            self.wake.clear()
            result = self.reconcile_once()
            if isinstance(result.error, NeedsOperator):
                raise result.error  # its record says why; retrying cannot help, so the CLI exits 2
            failures = failures + 1 if result.retry_soon else 0
            delay = min(interval, 0.5 * 2**failures) if failures else interval
            self.wake.wait(delay * (1 + self.config.jitter * (2 * random.random() - 1)))
        log.info("%s: stopped", self.config.site)

    def _fleet_status(self, commit: str) -> dict[str, StatusRecord]:
        """Every site's newest record (from Git refs, or from the forge's statuses on this commit and,
        for how long each has held, the commits before it), this site's own as it stands in memory."""
        records = self.forge_fleet.read(self.source.first_parents(commit, LOOKBACK)) \
            if self.config.gateSource == "forge" else self.status.read_all()
        if self.last_record is not None:
            records[self.config.site] = self.last_record
        return records

    def _share_flags(self, fleet: FleetRepo) -> None:
        """The runtime evaluates the same flags per request (routing, OFREP) as the plan did."""
        site = fleet.sites.get(self.config.site)
        if self.runtime is not None and site is not None:
            self.runtime.set_flags(fleet.flags, site_context(site.metadata.name, site.metadata.labels))

    def _refuse_rollback(self, state: SiteState, commit: str) -> None:
        applied = state.appliedCommit
        if applied is None or applied == commit or commit == self.config.acceptHistory:
            return
        if not self.source.is_ancestor(applied, commit):
            raise Stalled(reasons.HistoryRewritten,
                          f"new head {commit[:12]} does not descend from the last applied commit {applied[:12]}; "
                          f"an operator can accept it with --accept-history {commit}")

    def _require_signed(self, state: SiteState, commit: str) -> None:
        """Under a commit policy, every commit the site is about to apply must be signed by an
        allowed signer; an operator-accepted commit restarts the chain at itself."""
        if self.config.commitPolicy is not None:
            applied = None if commit == self.config.acceptHistory else state.appliedCommit
            verify_commits(self.source, self.config.commitPolicy, applied, commit)

    def _record_applied(self, state: SiteState, commit: str, outcomes: list[Outcome]) -> SiteState:
        if all(o.ok for o in outcomes) and state.appliedCommit != commit:
            state = state.model_copy(update={"appliedCommit": commit})
            self.state_dir.save(state)
        return state

    def _record(self, now: datetime, commit: str, state: SiteState, plan: Plan,
                outcomes: list[Outcome]) -> StatusRecord:
        deployments: dict[str, DeploymentStatus] = {}
        for target in plan.converged:
            deployments[target.deployment] = self._deployment_status(
                now, state, target.deployment, target.model, "success", target, reasons.Converged, "")
        for outcome in outcomes:
            action = outcome.action
            if action.kind == "remove" and outcome.ok:
                continue
            kind = None
            if outcome.error is not None:
                reason, message, kind = outcome.error.reason, outcome.error.message, failure_kind(outcome.error.reason)
                state_name: State = "failure" if kind == "version" else "error"
            else:
                state_name, reason, message = outcome.state or "success", outcome.reason or action.reason, outcome.message
            deployments[action.deployment] = self._deployment_status(
                now, state, action.deployment, action.model, state_name, action.target, reason, message, outcome.weights,
                kind)
        return self._site_record(now, commit, state, deployments)

    def _deployment_status(self, now: datetime, state: SiteState, name: str, model: str, state_name: State,
                           target: Target | None, reason: str, message: str,
                           weights: dict[str, int] | None = None, kind: FailureKind | None = None) -> DeploymentStatus:
        installed = state.deployments.get(name)
        version = target.version if target else None
        rollout = target.rollout_id if target else None
        before = self.last_record.deployments.get(name) if self.last_record else None
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
            since=before.since if keep_since else now,
        )

    def _site_record(self, now: datetime, commit: str | None, state: SiteState,
                     deployments: dict[str, DeploymentStatus], error: ReconcilerError | None = None) -> StatusRecord:
        stale = self._stale(now)
        if error is not None:
            site_state: State = "error"
            reason, message = error.reason, error.message
            if stale:
                message += f" (no contact with the fleet repo since {self.last_contact:%Y-%m-%d %H:%M:%S}Z)"
        else:
            site_state = min((d.state for d in deployments.values()), key=WORST_FIRST.index, default="success")
            worst = next((d for d in deployments.values() if d.state == site_state and site_state != "success"), None)
            reason, message = (worst.reason, worst.message) if worst else (reasons.Converged, "")
        return StatusRecord(
            site=self.config.site,
            observedCommit=commit,
            appliedCommit=state.appliedCommit,
            state=site_state,
            reason=reason,
            message=message,
            stale=stale,
            deployments=deployments,
            agentVersion=__version__,
            writtenAt=now,
        )

    def _report_site_error(self, error: ReconcilerError, head: str | None, now: datetime) -> ReconcileResult:
        """The repo or the remote is unusable: keep serving, keep the per-deployment picture of the
        last record, and say why at the site level."""
        log.warning("%s: %s", self.config.site, error, extra={"reason": error.reason})
        repaired = heal_after_failure(self.caches, error)
        if isinstance(error, Stalled) and not repaired:
            self.reconciled_head = head  # the same inputs give the same answer: wait for a new commit
        state = self.state_dir.load(self.config.site)
        deployments = dict(self.last_record.deployments) if self.last_record else {}
        observed = head or (self.last_record.observedCommit if self.last_record else None)
        record = self._site_record(now, observed, state, deployments, error)
        try:
            self._publish(record)
        except (ReconcilerError, GitCommandError) as push_error:
            log.warning("%s: status not written: %s", self.config.site, push_error)
        return ReconcileResult(head, None, record, error)

    def _stale(self, now: datetime) -> bool:
        return self.last_contact is not None and now - self.last_contact > self.config.staleAfter

    def _publish(self, record: StatusRecord, fleet: FleetRepo | None = None,
                 fleet_status: dict[str, StatusRecord] | None = None, now: datetime | None = None) -> None:
        by_forge = self.config.gateSource == "forge"  # an agent that may not push to the repo
        if self.last_record is None and not by_forge:
            self.last_record = self.status.read_own(self.config.site)
        if record.same_as(self.last_record):
            return
        written = True if by_forge else self.status.write(record)
        self.last_record = record
        if written and self.forge is not None and record.observedCommit:
            self._mirror_to_forge(record, fleet, fleet_status or {}, now)

    def _mirror_to_forge(self, record: StatusRecord, fleet: FleetRepo | None,
                         fleet_status: dict[str, StatusRecord], now: datetime | None) -> None:
        """One status per deployment of this site, and the combined status of each wave in which
        this site just finished its part. The forge mirrors Git for people: its being down never
        fails a reconcile."""
        statuses = statuses_for_record(record, self.config.forge.targetUrl)
        if fleet is not None:
            statuses += self._wave_statuses(record, fleet, {**fleet_status, record.site: record}, now)
        try:
            self.forge.publish(record.observedCommit, statuses)
        except ReconcilerError as error:
            log.warning("%s: forge statuses not posted: %s", self.config.site, error)

    @staticmethod
    def _wave_statuses(record: StatusRecord, fleet: FleetRepo, fleet_status: dict[str, StatusRecord],
                       now: datetime) -> list[CommitStatus]:
        combined = []
        for name, status in sorted(record.deployments.items()):
            if status.wave is None or status.state not in ("success", "failure", "aborted") or name not in fleet.deployments:
                continue
            members = wave_members(fleet, fleet.deployments[name], now).get(status.wave, [])
            reports = {site: fleet_status[site].deployments.get(name) if site in fleet_status else None for site in members}
            combined.append(wave_status(name, status.wave, reports, len(members), version=status.version))
        return combined

    def _log_plan(self, outcomes: list[Outcome], record: StatusRecord, before: StatusRecord | None) -> None:
        """One line per action whose status changed, with the reason and message the record
        carries: failures at WARNING; an abort at ERROR, with its first cause (gates.py)."""
        for outcome in outcomes:
            action = outcome.action
            status = record.deployments.get(action.deployment)
            if status is not None and before is not None and before.deployments.get(action.deployment) == status:
                continue
            reason, message = (outcome.error.reason, outcome.error.message) if outcome.error else \
                (outcome.reason or action.reason, outcome.message or action.message)
            state = status.state if status is not None else None
            level = logging.ERROR if state == "aborted" else logging.WARNING if state in ("failure", "error") else logging.INFO
            target = action.target.version if action.target else "-"
            log.log(level, "%s: %s %s %s -> %s: %s: %s", self.config.site, action.kind, action.deployment,
                    action.from_version or "nothing", target, reason, message,
                    extra={"deployment": action.deployment, "reason": reason})


def load_trust_roots(config: SiteConfig) -> TrustRoots:
    identities = tuple(KeylessIdentity(t.identity, t.issuer) for t in config.trustIdentities)
    return TrustRoots(keys=tuple(load_trust_keys(config)), identities=identities,
                      sigstore_trusted_root=config.sigstoreTrustedRoot)


def load_trust_keys(config: SiteConfig) -> list[TrustedKey]:
    keys = []
    for path in config.trustKeys:
        try:
            keys.append(load_public_key(path.read_bytes(), name=path.name))
        except OSError as exc:
            raise NeedsOperator(reasons.TrustKeyUnreadable, f"cannot read trust key {path}: {exc}") from exc
    return keys
