"""SiteConfig: the local, out-of-band settings of one site. Never read from the fleet repo:
trust comes from here, not from the repository it protects."""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from reconciler.batch.jobs import BatchDirectories
from reconciler.errors import UsageError
from reconciler.ingest.artifacts import FetchLimits
from reconciler.manifests.fleet import Finding
from reconciler.manifests.loader import error_findings, parse_yaml_document
from reconciler.manifests.types import DnsLabel, Duration
from reconciler.status.forge import ForgeConfig
from reconciler.trust.commitpolicy import CommitPolicy


class ValidationLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    timeout: Duration = "60s"
    memoryBytes: Annotated[int, Field(gt=0)] = 2 * 1024**3


class TrustIdentity(BaseModel):
    """A keyless signer: the certificate's identity (SAN) and the OIDC issuer that vouched for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    identity: str
    issuer: str


_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def host_and_port(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets, ``[::1]:8080``) as a host and a TCP port."""
    host, _, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit():
        raise ValueError(f"should be HOST:PORT, e.g. 127.0.0.1:8080 (got {address!r})")
    if int(port) > 65535:
        raise ValueError(f"port {port} of {address!r} is not a TCP port (0 to 65535)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{host!r} of {address!r} is neither an IP address nor a host name") from None
    return host, int(port)


def _checked_address(address: str) -> str:
    host_and_port(address)
    return address


def is_local_path(location: str) -> bool:
    """Whether git reads ``location`` as a path on this machine: neither a URL (``scheme://``) nor
    scp-like ``[user@]host:path`` (a colon before any slash)."""
    colon, slash = location.find(":"), location.find("/")
    return "://" not in location and (colon < 0 or 0 <= slash < colon)


def _absolute_if_local(location: str | None) -> str | None:
    # git resolves a relative path against its own working directory, which is not ours
    return str(Path(location).resolve()) if location and is_local_path(location) else location


class SiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    site: DnsLabel
    repo: Annotated[str, AfterValidator(_absolute_if_local)]  # URL or path of the fleet repo
    branch: str = "main"
    state: Path
    listen: Annotated[str, AfterValidator(_checked_address)] | None = None  # HOST:PORT of the inference server; None: do not serve
    grpc_listen: Annotated[str, AfterValidator(_checked_address)] | None = Field(None, alias="grpcListen")  # HOST:PORT of OIP over gRPC; None: no gRPC
    statusRepo: Annotated[str | None, AfterValidator(_absolute_if_local)] = None  # where status refs go when not the fleet repo (agents that may not push there)
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

    @field_validator("grpc_listen")
    @classmethod
    def _grpc_beside_http(cls, grpc_listen: str | None, info: ValidationInfo) -> str | None:
        if grpc_listen is not None and info.data.get("listen", "invalid") is None:  # an invalid one is refused already
            raise ValueError("needs listen too: health, metrics and flags are served over HTTP")
        return grpc_listen

    @model_validator(mode="after")
    def _forge_gates_need_a_forge(self) -> SiteConfig:
        if self.gateSource == "forge" and self.forge is None:
            raise ValueError("gateSource: forge needs the forge settings")
        return self
    validation: ValidationLimits = ValidationLimits()
    fetch: FetchLimits = FetchLimits()  # timeouts, retries, redirects, auth, CA bundle for artifacts
    batch: BatchDirectories = BatchDirectories()  # logical batch input/output names -> local directories

    @property
    def listen_address(self) -> tuple[str, int] | None:
        return None if self.listen is None else host_and_port(self.listen)

    @property
    def grpc_address(self) -> tuple[str, int] | None:
        return None if self.grpc_listen is None else host_and_port(self.grpc_listen)

    @property
    def interval_seconds(self) -> float:
        return max(self.interval, timedelta(milliseconds=100)).total_seconds()


def load_site_config(path: Path, overrides: dict[str, object]) -> SiteConfig:
    """Read ``site.yaml`` (relative paths resolve against its folder) and apply CLI overrides.
    Problems of the file are refused as the manifests' are: file:line:col, and did you mean."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read site config {path}: {exc}") from exc
    node, raw, findings = parse_yaml_document(str(path), text)
    findings += [Finding(str(path), scalar.start_mark.line + 1, scalar.start_mark.column + 1,
                         "a NUL character cannot be in a setting (nor in a path)") for scalar in _with_nul(node)]
    if node is not None and not findings and not isinstance(raw, dict):
        findings = [Finding(str(path), 1, 1, "a site config is a mapping of settings")]
    if findings:
        raise UsageError(_render(findings))
    raw = _resolved(raw or {}, path.parent)
    given = {k: v for k, v in overrides.items() if v not in (None, [])}
    try:
        return SiteConfig.model_validate({**raw, **given})
    except ValidationError as exc:
        from_file = [e for e in exc.errors(include_url=False) if not e["loc"] or e["loc"][0] not in given]
        problems = error_findings(str(path), node or _EMPTY, SiteConfig, from_file)
        from_command_line = [e for e in exc.errors(include_url=False) if e["loc"] and e["loc"][0] in given]
        raise UsageError("\n".join(filter(None, [_render(problems), _problems(from_command_line)]))) from None


def _resolved(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """The file's paths made absolute against its folder. Values of the wrong type stay as they
    are, for validation to refuse with their line."""
    def resolve(value: Any) -> Any:
        return str((base / value).resolve()) if isinstance(value, str) and value else value

    def resolve_location(value: Any) -> Any:
        return resolve(value) if isinstance(value, str) and is_local_path(value) else value

    raw = {key: resolve(value) if key in ("state", "sigstoreTrustedRoot") else
           resolve_location(value) if key in ("repo", "statusRepo") else value for key, value in raw.items()}
    if isinstance(raw.get("trustKeys"), list):
        raw["trustKeys"] = [resolve(key) for key in raw["trustKeys"]]
    for section, keys in (("fetch", ("caBundle",)), ("commitPolicy", ("sshAllowedSigners", "gpgKeyring"))):
        if isinstance(raw.get(section), dict):
            raw[section] = {**raw[section], **{k: resolve(raw[section][k]) for k in keys if raw[section].get(k)}}
    if isinstance(raw.get("batch"), dict):
        raw["batch"] = {kind: {name: resolve(d) for name, d in names.items()} if isinstance(names, dict) else names
                        for kind, names in raw["batch"].items()}
    return raw


def _with_nul(root: yaml.Node | None) -> list[yaml.ScalarNode]:
    """The scalars holding a NUL character, each node visited once (aliases may form cycles)."""
    found, seen, todo = [], set(), [root] if root is not None else []
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode) and "\0" in node.value:
            found.append(node)
        elif isinstance(node, yaml.MappingNode):
            todo += [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            todo += node.value
    return found


_EMPTY = yaml.MappingNode("tag:yaml.org,2002:map", [], start_mark=yaml.Mark("", 0, 0, 0, None, None))


def _render(findings: list[Finding]) -> str:
    return "\n".join(finding.render() for finding in findings)


def _problems(errors: list[Any]) -> str:
    if not errors:
        return ""
    said = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in errors)
    return f"invalid site settings (command line): {said}"


def build_site_config(values: dict[str, object], origin: str = "command line") -> SiteConfig:
    try:
        return SiteConfig.model_validate(values)
    except ValidationError as exc:
        raise UsageError(_problems(exc.errors(include_url=False)).replace("command line", origin)) from None
