"""The site side of batch deployments: which deployments run when (the fleet's batch sections of
the deployments this site has installed), the model each run scores with (the version the site has
active, validated when it was deployed), and the thread that starts runs when they are due.

The agent tells the scheduler what it applied (``update``) after each reconcile; the scheduler
keeps each job's spec in its state folder, so ``reconciler batch run`` finds it without the repo."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from reconciler import reasons
from reconciler.atomicfile import atomic_write_bytes
from reconciler.batch.jobs import BatchDirectories, batch_folder, job_for
from reconciler.batch.ledger import RunInProgress, load_summary, save_summary
from reconciler.batch.runner import DriftCount, Trigger, run_batch
from reconciler.delivery.model import SiteState
from reconciler.delivery.schedule import due_run, next_run
from reconciler.errors import Stalled
from reconciler.ingest.artifacts import ArtifactStore
from reconciler.manifests.batch import BatchSpec
from reconciler.manifests.fleet import FleetRepo
from reconciler.runtime.registry import ModelRegistry, NotServed, Served
from reconciler.status.record import BatchRunSummary

log = logging.getLogger(__name__)

IDLE_WAKE_SECONDS = 60.0  # nothing due sooner: look again (a new spec wakes the thread at once)


class ActiveModels:
    """The session a run scores with: the serving registry's, when this process serves the
    deployment's active version; else one built from the state directory's blob of it."""

    def __init__(self, state_root: Path, serving: object = None):
        self.store, self.own = ArtifactStore(state_root), ModelRegistry()
        self.serving = serving if isinstance(serving, ModelRegistry) else None  # not a test's fake runtime

    def active(self, deployment: str, state: SiteState) -> Served:
        installed = state.deployments.get(deployment)
        if installed is None or installed.active is None:
            raise Stalled(reasons.BatchNotInstalled, f"{deployment} has no active version on this site yet: a version "
                                               "is validated and activated before its first batch run")
        digest = installed.active.digest
        if self.serving is not None:
            try:
                served = self.serving.get(deployment)
                if served.digest == digest:
                    return served
            except NotServed:
                pass
        self.own.activate(deployment, installed.model, installed.active.version, self.store.model_path(digest),
                          installed.interface, digest=digest)
        return self.own.get(deployment)


@dataclass
class _Scheduled:
    spec: BatchSpec
    last: datetime  # the newest run started (or the time the spec was first seen): runs after it are due


class BatchScheduler:
    def __init__(self, state_root: Path, directories: BatchDirectories, models: ActiveModels,
                 load_state: Callable[[], SiteState], on_run: Callable[[], None] = lambda: None,
                 drift: DriftCount | None = None):
        """``drift``: the agent's drift counting, which every run's rows go into (None: not counted)."""
        self.state_root, self.directories, self.models = state_root, directories, models
        self.load_state, self.on_run, self.drift = load_state, on_run, drift
        self.jobs: dict[str, _Scheduled] = {}
        self.wake, self.stopping = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    # --- what the agent applied ---------------------------------------------------------------------

    def update(self, fleet: FleetRepo, state: SiteState, now: datetime) -> None:
        """The batch deployments among those installed here, as the fleet now defines them."""
        specs = {name: d.spec.batch for name, d in fleet.deployments.items()
                 if d.spec.batch is not None and name in state.deployments}
        for name, spec in specs.items():
            current = self.jobs.get(name)
            if current is None or current.spec != spec:
                save_spec(self.state_root, name, spec)
                summary = load_summary(batch_folder(self.state_root, name))
                last = summary.started if summary else now  # downtime's missed runs: one catch-up
                self.jobs[name] = _Scheduled(spec, current.last if current else last)
        for gone in set(self.jobs) - set(specs):
            del self.jobs[gone]
        self.wake.set()

    def last_run(self, deployment: str) -> BatchRunSummary | None:
        return load_summary(batch_folder(self.state_root, deployment)) if deployment in self.jobs else None

    # --- running ----------------------------------------------------------------------------------------

    def run_now(self, deployment: str, trigger: Trigger, scheduled_for: datetime | None = None,
                spec: BatchSpec | None = None) -> BatchRunSummary | None:
        """One run (by default of the spec the agent saved last); None when another run holds the
        lock (Forbid: this one is skipped)."""
        job = job_for(self.state_root, self.directories, deployment, spec or load_spec(self.state_root, deployment))
        served = self.models.active(deployment, self.load_state())
        try:
            summary = run_batch(job, served, trigger, scheduled_for, self.stopping, self.drift)
        except RunInProgress as busy:
            log.info("%s: batch run skipped: %s", deployment, busy, extra={"deployment": deployment})
            return None
        save_summary(job.folder, summary)
        log.info("%s: batch run %s: %d file(s), %d record(s), %d record error(s), %d file(s) failed, %.1fs",
                 deployment, summary.state, summary.files, summary.records, summary.recordErrors,
                 summary.filesFailed + summary.filesMovedAside, summary.durationSeconds,
                 extra={"deployment": deployment, "reason": summary.reason})
        self.on_run()
        return summary

    def run_due(self, now: datetime) -> datetime:
        """Starts every run due at ``now``; when the next one falls due."""
        for name, job in list(self.jobs.items()):
            slot = due_run(job.spec.schedule, job.spec.time_zone, job.last, now)
            if slot is None:
                continue
            job.last = now  # runs missed while this one was due are caught up by it, not replayed
            try:
                self.run_now(name, "schedule", slot, job.spec)
            except Stalled as error:
                log.warning("%s: batch run not started: %s", name, error, extra={"deployment": name})
        upcoming = [next_run(j.spec.schedule, j.spec.time_zone, j.last) for j in self.jobs.values()]
        return min(upcoming, default=now)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="batch-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.wake.clear()
            now = datetime.now(UTC)
            try:
                upcoming = self.run_due(now)
            except Exception:  # noqa: BLE001 -- a bug in one run must not end the schedule of every run
                log.exception("batch scheduler: unexpected error")
                upcoming = now
            wait = (upcoming - datetime.now(UTC)).total_seconds() if upcoming > now else IDLE_WAKE_SECONDS
            self.wake.wait(min(max(wait, 0.05), IDLE_WAKE_SECONDS))


def save_spec(state_root: Path, deployment: str, spec: BatchSpec) -> None:
    atomic_write_bytes(batch_folder(state_root, deployment) / "spec.json", spec.model_dump_json(indent=2).encode())


def load_spec(state_root: Path, deployment: str) -> BatchSpec:
    path = batch_folder(state_root, deployment) / "spec.json"
    try:
        return BatchSpec.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        raise Stalled(reasons.BatchNotScheduled, f"{deployment} is no batch deployment of this site (no {path}: the "
                                           "agent writes it once it applied the deployment)") from None
