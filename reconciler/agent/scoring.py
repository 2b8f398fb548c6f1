"""When a site scores its versions on its own labeled data (federated evaluation): before a new
version is activated (beside the version it replaces, apply.py's deploy), and then every
``evaluationInterval`` (site.yaml) for each served version, beside the previous one kept for a
rollback. The scores go into state.json, and from there into the status record (summary.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from reconciler.delivery.model import DeploymentState, Installed, SiteState
from reconciler.delivery.plan import Plan, Target
from reconciler.monitoring.evaluation import EvaluationSummary

__all__ = ["Scorer", "Scoring"]


class Scorer(Protocol):
    """agent.vetting.ArtifactVetting.evaluate: None where nothing is to be scored."""

    def evaluate(self, target: Target, model_path: Path, replaced: tuple[str, Path] | None,
                 now: datetime) -> EvaluationSummary | None: ...


class Scoring:
    def __init__(self, scorer: Scorer, blob_path: Callable[[str], Path], interval: timedelta | None):
        self.scorer = scorer
        self.blob_path = blob_path  # digest -> the kept model (ArtifactStore.model_path)
        self.interval = interval
        self._next: datetime | None = None  # the earliest time a served version is due again

    def before_activation(self, target: Target, model_path: Path, current: DeploymentState | None,
                          now: datetime) -> EvaluationSummary | None:
        """The new version beside the one it replaces (none on a new site, or the same version again)."""
        active = current.active if current is not None else None
        replaced = active if active is not None and active.version != target.version else None
        return self.scorer.evaluate(target, model_path, self._named(replaced), now)

    def rescore(self, plan: Plan, state: SiteState, now: datetime) -> SiteState:
        """Each converged deployment whose scores are older than the interval (or of another
        version) scored again; the state returned is not saved yet."""
        interval = self.interval
        if interval is None:
            return state
        deployments = dict(state.deployments)
        for target in plan.converged:
            current = deployments.get(target.deployment)
            if current is None or current.active is None or not self._due(current, now, interval):
                continue
            summary = self.scorer.evaluate(target, self.blob_path(current.active.digest), self._named(current.previous), now)
            deployments[target.deployment] = current.model_copy(update={"evaluation": summary})
        rescored = state.model_copy(update={"deployments": deployments})
        due = [d.evaluation.evaluatedAt + interval for d in deployments.values() if d.evaluation is not None]
        self._next = min(due, default=None)
        return rescored

    def due(self, now: datetime) -> bool:
        """A served version's scores are due again: worth a reconcile though nothing else changed."""
        return self._next is not None and now >= self._next

    def _due(self, current: DeploymentState, now: datetime, interval: timedelta) -> bool:
        summary = current.evaluation
        return summary is None or summary.version != current.active.version or now >= summary.evaluatedAt + interval

    def _named(self, installed: Installed | None) -> tuple[str, Path] | None:
        return (installed.version, self.blob_path(installed.digest)) if installed is not None else None
