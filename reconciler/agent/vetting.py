"""How a version's bytes earn the right to be served, before apply.py switches to them: fetched
into the store with their digest pinned by the manifest, a signature by a signer this site trusts,
then the version's validation cases passed in a child process (runtime/validation.py). A site that
holds labeled data for the Model also scores the version, and the one it replaces, on it
(runtime/evaluation.py), in the same kind of child."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from reconciler import reasons
from reconciler.cancel import CancelToken
from reconciler.delivery.plan import Target
from reconciler.errors import Cancelled, ReconcilerError
from reconciler.ingest.artifacts import ArtifactStore, Ingested
from reconciler.ingest.fetch import RepoRoot
from reconciler.ingest.verification import verified_artifact, verified_model
from reconciler.monitoring.evaluation import EXAMPLE_QUANTUM, EvaluationSummary, reported_examples
from reconciler.monitoring.profile import check_fits
from reconciler.runtime.drift_counter import read_profile
from reconciler.runtime.evaluation import Examples, load_examples, score_version
from reconciler.runtime.providers import CPU
from reconciler.runtime.validation import run_validation
from reconciler.settings import EvaluationData, FetchLimits, ValidationLimits
from reconciler.trust import TrustRoots

log = logging.getLogger(__name__)


class FetchMeter(Protocol):
    """What vetting tells the agent's metrics about failed downloads (telemetry.SiteTelemetry)."""

    def fetch_failed(self, reason: str) -> None: ...


class ArtifactVetting:
    def __init__(self, store: ArtifactStore, trust_roots: TrustRoots, limits: FetchLimits | None = None,
                 validation: ValidationLimits | None = None, stop: CancelToken | None = None,
                 meter: FetchMeter | None = None, providers: Sequence[str] = (CPU,),
                 evaluation: Mapping[str, EvaluationData] | None = None):
        self.store = store
        self.trust_roots = trust_roots
        self.limits = limits or FetchLimits()
        self.validation = validation or ValidationLimits()
        self.stop = stop or CancelToken()
        self.meter = meter
        self.providers = providers  # the site's executionProviders, which validation loads the model on
        self.evaluation = evaluation or {}  # Model name -> this site's labeled data (site.yaml)

    def verified(self, target: Target, repo_tree: RepoRoot) -> Ingested:
        """``repo_tree`` holds the commit's files, for repo-relative artifact URIs."""
        return self._metered(lambda: verified_model(self.store, target.artifact, target.signers, self.trust_roots, repo_tree,
                                                    self.limits, self.stop))

    def verified_profile(self, target: Target, repo_tree: RepoRoot) -> Ingested | None:
        """The version's reference profile, fetched, digest-checked and signature-checked exactly like
        its artifact, and refused (ProfileInvalid) unless it is a profile of the version's tensors."""
        if target.profile is None:
            return None
        profile = target.profile
        ingested = self._metered(lambda: verified_artifact(self.store, profile, target.signers, self.trust_roots, repo_tree,
                                                           self.limits, self.stop))
        check_fits(read_profile(ingested.path), target.interface)
        return ingested

    def _metered(self, verify: Callable[[], Ingested]) -> Ingested:
        try:
            return verify()
        except ReconcilerError as error:
            if self.meter is not None and not isinstance(error, Cancelled):
                self.meter.fetch_failed(error.reason)
            raise

    def validate(self, target: Target, ingested: Ingested) -> None:
        report = run_validation(ingested.path, target.interface, target.cases, stop=self.stop,
                                timeout=self.validation.timeout.total_seconds(), memory_limit=self.validation.memory_bytes,
                                providers=self.providers)
        for warning in report.warnings:
            log.warning("%s %s: onnxruntime: %s", target.model, target.version, warning,
                        extra={"deployment": target.deployment, "reason": reasons.OnnxRuntimeWarning})

    def evaluate(self, target: Target, model_path: Path, replaced: tuple[str, Path] | None,
                 now: datetime) -> EvaluationSummary | None:
        """The version's scores on this site's labeled data and, on the same data, those of the
        version it replaces (``replaced``: its name and blob). None where the Model declares no
        evaluation or the site holds no data for it. Never raises but Cancelled: a site whose data
        is bad still serves, and its record says why it has no scores."""
        data = self.evaluation.get(target.model)
        if target.evaluation is None or data is None:
            return None
        try:
            examples = load_examples(data, target.interface)
            if not reported_examples(examples.count):
                return EvaluationSummary(version=target.version, evaluatedAt=now, reason=reasons.EvaluationTooFewExamples,
                                         message=f"fewer than {EXAMPLE_QUANTUM} labeled examples: no scores reported")
            metrics = self._score(target, model_path, examples)
            previous = self._score(target, replaced[1], examples) if replaced else {}
        except Cancelled:
            raise
        except ReconcilerError as error:
            log.warning("%s %s: not scored: %s", target.model, target.version, error,
                        extra={"deployment": target.deployment, "reason": error.reason})
            return EvaluationSummary(version=target.version, evaluatedAt=now, reason=error.reason, message=error.message)
        return EvaluationSummary(version=target.version, numExamples=reported_examples(examples.count), metrics=metrics,
                                 previousVersion=replaced[0] if replaced else None, previousMetrics=previous,
                                 evaluatedAt=now)

    def _score(self, target: Target, model_path: Path, examples: Examples) -> dict[str, float]:
        return score_version(model_path, target.interface, target.evaluation, examples, self.validation,
                             self.providers, self.stop)
