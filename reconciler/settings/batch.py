"""site.yaml ``batch``: where this site keeps the files its batch deployments read and write. The
fleet repo names inputs and outputs logically; only the site knows its directories."""

from __future__ import annotations

from pydantic import BaseModel

from reconciler.settings.paths import SETTINGS, LocalPath


class BatchDirectories(BaseModel):
    """The local directory of each logical input and output name (relative: against site.yaml's folder)."""

    model_config = SETTINGS

    inputs: dict[str, LocalPath] = {}
    outputs: dict[str, LocalPath] = {}
