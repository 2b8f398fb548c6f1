"""flagd flag-definition files (``*.flagd.json``), the same files flagd and OpenFeature read."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reconciler.manifests.types import FlagKey


class FlagDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: Literal["ENABLED", "DISABLED"]
    variants: dict[str, Any] = Field(min_length=1)
    defaultVariant: str | None = None  # None: evaluation falls back to the caller's default
    targeting: dict[str, Any] | None = None
    metadata: dict[str, Any] = {}

    @model_validator(mode="after")
    def _default_is_a_variant(self) -> FlagDefinition:
        if self.defaultVariant is not None and self.defaultVariant not in self.variants:
            raise ValueError(f"defaultVariant {self.defaultVariant!r} is not one of the variants")
        return self


class FlagFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: str | None = Field(default=None, alias="$schema")
    flags: dict[FlagKey, FlagDefinition]
    evaluators: dict[str, Any] = Field(default={}, alias="$evaluators")
    metadata: dict[str, Any] = {}
