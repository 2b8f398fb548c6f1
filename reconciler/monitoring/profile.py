"""The reference profile of a model version: per input and output feature, bins frozen from the
training data and the training data's counts in them, as NannyML freezes its reference histogram.
Live windows are counted into the very same bins, so windows and sites add up by summing counts.

A feature is one column of a tensor (a [-1, k] tensor has k features, a [-1] tensor one):
- numeric: ``edges`` e_0 < ... < e_B from the training quantiles (deciles by default, duplicates
  dropped), and B + 2 bins: below e_0 (also NaN), [e_i, e_i+1) for each i, and at or above e_B.
  e_B lies just above the training maximum, so every training value falls inside;
- categorical (columns with at most ``MAX_CATEGORIES`` distinct training values: labels, flags,
  small counts): the training ``categories``, one bin each, then one bin for every other value.

``build_profile`` is pure: the CLI (``reconciler profile``) reads the files and hands it columns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from reconciler import reasons
from reconciler.errors import Stalled
from reconciler.manifests.models import ModelInterface
from reconciler.manifests.types import require_unique
from reconciler.monitoring import stats
from reconciler.monitoring.binning import count_feature

DEFAULT_BINS = 10
MAX_CATEGORIES = 20
Role = Literal["inputs", "outputs"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Feature(_Strict):
    name: Annotated[str, Field(min_length=1)]
    tensor: Annotated[str, Field(min_length=1)]
    column: Annotated[int, Field(ge=0)] = 0
    counts: list[Annotated[int, Field(ge=0)]]  # the training rows per bin


class NumericFeature(_Feature):
    kind: Literal["numeric"] = "numeric"
    edges: Annotated[list[float], Field(min_length=2)]  # len(edges) + 1 bins

    @model_validator(mode="after")
    def _bins_fit_edges(self) -> NumericFeature:
        if not np.all(np.isfinite(self.edges)) or np.any(np.diff(self.edges) <= 0):
            raise ValueError(f"feature {self.name}: edges must be finite and strictly increasing")
        if len(self.counts) != len(self.edges) + 1:
            raise ValueError(f"feature {self.name}: {len(self.edges)} edges make {len(self.edges) + 1} bins, "
                             f"got {len(self.counts)} counts")
        return self


class CategoricalFeature(_Feature):
    kind: Literal["categorical"] = "categorical"
    categories: Annotated[list[float], Field(min_length=1)]  # one bin each, then "other"

    @model_validator(mode="after")
    def _bins_fit_categories(self) -> CategoricalFeature:
        if sorted(set(self.categories)) != self.categories:
            raise ValueError(f"feature {self.name}: categories must be distinct and sorted")
        if len(self.counts) != len(self.categories) + 1:
            raise ValueError(f"feature {self.name}: {len(self.categories)} categories and 'other' make "
                             f"{len(self.categories) + 1} bins, got {len(self.counts)} counts")
        return self


Feature = Annotated[NumericFeature | CategoricalFeature, Field(discriminator="kind")]


class Thresholds(_Strict):
    js: Annotated[float, Field(gt=0, le=1)] = stats.JS_THRESHOLD
    linf: Annotated[float, Field(gt=0, le=1)] = stats.LINF_THRESHOLD
    psiWarn: Annotated[float, Field(gt=0)] = stats.PSI_WARN
    psiAlert: Annotated[float, Field(gt=0)] = stats.PSI_ALERT


class WindowPolicy(_Strict):
    """A window closes at ``rows`` rows, or after ``seconds`` once it holds ``minRows`` (fewer rows
    score noise: JS between two samples of one distribution is ~0.06 at 500 rows in 12 bins).
    DriftDetected after ``breaches`` consecutive breaching windows, cleared after ``clean`` clean ones."""

    rows: Annotated[int, Field(ge=1)] = 1000
    seconds: Annotated[float, Field(gt=0)] = 3600.0
    minRows: Annotated[int, Field(ge=1)] = 500
    breaches: Annotated[int, Field(ge=1)] = 3
    clean: Annotated[int, Field(ge=1)] = 3


class Profile(_Strict):
    apiVersion: Literal["reconciler/v1"] = "reconciler/v1"
    kind: Literal["ReferenceProfile"] = "ReferenceProfile"
    model: str
    version: str
    rows: Annotated[int, Field(ge=1)]
    inputs: list[Feature] = []
    outputs: list[Feature] = []
    thresholds: Thresholds = Thresholds()
    window: WindowPolicy = WindowPolicy()

    @model_validator(mode="after")
    def _unique_features(self) -> Profile:
        names = [f.name for f in self.features()]
        if not names:
            raise ValueError("a profile needs at least one feature")
        require_unique(names, "feature names")
        columns = [(f.tensor, f.column) for f in self.features()]
        if len(set(columns)) != len(columns):
            raise ValueError("each tensor column may be profiled once")
        return self

    def features(self) -> list[NumericFeature | CategoricalFeature]:
        return [*self.inputs, *self.outputs]

    def threshold(self, feature: NumericFeature | CategoricalFeature) -> float:
        return self.thresholds.js if feature.kind == "numeric" else self.thresholds.linf


def check_fits(profile: Profile, interface: ModelInterface) -> None:
    """Every profiled column exists in the model's interface: a [-1] tensor has column 0, a
    [-1, k] tensor columns 0..k-1 (k dynamic: any column)."""
    specs = {"inputs": {t.name: t for t in interface.inputs}, "outputs": {t.name: t for t in interface.outputs}}
    for role, features in (("inputs", profile.inputs), ("outputs", profile.outputs)):
        for feature in features:
            spec = specs[role].get(feature.tensor)
            if spec is None:
                raise Stalled(reasons.ProfileMismatch, f"the profile's feature {feature.name} reads {role[:-1]} "
                              f"{feature.tensor}, which the model does not have")
            width = 1 if len(spec.shape) == 1 else spec.shape[1] if len(spec.shape) == 2 else 0
            if width == 0 or (width != -1 and feature.column >= width):
                raise Stalled(reasons.ProfileMismatch, f"the profile's feature {feature.name} reads column "
                              f"{feature.column} of {feature.tensor}, shaped {spec.shape}")


def feature_name(tensor: str, column: int, width: int) -> str:
    return tensor if width == 1 else f"{tensor}[{column}]"


def build_profile(model: str, version: str, columns: Mapping[Role, Mapping[str, np.ndarray]],
                  bins: int = DEFAULT_BINS, max_categories: int = MAX_CATEGORIES) -> Profile:
    """The profile of ``columns``: per role, tensor name to a [rows] or [rows, k] array (the
    training data, or the model's outputs on it). Every tensor must have the same row count."""
    row_counts = {len(array) for tensors in columns.values() for array in tensors.values()}
    if len(row_counts) != 1 or 0 in row_counts:
        raise ValueError(f"every tensor needs the same, non-zero number of rows; got {sorted(row_counts)}")
    features: dict[Role, list[NumericFeature | CategoricalFeature]] = {"inputs": [], "outputs": []}
    for role, tensors in columns.items():
        for tensor, array in tensors.items():
            if array.ndim not in (1, 2):
                raise ValueError(f"tensor {tensor}: {array.ndim} dimensions; profiles cover [rows] or [rows, k] tensors")
            table = array.reshape(len(array), -1)
            for column in range(table.shape[1]):
                name = feature_name(tensor, column, table.shape[1] if array.ndim == 2 else 1)
                features[role].append(_feature(name, tensor, column, table[:, column], bins, max_categories))
    return Profile(model=model, version=version, rows=row_counts.pop(), **features)


def _feature(name: str, tensor: str, column: int, values: np.ndarray, bins: int,
             max_categories: int) -> NumericFeature | CategoricalFeature:
    distinct = np.unique(values[~np.isnan(values)] if values.dtype.kind == "f" else values)
    if 0 < len(distinct) <= max_categories:
        categories = [float(v) for v in distinct]
        feature = CategoricalFeature(name=name, tensor=tensor, column=column, categories=categories,
                                     counts=[0] * (len(categories) + 1))
    else:
        finite = values[np.isfinite(values)].astype(np.float64)
        if not len(finite):
            raise ValueError(f"feature {name}: no finite value to take bin edges from")
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)))
        # Just above the maximum, so the bins [e_i, e_i+1) hold every training value.
        edges = np.append(edges[:-1], np.nextafter(finite.max(), np.inf)) if len(edges) > 1 \
            else np.array([edges[0], np.nextafter(edges[0], np.inf)])
        feature = NumericFeature(name=name, tensor=tensor, column=column, edges=[float(e) for e in edges],
                                 counts=[0] * (len(edges) + 1))
    return feature.model_copy(update={"counts": [int(c) for c in count_feature(feature, values)]})
