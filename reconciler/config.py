"""SiteConfig: the local, out-of-band settings of one site. Never read from the fleet repo:
trust comes from here, not from the repository it protects."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reconciler.artifacts import FetchLimits
from reconciler.commitpolicy import CommitPolicy
from reconciler.errors import UsageError
from reconciler.manifests.types import DnsLabel, Duration
from reconciler.status.forge import ForgeConfig


class ValidationLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    timeout: Duration = "60s"
    memoryBytes: Annotated[int, Field(gt=0)] = 2 * 1024**3


class TrustIdentity(BaseModel):
    """A keyless signer: the certificate's identity (SAN) and the OIDC issuer that vouched for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    identity: str
    issuer: str


class SiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    site: DnsLabel
    repo: str  # URL or path of the fleet repo
    branch: str = "main"
    state: Path
    listen: str | None = None  # HOST:PORT of the inference server; None: do not serve
    statusRepo: str | None = None  # where status refs go when not the fleet repo (agents that may not push there)
    interval: Duration = "30s"
    staleAfter: Duration = "10m"  # out of reach of the fleet repo for longer: the status says stale
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.1  # share of the interval, spreads fleet load
    trustKeys: list[Path] = []  # PEM public keys that may sign artifacts
    trustIdentities: list[TrustIdentity] = []  # keyless Sigstore signers
    sigstoreTrustedRoot: Path | None = None  # trusted_root.json; None: the public-good root shipped with sigstore
    acceptHistory: str | None = None  # a commit an operator accepted after a history rewrite
    commitPolicy: CommitPolicy | None = None  # require signed fleet commits (SSH or GPG signers)
    forge: ForgeConfig | None = None  # mirror status records as forge commit statuses
    gateSource: Literal["git", "forge"] = "git"  # forge: read other sites from commit statuses, never push refs

    @model_validator(mode="after")
    def _forge_gates_need_a_forge(self) -> SiteConfig:
        if self.gateSource == "forge" and self.forge is None:
            raise ValueError("gateSource: forge needs the forge settings")
        return self
    validation: ValidationLimits = ValidationLimits()
    fetch: FetchLimits = FetchLimits()  # timeouts, retries, redirects, auth, CA bundle for artifacts

    @property
    def listen_address(self) -> tuple[str, int] | None:
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--listen wants HOST:PORT, got {self.listen!r}")
        return host.strip("[]"), int(port)

    @property
    def interval_seconds(self) -> float:
        return max(self.interval, timedelta(milliseconds=100)).total_seconds()


def load_site_config(path: Path, overrides: dict[str, object]) -> SiteConfig:
    """Read ``site.yaml`` (relative paths resolve against its folder) and apply CLI overrides."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read site config {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: a site config is a mapping of settings")
    for key in ("state",):
        if key in raw:
            raw[key] = str((path.parent / raw[key]).resolve())
    if "trustKeys" in raw:
        raw["trustKeys"] = [str((path.parent / k).resolve()) for k in raw["trustKeys"]]
    if raw.get("sigstoreTrustedRoot"):
        raw["sigstoreTrustedRoot"] = str((path.parent / raw["sigstoreTrustedRoot"]).resolve())
    fetch = raw.get("fetch")
    if isinstance(fetch, dict) and fetch.get("caBundle"):
        fetch["caBundle"] = str((path.parent / fetch["caBundle"]).resolve())
    policy = raw.get("commitPolicy")
    if isinstance(policy, dict):
        for key in ("sshAllowedSigners", "gpgKeyring"):
            if policy.get(key):
                policy[key] = str((path.parent / policy[key]).resolve())
    return build_site_config({**raw, **{k: v for k, v in overrides.items() if v not in (None, [])}}, str(path))


def build_site_config(values: dict[str, object], origin: str = "command line") -> SiteConfig:
    try:
        return SiteConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"invalid site settings ({origin}): {problems}") from None
