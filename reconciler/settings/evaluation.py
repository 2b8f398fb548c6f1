"""site.yaml ``evaluation``: the labeled data this site keeps for federated evaluation, per Model.
The data stays here: the fleet repo names no path, and only scores and a rounded count leave the
site (reconciler.monitoring.evaluation)."""

from __future__ import annotations

from pydantic import BaseModel, field_validator

from reconciler.monitoring.tables import SUFFIXES
from reconciler.settings.paths import SETTINGS, LocalPath

LABEL = "label"  # the label's column (CSV) or key (JSON Lines) beside the inputs

__all__ = ["LABEL", "EvaluationData"]


class EvaluationData(BaseModel):
    """One Model's labeled examples, in the format `reconciler profile` reads: ``inputs`` a .npy
    (one-input models), a CSV with columns ``TENSOR`` / ``TENSOR[i]`` or JSON Lines of tensor names;
    the labels a ``label`` column (key) of the same file, or for .npy inputs a ``labels`` .npy,
    row i labelling example i."""

    model_config = SETTINGS

    inputs: LocalPath
    labels: LocalPath | None = None

    @field_validator("inputs", "labels")
    @classmethod
    def _known_format(cls, path: LocalPath | None) -> LocalPath | None:
        if path is not None and path.suffix not in SUFFIXES:
            raise ValueError(f"{path.name}: give .npy, .csv or .jsonl data")
        return path
