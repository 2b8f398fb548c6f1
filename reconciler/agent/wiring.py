"""The one composition root: the real collaborators of a site's agent, built from its config
(``build_agent``), and the inference server the agent's runtime serves from (``serving``). The
agent, the applier and the CLI build nothing themselves; unit tests wire fakes instead
(devtools/fakes.py)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from reconciler import reasons
from reconciler.agent.apply import Applier
from reconciler.agent.channel import GitStatusChannel
from reconciler.agent.headpoll import BeaconedHeads
from reconciler.agent.inventory import InventoryCache
from reconciler.agent.loop import Agent, utcnow
from reconciler.agent.ports import CanaryMetrics, Runtime, StatusChannel
from reconciler.agent.statedir import StateDir
from reconciler.agent.telemetry import SiteTelemetry
from reconciler.agent.vetting import ArtifactVetting
from reconciler.cancel import CancelToken
from reconciler.errors import NeedsOperator
from reconciler.gitdoor.source import GitSource
from reconciler.ingest.artifacts import ArtifactStore
from reconciler.ingest.beacon import Beacon
from reconciler.runtime.drift_counter import DriftMonitor
from reconciler.runtime.providers import CPU
from reconciler.settings import SiteConfig
from reconciler.status.forge_client import ForgeStatuses
from reconciler.status.gitref import StatusRefs
from reconciler.status.signed import RecordSigner
from reconciler.status.summary_refs import SummaryRefs
from reconciler.trust import KeylessIdentity, TrustedKey, TrustRoots, load_private_key, load_public_key


def build_agent(config: SiteConfig, runtime: Runtime | None, metrics: CanaryMetrics | None = None,
                wake: threading.Event | None = None, stop: CancelToken | None = None,
                telemetry: SiteTelemetry | None = None, clock: Callable[[], datetime] = utcnow,
                state_dir: StateDir | None = None, trust_roots: TrustRoots | None = None) -> Agent:
    """``runtime`` and ``metrics`` come from ``serving`` (None: a site without ``--listen``); ``stop``
    (set on SIGTERM) cuts the work in flight short; ``state_dir``: one the caller has locked already;
    ``trust_roots``: ones the caller has loaded already (else config's are loaded here)."""
    telemetry = telemetry or SiteTelemetry(config.site)
    source = GitSource(config.repo, config.branch, config.state / "cache" / "fleet.git")
    status_source = source if config.status_repo is None else \
        GitSource(config.status_repo, config.branch, config.state / "cache" / "status.git")
    wake = wake or threading.Event()
    status = build_status_channel(config, status_source, wake)
    applier = build_applier(state_dir or StateDir(config.state), runtime, trust_roots or load_trust_roots(config),
                            config, metrics, stop, telemetry)
    caches = [source] if status_source is source else [source, status_source]
    heads = None if config.head_beacon is None else BeaconedHeads(
        Beacon(config.head_beacon.url, config.fetch), source.remote_head,
        config.head_beacon.backstop.total_seconds(), site=config.site)
    return Agent(config, source=source, status=status, applier=applier, runtime=runtime, clock=clock,
                 caches=caches, telemetry=telemetry, wake=wake,
                 inventory=InventoryCache(config.state, config.inventory_dir), heads=heads)


def build_status_channel(config: SiteConfig, status_source: GitSource, wake: threading.Event) -> StatusChannel:
    """Git refs (mirrored to a forge, or the forge alone), or NATS with Git as the audit trail;
    a new fleet commit announced over NATS wakes the agent at once."""
    if config.nats is not None:
        from reconciler.agent.nats_status import NatsStatusChannel
        from reconciler.status.nats_channel import NatsChannel
        from reconciler.status.nats_summaries import NatsSummaries

        signer = load_status_signer(config)
        audit = StatusRefs(status_source, signer) if config.nats.audit == "git" else None
        nats = NatsChannel(config.nats, config.site, on_commit=lambda _commit: wake.set(), signer=signer)
        return NatsStatusChannel(nats, NatsSummaries(nats, signer), audit,
                                 audit_spread=config.nats.audit_spread.total_seconds())
    forge = ForgeStatuses(config.forge) if config.forge else None
    signer = load_status_signer(config)
    records = StatusRefs(status_source, signer)
    summaries = None if config.summary_repo is None else SummaryRefs(
        GitSource(config.summary_repo, config.branch, config.state / "cache" / "summaries.git"), records, signer=signer)
    return GitStatusChannel(records, forge,
                            by_forge=config.gate_source == "forge",
                            target_url=config.forge.target_url if config.forge else None, summaries=summaries)


def build_applier(state_dir: StateDir, runtime: Runtime | None, trust_roots: TrustRoots,
                  config: SiteConfig | None = None, metrics: CanaryMetrics | None = None,
                  stop: CancelToken | None = None, telemetry: SiteTelemetry | None = None) -> Applier:
    stop = stop or CancelToken()
    store = ArtifactStore(state_dir.root, telemetry.count_bytes if telemetry else None)
    vetting = ArtifactVetting(store, trust_roots, config.fetch if config else None,
                              config.validation if config else None, stop, telemetry,
                              config.execution_providers if config else (CPU,), config.evaluation if config else None)
    # The runtime's metrics count drift too (RuntimeMetrics.drift); a canary test's fake metrics do
    # not. A site that serves nothing counts its batch runs' drift all the same.
    drift = DriftMonitor() if metrics is None else getattr(metrics, "drift", None)
    return Applier(state_dir, store, vetting, runtime, metrics, stop, drift=drift,
                   evaluation_interval=config.evaluation_interval if config else None)


def serve_last_good(state: Path, site: str, runtime: Runtime, metrics: CanaryMetrics) -> None:
    """What ``reconciler serve`` does: serve what state.json says was active, with no repo read
    (and so no trust roots: nothing new is admitted), and count drift for the versions whose
    profile the state directory holds (metrics' gauges; without an agent there is no record)."""
    state_dir = StateDir(state)
    build_applier(state_dir, runtime, TrustRoots(), metrics=metrics).restore(state_dir.load(site))


def load_trust_roots(config: SiteConfig) -> TrustRoots:
    identities = tuple(KeylessIdentity(t.identity, t.issuer) for t in config.trust_identities)
    return TrustRoots(keys=tuple(load_trust_keys(config)), identities=identities,
                      sigstore_trusted_root=config.sigstore_trusted_root)


def load_trust_keys(config: SiteConfig) -> list[TrustedKey]:
    keys = []
    for path in config.trust_keys:
        try:
            keys.append(load_public_key(path.read_bytes(), name=path.name))
        except OSError as exc:
            raise NeedsOperator(reasons.TrustKeyUnreadable, f"cannot read trust key {path}: {exc}") from exc
    return keys


def load_status_signer(config: SiteConfig) -> RecordSigner | None:
    """The site's keys (``statusKeys``), which sign every record it publishes; None: unsigned mode."""
    if not config.status_keys:
        return None
    keys = []
    for path in config.status_keys:
        try:
            keys.append(load_private_key(path.read_bytes()))
        except OSError as exc:
            raise NeedsOperator(reasons.StatusKeyUnreadable, f"cannot read status key {path}: {exc.strerror}") from exc
    return RecordSigner(tuple(keys))


class serving:
    """The inference server of a site, in this process, for as long as the block runs: OIP v2 over
    REST (and gRPC at ``grpc_address``), Prometheus metrics (which canary analyses read) and OFREP
    flags for local applications."""

    def __init__(self, address: tuple[str, int] | None, site: str, wake: threading.Event | None = None,
                 telemetry: SiteTelemetry | None = None, grpc_address: tuple[str, int] | None = None,
                 providers: Sequence[str] = (CPU,)):
        self.address, self.site, self.wake, self.telemetry = address, site, wake, telemetry
        self.providers = providers  # the site's executionProviders
        self.grpc_address = grpc_address
        self.server = self.grpc_server = None

    def __enter__(self):
        if self.address is None:
            return None, None
        from reconciler.runtime.hooks import hook_routes
        from reconciler.runtime.metrics import RuntimeMetrics
        from reconciler.runtime.ofrep import ofrep_routes
        from reconciler.runtime.registry import ModelRegistry
        from reconciler.runtime.server import RuntimeServer, build_app

        registry = ModelRegistry(providers=self.providers)
        metrics = RuntimeMetrics(registry)
        routes = ofrep_routes(registry.flags) + (hook_routes(self.wake) if self.wake is not None else [])
        if self.telemetry is not None:
            routes += self.telemetry.routes()
            metrics.collectors.register(self.telemetry)
        app = build_app(registry, site=self.site, metrics=metrics, extra_routes=routes)
        self.server = RuntimeServer(app, *self.address)
        self.server.start()
        logging.getLogger("reconciler").info("%s: serving on http://%s:%d", self.site, self.address[0], self.server.port)
        if self.grpc_address is not None:
            from reconciler.runtime.grpc_server import GrpcServer

            self.grpc_server = GrpcServer(registry, app.state.inference, *self.grpc_address)
            try:
                self.grpc_server.start()
            except BaseException:
                self.server.stop()
                raise
            logging.getLogger("reconciler").info("%s: serving gRPC on %s:%d", self.site, self.grpc_address[0],
                                                 self.grpc_server.port)
        return registry, metrics

    def __exit__(self, *exc) -> None:
        if self.grpc_server is not None:
            self.grpc_server.stop()
        if self.server is not None:
            self.server.stop()
