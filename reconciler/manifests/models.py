"""The fleet-repo language as pydantic models. A model that exists is valid: loaders build these
once and everything downstream trusts them. The JSON Schemas in schemas/ are generated from here."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reconciler.manifests.types import (
    ClockTime,
    DnsLabel,
    Duration,
    FlagKey,
    LabelKey,
    LabelValue,
    Sha256Digest,
    VersionString,
)

API_VERSION = "reconciler/v1"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, validate_default=True)


class Metadata(Strict):
    name: DnsLabel
    labels: dict[LabelKey, LabelValue] = {}
    annotations: dict[str, str] = {}


# --- selectors (Kubernetes LabelSelector semantics) -------------------------------------------

class Requirement(Strict):
    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[LabelValue] = []

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Requirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class Selector(Strict):
    """Empty selector matches every site, as in Kubernetes."""

    matchLabels: dict[LabelKey, LabelValue] = {}
    matchExpressions: list[Requirement] = []


# --- Fleet --------------------------------------------------------------------------------------

class Wave(Strict):
    """A wave holds the sites whose bucket falls below its cumulative ``percent``, or the sites its
    ``selector`` matches; a site belongs to the first wave that holds it."""

    name: DnsLabel
    percent: Annotated[int, Field(ge=1, le=100)] | None = None
    selector: Selector | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> Wave:
        if (self.percent is None) == (self.selector is None):
            raise ValueError("a wave has exactly one of 'percent' or 'selector'")
        return self


class Gate(Strict):
    """When a wave may start, judged from the status records of the earlier waves' sites."""

    minHealthyRatio: Annotated[float, Field(ge=0, le=1)] = 1.0
    bakeTime: Duration = "0s"
    progressDeadline: Duration = "1h"
    # A silent site (offline, not yet installed) has proven nothing either way: by default it only
    # drops out of the count at its deadline. Strict fleets count it as failed with ``fail``.
    unreported: Literal["fail", "ignore"] = "ignore"


class Abort(Strict):
    """AWS IoT Jobs style: abort once at least ``minExecuted`` sites ran and the failed share
    reaches ``failureThreshold``. Without ``minExecuted``: once three sites ran, or every site
    that may run by now did (reconciler.gates)."""

    failureThreshold: Annotated[float, Field(gt=0, le=1)] = 0.2
    minExecuted: Annotated[int, Field(ge=1)] | None = None


class Rollout(Strict):
    waves: Annotated[list[Wave], Field(min_length=1)]
    gate: Gate = Gate()
    abort: Abort = Abort()
    # Part of the rollout's id: bumping it (`reconciler rollout retry`) retries an aborted rollout on purpose.
    attempt: Annotated[int, Field(ge=0)] = 0

    @field_validator("waves")
    @classmethod
    def _unique_names(cls, waves: list[Wave]) -> list[Wave]:
        names = [w.name for w in waves]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"wave names must be unique: {', '.join(duplicates)}")
        return waves


class FleetSpec(Strict):
    pollInterval: Duration = "30s"
    staleAfter: Duration = "10m"
    defaultRollout: Rollout | None = None


class Fleet(Strict):
    apiVersion: Literal["reconciler/v1"]
    kind: Literal["Fleet"]
    metadata: Metadata
    spec: FleetSpec = FleetSpec()


# --- Site ---------------------------------------------------------------------------------------

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class MaintenanceWindow(Strict):
    """Activation may happen from ``start`` to ``end`` local time on ``days``; an ``end`` before
    ``start`` crosses midnight (the window belongs to the day it starts)."""

    days: Annotated[list[Weekday], Field(min_length=1)] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    start: ClockTime
    end: ClockTime
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{name!r} is not an IANA time zone") from None
        return name


class SiteSpec(Strict):
    description: str | None = None
    maintenanceWindows: list[MaintenanceWindow] = []


class Site(Strict):
    apiVersion: Literal["reconciler/v1"]
    kind: Literal["Site"]
    metadata: Metadata
    spec: SiteSpec = SiteSpec()


# --- Model --------------------------------------------------------------------------------------

TensorType = Literal["float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"]


class TensorSpec(Strict):
    name: Annotated[str, Field(min_length=1)]
    dtype: TensorType
    shape: list[Annotated[int, Field(ge=-1)]]  # -1 marks a dynamic dimension


class ModelInterface(Strict):
    inputs: Annotated[list[TensorSpec], Field(min_length=1)]
    outputs: Annotated[list[TensorSpec], Field(min_length=1)]


SignatureFormat = Literal["cosign", "sigstore-bundle", "model-signing"]


class SignatureRef(Strict):
    uri: Annotated[str, Field(min_length=1)]
    format: SignatureFormat | None = None  # None: detected from the content


class Platform(Strict):
    """Matched against the site's labels of the same names; an absent field matches any site."""

    arch: LabelValue | None = None
    accelerator: LabelValue | None = None
    precision: LabelValue | None = None


class Artifact(Strict):
    uri: Annotated[str, Field(min_length=1)]
    digest: Sha256Digest
    size: Annotated[int, Field(gt=0)]
    signature: SignatureRef
    platform: Platform | None = None


TensorValue = Any  # nested lists of numbers or booleans, shaped as the interface says


class ValidationCase(Strict):
    name: Annotated[str, Field(min_length=1)]
    inputs: dict[str, TensorValue]
    expected: dict[str, TensorValue]
    tolerance: Annotated[float, Field(ge=0)] = 1e-5  # absolute, per element


class Signers(Strict):
    """Who may sign this version: narrows the site's own trust roots, never widens them."""

    keys: list[str] | None = None  # names or ids of keys the site trusts
    identities: list[str] | None = None  # keyless certificate identities the site trusts


class ModelVersion(Strict):
    version: VersionString
    artifacts: Annotated[list[Artifact], Field(min_length=1)]
    validation: list[ValidationCase] = []
    signers: Signers | None = None


class ModelSpec(Strict):
    description: str | None = None
    interface: ModelInterface
    versions: Annotated[list[ModelVersion], Field(min_length=1)]

    def version(self, name: str) -> ModelVersion | None:
        return next((v for v in self.versions if v.version == name), None)


class Model(Strict):
    apiVersion: Literal["reconciler/v1"]
    kind: Literal["Model"]
    metadata: Metadata
    spec: ModelSpec


# --- Deployment ---------------------------------------------------------------------------------

class FlagRef(Strict):
    """The value comes from a flagd flag evaluated with the site as context."""

    flag: FlagKey


class Pause(Strict):
    duration: Duration


class Analysis(Strict):
    """Judged over ``window`` of live traffic on the canary version."""

    window: Duration = "1m"
    minRequests: Annotated[int, Field(ge=0)] = 0
    maxErrorRate: Annotated[float, Field(ge=0, le=1)] | None = None
    maxLatencyP99: Duration | None = None
    minAgreement: Annotated[float, Field(ge=0, le=1)] | None = None  # vs stable, on mirrored requests
    # Too little traffic proves nothing either way: the analysis waits for it, at most ``maxWait``
    # from the start of its measurement when set, then ``onMaxWait`` decides.
    maxWait: Duration | None = None
    onMaxWait: Literal["promote", "fail"] = "fail"


class CanaryStep(Strict):
    setWeight: Annotated[int, Field(ge=0, le=100)] | None = None
    pause: Pause | None = None
    analysis: Analysis | None = None

    @model_validator(mode="after")
    def _one_action(self) -> CanaryStep:
        given = [k for k in ("setWeight", "pause", "analysis") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a canary step has exactly one of setWeight, pause, analysis")
        return self


class Canary(Strict):
    steps: list[CanaryStep] = []


class DeploymentSpec(Strict):
    model: DnsLabel
    version: VersionString | FlagRef
    enabled: bool | FlagRef = True
    targets: Selector = Selector()
    rollout: Rollout | None = None  # None: the Fleet's defaultRollout, else all sites at once
    canary: Canary | None = None  # None or no steps: validate, then switch at once
    # Going back to the version a site served before its current one is a rollback: no canary, no
    # wave gate, from the kept blob. None: whenever that was; a duration: only that long after the switch.
    rollbackWindow: Duration | None = None


class Deployment(Strict):
    apiVersion: Literal["reconciler/v1"]
    kind: Literal["Deployment"]
    metadata: Metadata
    spec: DeploymentSpec


KINDS: dict[str, type[Strict]] = {"Fleet": Fleet, "Site": Site, "Model": Model, "Deployment": Deployment}
