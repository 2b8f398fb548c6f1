"""Which onnxruntime session serves each deployment. Writers (the agent's apply step, from its own
thread) build sessions off the request path and publish a new immutable mapping with one reference
assignment; readers (requests) take no lock, so a request that already holds a session finishes on
it while new requests see the new one. The version that was active before stays loaded, for
requests that pin it and for an instant rollback."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import onnxruntime as ort

from reconciler.errors import Stalled, Transient
from reconciler.manifests.models import ModelInterface


@dataclass(frozen=True)
class Served:
    deployment: str
    model: str
    version: str
    session: ort.InferenceSession
    interface: ModelInterface
    digest: str  # "sha256:<hex>" of the very bytes the session was built from
    source: Path


@dataclass(frozen=True)
class Loaded:
    """One deployment's sessions: the active version and the one active before it."""

    active: Served
    previous: Served | None = None

    def versions(self) -> list[Served]:
        return [self.active] if self.previous is None else [self.active, self.previous]

    def find(self, version: str) -> Served | None:
        return next((served for served in self.versions() if served.version == version), None)


class NotServed(LookupError):
    """The request names a deployment or version this site does not serve (HTTP 404)."""


class ModelRegistry:
    def __init__(self, expected: Iterable[str] | None = None, *, intra_op_threads: int = 1):
        # Small models on small boxes: one thread per run beats a pool, and concurrent requests
        # already spread over the cores.
        self._intra_op_threads = intra_op_threads
        self._loaded: Mapping[str, Loaded] = MappingProxyType({})
        self._expected: frozenset[str] | None = None if expected is None else frozenset(expected)
        self._write_lock = threading.Lock()

    # --- request path: no locks -----------------------------------------------------------------

    def get(self, deployment: str, version: str | None = None) -> Served:
        loaded = self._loaded.get(deployment)
        if loaded is None:
            raise NotServed(f"model {deployment!r} is not served here")
        if version is None:
            return loaded.active
        served = loaded.find(version)
        if served is None:
            known = ", ".join(s.version for s in loaded.versions())
            raise NotServed(f"model {deployment!r} has no version {version!r} loaded; loaded: {known}")
        return served

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

    # --- writers: the agent's apply step ---------------------------------------------------------

    def expect(self, deployments: Iterable[str]) -> None:
        self._expected = frozenset(deployments)

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
        """Make ``version`` the one new requests of ``deployment`` get. Loads ``model_path`` unless
        that version from that file is already loaded (then this only flips the pointer). With
        ``digest``, the bytes read are checked against it before a session is built from them."""
        with self._write_lock:
            current = self._loaded.get(deployment)
            reusable = _same_artifact(current, model, version, model_path, digest)
            if reusable is not None:
                served = replace(reusable, interface=interface)
            else:
                served = self._load(deployment, model, version, model_path, interface, digest)
            if current is None:
                previous = None
            elif current.active.version == version:
                previous = current.previous
            else:
                previous = current.active
            self._publish(deployment, Loaded(active=served, previous=previous))

    def remove(self, deployment: str) -> None:
        with self._write_lock:
            self._publish(deployment, None)

    def _publish(self, deployment: str, loaded: Loaded | None) -> None:
        mapping = dict(self._loaded)
        if loaded is None:
            mapping.pop(deployment, None)
        else:
            mapping[deployment] = loaded
        self._loaded = MappingProxyType(mapping)  # the one assignment readers can observe

    def _load(
        self,
        deployment: str,
        model: str,
        version: str,
        model_path: Path,
        interface: ModelInterface,
        digest: str | None,
    ) -> Served:
        try:
            data = model_path.read_bytes()
        except OSError as exc:
            raise Transient("ArtifactUnreadable", f"cannot read {model_path}: {exc.strerror}") from None
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if digest is not None and actual != digest:
            raise Stalled(
                "DigestMismatch", f"{model_path} has digest {actual}, expected {digest}; refusing to load it"
            )
        try:
            # From the bytes just hashed, never from the path: the file cannot change in between.
            session = ort.InferenceSession(
                data, sess_options=self._session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's errors share no base class narrower than Exception
            raise Stalled(
                "ModelLoadFailed", f"onnxruntime cannot load {model} {version} ({model_path}): {exc}"
            ) from None
        return Served(deployment, model, version, session, interface, actual, model_path)

    def _session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._intra_op_threads
        options.inter_op_num_threads = 1
        # Spinning workers would steal the cores the HTTP server runs on between requests.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options


def _same_artifact(
    current: Loaded | None, model: str, version: str, model_path: Path, digest: str | None
) -> Served | None:
    """The loaded session built from this very artifact, if there is one."""
    served = current.find(version) if current else None
    if served is None or served.model != model or served.source != model_path:
        return None
    return served if digest in (None, served.digest) else None
