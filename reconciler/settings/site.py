"""SiteConfig: the local, out-of-band settings of one site (site.yaml). Never read from the fleet
repo: trust comes from here, not from the repository it protects. Plain data: reading the file and
saying what is wrong with it at its line is reconciler.agent.config's."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from reconciler.manifests.types import POLL_INTERVAL, STALE_AFTER, DnsLabel, Duration
from reconciler.settings.address import Address
from reconciler.settings.batch import BatchDirectories
from reconciler.settings.beacon import HeadBeacon
from reconciler.settings.commits import CommitPolicy
from reconciler.settings.evaluation import EvaluationData
from reconciler.settings.fetch import FetchLimits
from reconciler.settings.forge import ForgeConfig
from reconciler.settings.nats import NatsSettings
from reconciler.settings.paths import SETTINGS, LocalPath, Location

_SHORTEST_INTERVAL = timedelta(milliseconds=100)
# onnxruntime's names for its execution providers all end so (CUDAExecutionProvider, ...).
ExecutionProviderName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9]*ExecutionProvider$")]


class ValidationLimits(BaseModel):
    """What a model's test cases may take, in a child process, before it is refused."""

    model_config = ConfigDict(**SETTINGS, validate_default=True)

    timeout: Duration = "60s"
    memory_bytes: Annotated[int, Field(gt=0)] = 2 * 1024**3


class TrustIdentity(BaseModel):
    """A keyless signer: the certificate's identity (SAN) and the OIDC issuer that vouched for it."""

    model_config = SETTINGS

    identity: str
    issuer: str


class SiteConfig(BaseModel):
    model_config = ConfigDict(**SETTINGS, validate_default=True)

    site: DnsLabel
    repo: Location  # URL or path of the fleet repo
    branch: str = "main"
    state: LocalPath
    listen: Address | None = None  # HOST:PORT of the inference server; None: do not serve
    grpc_listen: Address | None = None  # HOST:PORT of OIP over gRPC; None: no gRPC
    status_repo: Location | None = None  # where status refs go when not the fleet repo (agents that may not push there)
    # Summaries shared by the fleet: set, the site writes its entry beside each record (an entry ref
    # in its status repository), gathers its shard's entries into each deployment's roll-up here, and
    # gates on the roll-ups of the deployments that target it, not on every site's record (README, "Scale")
    summary_repo: Location | None = None
    # Before fetching a commit it has just learned of, a site waits a random share of this; None:
    # derived from the fleet's size, so a commit's fetch wave reaches the server at ~FETCH_WAVE_RATE/s
    fetch_spread: Duration | None = None
    interval: Duration = POLL_INTERVAL
    # Polled each interval instead of git ls-remote, which then runs only when the beacon moves,
    # fails, or at its backstop (README, "Scale"); None: every poll is a git ls-remote
    head_beacon: HeadBeacon | None = None
    stale_after: Duration = STALE_AFTER  # out of reach of the fleet repo for longer: the status says stale
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.1  # share of the interval, spreads fleet load
    trust_keys: list[LocalPath] = []  # PEM public keys that may sign artifacts
    trust_identities: list[TrustIdentity] = []  # keyless Sigstore signers
    sigstore_trusted_root: LocalPath | None = None  # trusted_root.json; None: the public-good root shipped with sigstore
    status_keys: list[LocalPath] = []  # PEM private keys signing status records (reconciler enroll); none: unsigned
    accept_history: str | None = None  # a commit an operator accepted after a history rewrite
    commit_policy: CommitPolicy | None = None  # require signed fleet commits (SSH or GPG signers)
    forge: ForgeConfig | None = None  # mirror status records as forge commit statuses
    gate_source: Literal["git", "forge"] = "git"  # forge: read other sites from commit statuses, never push refs
    nats: NatsSettings | None = None  # records and fleet-commit wake-ups over NATS JetStream instead of status refs
    validation: ValidationLimits = ValidationLimits()
    fetch: FetchLimits = FetchLimits()  # timeouts, retries, redirects, auth, CA bundle for artifacts
    batch: BatchDirectories = BatchDirectories()  # logical batch input/output names -> local directories
    # onnxruntime's accelerators, most wanted first; validation and serving both use them, and
    # skip those this box lacks (runtime/providers.py). CPU last keeps a site serving without its GPU.
    execution_providers: Annotated[list[ExecutionProviderName], Field(min_length=1)] = ["CPUExecutionProvider"]
    inventory_dir: LocalPath | None = None  # executables printing key=value facts for the status record's inventory
    evaluation: dict[DnsLabel, EvaluationData] = {}  # Model name -> its labeled local data (federated evaluation)
    evaluation_interval: Duration = "24h"  # how often served versions are scored again on that data

    @field_validator("grpc_listen")
    @classmethod
    def _grpc_beside_http(cls, grpc_listen: Address | None, info: ValidationInfo) -> Address | None:
        if grpc_listen is not None and info.data.get("listen", "invalid") is None:  # an invalid one is refused already
            raise ValueError("needs listen too: health, metrics and flags are served over HTTP")
        return grpc_listen

    @field_validator("execution_providers")
    @classmethod
    def _each_provider_once(cls, providers: list[str]) -> list[str]:
        repeated = sorted({name for name in providers if providers.count(name) > 1})
        if repeated:
            raise ValueError(f"names {', '.join(repeated)} more than once")
        return providers

    @field_validator("evaluation")
    @classmethod
    def _labels_beside_npy(cls, evaluation: dict[str, EvaluationData]) -> dict[str, EvaluationData]:
        for model, data in evaluation.items():
            if (data.inputs.suffix == ".npy") != (data.labels is not None):
                raise ValueError(f"{model}: .npy inputs need a `labels` .npy beside them; CSV and JSON Lines "
                                 "carry their labels in a `label` column")
            if data.labels is not None and data.labels.suffix != ".npy":
                raise ValueError(f"{model}: labels are a .npy file, not {data.labels.name}")
        return evaluation

    @model_validator(mode="after")
    def _forge_gates_need_a_forge(self) -> SiteConfig:
        if self.gate_source == "forge" and self.forge is None:
            raise ValueError("gateSource: forge needs the forge settings")
        if self.forge is not None and self.nats is not None:
            raise ValueError("forge and nats: the NATS channel does not mirror records to a forge (yet); choose one")
        if self.summary_repo is not None and (self.forge is not None or self.nats is not None):
            raise ValueError("summaryRepo beside forge or nats: the forge's wave statuses need every site's record, "
                             "and NATS gates on its own bucket; choose one")
        return self

    @property
    def interval_seconds(self) -> float:
        return max(self.interval, _SHORTEST_INTERVAL).total_seconds()
