"""Drift at the site: every answered request's inputs and outputs counted into the bins of the
served version's reference profile, window by window (reconciler.monitoring.windows decides when a
window closes and what it means). Called from the one protocol-neutral point where a request's
decoded inputs and the model's outputs meet (inference.py, after ``session.run``) for REST and
gRPC, and from a batch run for each chunk it scored (batch/runner.py): all call the same ``count``.

Cost per request: a request only hands its arrays over (a list append under the version's lock);
every ``BATCH_ROWS`` rows, and before a window closes, the request that fills the batch bins all of
them at once (monitoring/binning.py: a few numpy operations per tensor, whatever the rows), so the
numpy call overhead is paid once per batch, not per request. The median request pays nothing
measurable; one in ``BATCH_ROWS`` single-row requests pays the batch.
Memory per watched version: the open window's counts, 8 bytes x bins (32 numeric features with
deciles: 32 x 12 bins = 3 KiB), the last closed window's summary (the same counts as ints) and at
most ``BATCH_ROWS`` rows of the served tensors awaiting binning (32 float32 features: 32 KiB, plus
one request). At most ``VERSIONS_PER_DEPLOYMENT`` versions per deployment are watched (active,
previous, canary)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import ValidationError

from reconciler import reasons
from reconciler.errors import Stalled, Transient
from reconciler.monitoring.binning import ProfileBinner
from reconciler.monitoring.profile import Profile
from reconciler.monitoring.windows import DriftSummary, DriftTrack, close_window, prediction_drift, window_due

log = logging.getLogger(__name__)

VERSIONS_PER_DEPLOYMENT = 3
BATCH_ROWS = 256


def read_profile(path: Path) -> Profile:
    """The profile file, refused as ProfileInvalid when it is not one."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise Transient(reasons.ProfileUnreadable, f"cannot read the reference profile {path}: {exc.strerror}") from None
    try:
        return Profile.model_validate(json.loads(content))
    except (ValueError, ValidationError) as exc:
        raise Stalled(reasons.ProfileInvalid, f"{path.name} is not a reference profile: {exc}") from None


class VersionCounter:
    """The open window of one deployment version and what its closed windows said."""

    def __init__(self, profile: Profile, digest: str, version: str, now: float):
        self.profile = profile
        self.binner = ProfileBinner(profile)
        self._lock = threading.Lock()
        self._counts = np.zeros(self.binner.size, dtype=np.int64)
        self._rows = 0  # in the open window, binned or not
        self._pending: list[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]] = []
        self._pending_rows = 0
        self._started = now
        self._total = np.zeros(self.binner.size, dtype=np.int64)  # since watched: what a canary analysis diffs
        self._total_rows = 0
        self.track = DriftTrack(version, digest)
        self.broken = False  # the profile does not fit the tensors served: counting stopped, said once

    def add(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], now: float) -> None:
        """Rows more than the open window has room for (a batch run's chunk) are cut at its edge:
        every window holds the policy's rows, whatever the rows per call."""
        if self.broken:
            return
        rows = len(next(iter(inputs.values()))) if inputs else 0
        with self._lock:
            start = 0
            while rows - start > (room := self.profile.window.rows - self._rows) > 0:
                self._take(_slice_rows(inputs, start, start + room), _slice_rows(outputs, start, start + room), room)
                self._close_if_due(now)
                start += room
            self._take(_slice_rows(inputs, start, rows) if start else inputs,
                       _slice_rows(outputs, start, rows) if start else outputs, rows - start)
            self._close_if_due(now)

    def _take(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], rows: int) -> None:
        self._pending.append((inputs, outputs))
        self._pending_rows += rows
        self._rows += rows
        if self._pending_rows >= BATCH_ROWS:
            self._bin_pending()

    def outputs_so_far(self) -> tuple[dict[str, np.ndarray], int]:
        """Every output feature's counts since the version was watched, and the rows behind them."""
        with self._lock:
            self._bin_pending()
            return {f.name: self._total[self.binner.slices[f.name]].copy() for f in self.profile.outputs}, \
                self._total_rows

    def tick(self, now: float) -> None:
        with self._lock:
            self._close_if_due(now)

    def _bin_pending(self) -> None:
        pending, self._pending, self._pending_rows = self._pending, [], 0
        try:
            batch = self.binner.count_batch(pending)
            self._counts += batch
            self._total += batch
            self._total_rows += sum(len(next(iter(inputs.values()))) for inputs, _ in pending if inputs)
        except (ValueError, IndexError) as exc:
            self.broken = True
            log.warning("drift counting stopped for version %s: %s", self.track.version, exc,
                        extra={"reason": reasons.ProfileMismatch})

    def _close_if_due(self, now: float) -> None:
        if window_due(self._started, self._rows, now, self.profile.window):
            self._bin_pending()
            self.track = close_window(self.track, self.profile, self.binner.split(self._counts), self._rows)
            self._counts = np.zeros_like(self._counts)
            self._rows, self._started = 0, now


def _slice_rows(tensors: Mapping[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {name: tensor[start:stop] for name, tensor in tensors.items()}


@dataclass(frozen=True)
class PredictionTally:
    """A canary's and its stable version's outputs so far, in the canary profile's bins."""

    profile: Profile
    canary: dict[str, np.ndarray]
    canary_rows: int
    stable: dict[str, np.ndarray]
    stable_rows: int

    def drift_since(self, before: PredictionTally | None) -> float | None:
        """The canary's prediction drift against stable over the rows since ``before``; None until
        each side has the profile's ``minRows`` rows (fewer score noise)."""
        if before is not None and before.profile is not self.profile:
            before = None  # counting started afresh (the canary was watched again)
        canary = {k: v - before.canary[k] for k, v in self.canary.items()} if before else self.canary
        stable = {k: v - before.stable[k] for k, v in self.stable.items()} if before else self.stable
        rows = (self.canary_rows - (before.canary_rows if before else 0),
                self.stable_rows - (before.stable_rows if before else 0))
        if min(rows) < self.profile.window.minRows:
            return None
        return prediction_drift(self.profile, stable, canary)


class DriftMonitor:
    """The versions this site watches, keyed by (deployment, version). ``watch`` and ``forget`` come
    from the agent's apply step; ``count`` from request threads; reads take a snapshot."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], VersionCounter] = {}
        # deployment -> (stable version, canary version, stable's traffic counted in the canary's bins)
        self._comparisons: dict[str, tuple[str, str, VersionCounter]] = {}

    def watch(self, deployment: str, version: str, digest: str, path: Path) -> None:
        """Count ``version`` of ``deployment`` against the profile at ``path`` (already verified).
        Watching it again with the same profile keeps its windows."""
        key = (deployment, version)
        current = self._counters.get(key)
        if current is not None and current.track.profile_digest == digest:
            return
        counter = VersionCounter(read_profile(path), digest, version, self._clock())
        with self._lock:
            counters = {k: v for k, v in self._counters.items() if k != key}
            counters[key] = counter
            same = [k for k in counters if k[0] == deployment]
            for old in same[:-VERSIONS_PER_DEPLOYMENT]:  # oldest first: dicts keep insertion order
                del counters[old]
            self._counters = counters  # one assignment: request threads read without the lock

    def compare(self, deployment: str, stable: str, canary: str) -> None:
        """While ``canary`` runs beside ``stable``, count stable's outputs in the canary's profile
        bins too, so a canary analysis can bound the canary's prediction drift against stable."""
        counter = self._counters.get((deployment, canary))
        with self._lock:
            comparisons = {k: v for k, v in self._comparisons.items() if k != deployment}
            if counter is not None and counter.profile.outputs:
                shadow = VersionCounter(counter.profile, counter.track.profile_digest, stable, self._clock())
                comparisons[deployment] = (stable, canary, shadow)
            self._comparisons = comparisons

    def forget(self, deployment: str) -> None:
        with self._lock:
            self._counters = {k: v for k, v in self._counters.items() if k[0] != deployment}
            self._comparisons = {k: v for k, v in self._comparisons.items() if k != deployment}

    def count(self, deployment: str, version: str, inputs: Mapping[str, np.ndarray],
              outputs: Mapping[str, np.ndarray], *, live: bool = True) -> None:
        """``live``: answered requests. A batch run's rows (``live=False``) count into the version's
        windows alone, not into a canary's comparison with stable, whose traffic split they never saw."""
        counter = self._counters.get((deployment, version))
        if counter is not None:
            counter.add(inputs, outputs, self._clock())
        comparison = self._comparisons.get(deployment) if live else None
        if comparison is not None and comparison[0] == version:
            comparison[2].add(inputs, outputs, self._clock())

    def predictions(self) -> dict[tuple[str, str], PredictionTally]:
        """Per (deployment, canary version) under comparison: both versions' outputs so far."""
        tallies = {}
        for deployment, (_, canary, shadow) in self._comparisons.items():
            counter = self._counters.get((deployment, canary))
            if counter is not None:
                tallies[(deployment, canary)] = PredictionTally(counter.profile, *counter.outputs_so_far(),
                                                                *shadow.outputs_so_far())
        return tallies

    def summaries(self) -> dict[tuple[str, str], DriftSummary]:
        """The last closed window of each watched version, after closing the windows whose time is up."""
        now = self._clock()
        summaries = {}
        for key, counter in self._counters.items():
            counter.tick(now)
            if counter.track.last is not None:
                summaries[key] = counter.track.last
        return summaries

    def window_marks(self) -> frozenset[tuple[str, str, int]]:
        """Changes whenever a window closes (or a version is watched or forgotten): the agent
        publishes a new record then."""
        now = self._clock()
        for counter in self._counters.values():
            counter.tick(now)
        return frozenset((*key, counter.track.windows) for key, counter in self._counters.items())

    def counters(self) -> dict[tuple[str, str], VersionCounter]:
        return dict(self._counters)


class DriftGauges(Collector):
    """The last closed window of every watched version, read at scrape time. JS and L-infinity are
    separate metrics (their sums mean different things), and feature names are bounded by the profile."""

    def __init__(self, monitor: DriftMonitor):
        self._monitor = monitor

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["deployment", "version", "feature"]
        families = {
            "numeric": GaugeMetricFamily("reconciler_drift_js_distance", "Jensen-Shannon distance (base 2) of the "
                                         "last closed window to the reference, per numeric feature.", labels=labels),
            "categorical": GaugeMetricFamily("reconciler_drift_linf_distance", "L-infinity distance of the last "
                                             "closed window to the reference, per categorical feature.", labels=labels),
        }
        psi = GaugeMetricFamily("reconciler_drift_psi", "Population stability index of the last closed window.",
                                labels=labels)
        drifted = GaugeMetricFamily("reconciler_drift_detected", "1 while the feature is drifted "
                                    "(DriftDetected), else 0.", labels=labels)
        rows = GaugeMetricFamily("reconciler_drift_window_rows", "Rows in the last closed window.",
                                 labels=["deployment", "version"])
        for (deployment, version), counter in sorted(self._monitor.counters().items()):
            summary = counter.track.last
            if summary is None:
                continue
            rows.add_metric([deployment, version], summary.rows)
            for feature in counter.profile.features():
                result = summary.features.get(feature.name)
                if result is not None:
                    families[feature.kind].add_metric([deployment, version, feature.name], result.score)
                    psi.add_metric([deployment, version, feature.name], result.psi)
                    drifted.add_metric([deployment, version, feature.name], int(feature.name in summary.drifted))
        yield from (*families.values(), psi, drifted, rows)
