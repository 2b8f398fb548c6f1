"""Prometheus metrics of the runtime, per deployment and version, and the arithmetic the in-site
canary analysis does on them: it takes a snapshot when a step starts and another one now, and
judges the version on the difference (window_stats)."""

from __future__ import annotations

import math
from collections import Counter as Tally
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from reconciler.runtime.drift_counter import DriftGauges, DriftMonitor, PredictionTally
from reconciler.runtime.registry import ModelRegistry, Served

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


@dataclass(frozen=True)
class VersionStats:
    """Cumulative since the server started; an analysis window is the difference of two snapshots."""

    requests: int  # every answered inference request that reached this version
    errors: int  # the model failed (HTTP 500)
    invalid: int  # the request did not fit the model (HTTP 400)
    latency_buckets: tuple[tuple[float, int], ...]  # (upper bound s, successful requests at or below)
    shadow_requests: int = 0  # mirrored requests this version (a canary) answered beside stable
    shadow_agreements: int = 0  # of those, the ones whose answer agreed with stable's
    shadow_dropped: int = 0  # mirrored requests dropped because the shadow queue was full
    success_seconds: float = 0.0  # the summed latency of the successful requests
    executions: int = 0  # model runs: fewer than the requests run when dynamic batching merges them
    predictions: PredictionTally | None = None  # a canary's and stable's outputs so far (drift_counter.py)


Snapshot = Mapping[tuple[str, str], VersionStats]  # keyed by (deployment, version)


@dataclass(frozen=True)
class WindowStats:
    """One version between two snapshots. ``requests`` are those that reached the model (answered
    or failed by it): a client's malformed request says nothing about the version, so it neither
    dilutes the error rate nor counts towards an analysis' minimum."""

    requests: int
    errors: int
    error_rate: float  # 0.0 without requests: none failed (an analysis checks ``requests`` first)
    p99_seconds: float | None  # None without successful requests; inf beyond the last bucket
    shadow_requests: int
    agreement: float | None  # None without mirrored requests
    prediction_drift: float | None = None  # None: no profile on the canary, or too few rows on a side


def window_stats(before: Snapshot, after: Snapshot, deployment: str, version: str) -> WindowStats:
    """What ``version`` of ``deployment`` did between two snapshots of one RuntimeMetrics.

    p99 comes from the latency histogram: the upper bound of the first bucket whose cumulative
    count in the window reaches 99 % of the window's successful requests (rounded up), so it never
    understates the latency and is exact to the bucket boundaries (LATENCY_BUCKETS)."""
    old = before.get((deployment, version), _EMPTY)
    new = after.get((deployment, version), _EMPTY)
    errors = new.errors - old.errors
    requests = (new.requests - new.invalid) - (old.requests - old.invalid)
    shadow_requests = new.shadow_requests - old.shadow_requests
    agreements = new.shadow_agreements - old.shadow_agreements
    return WindowStats(
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else 0.0,
        p99_seconds=_quantile_upper_bound(_bucket_delta(old, new), 0.99),
        shadow_requests=shadow_requests,
        agreement=agreements / shadow_requests if shadow_requests else None,
        prediction_drift=new.predictions.drift_since(old.predictions) if new.predictions else None,
    )


_EMPTY = VersionStats(requests=0, errors=0, invalid=0, latency_buckets=())


def _bucket_delta(old: VersionStats, new: VersionStats) -> list[tuple[float, int]]:
    earlier = dict(old.latency_buckets)
    return [(bound, count - earlier.get(bound, 0)) for bound, count in new.latency_buckets]


def _quantile_upper_bound(buckets: list[tuple[float, int]], quantile: float) -> float | None:
    total = buckets[-1][1] if buckets else 0  # the +Inf bucket counts every observation
    if total <= 0:
        return None
    rank = math.ceil(quantile * total)
    return next(bound for bound, cumulative in buckets if cumulative >= rank)


class RuntimeMetrics:
    """One set of metrics per app, in its own CollectorRegistry, so many apps can live in one process."""

    def __init__(self, registry: ModelRegistry):
        self.collectors = CollectorRegistry()
        self._requests = Counter(
            "reconciler_inference_requests",
            "Inference requests answered, by outcome (success, invalid, error) and protocol (rest, grpc).",
            ["deployment", "version", "outcome", "protocol"],
            registry=self.collectors,
        )
        self._duration = Histogram(
            "reconciler_inference_request_duration_seconds",
            "Time to decode, run and encode a successful inference request.",
            ["deployment", "version", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.collectors,
        )
        self._batch = Histogram(
            "reconciler_inference_batch_requests",
            "Requests answered by each model run (more than 1 when dynamic batching merged them).",
            ["deployment", "version"],
            buckets=BATCH_BUCKETS,
            registry=self.collectors,
        )
        self._shadow = {
            name: Counter(f"reconciler_shadow_{name}", help_text, ["deployment", "version"], registry=self.collectors)
            for name, help_text in (
                ("requests", "Requests answered by stable and mirrored to this canary version."),
                ("agreements", "Mirrored requests whose canary answer agreed with stable's."),
                ("dropped", "Mirrored requests dropped because the shadow queue was full."),
            )
        }
        self.collectors.register(_ModelInfo(registry))
        self.drift = DriftMonitor()  # counted by the server, watched by the agent's apply step
        self.collectors.register(DriftGauges(self.drift))

    def record(self, served: Served, outcome: str, seconds: float | None = None, *, protocol: str = "rest") -> None:
        self._requests.labels(served.deployment, served.version, outcome, protocol).inc()
        if seconds is not None:
            self._duration.labels(served.deployment, served.version, protocol).observe(seconds)

    def record_batch(self, served: Served, requests: int) -> None:
        self._batch.labels(served.deployment, served.version).observe(requests)

    def record_shadow(self, canary: Served, agreed: bool) -> None:
        self._shadow["requests"].labels(canary.deployment, canary.version).inc()
        if agreed:
            self._shadow["agreements"].labels(canary.deployment, canary.version).inc()

    def record_shadow_dropped(self, canary: Served) -> None:
        self._shadow["dropped"].labels(canary.deployment, canary.version).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.collectors)

    def snapshot(self) -> dict[tuple[str, str], VersionStats]:
        """Per version, whichever protocol the requests came by."""
        outcomes: dict[tuple[str, str], Tally[str]] = {}
        for labels, value in _totals(self._requests):
            outcomes.setdefault(_key(labels), Tally())[labels["outcome"]] += value
        shadow: dict[tuple[str, str], dict[str, int]] = {}
        for name, counter in self._shadow.items():
            for labels, value in _totals(counter):
                shadow.setdefault(_key(labels), {})[name] = value
        buckets: dict[tuple[str, str], Tally[float]] = {}
        seconds: Tally[tuple[str, str]] = Tally()
        for sample in self._duration.collect()[0].samples:
            if sample.name.endswith("_bucket"):
                buckets.setdefault(_key(sample.labels), Tally())[float(sample.labels["le"])] += int(sample.value)
            elif sample.name.endswith("_sum"):
                seconds[_key(sample.labels)] += sample.value
        executions = {
            _key(sample.labels): int(sample.value)
            for sample in self._batch.collect()[0].samples
            if sample.name.endswith("_count")
        }
        predictions = self.drift.predictions()
        return {
            key: VersionStats(
                requests=sum(outcomes.get(key, {}).values()),
                errors=outcomes.get(key, {}).get("error", 0),
                invalid=outcomes.get(key, {}).get("invalid", 0),
                latency_buckets=tuple(sorted(buckets.get(key, Tally()).items())),
                shadow_requests=shadow.get(key, {}).get("requests", 0),
                shadow_agreements=shadow.get(key, {}).get("agreements", 0),
                shadow_dropped=shadow.get(key, {}).get("dropped", 0),
                success_seconds=seconds.get(key, 0.0),
                executions=executions.get(key, 0),
                predictions=predictions.get(key),
            )
            for key in outcomes.keys() | shadow.keys() | predictions.keys()
        }


def _totals(counter: Counter) -> Iterator[tuple[dict[str, str], int]]:
    for sample in counter.collect()[0].samples:
        if sample.name.endswith("_total"):
            yield sample.labels, int(sample.value)


def _key(labels: Mapping[str, str]) -> tuple[str, str]:
    return labels["deployment"], labels["version"]


class _ModelInfo(Collector):
    """Read from the registry at scrape time, so it can never disagree with what is served."""

    def __init__(self, registry: ModelRegistry):
        self._registry = registry

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily(
            "reconciler_model_info",
            "Loaded model versions per deployment; state is active, canary or previous.",
            labels=["deployment", "model", "version", "state"],
        )
        weight = GaugeMetricFamily(
            "reconciler_canary_weight_percent",
            "Percentage of unpinned requests routed to the canary version.",
            labels=["deployment", "version"],
        )
        for deployment, loaded in sorted(self._registry.state().items()):
            for state in ("active", "canary", "previous"):
                served = getattr(loaded, state)
                if served is not None:
                    info.add_metric([deployment, served.model, served.version, state], 1)
            if loaded.canary is not None:
                weight.add_metric([deployment, loaded.canary.version], loaded.weight)
        yield info
        yield weight
