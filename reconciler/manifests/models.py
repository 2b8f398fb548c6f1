"""The fleet-repo language as pydantic models. A model that exists is valid: loaders build these
once and everything downstream trusts them. The JSON Schemas in schemas/ are generated from here."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reconciler.manifests.evaluation import EvaluationGate, ModelEvaluation
from reconciler.manifests.site_keys import StatusKeys
from reconciler.manifests.types import (
    POLL_INTERVAL,
    STALE_AFTER,
    ClockTime,
    Digest,
    DnsLabel,
    Duration,
    LabelKey,
    LabelValue,
    VersionString,
    iana_zone,
    require_unique,
)

API_VERSION = "reconciler/v1"
MAIN_FILE = "model.onnx"  # the ONNX file's name in a site's directory of a model with files
API_VERSION_HELP = "The language version of the document: reconciler/v1."
METADATA_HELP = "The document's name (unique per kind), labels and annotations."


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, validate_default=True)


class Metadata(Strict):
    name: DnsLabel = Field(description="Unique name among documents of this kind: lower-case letters, digits "
                                       "and '-', at most 63 characters (a DNS label).")
    labels: dict[LabelKey, LabelValue] = Field({}, description="Key/value labels that selectors match "
                                                               "(Kubernetes label syntax).")
    annotations: dict[str, str] = Field({}, description="Free-form notes for people and tools (owner, "
                                                        "ticket, ...); reconciler ignores them.")


# --- selectors (Kubernetes LabelSelector semantics) -------------------------------------------

class Requirement(Strict):
    key: LabelKey = Field(description="The site label this requirement reads.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In / NotIn: the label's value is / is not one of `values`; Exists / DoesNotExist: "
                    "the site has / lacks the label.")
    values: list[LabelValue] = Field([], description="The values In and NotIn compare with (at least one); "
                                                     "empty for Exists and DoesNotExist.")

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Requirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class Selector(Strict):
    """Empty selector matches every site, as in Kubernetes."""

    matchLabels: dict[LabelKey, LabelValue] = Field({}, description="Labels a site must carry with exactly "
                                                                    "these values.")
    matchExpressions: list[Requirement] = Field([], description="Further requirements on the site's labels; "
                                                                "all must hold.")


# --- Fleet --------------------------------------------------------------------------------------

class Wave(Strict):
    """A wave holds the sites whose bucket falls below its cumulative ``percent``, or the sites its
    ``selector`` matches; a site belongs to the first wave that holds it."""

    name: DnsLabel = Field(description="The wave's name, unique within the rollout; status records and "
                                       "the plan name waves by it.")
    percent: Annotated[int, Field(ge=1, le=100)] | None = Field(
        None, description="Cumulative share of the targeted sites (1-100) in this and the earlier waves; "
                          "a site's bucket comes from a hash of deployment and site names.")
    selector: Selector | None = Field(None, description="The sites in this wave, by label (instead of "
                                                         "`percent`).")

    @model_validator(mode="after")
    def _one_rule(self) -> Wave:
        if (self.percent is None) == (self.selector is None):
            raise ValueError("a wave has exactly one of 'percent' or 'selector'")
        return self


class Gate(Strict):
    """When a wave may start, judged from the status records of the earlier waves' sites."""

    minHealthyRatio: Annotated[float, Field(ge=0, le=1)] = Field(
        1.0, description="Share (0-1) of the earlier waves' sites that must report the new version "
                         "healthy before the next wave starts.")
    bakeTime: Duration = Field("0s", description="How long the earlier waves must have held the new version "
                                                  "healthy before the next wave starts, e.g. '30m'.")
    progressDeadline: Duration = Field("1h", description="A site that has not reported the new version this "
                                                          "long after its wave started counts as failed "
                                                          "(or is ignored, see `unreported`).")
    # A silent site (offline, not yet installed) has proven nothing either way: by default it only
    # drops out of the count at its deadline. Strict fleets count it as failed with ``fail``.
    unreported: Literal["fail", "ignore"] = Field(
        "ignore", description="What a site that never reports counts as after the progress deadline: "
                              "'ignore' (left out of the count) or 'fail' (for strict fleets: it has not "
                              "proven the version).")
    maxDriftedSites: Annotated[int, Field(ge=0)] | None = Field(
        None, description="The next wave waits while more of the earlier waves' sites than this report "
                          "DriftDetected on the new version (its reference profile); unset: drift does not "
                          "hold a rollout. Drift never rolls a version back.")
    evaluation: EvaluationGate | None = Field(
        None, description="The next wave waits for the earlier waves' sites' scores of the new version on their "
                          "local labeled data, and stops at this gate while the fleet metric misses its bound.")


class Abort(Strict):
    """AWS IoT Jobs style: abort once at least ``minExecuted`` sites ran and the failed share
    reaches ``failureThreshold``. Without ``minExecuted``: once three sites ran, or every site
    that may run by now did (reconciler.delivery.gates)."""

    failureThreshold: Annotated[float, Field(gt=0, le=1)] = Field(
        0.2, description="Share (0-1] of the sites that ran the version which, once failed, aborts the "
                         "rollout: every site that moved rolls back.")
    minExecuted: Annotated[int, Field(ge=1)] | None = Field(
        None, description="How many sites must have run the version before the failure share is judged; "
                          "unset: three, or every site that may run by now if fewer.")


class Rollout(Strict):
    waves: Annotated[list[Wave], Field(min_length=1)] = Field(
        description="The waves in order; a site belongs to the first wave that holds it.")
    gate: Gate = Field(Gate(), description="When a wave may start.")
    abort: Abort = Field(Abort(), description="When the whole rollout stops and rolls back.")
    # Part of the rollout's id: bumping it (`reconciler rollout retry`) retries an aborted rollout on purpose.
    attempt: Annotated[int, Field(ge=0)] = Field(
        0, description="Bumped by `reconciler rollout retry` to retry an aborted rollout on purpose "
                       "(part of the rollout's id).")

    @field_validator("waves")
    @classmethod
    def _unique_names(cls, waves: list[Wave]) -> list[Wave]:
        names = [w.name for w in waves]
        require_unique(names, "wave names")
        return waves


class FleetSpec(Strict):
    pollInterval: Duration = Field(POLL_INTERVAL, description="How often sites look for a new commit, e.g. '30s' "
                                                       "(a site's own site.yaml may override it).")
    staleAfter: Duration = Field(STALE_AFTER, description="A site silent for longer is reported stale by "
                                                     "`reconciler status`.")
    defaultRollout: Rollout | None = Field(None, description="The rollout of every Deployment that has none "
                                                             "of its own; without it, all sites move at once.")
    requireSignedStatus: bool = Field(
        False, description="Gates count only status records signed by a key the site's Site document enrolls "
                           "(`statusKeys`); unsigned records count as not reported. Off: sites without keys "
                           "report unsigned, and enrolled sites' records must still verify.")


class Fleet(Strict):
    """Fleet-wide settings and defaults; at most one per repo."""

    apiVersion: Literal["reconciler/v1"] = Field(description=API_VERSION_HELP)
    kind: Literal["Fleet"] = Field(description="The document's kind.")
    metadata: Metadata = Field(description=METADATA_HELP)
    spec: FleetSpec = Field(FleetSpec(), description="Fleet-wide defaults.")


# --- Site ---------------------------------------------------------------------------------------

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class MaintenanceWindow(Strict):
    """Activation may happen from ``start`` to ``end`` local time on ``days``; an ``end`` before
    ``start`` crosses midnight (the window belongs to the day it starts)."""

    days: Annotated[list[Weekday], Field(min_length=1)] = Field(
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        description="The days the window starts on (mon ... sun); default every day.")
    start: ClockTime = Field(description="Local time the window opens, 24-hour 'HH:MM'.")
    end: ClockTime = Field(description="Local time the window closes, 'HH:MM'; before `start`: the next day.")
    timezone: str = Field("UTC", description="IANA time zone of `start` and `end`, e.g. 'Europe/Berlin'.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        return iana_zone(name)


class SiteSpec(Strict):
    description: str | None = Field(None, description="What and where the site is, for people.")
    maintenanceWindows: list[MaintenanceWindow] = Field(
        [], description="When new versions may be activated; none: at any time. Downloads and checks "
                        "happen at any time.")
    statusKeys: StatusKeys = Field(
        [], description="Public keys that sign the site's status records (from `reconciler enroll`); several "
                        "while one is retiring; removing a key revokes it. None: the site reports unsigned.")


class Site(Strict):
    """One place that runs an agent; Deployments and waves select sites by its labels."""

    apiVersion: Literal["reconciler/v1"] = Field(description=API_VERSION_HELP)
    kind: Literal["Site"] = Field(description="The document's kind.")
    metadata: Metadata = Field(description="The site's name (as the agent is told with `--site`) and its "
                                           "labels (region, tier, arch, accelerator, ...).")
    spec: SiteSpec = Field(SiteSpec(), description="The site's description and maintenance windows.")


# --- Model --------------------------------------------------------------------------------------

TensorType = Literal["float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool", "string"]


class TensorSpec(Strict):
    name: Annotated[str, Field(min_length=1)] = Field(description="The tensor's name in the ONNX graph.")
    dtype: TensorType = Field(description="Element type, as the ONNX model declares it.")
    shape: list[Annotated[int, Field(ge=-1)]] = Field(
        description="Dimensions; -1 marks a dynamic one (such as the batch), which the model must leave "
                    "dynamic too.")


class ModelInterface(Strict):
    inputs: Annotated[list[TensorSpec], Field(min_length=1)] = Field(
        description="Every input of the model; each version's ONNX must declare exactly these.")
    outputs: Annotated[list[TensorSpec], Field(min_length=1)] = Field(
        description="The outputs clients read; each version's ONNX must declare them.")


SignatureFormat = Literal["cosign", "sigstore-bundle", "model-signing", "registry"]


class SignatureRef(Strict):
    uri: Annotated[str, Field(min_length=1)] = Field(
        description="Where the signature is: a path relative to the repo root, file://, http(s)://, oci://; "
                    "for format registry, the oci:// URI of the signed manifest.")
    format: SignatureFormat | None = Field(
        None, description="cosign (.sig), sigstore-bundle, model-signing, or registry: cosign's signature of "
                          "the artifact's OCI manifest found in the registry (a Sigstore bundle referrer or the "
                          "legacy sha256-<hex>.sig tag); absent: read from the content.")


class Platform(Strict):
    """Matched against the site's labels of the same names; an absent field matches any site."""

    arch: LabelValue | None = Field(None, description="Matches the site label `arch` (amd64, arm64, ...).")
    accelerator: LabelValue | None = Field(None, description="Matches the site label `accelerator`.")
    precision: LabelValue | None = Field(None, description="Matches the site label `precision`.")


def beside_path(path: str) -> str:
    """``path`` if it names a place beside the ONNX file: '/'-separated, without '..', '.', empty
    (or absolute) parts, backslashes or NUL; else ValueError."""
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\\" in path or "\0" in path:
        raise ValueError(f"{path!r} must be a relative path without '..', '.' or empty parts")
    return path


class ArtifactFile(Strict):
    """A file the ONNX file needs beside it (its external data): fetched from the artifact's URI
    with the last part of its path (for ``oci://…#DIR/model.onnx``, the member ``DIR/PATH`` of the
    same archive layer) and pinned like the artifact."""

    path: Annotated[str, Field(min_length=1)] = Field(
        description="Where the file sits relative to the ONNX file, as its external-data `location` names it: "
                    "'/'-separated, no '..', '.', empty or absolute parts.")
    digest: Digest = Field(description="'sha256:' and the file's 64 lower-case hex digits; sites refuse other bytes.")
    size: Annotated[int, Field(gt=0)] = Field(description="The file's size in bytes, enforced while it downloads.")
    signature: SignatureRef | None = Field(
        None, description="The file's own signature; absent: the artifact's, which must then be a model_signing "
                          "bundle that lists the file under this path, or a registry signature of a manifest that "
                          "has the file as a layer.")

    @field_validator("path")
    @classmethod
    def _stays_beside(cls, path: str) -> str:
        return beside_path(path)


class Artifact(Strict):
    uri: Annotated[str, Field(min_length=1)] = Field(
        description="Where the ONNX file is: a path relative to the repo root, file://, http(s)://, "
                    "oci:// or oci-layout://. `reconciler add-version` fills it in.")
    digest: Digest = Field(description="'sha256:' and the file's 64 lower-case hex digits; sites "
                                             "refuse other bytes. `reconciler add-version` computes it.")
    size: Annotated[int, Field(gt=0)] = Field(description="The file's size in bytes, enforced while it "
                                                          "downloads.")
    signature: SignatureRef = Field(description="The signature over the file, checked against each site's "
                                                "own trust roots.")
    platform: Platform | None = Field(None, description="Which sites this artifact is for; absent: any site.")
    files: list[ArtifactFile] = Field(
        [], description="The files the ONNX file loads beside it (ONNX external data), each pinned; sites load a "
                        "model that has them by path from a directory of exactly these files.")

    @field_validator("files")
    @classmethod
    def _unique_paths(cls, files: list[ArtifactFile]) -> list[ArtifactFile]:
        paths = [f.path for f in files]
        require_unique(paths, "file paths")
        nested = sorted({p for p in paths for q in paths if q.startswith(f"{p}/")})
        if nested:
            raise ValueError(f"a file cannot also be a directory of others: {', '.join(nested)}")
        if MAIN_FILE in paths:
            raise ValueError(f"{MAIN_FILE!r} is the name sites give the ONNX file itself")
        return files


TensorValue = Any  # nested lists of numbers or booleans, shaped as the interface says


class ValidationCase(Strict):
    name: Annotated[str, Field(min_length=1)] = Field(description="Names the case in status messages.")
    inputs: dict[str, TensorValue] = Field(
        description="A value for every interface input, as nested lists shaped as the interface says.")
    expected: dict[str, TensorValue] = Field(
        description="What outputs must come out, from a reference outside the candidate model (never "
                    "its own answers).")
    tolerance: Annotated[float, Field(ge=0)] = Field(1e-5, description="Largest absolute difference "
                                                                       "allowed per element.")


class Signers(Strict):
    """Who may sign this version: narrows the site's own trust roots, never widens them."""

    keys: list[str] | None = Field(None, description="Names or ids of keys the site trusts that may sign "
                                                     "this version.")
    identities: list[str] | None = Field(None, description="Keyless certificate identities the site trusts "
                                                           "that may sign this version.")


class ReferenceProfile(Strict):
    """The training data's profile (`reconciler profile`): the bins that sites count live inputs and
    outputs into to watch for drift. Fetched, digest-checked and signature-checked like the artifact;
    a model_signing bundle over the model directory covers both files."""

    uri: Annotated[str, Field(min_length=1)] = Field(
        description="Where the profile JSON is: a path relative to the repo root, file://, or http(s)://.")
    digest: Digest = Field(description="'sha256:' and the file's 64 lower-case hex digits; sites "
                                             "refuse other bytes.")
    size: Annotated[int, Field(gt=0)] = Field(description="The file's size in bytes.")
    signature: SignatureRef = Field(description="The signature over the file: the artifact's model_signing "
                                                "bundle if it covers both, else one of its own.")


class ModelVersion(Strict):
    version: VersionString = Field(description="The version's name, unique within the model, e.g. '1.2.0'.")
    artifacts: Annotated[list[Artifact], Field(min_length=1)] = Field(
        description="The ONNX file(s); several only for different platforms.")
    validation: list[ValidationCase] = Field(
        [], description="Cases every site runs before it serves the version; a failing case stops it.")
    signers: Signers | None = Field(None, description="Narrows who may sign this version; absent: anyone "
                                                      "the site trusts.")
    profile: ReferenceProfile | None = Field(None, description="The reference profile sites watch this "
                                                               "version's inputs and outputs against for drift.")


class ModelSpec(Strict):
    description: str | None = Field(None, description="What the model does, for people.")
    interface: ModelInterface = Field(description="The inputs and outputs every version must have.")
    versions: Annotated[list[ModelVersion], Field(min_length=1)] = Field(
        description="The model's versions; `reconciler add-version` appends one.")
    evaluation: ModelEvaluation | None = Field(
        None, description="How sites that hold labeled data score each version (federated evaluation); "
                          "absent: versions are not scored.")

    @model_validator(mode="after")
    def _scored_output_exists(self) -> ModelSpec:
        if self.evaluation is not None and self.evaluation.output not in {t.name for t in self.interface.outputs}:
            raise ValueError(f"evaluation.output {self.evaluation.output!r} is not an output of the interface")
        return self

    def version(self, name: str) -> ModelVersion | None:
        return next((v for v in self.versions if v.version == name), None)


class Model(Strict):
    """An ONNX model: its interface and its signed versions."""

    apiVersion: Literal["reconciler/v1"] = Field(description=API_VERSION_HELP)
    kind: Literal["Model"] = Field(description="The document's kind.")
    metadata: Metadata = Field(description=METADATA_HELP)
    spec: ModelSpec = Field(description="Interface, versions and their artifacts.")
