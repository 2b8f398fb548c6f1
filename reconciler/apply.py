"""Executes a Plan against the state directory and the runtime. Each action is idempotent and
crash-safe: a version is served only after its bytes are hashed, its signature verified and its
validation cases passed in a child process, and state.json is replaced atomically afterwards, so
a crash at any instant leaves the site on the old version or the new one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import urlsplit

from reconciler.artifacts import ArtifactStore, FetchLimits, Ingested, fetch_bytes
from reconciler.config import ValidationLimits
from reconciler.errors import ReconcilerError, Stalled
from reconciler.plan import Action, Plan, Target
from reconciler.runtime.validation import run_validation
from reconciler.state import DeploymentState, HistoryEntry, Installed, SiteState, StateDir
from reconciler.trust import TrustRoots, narrow, verify_artifact_signature

SIGNATURE_MAX_BYTES = 256 * 1024  # a keyless bundle is ~6 KiB; model-signing grows ~150 B a file


class Runtime(Protocol):
    """What apply needs of the serving side (runtime.registry.ModelRegistry)."""

    def activate(self, deployment: str, model: str, version: str, model_path: Path, interface, *,
                 digest: str | None = None) -> None: ...
    def remove(self, deployment: str) -> None: ...
    def expect(self, deployments: list[str]) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """What became of one action; loop.py turns outcomes into the status record."""

    action: Action
    error: ReconcilerError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Applier:
    def __init__(
        self,
        state_dir: StateDir,
        runtime: Runtime | None,
        trust_roots: TrustRoots,
        limits: FetchLimits | None = None,
        validation: ValidationLimits | None = None,
    ):
        self.state_dir = state_dir
        self.store = ArtifactStore(state_dir.root)
        self.runtime = runtime
        self.trust_roots = trust_roots
        self.limits = limits or FetchLimits()
        self.validation = validation or ValidationLimits()

    def apply(self, plan: Plan, state: SiteState, repo_root: Path, now: datetime) -> tuple[SiteState, list[Outcome]]:
        if self.runtime is not None:
            self.runtime.expect(plan.serving)
        outcomes = []
        for action in plan.actions:
            try:
                state = self._apply_one(action, state, repo_root, plan.commit, now)
                outcomes.append(Outcome(action))
            except ReconcilerError as error:
                outcomes.append(Outcome(action, error))
        return state, outcomes

    def restore(self, state: SiteState) -> None:
        """On start-up, serve what state.json says was active before (the last good state)."""
        if self.runtime is None:
            return
        for name, deployment in state.deployments.items():
            if deployment.active is not None:
                self._activate(name, deployment.model, deployment.active, deployment.interface)

    def _apply_one(self, action: Action, state: SiteState, repo_root: Path, commit: str | None,
                   now: datetime) -> SiteState:
        match action.kind:
            case "deploy" | "prefetch":
                target = action.target
                try:
                    if action.kind == "prefetch":
                        self._verified_artifact(target, repo_root)
                        return state
                    return self._deploy(target, state, repo_root, commit, now)
                except ReconcilerError as error:
                    raise type(error)(error.reason, f"{target.model} {target.version}: {error.message}") from error
            case "remove":
                if self.runtime is not None:
                    self.runtime.remove(action.deployment)
                remaining = {k: v for k, v in state.deployments.items() if k != action.deployment}
                new_state = state.model_copy(update={"deployments": remaining})
                self.state_dir.save(new_state)
                return new_state
            case "error":
                raise Stalled(action.reason, action.message)
        raise AssertionError(f"unknown action kind {action.kind}")

    def _deploy(self, target: Target, state: SiteState, repo_root: Path, commit: str | None,
                now: datetime) -> SiteState:
        ingested = self._verified_artifact(target, repo_root)
        run_validation(ingested.path, target.interface, target.cases,
                       timeout=self.validation.timeout.total_seconds(), memory_limit=self.validation.memoryBytes)
        current = state.deployments.get(target.deployment)
        installed = Installed(version=target.version, digest=target.artifact.digest,
                              uri=target.artifact.uri, installedAt=now)
        entry = HistoryEntry(at=now, event="activated", version=target.version, commit=commit)
        updated = DeploymentState(
            model=target.model,
            active=installed,
            previous=current.active if current else None,
            wave=target.wave,
            interface=target.interface,
            history=[*(current.history if current else []), entry],
        )
        new_state = state.model_copy(update={"deployments": {**state.deployments, target.deployment: updated}})
        self._activate(target.deployment, target.model, installed, target.interface)
        try:
            self.state_dir.save(new_state)
        except OSError as exc:
            self._undo_activation(target.deployment, current)
            raise Stalled("StateWriteFailed", f"cannot record the activation of {target.version}: {exc}") from exc
        return new_state

    def _verified_artifact(self, target: Target, repo_root: Path) -> Ingested:
        """The bytes, hashed while they stream in, and a signature over them by a signer the
        site trusts (narrowed, never widened, by the version's own ``signers``)."""
        artifact = target.artifact
        signers = target.signers
        roots = narrow(self.trust_roots, signers.identities, signers.keys) if signers else self.trust_roots
        ingested = self.store.ingest(artifact, repo_root, self.limits)
        signature = fetch_bytes(artifact.signature.uri, repo_root, self.limits, SIGNATURE_MAX_BYTES)
        file_name = PurePosixPath(urlsplit(artifact.uri).path).name
        verify_artifact_signature(ingested.sha256, file_name, signature, artifact.signature.format, roots)
        return ingested

    def _undo_activation(self, deployment: str, previous: DeploymentState | None) -> None:
        if self.runtime is None:
            return
        if previous is None or previous.active is None:
            self.runtime.remove(deployment)
        else:
            self._activate(deployment, previous.model, previous.active, previous.interface)

    def _activate(self, deployment: str, model: str, installed: Installed, interface) -> None:
        """The runtime loads the very bytes that were hashed, and checks the digest once more."""
        if self.runtime is not None:
            self.runtime.activate(deployment, model, installed.version, self.store.path_for(installed.digest),
                                  interface, digest=installed.digest)
