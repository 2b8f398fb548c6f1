"""Windows of live traffic and the DriftDetected state machine, per feature (pure; ``now`` and the
counts come in):

    a window closes   at WindowPolicy.rows rows, or after WindowPolicy.seconds once it holds minRows
    a closed window   scores each feature against the reference (stats.py); it breaches when its
                      score (JS for numeric, L∞ for categorical) reaches the profile's threshold
    per feature       breaches consecutive breaching windows: drifted;
                      clean consecutive clean windows: no longer drifted
    the deployment    DriftDetected while any feature is drifted

The summary a site publishes (DriftSummary) carries the last closed window's bin counts, so the
fleet adds windows and sites exactly (``pool``). Drift never rolls a version back by itself."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema

from reconciler import reasons
from reconciler.monitoring import stats
from reconciler.monitoring.profile import CategoricalFeature, NumericFeature, Profile, WindowPolicy

DRIFT_DETECTED = reasons.DriftDetected
NO_DRIFT = reasons.NoDrift


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureDrift(_Strict):
    score: float  # JS distance (numeric) or L∞ (categorical) of the last closed window
    psi: float
    bins: list[int]  # the last closed window's rows in the reference bins


_COMPACT = re.compile(r"^score=(?P<score>[0-9.e+-]+) psi=(?P<psi>[0-9.e+-]+) bins=(?P<bins>[0-9]+(?:,[0-9]+)*)$")


def _render(feature: FeatureDrift) -> str:
    return f"score={feature.score:g} psi={feature.psi:g} bins={','.join(map(str, feature.bins))}"


def _parse(value: object) -> object:
    if not isinstance(value, str):
        return value
    found = _COMPACT.match(value)
    if found is None:
        raise ValueError(f"{value!r} is not 'score=S psi=P bins=N,N,...'")
    return {"score": float(found["score"]), "psi": float(found["psi"]), "bins": found["bins"].split(",")}


# One line per feature in the record (which Git stores indented, a list element per line): 32
# features stay under 4 KB.
CompactFeature = Annotated[FeatureDrift, BeforeValidator(_parse), PlainSerializer(_render, return_type=str),
                           WithJsonSchema({"type": "string", "pattern": _COMPACT.pattern})]


class DriftSummary(_Strict):
    """One deployment's drift at a site, as its status record carries it."""

    version: str
    profile: str  # the profile's digest: bins add up only between summaries of one profile
    state: Literal[reasons.NoDrift, reasons.DriftDetected]
    windows: int  # windows closed since the version was loaded here
    rows: int  # rows in the last closed window
    drifted: list[str] = []  # the features DriftDetected is about
    features: dict[str, CompactFeature]

    def worst(self) -> float:
        return max((f.score for f in self.features.values()), default=0.0)


@dataclass(frozen=True)
class FeatureState:
    breaches: int = 0  # consecutive breaching windows
    clean: int = 0  # consecutive clean windows
    drifted: bool = False


def advance(state: FeatureState, breached: bool, policy: WindowPolicy) -> FeatureState:
    if breached:
        breaches = state.breaches + 1
        return FeatureState(breaches, 0, state.drifted or breaches >= policy.breaches)
    clean = state.clean + 1
    return FeatureState(0, clean, state.drifted and clean < policy.clean)


def window_due(started: float, rows: int, now: float, policy: WindowPolicy) -> bool:
    return rows >= policy.rows or (rows >= policy.minRows and now - started >= policy.seconds)


@dataclass(frozen=True)
class Score:
    score: float
    psi: float
    breached: bool


def score(profile: Profile, bins: Mapping[str, Sequence[int] | np.ndarray]) -> dict[str, Score]:
    """Each feature of ``bins`` that holds rows, against the profile's reference counts; all
    features in one go (stats.py scores a matrix of them, row by row)."""
    present = [(feature, counts) for feature in profile.features()
               if (counts := np.asarray(bins.get(feature.name, ()), dtype=np.int64)).sum()]
    if not present:
        return {}  # only outputs no request asked for
    for feature, counts in present:
        if len(counts) != len(feature.counts):
            raise ValueError(f"feature {feature.name}: {len(counts)} bins, its reference has {len(feature.counts)}")
    reference = _matrix([np.asarray(feature.counts, dtype=np.int64) for feature, _ in present])
    current = _matrix([counts for _, counts in present])
    numeric = np.array([feature.kind == "numeric" for feature, _ in present])
    distances = np.where(numeric, stats.js_distance(reference, current), stats.l_infinity(reference, current))
    psis = stats.psi(reference, current)
    return {feature.name: Score(float(distance), float(psi), bool(distance >= profile.threshold(feature)))
            for (feature, _), distance, psi in zip(present, distances, psis, strict=True)}


def _matrix(vectors: list[np.ndarray]) -> np.ndarray:
    """Bin vectors of different lengths as the rows of one matrix, padded with empty bins."""
    matrix = np.zeros((len(vectors), max(len(v) for v in vectors)), dtype=np.int64)
    for row, vector in zip(matrix, vectors, strict=True):
        row[:len(vector)] = vector
    return matrix


def prediction_drift(profile: Profile, stable: Mapping[str, np.ndarray], canary: Mapping[str, np.ndarray]) -> float:
    """The largest distance, over the profile's outputs, between two versions' predictions counted in
    the same bins (a canary against stable): JS for numeric outputs, L∞ for categorical ones."""
    return max(_distance(f, stable[f.name], canary[f.name]) for f in profile.outputs)


def _distance(feature: NumericFeature | CategoricalFeature, reference: Iterable[int], current: np.ndarray) -> float:
    if feature.kind == "numeric":
        return stats.js_distance(reference, current)
    return stats.l_infinity(reference, current)


@dataclass(frozen=True)
class DriftTrack:
    """What a site remembers of one deployment version's closed windows."""

    version: str
    profile_digest: str
    states: dict[str, FeatureState] = field(default_factory=dict)
    windows: int = 0
    last: DriftSummary | None = None


def close_window(track: DriftTrack, profile: Profile, bins: Mapping[str, Sequence[int] | np.ndarray],
                 rows: int) -> DriftTrack:
    scores = score(profile, bins)
    states = dict(track.states)
    for name, result in scores.items():
        states[name] = advance(states.get(name, FeatureState()), result.breached, profile.window)
    # Built from numbers just computed: nothing to validate (a batch run closes a window per 1 000 rows).
    features = {name: FeatureDrift.model_construct(score=round(result.score, 4), psi=round(result.psi, 4),
                                                   bins=np.asarray(bins[name], dtype=np.int64).tolist())
                for name, result in scores.items()}
    drifted = [name for name, s in states.items() if s.drifted]
    summary = DriftSummary(version=track.version, profile=track.profile_digest,
                           state=DRIFT_DETECTED if drifted else NO_DRIFT, windows=track.windows + 1, rows=rows,
                           drifted=drifted, features=features)
    return DriftTrack(track.version, track.profile_digest, states, track.windows + 1, summary)


def pool(profile: Profile, summaries: Iterable[DriftSummary]) -> dict[str, Score]:
    """The fleet's drift from the sites' last windows: their bins summed per feature, scored like
    one window holding all their rows. The caller passes only summaries of this profile's digest."""
    totals: dict[str, np.ndarray] = {}
    for summary in summaries:
        for name, feature in summary.features.items():
            totals[name] = totals.get(name, 0) + np.asarray(feature.bins, dtype=np.int64)
    return score(profile, totals)
