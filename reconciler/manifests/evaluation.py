"""Federated evaluation in the fleet language: what a Model's versions are scored on at the sites
that hold labeled data (``ModelEvaluation``), and the wave gate that reads the scores
(``EvaluationGate``). The scoring is reconciler.monitoring.evaluation's, the gate
reconciler.delivery.evaluation_gate's."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["HIGHER_IS_BETTER", "MODEL_KIND_METRICS", "EvaluationGate", "MetricName", "ModelEvaluation"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, validate_default=True)


MetricName = Literal["accuracy", "logLoss", "auc", "mae", "rmse"]
MODEL_KIND_METRICS: dict[str, tuple[str, ...]] = {"classifier": ("accuracy", "logLoss", "auc"),
                                                   "regressor": ("mae", "rmse")}
HIGHER_IS_BETTER = frozenset({"accuracy", "auc"})  # the others are errors: lower is better


class EvaluationGate(_Strict):
    """The earlier waves' sites scored the new version on their own labeled data (site.yaml
    ``evaluation``); the fleet metric is the example-weighted mean over them (Flower's FedAvg
    weighting, sum n_i m_i / sum n_i), computed from the records identically at every site."""

    metric: MetricName = Field(description="The metric the gate reads; the Deployment's Model must declare it "
                                           "(spec.evaluation.metrics).")
    min: float | None = Field(None, description="The lowest fleet value the next wave accepts (accuracy, auc).")
    max: float | None = Field(None, description="The highest fleet value the next wave accepts (logLoss, mae, rmse: "
                                                "lower is better).")
    minGainOverPrevious: float | None = Field(
        None, description="How much better than the version it replaces the new one must score, on the same "
                          "sites' same data, example-weighted (for error metrics: how much lower); 0: no worse.")
    minExamples: Annotated[int, Field(ge=0)] = Field(
        0, description="The wave waits until the earlier waves' sites have reported at least this many examples "
                       "in all (as reported: each site's count rounded down to a multiple of 10).")
    minSites: Annotated[int, Field(ge=1)] = Field(
        1, description="The wave waits until at least this many sites of the earlier waves have reported scores.")

    @model_validator(mode="after")
    def _bound_fits_metric(self) -> EvaluationGate:
        if self.min is None and self.max is None and self.minGainOverPrevious is None:
            raise ValueError("an evaluation gate needs min, max or minGainOverPrevious")
        if self.metric in HIGHER_IS_BETTER and self.max is not None:
            raise ValueError(f"{self.metric}: higher is better, bound it with min, not max")
        if self.metric not in HIGHER_IS_BETTER and self.min is not None:
            raise ValueError(f"{self.metric}: lower is better, bound it with max, not min")
        return self


class ModelEvaluation(_Strict):
    """How sites score this model's versions on their own labeled data (site.yaml ``evaluation``)."""

    kind: Literal["classifier", "regressor"] = Field(
        description="classifier: `output` holds class probabilities ([-1, C], or [-1] / [-1, 1]: the positive "
                    "class's), labels are class indices 0..C-1; regressor: `output` holds one value per "
                    "example, labels are numbers.")
    output: Annotated[str, Field(min_length=1)] = Field(description="The interface output scored against the labels.")
    metrics: Annotated[list[MetricName], Field(min_length=1)] = Field(
        description="What sites report: accuracy, logLoss, auc (classifiers); mae, rmse (regressors).")

    @model_validator(mode="after")
    def _metrics_fit_kind(self) -> ModelEvaluation:
        allowed = MODEL_KIND_METRICS[self.kind]
        wrong = [m for m in self.metrics if m not in allowed]
        if wrong:
            raise ValueError(f"metric(s) {', '.join(wrong)} are not declared for a {self.kind} "
                             f"(it has {', '.join(allowed)})")
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError("each metric once")
        return self
