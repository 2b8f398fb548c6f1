"""What a site has installed and active, per deployment: the state the plan starts from and the
agent keeps in its state directory (reconciler.agent.statedir reads and writes it)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from reconciler.delivery.canary import CanaryProgress
from reconciler.manifests.models import ModelInterface
from reconciler.monitoring.evaluation import EvaluationSummary


class Installed(BaseModel):
    """One verified, validated version of a deployment on this site."""

    model_config = ConfigDict(frozen=True)

    version: str
    digest: str
    uri: str
    installedAt: datetime
    checks: str | None = None  # same_version.checks_digest of the interface and cases it was validated against
    profile: str | None = None  # digest of its verified reference profile blob, if the version names one


class HistoryEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: datetime
    event: str  # activated, removed, rolledBack, failed
    version: str | None = None
    commit: str | None = None
    reason: str | None = None


class DeploymentState(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    interface: ModelInterface  # kept so a restart serves the active version before the repo is read
    active: Installed | None = None
    previous: Installed | None = None
    canary: Installed | None = None  # validated, taking canaryProgress.weight % of traffic
    canaryProgress: CanaryProgress | None = None
    rollout: str | None = None  # the rollout the active (or canary) version belongs to
    wave: str | None = None
    served: bool = True  # false: batch-only (`serve: false`) when last activated; a restart does not serve it
    evaluation: EvaluationSummary | None = None  # the last scores on this site's labeled data (federated evaluation)
    history: list[HistoryEntry] = []


class SiteState(BaseModel):
    model_config = ConfigDict(frozen=True)

    site: str
    appliedCommit: str | None = None  # last commit whose plan was fully applied
    deployments: dict[str, DeploymentState] = {}
