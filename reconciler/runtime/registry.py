"""Which onnxruntime sessions serve each deployment. Writers (the agent's apply step, from its own
thread) build sessions off the request path and publish a new immutable mapping with one reference
assignment; readers (requests) take no lock, so a request that already holds a session finishes on
it while new requests see the new one. The version that was active before stays loaded, for
requests that pin it and for an instant rollback; during a canary the canary version is loaded
beside the active (stable) one and takes ``weight`` percent of the traffic (see routing.py)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import onnxruntime as ort

from reconciler import reasons
from reconciler.errors import Stalled, Transient
from reconciler.flags import FlagSet
from reconciler.manifests.deployments import DeploymentSpec
from reconciler.manifests.models import ModelInterface
from reconciler.manifests.types import Digest
from reconciler.runtime.providers import CPU, choose_here
from reconciler.runtime.validation import EXTERNAL_DATA_FOLDER, external_data_folder

V = TypeVar("V")

# onnxruntime writes its warnings, coloured, straight to stderr, between the agent's log lines. In
# the serving process it says only errors (which also come back as exceptions); what it says about
# a model is logged by the agent, as its own warnings, when the model is validated (validation.py).
ONNXRUNTIME_ERRORS_ONLY = 3
ort.set_default_logger_severity(ONNXRUNTIME_ERRORS_ONLY)


@dataclass(frozen=True)
class Served:
    deployment: str
    model: str
    version: str
    session: ort.InferenceSession
    interface: ModelInterface
    digest: str  # "sha256:<hex>" of the very bytes the session was built from
    source: Path

    @property
    def provider(self) -> str:
        """The execution provider the session runs on: the first of its providers onnxruntime kept."""
        return self.session.get_providers()[0]


@dataclass(frozen=True)
class _Wanted:
    """A version a writer asks to serve: from this file, its bytes checked against ``digest``."""

    deployment: str
    model: str
    version: str
    model_path: Path
    interface: ModelInterface
    digest: str | None


@dataclass(frozen=True)
class Loaded:
    """One deployment's sessions: the active (stable) version, the one active before it, and during
    a canary the canary with the percentage of unpinned requests it gets and whether it also
    receives a mirror of the requests stable answers."""

    active: Served
    previous: Served | None = None
    canary: Served | None = None
    weight: int = 0
    mirror: bool = False

    def versions(self) -> list[Served]:
        """Each loaded version once; a canary of the previous version shares its session."""
        unique: dict[str, Served] = {}
        for served in (self.active, self.canary, self.previous):
            if served is not None:
                unique.setdefault(served.version, served)
        return list(unique.values())

    def find(self, version: str) -> Served | None:
        return next((served for served in self.versions() if served.version == version), None)


@dataclass(frozen=True)
class BatchPolicy:
    """Dynamic batching of a deployment (batching.py): at most ``max_batch_size`` rows per model run,
    the first queued request waiting at most ``max_queue_delay`` seconds for others."""

    max_batch_size: int
    max_queue_delay: float

    @classmethod
    def of(cls, spec: DeploymentSpec) -> BatchPolicy | None:
        """The policy a Deployment asks for (``maxBatchSize``, ``maxQueueDelay``), if any."""
        if spec.max_batch_size is None:
            return None
        delay = spec.max_queue_delay.total_seconds() if spec.max_queue_delay is not None else 0.0
        return cls(spec.max_batch_size, delay)


class NotServed(LookupError):
    """The request names a deployment or version this site does not serve (HTTP 404)."""


class NotLoadedYet(NotServed):
    """The agent expects the deployment here but has not loaded it yet: worth retrying."""


class ModelRegistry:
    def __init__(self, expected: Iterable[str] | None = None, *, intra_op_threads: int = 1,
                 providers: Sequence[str] = (CPU,)):
        """``providers``: the site's executionProviders; those this onnxruntime lacks are skipped (and
        logged), none of them available is Stalled (providers.py)."""
        self._providers = choose_here(providers).use
        # Small models on small boxes: one thread per run beats a pool, and concurrent requests
        # already spread over the cores.
        self._intra_op_threads = intra_op_threads
        self._loaded: Mapping[str, Loaded] = MappingProxyType({})
        self._expected: frozenset[str] | None = None if expected is None else frozenset(expected)
        self._routing_flags: Mapping[str, str] = MappingProxyType({})
        self._batching: Mapping[str, BatchPolicy] = MappingProxyType({})
        self._flags: tuple[FlagSet, Mapping[str, Any]] = (FlagSet(), MappingProxyType({}))
        self._write_lock = threading.Lock()

    # --- request path: no locks -----------------------------------------------------------------

    def get(self, deployment: str, version: str | None = None) -> Served:
        loaded = self.loaded(deployment)
        if version is None:
            return loaded.active
        served = loaded.find(version)
        if served is None:
            known = ", ".join(s.version for s in loaded.versions())
            raise NotServed(f"model {deployment!r} has no version {version!r} loaded; loaded: {known}")
        return served

    def loaded(self, deployment: str) -> Loaded:
        loaded = self._loaded.get(deployment)
        if loaded is None:
            if self._expected is not None and deployment in self._expected:
                raise NotLoadedYet(f"model {deployment!r} is not loaded yet")
            raise NotServed(f"model {deployment!r} is not served here")
        return loaded

    def state(self) -> Mapping[str, Loaded]:
        """The published mapping; immutable, so it may be read at leisure."""
        return self._loaded

    def deployments(self) -> list[str]:
        return sorted(self._loaded)

    def ready(self) -> bool:
        """All deployments the agent expects are loaded; until it says which (``expect``), ready
        means something is loaded."""
        expected, loaded = self._expected, self._loaded
        if expected is None:
            return bool(loaded)
        return all(name in loaded for name in expected)

    def execution_provider(self, deployment: str) -> str | None:
        """What serves the deployment's active version; None while nothing does."""
        loaded = self._loaded.get(deployment)
        return loaded.active.provider if loaded is not None else None

    def routing_flag(self, deployment: str) -> str | None:
        return self._routing_flags.get(deployment)

    def batching(self, deployment: str) -> BatchPolicy | None:
        return self._batching.get(deployment)

    def flags(self) -> tuple[FlagSet, Mapping[str, Any]]:
        """The fleet's flags and the site's evaluation context, published together."""
        return self._flags

    # --- writers: the agent's apply step ---------------------------------------------------------

    def expect(self, deployments: Iterable[str]) -> None:
        self._expected = frozenset(deployments)

    def set_flags(self, flags: FlagSet, site_context: Mapping[str, Any]) -> None:
        """The flags of the applied fleet commit, with the site as context (flags.site_context)."""
        self._flags = (flags, MappingProxyType(dict(site_context)))

    def set_routing_flag(self, deployment: str, flag_key: str | None) -> None:
        """Route each request of ``deployment`` to the version the flag's value names, evaluated
        per request; None stops it. Independent of which versions are loaded, so it survives swaps."""
        with self._write_lock:
            self._routing_flags = _with_entry(self._routing_flags, deployment, flag_key)

    def set_batching(self, policies: Mapping[str, BatchPolicy]) -> None:
        """Batch the requests of these deployments (each version apart), and no others. Independent
        of which versions are loaded, so it survives swaps."""
        self._batching = MappingProxyType(dict(policies))

    def activate(
        self,
        deployment: str,
        model: str,
        version: str,
        model_path: Path,
        interface: ModelInterface,
        *,
        digest: str | None = None,
    ) -> None:
        """Make ``version`` the one new requests of ``deployment`` get, at once (blue/green); this
        ends a canary in progress. Loads ``model_path`` unless that version from that file is
        already loaded (then this only flips the pointer). With ``digest``, the bytes read are
        checked against it before a session is built from them."""
        with self._write_lock:
            current = self._loaded.get(deployment)
            served = self._reuse_or_load(current, _Wanted(deployment, model, version, model_path, interface, digest))
            if current is None:
                previous = None
            elif current.active.version == version:
                previous = current.previous
            else:
                previous = current.active
            self._publish(deployment, Loaded(active=served, previous=previous))

    def start_canary(
        self,
        deployment: str,
        model: str,
        version: str,
        model_path: Path,
        interface: ModelInterface,
        *,
        digest: str | None,
        weight: int = 0,
        mirror: bool = False,
    ) -> None:
        """Load ``version`` beside the active one as its canary, with ``weight`` percent of the
        traffic. Starting the canary that is already loaded only sets weight and mirror; another
        version replaces it."""
        _check_weight(deployment, weight)
        with self._write_lock:
            current = self._with_active(deployment, "start a canary")
            if current.active.version == version:
                raise Stalled(
                    reasons.CanaryIsActive, f"{deployment}: version {version} is already active; it cannot be its own canary"
                )
            served = self._reuse_or_load(current, _Wanted(deployment, model, version, model_path, interface, digest))
            self._publish(deployment, replace(current, canary=served, weight=weight, mirror=mirror))

    def set_weight(self, deployment: str, weight: int) -> None:
        _check_weight(deployment, weight)
        with self._write_lock:
            current, _ = self._with_canary(deployment, "set the canary weight")
            self._publish(deployment, replace(current, weight=weight))

    def set_mirror(self, deployment: str, mirror: bool) -> None:
        with self._write_lock:
            current, _ = self._with_canary(deployment, "mirror traffic to the canary")
            self._publish(deployment, replace(current, mirror=mirror))

    def promote(self, deployment: str) -> None:
        """The canary becomes the active version and the old active one the previous."""
        with self._write_lock:
            current, canary = self._with_canary(deployment, "promote the canary")
            self._publish(deployment, Loaded(active=canary, previous=current.active))

    def abort_canary(self, deployment: str) -> None:
        """Weight 0 and the canary unloaded; the active version serves everything. Safe to repeat:
        a deployment without a canary (or not loaded at all) is left as it is."""
        with self._write_lock:
            current = self._loaded.get(deployment)
            if current is not None and current.canary is not None:
                self._publish(deployment, Loaded(active=current.active, previous=current.previous))

    def remove(self, deployment: str) -> None:
        with self._write_lock:
            self._publish(deployment, None)

    def _with_active(self, deployment: str, purpose: str) -> Loaded:
        current = self._loaded.get(deployment)
        if current is None:
            raise Stalled(reasons.NoActiveVersion, f"cannot {purpose}: {deployment} has no active version")
        return current

    def _with_canary(self, deployment: str, purpose: str) -> tuple[Loaded, Served]:
        current = self._with_active(deployment, purpose)
        if current.canary is None:
            raise Stalled(reasons.NoCanary, f"cannot {purpose}: {deployment} has no canary loaded")
        return current, current.canary

    def _publish(self, deployment: str, loaded: Loaded | None) -> None:
        self._loaded = _with_entry(self._loaded, deployment, loaded)  # the one assignment readers can observe

    def _reuse_or_load(self, current: Loaded | None, wanted: _Wanted) -> Served:
        reusable = _same_artifact(current, wanted)
        if reusable is not None:
            return replace(reusable, interface=wanted.interface)
        return self._load(wanted)

    def _load(self, wanted: _Wanted) -> Served:
        model_path, digest = wanted.model_path, wanted.digest
        try:
            data = model_path.read_bytes()
        except OSError as exc:
            raise Transient(reasons.ArtifactUnreadable, f"cannot read {model_path}: {exc.strerror}") from None
        actual = Digest.of(hashlib.sha256(data))
        if digest is not None and actual != digest:
            raise Stalled(
                reasons.ArtifactDigestMismatch, f"{model_path} has digest {actual}, expected {digest}; refusing to load it"
            )
        try:
            # From the bytes just hashed, never from the path: the file cannot change in between.
            session = ort.InferenceSession(data, sess_options=self._session_options(model_path), providers=list(self._providers))
        except Exception as exc:  # onnxruntime's errors share no base class narrower than Exception
            raise Stalled(
                reasons.ModelLoadFailed, f"onnxruntime cannot load {wanted.model} {wanted.version} ({model_path}): {exc}"
            ) from None
        return Served(wanted.deployment, wanted.model, wanted.version, session, wanted.interface, actual, model_path)

    def _session_options(self, model_path: Path) -> ort.SessionOptions:
        options = ort.SessionOptions()
        if (folder := external_data_folder(model_path)) is not None:
            options.add_session_config_entry(EXTERNAL_DATA_FOLDER, str(folder))
        options.intra_op_num_threads = self._intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = ONNXRUNTIME_ERRORS_ONLY
        # Spinning workers would steal the cores the HTTP server runs on between requests.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options


def _check_weight(deployment: str, weight: int) -> None:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise Stalled(reasons.InvalidWeight, f"{deployment}: canary weight must be a whole percentage 0-100, got {weight!r}")


def _same_artifact(current: Loaded | None, wanted: _Wanted) -> Served | None:
    """The loaded session built from this very artifact, if there is one."""
    served = current.find(wanted.version) if current else None
    if served is None or served.model != wanted.model or served.source != wanted.model_path:
        return None
    return served if wanted.digest in (None, served.digest) else None


def _with_entry(mapping: Mapping[str, V], key: str, value: V | None) -> Mapping[str, V]:
    """A new read-only mapping: ``mapping`` with ``key`` set to ``value``, or without it for None.
    Readers hold the old one unchanged, so they take no lock."""
    updated = dict(mapping)
    if value is None:
        updated.pop(key, None)
    else:
        updated[key] = value
    return MappingProxyType(updated)
