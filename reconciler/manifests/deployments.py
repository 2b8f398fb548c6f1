"""The Deployment document: which version of a Model runs where, its rollout's place, its
canary steps and its serving options (dynamic batching). The other documents are models.py's."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from reconciler.manifests.batch import BatchSpec
from reconciler.manifests.models import (
    API_VERSION_HELP,
    METADATA_HELP,
    Metadata,
    Rollout,
    Selector,
    Strict,
)
from reconciler.manifests.types import (
    DnsLabel,
    Duration,
    FlagKey,
    VersionString,
)


class FlagRef(Strict):
    """The value comes from a flagd flag evaluated with the site as context."""

    flag: FlagKey = Field(description="The flag's key in a *.flagd.json file of the repo.")


class Pause(Strict):
    duration: Duration = Field(description="How long the canary holds its weight, e.g. '5m'.")


class Analysis(Strict):
    """Judged over ``window`` of live traffic on the canary version."""

    window: Duration = Field("1m", description="How much live traffic the analysis judges.")
    minRequests: Annotated[int, Field(ge=0)] = Field(0, description="Fewer canary requests in the window: "
                                                                    "the analysis waits.")
    maxErrorRate: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None, description="Largest share (0-1) of canary requests that may fail.")
    maxLatencyP99: Duration | None = Field(None, description="Largest 99th-percentile latency of the canary, "
                                                             "e.g. '50ms'.")
    minAgreement: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None, description="Smallest share (0-1) of mirrored requests on which canary and stable agree.")
    maxPredictionDrift: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="Largest distance between the canary's and stable's predictions in the window, "
                          "per output of the canary version's reference profile (Jensen-Shannon, base 2; "
                          "L-infinity for categorical outputs); judged once each version has the profile's "
                          "minRows rows. Needs a profile on the canary version.")
    # Too little traffic proves nothing either way: the analysis waits for it, at most ``maxWait``
    # from the start of its measurement when set, then ``onMaxWait`` decides.
    maxWait: Duration | None = Field(None, description="How long to wait for `minRequests` of traffic; "
                                                       "unset: as long as it takes.")
    onMaxWait: Literal["promote", "fail"] = Field("fail", description="What happens when `maxWait` passes "
                                                                     "without enough traffic.")


class CanaryStep(Strict):
    setWeight: Annotated[int, Field(ge=0, le=100)] | None = Field(
        None, description="Send this percentage (0-100) of the site's traffic to the canary.")
    pause: Pause | None = Field(None, description="Hold the current weight for a while.")
    analysis: Analysis | None = Field(None, description="Judge the canary's live traffic; failure drops it.")

    @model_validator(mode="after")
    def _one_action(self) -> CanaryStep:
        given = [k for k in ("setWeight", "pause", "analysis") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a canary step has exactly one of setWeight, pause, analysis")
        return self


class Canary(Strict):
    steps: list[CanaryStep] = Field([], description="Steps inside each site, in order (one of setWeight, "
                                                    "pause, analysis each); success promotes the canary.")


MAX_BATCH_SIZE = 4096
MAX_QUEUE_DELAY_MS = 1000


class DeploymentSpec(Strict):
    model: DnsLabel = Field(description="The Model's metadata.name.")
    version: VersionString | FlagRef = Field(description="The version to run, or {flag: KEY} to take it "
                                                         "from a flag evaluated per site.")
    enabled: bool | FlagRef = Field(True, description="false (or a flag that says false) removes the "
                                                      "deployment from the targeted sites.")
    targets: Selector = Field(Selector(), description="The sites that run it, by label; empty: every site.")
    rollout: Rollout | None = Field(None, description="Waves across sites; absent: the Fleet's "
                                                      "defaultRollout, else all sites at once.")
    canary: Canary | None = Field(None, description="Steps inside each site; absent or no steps: "
                                                    "validate, then switch at once.")
    # Going back to the version a site served before its current one is a rollback: no canary, no
    # wave gate, from the kept blob. None: whenever that was; a duration: only that long after the switch.
    rollbackWindow: Duration | None = Field(
        None, description="Going back to the version a site served before its current one is a rollback "
                          "(no canary, no wave gate, from the kept blob); a duration limits it to that long "
                          "after the switch; unset: always.")
    batch: BatchSpec | None = Field(
        None, description="Also run the model as a scheduled job over a site's input files (beside serving "
                          "it, or instead of it with `serve: false`); absent: serving only.")
    serve: bool = Field(True, description="false: the model only runs as the `batch` job; the site fetches, "
                                          "validates and activates it as any other but does not serve it "
                                          "(OIP answers 404, readiness does not wait for it).")
    # Dynamic batching (Triton's max_batch_size / max_queue_delay): throughput for models whose
    # first dimension is the batch; the runtime runs each request alone for models without one.
    max_batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE, strict=True)] | None = Field(
        None, alias="maxBatchSize",
        description="Merge concurrent requests into one model run of at most this many rows (first "
                    "dimension); unset: each request runs alone. Only models whose inputs and outputs all "
                    "have a dynamic first dimension are batched.")
    max_queue_delay: Duration | None = Field(
        None, alias="maxQueueDelay",
        description="How long the first queued request may wait for others to fill the batch, e.g. '2ms' "
                    f"(at most {MAX_QUEUE_DELAY_MS}ms); unset: 0s, only requests already waiting are merged. "
                    "Needs `maxBatchSize`.")

    @field_validator("serve")
    @classmethod
    def _batch_only_runs_a_batch(cls, serve: bool, info: ValidationInfo) -> bool:
        # batch and canary come before serve, so a refusal is reported at serve's line.
        if not serve and info.data.get("batch") is None:
            raise ValueError("serve: false needs a batch section: the deployment would run nowhere")
        canary = info.data.get("canary")
        if not serve and canary is not None and canary.steps:
            raise ValueError("serve: false takes no canary: a canary splits live traffic, which a batch-only "
                             "deployment has none of")
        return serve

    @model_validator(mode="after")
    def _delay_needs_batching(self) -> DeploymentSpec:
        if self.max_queue_delay is not None and self.max_batch_size is None:
            raise ValueError("maxQueueDelay needs maxBatchSize: without it requests are not batched")
        if self.max_queue_delay is not None and self.max_queue_delay > timedelta(milliseconds=MAX_QUEUE_DELAY_MS):
            raise ValueError(f"maxQueueDelay is at most {MAX_QUEUE_DELAY_MS}ms: every batched request may wait "
                             "that long")
        return self


class Deployment(Strict):
    """Which version of a Model runs on which sites, and how it rolls out."""

    apiVersion: Literal["reconciler/v1"] = Field(description=API_VERSION_HELP)
    kind: Literal["Deployment"] = Field(description="The document's kind.")
    metadata: Metadata = Field(description=METADATA_HELP)
    spec: DeploymentSpec = Field(description="Model, version, target sites, rollout and canary.")

