"""The status record a site publishes: one JSON document per change, a commit on
``refs/reconciler/status/<site>``. Its schema is in schemas/status-record.schema.json."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from reconciler import reasons
from reconciler.delivery.evidence import FailureKind
from reconciler.monitoring.evaluation import EvaluationSummary
from reconciler.monitoring.windows import DriftSummary

State = Literal["pending", "progressing", "success", "failure", "aborted", "error"]

# A site is as bad as its worst deployment.
WORST_FIRST: tuple[State, ...] = ("error", "failure", "aborted", "progressing", "pending", "success")


class BatchRunSummary(BaseModel):
    """The newest run of a batch deployment (reconciler.batch): the record carries counts, never data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: Literal["Succeeded", "PartiallySucceeded", "Failed"]  # partially: some records or files failed
    trigger: Literal["schedule", "manual"]
    scheduledFor: datetime | None = None  # the schedule's time this run is for (None: by hand)
    started: datetime
    durationSeconds: float
    version: str | None = None  # the model version that scored
    modelDigest: str | None = None
    files: int = 0  # scored in this run
    filesAlreadyDone: int = 0  # done before with these model bytes: not scored again
    filesFailed: int = 0  # failed as a whole this run (retried next run)
    filesMovedAside: int = 0  # failed as a whole too often: moved out of the input directory
    records: int = 0  # scored
    recordErrors: int = 0  # refused one by one, in the output's .errors.jsonl
    reason: str = reasons.BatchRunFinished
    message: str = ""


class DeploymentStatus(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    state: State
    version: str | None = None  # what the fleet repo asks this site to run
    activeVersion: str | None = None  # what the site serves now
    previousVersion: str | None = None
    wave: str | None = None
    rollout: str | None = None  # the rollout this state belongs to: reconciler.delivery.gates.rollout_id of the spec
    reason: str
    message: str = ""
    # On failure or error: is the reason evidence against the version, or a condition of this site?
    # Only version evidence counts toward a rollout's abort (reconciler.delivery.evidence).
    failureKind: FailureKind | None = None
    weights: dict[str, int] = {}
    lastBatchRun: BatchRunSummary | None = None  # batch deployments only
    # The active version's last closed drift window, where its version names a reference profile
    # (reconciler.monitoring.windows): informs people and the `maxDriftedSites` gate, never a rollback.
    drift: DriftSummary | None = None
    # Scores on the site's own labeled data (federated evaluation): the version, beside the one it
    # replaced, on the same data; counts rounded down to a multiple of 10. Read by evaluation gates.
    evaluation: EvaluationSummary | None = None
    executionProvider: str | None = None  # the onnxruntime provider serving activeVersion (site.yaml executionProviders)
    since: datetime  # when this deployment entered ``state`` for ``version``

    @property
    def version_shown(self) -> str:
        """What the site serves and, while it differs, what it is asked for: ``1.0.0->1.1.0``, or
        ``->1.0.0`` on a site that serves nothing yet; ``-``: nothing served, nothing asked."""
        if self.version and self.version != self.activeVersion:
            return f"{self.activeVersion or ''}->{self.version}"
        return self.activeVersion or "-"


class SiteInventory(BaseModel):
    """What the site runs on (agent/inventory.py): collected at the agent's start and refreshed
    rarely, so it costs a record only when it changes. The agent's version is the record's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    os: str  # os-release's PRETTY_NAME, or the system's name
    kernel: str
    arch: str
    cpus: int
    cpuModel: str | None = None
    memoryMiB: int | None = None
    diskFreeMiB: int | None = None  # on the file system of the state directory
    onnxruntime: str  # its version
    executionProviders: list[str] = []  # those this onnxruntime has, whether the site asks for them or not
    accelerators: list[str] = []  # accelerator device nodes found (/dev/nvidia0, /dev/dri/renderD128, ...)
    local: dict[str, str] = {}  # key=value facts from the site's inventoryDir executables
    localErrors: list[str] = []  # what was refused there: a bad line, a script that failed or ran too long
    collectedAt: datetime

    def summary(self) -> str:
        """One line for a person: the fleet view's tooltip."""
        memory = f", {self.memoryMiB} MiB" if self.memoryMiB is not None else ""
        return (f"{self.os}, {self.arch}, {self.cpus} CPUs{memory}, onnxruntime {self.onnxruntime} "
                f"({', '.join(self.executionProviders)})")


class StatusRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    apiVersion: Literal["reconciler/v1"] = "reconciler/v1"
    kind: Literal["SiteStatus"] = "SiteStatus"
    site: str
    observedCommit: str | None = None  # newest fleet commit the site read
    appliedCommit: str | None = None  # newest fleet commit fully applied
    state: State  # the site as a whole: its worst deployment, or error when the repo was unusable
    reason: str
    message: str = ""
    stale: bool = False  # the fleet repo has been out of reach for longer than the site's staleAfter
    deployments: dict[str, DeploymentStatus] = {}
    agentVersion: str
    writtenAt: datetime
    inventory: SiteInventory | None = None

    def same_as(self, other: StatusRecord | None) -> bool:
        """Equal but for the write time: nothing worth a new record."""
        if other is None:
            return False
        return self.model_dump(exclude={"writtenAt"}) == other.model_dump(exclude={"writtenAt"})
