"""One reconcile of one site, and the agent loop around it. reconcile_once runs ordered steps,
as Flux's reconcilers do: observe -> verify history -> load -> plan -> apply, each filling its part
of the run or failing it; then one summarise step, on success and error paths alike, turns the
run into the status record (agent/summary.py) and publishes it once."""

from __future__ import annotations

import logging
import random
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from reconciler import reasons
from reconciler.agent.apply import Applier, Outcome
from reconciler.agent.ports import FleetSource, HeadSource, Runtime, StatusChannel
from reconciler.agent.selfheal import heal_after_failure, heal_at_start
from reconciler.agent.summary import deployment_statuses, site_record, wave_statuses, with_drift
from reconciler.agent.telemetry import SiteTelemetry
from reconciler.batch.scheduler import ActiveModels, BatchScheduler
from reconciler.delivery.evidence import SITE_CONDITIONS
from reconciler.delivery.fleet_reports import FleetReports
from reconciler.delivery.model import SiteState
from reconciler.delivery.plan import Plan, plan_site
from reconciler.delivery.summary import gated_shards
from reconciler.errors import Cancelled, NeedsOperator, ReconcilerError, Stalled
from reconciler.flags import site_context
from reconciler.gitdoor.git import GitError
from reconciler.gitdoor.source import GitSource, cache_failure
from reconciler.manifests.fleet import FleetRepo
from reconciler.manifests.loader import DocumentCache, load_tree
from reconciler.retrying import exponential
from reconciler.runtime.registry import BatchPolicy
from reconciler.settings import SiteConfig
from reconciler.status.record import SiteInventory, StatusRecord
from reconciler.status.signed import StatusKeyring
from reconciler.trust.commitpolicy import verify_commits

log = logging.getLogger("reconciler.agent")

FINDINGS_IN_MESSAGE = 5
# A commit's fetch wave, spread by default so the fleet's fetches reach the server at about this
# many per second (at most over half the interval): a fetch of a new commit costs the server
# several times a no-op poll (bench/bench_fleet_sim.py)
FETCH_WAVE_RATE = 50.0
# A site condition (a 404 from a registry the model reaches after the merge, a token set after the
# start, a disk freed) is fixed outside Git, so it is looked at again without a new commit: after one
# interval, then twice as long each time, up to this (or the interval, when that is longer).
SITE_CONDITION_RECHECK_CAP = timedelta(minutes=10)


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


@dataclass
class Run:
    """What one reconcile has found so far: each step fills its part, summarise reads them all."""

    now: datetime
    head: str | None = None  # the branch's commit on the remote (observe)
    commit: str | None = None  # the commit fetched, which the rest of the run reads (observe)
    state: SiteState | None = None  # state.json as the run found it, then as apply left it
    fleet: FleetRepo | None = None  # the commit's manifests (load)
    # every site's newest record, or the gating deployments' summaries, once read (plan)
    fleet_status: dict[str, StatusRecord] | FleetReports | None = None
    gated: dict[str, int] = field(default_factory=dict)  # deployment -> this site's shard of its summaries
    plan: Plan | None = None
    outcomes: list[Outcome] = field(default_factory=list)  # what became of each action (apply)
    unchanged: bool = False  # observe found nothing new: no step more, no record
    error: ReconcilerError | None = None  # the failure that ended the run


class Agent:
    """One site's agent. It receives its collaborators, as python-tuf's ``Updater(fetcher=)``:
    agent/wiring.py builds the real ones from the site config, unit tests pass in-memory ones
    (devtools/fakes.py). ``caches`` are the git caches self-healing may clear."""

    def __init__(self, config: SiteConfig, *, source: FleetSource, status: StatusChannel, applier: Applier,
                 runtime: Runtime | None = None, clock: Callable[[], datetime] = utcnow,
                 caches: Sequence[GitSource] = (), telemetry: SiteTelemetry | None = None,
                 wake: threading.Event | None = None,
                 inventory: Callable[[datetime], SiteInventory | None] = lambda now: None,
                 rng: random.Random | None = None, pause: Callable[[float], bool] | None = None,
                 heads: HeadSource | None = None):
        self.config = config
        self.source = source
        self.heads = heads or source  # asked for the branch's head each interval (a head beacon, or git)
        self.status = status
        self.applier = applier
        self.state_dir = applier.state_dir
        self.runtime = runtime
        self.clock = clock
        self.caches = list(caches)
        self.telemetry = telemetry or SiteTelemetry(config.site)
        self.documents = DocumentCache()
        self.reconciled_head: str | None = None  # head whose reconcile needs no retry
        self.last_record: StatusRecord | None = None
        self.last_contact: datetime | None = None  # when the fleet repo last answered
        self.watching = False  # a rollout or canary is in flight: plan each tick, not only on new commits
        self.wake = wake or threading.Event()  # set by the push webhook (or a stop): reconcile now
        self.inventory = inventory  # what the site runs on, for its records (agent/inventory.py)
        self.rng = rng or random.Random()
        self.stopping = threading.Event()  # run()'s stop, once it runs: cuts a fetch spread's pause short
        self.pause = pause or (lambda seconds: self.stopping.wait(seconds))  # True: stopped while pausing
        self.known_head: str | None = None  # the newest head this agent has learned of
        self.fleet_size = 0  # sites in the last fleet loaded: the default fetch spread grows with it
        self.site_condition_runs = 0  # reconciles in a row that ended on a site condition
        self.recheck_at: datetime | None = None  # when a site condition is looked at again, same head or not
        self.batch = BatchScheduler(config.state, config.batch, ActiveModels(config.state, runtime),
                                    lambda: self.state_dir.load(config.site), on_run=self._batch_ran,
                                    drift=applier.drift)

    def start(self, now: datetime | None = None) -> None:
        """Lock the state directory and serve the last good state before the repo is read."""
        self.state_dir.lock()
        # Sites before partial clones kept the whole tree of the fleet repo there; nothing reads it now.
        shutil.rmtree(self.config.state / "cache" / "tree", ignore_errors=True)
        heal_at_start(self.config.state, self.caches, started=time.time())
        self.applier.restore(self.state_dir.load(self.config.site))
        self.last_contact = now or self.clock()  # staleness counts from the agent's start
        self.batch.start()

    def stop(self) -> None:
        self.batch.stop()
        self.state_dir.unlock()
        if self.heads is not self.source:
            self.heads.close()
        self.source.close()
        self.status.close()

    def reconcile_once(self, now: datetime | None = None) -> ReconcileResult:
        started = time.monotonic()
        result = self._reconcile(now or self.clock())
        self.telemetry.reconciled(time.monotonic() - started, self.clock(), result.record, result.plan, result.error)
        return result

    def _reconcile(self, now: datetime) -> ReconcileResult:
        run = Run(now)
        try:
            for step in (self._observe, self._verify_history, self._load, self._plan, self._apply):
                step(run)
                if run.unchanged:
                    break
        except ReconcilerError as error:
            run.error = error
        except GitError as error:  # a git command no door turned into a typed error
            run.error = cache_failure(error, self.source.cache_dir)
        return self._summarise(run)

    def run(self, stop: threading.Event) -> None:
        """Reconcile every interval (with jitter, so a fleet does not poll in step), or at once
        when woken (the push webhook); after a transient error back off exponentially, capped at
        the interval. Whoever sets ``stop`` sets ``wake`` too."""
        failures = 0
        interval = self.config.interval_seconds
        self.stopping = stop
        while not stop.is_set():
            self.wake.clear()
            result = self.reconcile_once()
            if isinstance(result.error, NeedsOperator):
                raise result.error  # its record says why; retrying cannot help, so the CLI exits 2
            failures = failures + 1 if result.retry_soon else 0
            delay = exponential(1.0, failures, cap=interval) if failures else interval
            self._wait(delay * (1 + self.config.jitter * (2 * random.random() - 1)))
        log.info("%s: stopped", self.config.site)

    def _wait(self, seconds: float) -> None:
        """Until the next reconcile (``seconds``) or a wake-up; meanwhile the status channel's
        batched audit commits are pushed when they fall due (the clock says when)."""
        left = seconds
        while not self.wake.is_set():
            due = self.status.flush_audit(self.clock())
            if left <= 0:
                return
            step = left if due is None else min(left, max((due - self.clock()).total_seconds(), 0.0))
            self.wake.wait(step)  # returns early only when woken, which ends the wait
            left -= step

    def _batch_ran(self) -> None:
        """A batch run's summary goes into the status record: reconcile again, new commit or not."""
        self.reconciled_head = None
        self.wake.set()

    # --- the steps, in order ---------------------------------------------------------------------

    def _observe(self, run: Run) -> None:
        """The remote's head, and unless nothing changed since the last settled reconcile (and no
        rollout or canary is in flight), its commit in the cache and the site's state."""
        run.head = self.heads.remote_head()
        self.last_contact = run.now
        if run.head == self.reconciled_head and not self.watching and not self.applier.drift_news() \
                and not self.applier.scoring.due(run.now) and not self._recheck_due(run.now):
            run.unchanged = True
            return
        if self._spread_fetch(run.head):
            run.unchanged = True  # stopped while waiting: nothing fetched, nothing to say
            return
        run.commit = self.source.fetch(run.head)
        run.state = self.state_dir.load(self.config.site)

    def _spread_fetch(self, head: str) -> bool:
        """A commit this agent learns of (by poll or notification) is fetched after a random
        share of the fetch spread, so the whole fleet does not fetch it at once. Not at start (the
        first head) nor for a head already known. True: stopped while waiting."""
        known, self.known_head = self.known_head, head
        if known is None or known == head:
            return False
        spread = fetch_spread(self.config, self.fleet_size)
        return spread > 0 and self.pause(self.rng.uniform(0, spread))

    def _verify_history(self, run: Run) -> None:
        """No rollback to a commit that does not descend from the applied one (unless an operator
        accepted it), and under a commit policy every new commit signed by an allowed signer; an
        operator-accepted commit restarts the chain at itself."""
        applied, commit = run.state.appliedCommit, run.commit
        accepted = commit == self.config.accept_history
        if applied is not None and applied != commit and not accepted and not self.source.is_ancestor(applied, commit):
            raise Stalled(reasons.HistoryRewritten,
                          f"new head {commit[:12]} does not descend from the last applied commit {applied[:12]}; "
                          f"an operator can accept it with --accept-history {commit}")
        if self.config.commit_policy is not None:
            verify_commits(self.source, self.config.commit_policy, None if accepted else applied, commit)

    def _load(self, run: Run) -> None:
        """The commit's manifests, every finding refused at once; the runtime then evaluates the
        same flags per request (routing, OFREP) as the plan does, and batches the requests of the
        deployments that ask for it."""
        loaded = load_tree(self.source.files(run.commit), self.documents)
        if loaded.errors:
            rendered = [f.render() for f in loaded.errors[:FINDINGS_IN_MESSAGE]]
            more = len(loaded.errors) - len(rendered)
            raise Stalled(reasons.InvalidManifests, "; ".join(rendered) + (f"; and {more} more" if more > 0 else ""))
        run.fleet = loaded.repo
        self.fleet_size = len(run.fleet.sites)
        site = run.fleet.sites.get(self.config.site)
        if self.runtime is not None and site is not None:
            self.runtime.set_flags(run.fleet.flags, site_context(site.metadata.name, site.metadata.labels))
            policies = {name: BatchPolicy.of(d.spec) for name, d in run.fleet.deployments.items()}
            self.runtime.set_batching({name: policy for name, policy in policies.items() if policy is not None})

    def _plan(self, run: Run) -> None:
        """Other sites' records matter only to waves: without a rollout here, no read of them."""
        run.fleet_status = {}
        run.gated = gated_shards(run.fleet, self.config.site, run.now)
        if run.gated:
            run.fleet_status = self.status.read_fleet(self.source, run.commit, StatusKeyring.of_fleet(run.fleet),
                                                      run.gated)
            if self.last_record is not None:  # this site's own, as it stands in memory
                run.fleet_status = run.fleet_status.with_record(self.last_record) \
                    if isinstance(run.fleet_status, FleetReports) else {**run.fleet_status, self.config.site: self.last_record}
        run.plan = plan_site(run.fleet, self.config.site, run.state, run.now, run.commit, run.fleet_status)

    def _apply(self, run: Run) -> None:
        """The plan's actions; once all succeeded, the commit is the site's applied commit."""
        run.state, run.outcomes = self.applier.apply(run.plan, run.state, self.source.tree(run.commit), run.now)
        if all(o.ok for o in run.outcomes) and run.state.appliedCommit != run.commit:
            run.state = run.state.model_copy(update={"appliedCommit": run.commit})
            self.state_dir.save(run.state)
        self.batch.update(run.fleet, run.state, run.now)

    # --- the one exit ----------------------------------------------------------------------------

    def _summarise(self, run: Run) -> ReconcileResult:
        """Every reconcile ends here (Flux's deferred SummarizeAndPatch): a run that found nothing
        new, or was stopped, says nothing; any other becomes one record, published once."""
        if run.unchanged:
            return ReconcileResult(run.head)
        if isinstance(run.error, Cancelled):
            log.info("%s: reconcile stopped, nothing more applied: %s", self.config.site, run.error.message)
            return ReconcileResult(run.head, error=run.error)
        record = self._error_record(run) if run.error else self._record(run)
        before = self.last_record
        try:
            self._publish(record, run)
        except (ReconcilerError, GitError) as push_error:
            if run.error is not None:
                log.warning("%s: status not written: %s", self.config.site, push_error)
            else:  # the status channel failed a reconcile that had gone well: it is this run's error
                run.error = push_error if isinstance(push_error, ReconcilerError) else \
                    cache_failure(push_error, self.source.cache_dir)
                record = self._error_record(run)
        if run.error is not None:
            return ReconcileResult(run.head, None, record, run.error)
        retry = any(o.error and o.error.retry for o in run.outcomes) or any(a.kind == "prefetch" for a in run.plan.actions)
        self.reconciled_head = None if retry else run.head
        self._schedule_recheck(run)
        self.watching = run.plan.watching
        self._log_plan(run.outcomes, record, before)
        return ReconcileResult(run.head, run.plan, record)

    def _schedule_recheck(self, run: Run) -> None:
        if not any(o.error and o.error.reason in SITE_CONDITIONS for o in run.outcomes):
            self.site_condition_runs, self.recheck_at = 0, None
            return
        self.site_condition_runs += 1
        interval = self.config.interval_seconds
        cap = max(interval, SITE_CONDITION_RECHECK_CAP.total_seconds())
        self.recheck_at = run.now + timedelta(seconds=exponential(interval, self.site_condition_runs, cap=cap))

    def _recheck_due(self, now: datetime) -> bool:
        return self.recheck_at is not None and now >= self.recheck_at

    def _record(self, run: Run) -> StatusRecord:
        deployments = with_drift(deployment_statuses(run.now, run.state, run.plan, run.outcomes, self.last_record,
                                                     self.batch.last_run,
                                                     self.runtime.execution_provider if self.runtime else lambda name: None),
                                 self.applier.drift_summaries(run.state))
        return site_record(self.config.site, run.now, run.commit, run.state, deployments,
                           stale=self._stale(run.now), last_contact=self.last_contact,
                           inventory=self.inventory(run.now))

    def _error_record(self, run: Run) -> StatusRecord:
        """The repo or the remote is unusable: keep serving, keep the per-deployment picture of the
        last record, and say why at the site level."""
        error = run.error
        log.warning("%s: %s", self.config.site, error, extra={"reason": error.reason})
        repaired = heal_after_failure(self.caches, error)
        if isinstance(error, Stalled) and not repaired:
            self.reconciled_head = run.head  # the same inputs give the same answer: wait for a new commit
        state = self.state_dir.load(self.config.site)
        deployments = dict(self.last_record.deployments) if self.last_record else {}
        observed = run.head or (self.last_record.observedCommit if self.last_record else None)
        return site_record(self.config.site, run.now, observed, state, deployments,
                           stale=self._stale(run.now), last_contact=self.last_contact, error=error,
                           inventory=self.inventory(run.now))

    def _stale(self, now: datetime) -> bool:
        return self.last_contact is not None and now - self.last_contact > self.config.stale_after

    def _publish(self, record: StatusRecord, run: Run) -> None:
        """Unless it says what the last one said, or the fleet names no such site; with wave statuses wherever the run got as far as
        the fleet and its records, on success and error paths alike."""
        if run.fleet is not None and self.config.site not in run.fleet.sites:
            # A typo in --site must not leave a status ref in everyone's fleet repo, for ever.
            log.warning("%s: no status written: the fleet repo names no such Site", self.config.site,
                        extra={"reason": reasons.SiteNotInFleet})
            return
        if self.last_record is None:
            self.last_record = self.status.read_own(self.config.site)
        if record.same_as(self.last_record):
            return
        waves = []
        if self.status.mirrors_waves and run.fleet is not None and isinstance(run.fleet_status, dict):
            waves = wave_statuses(record, run.fleet, run.fleet_status, run.now)
        self.status.publish(record, waves, run.gated)
        self.last_record = record

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
            split = " (traffic " + ", ".join(f"{v} {w}%" for v, w in outcome.weights.items()) + ")" if outcome.weights else ""
            log.log(level, "%s: %s %s %s -> %s: %s: %s%s", self.config.site, action.kind, action.deployment,
                    action.from_version or "nothing", target, reason, message, split,
                    extra={"deployment": action.deployment, "reason": reason})


def fetch_spread(config: SiteConfig, fleet_size: int) -> float:
    """Seconds over which a fleet of ``fleet_size`` sites spreads its fetches of a new commit:
    site.yaml's ``fetchSpread``, else fleet_size / FETCH_WAVE_RATE, at most half the interval."""
    if config.fetch_spread is not None:
        return config.fetch_spread.total_seconds()
    return min(fleet_size / FETCH_WAVE_RATE, config.interval_seconds / 2)

