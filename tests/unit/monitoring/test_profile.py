"""Reference profiles: built from training columns, refused when malformed or not the model's."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from reconciler.errors import Stalled
from reconciler.manifests.models import ModelInterface, TensorSpec
from reconciler.monitoring.profile import (
    CategoricalFeature,
    NumericFeature,
    Profile,
    build_profile,
    check_fits,
)

INTERFACE = ModelInterface(inputs=[TensorSpec(name="x", dtype="float32", shape=[-1, 2]),
                                   TensorSpec(name="store", dtype="int64", shape=[-1])],
                           outputs=[TensorSpec(name="y", dtype="float32", shape=[-1, 1])])


def test_numeric_columns_get_decile_edges_and_integer_columns_with_few_values_categories():
    rng = np.random.default_rng(1)
    profile = build_profile("m", "1", {"inputs": {"x": rng.normal(size=(1000, 2)).astype(np.float32),
                                                  "store": rng.integers(0, 5, 1000)},
                                       "outputs": {"y": rng.random((1000, 1)).astype(np.float32)}})
    x0, x1, store = profile.inputs
    assert (x0.name, x1.name, store.name, profile.outputs[0].name) == ("x[0]", "x[1]", "store", "y")
    assert isinstance(x0, NumericFeature) and len(x0.edges) == 11 and sum(x0.counts) == 1000
    assert all(90 <= c <= 110 for c in x0.counts[1:-1])  # deciles: a tenth of the rows each
    assert isinstance(store, CategoricalFeature) and store.categories == [0, 1, 2, 3, 4] and store.counts[-1] == 0
    check_fits(profile, INTERFACE)
    assert Profile.model_validate_json(profile.model_dump_json()) == profile


def test_float_flags_are_categories_so_their_two_values_keep_two_bins():
    flags = np.array([[0.0, 3.0]] * 6 + [[1.0, 3.0]] * 4, dtype=np.float32)
    profile = build_profile("m", "1", {"inputs": {"x": flags}})
    assert [(f.kind, f.categories, f.counts) for f in profile.inputs] == [
        ("categorical", [0.0, 1.0], [6, 4, 0]), ("categorical", [3.0], [10, 0])]


def test_a_numeric_column_with_fewer_distinct_quantiles_than_bins_drops_the_duplicate_edges():
    values = np.repeat(np.arange(30, dtype=np.float32), [100] + [1] * 29).reshape(-1, 1)
    [feature] = build_profile("m", "1", {"inputs": {"x": values}}).inputs
    assert feature.kind == "numeric" and len(feature.edges) < 11 and sum(feature.counts) == 129


@pytest.mark.parametrize("columns, message", [
    ({"inputs": {"x": np.zeros((3, 2, 2))}}, "profiles cover"),
    ({"inputs": {"x": np.zeros((3, 2)), "store": np.zeros(4)}}, "same, non-zero number of rows"),
    ({"inputs": {"x": np.full((3, 1), np.nan)}}, "no finite value"),
])
def test_data_a_profile_cannot_describe_is_refused(columns, message):
    with pytest.raises(ValueError, match=message):
        build_profile("m", "1", columns)


def numeric(**change):
    return {"kind": "numeric", "name": "x[0]", "tensor": "x", "column": 0, "edges": [0.0, 1.0],
            "counts": [0, 5, 0], **change}


@pytest.mark.parametrize("feature, message", [
    (numeric(edges=[1.0, 1.0]), "strictly increasing"),
    (numeric(edges=[0.0, float("inf")]), "finite"),
    (numeric(counts=[1, 2]), "make 3 bins"),
    ({"kind": "categorical", "name": "c", "tensor": "store", "categories": [2, 1], "counts": [1, 1, 0]}, "sorted"),
])
def test_malformed_profiles_are_refused(feature, message):
    with pytest.raises(ValidationError, match=message):
        Profile.model_validate({"model": "m", "version": "1", "rows": 5, "inputs": [feature]})


def test_duplicate_feature_names_are_refused():
    with pytest.raises(ValidationError, match="unique"):
        Profile.model_validate({"model": "m", "version": "1", "rows": 5, "inputs": [numeric(), numeric(column=1)]})


@pytest.mark.parametrize("feature, message", [
    (numeric(tensor="z"), "reads input z, which the model does not have"),
    (numeric(column=2), "reads column 2 of x"),
])
def test_a_profile_of_other_tensors_is_refused_as_a_mismatch(feature, message):
    profile = Profile.model_validate({"model": "m", "version": "1", "rows": 5, "inputs": [feature]})
    with pytest.raises(Stalled, match=message) as raised:
        check_fits(profile, INTERFACE)
    assert raised.value.reason == "ProfileMismatch"
