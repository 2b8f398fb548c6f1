"""flagd-compatible feature flags: definitions, the set of one commit, and their evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconciler.flags.model import FlagDefinition, FlagFile


@dataclass(frozen=True)
class FlagSet:
    """Every flag of one fleet commit. ``evaluators`` are the shared ``$evaluators`` that
    targeting rules reach with ``$ref``."""

    flags: dict[str, FlagDefinition] = field(default_factory=dict)
    evaluators: dict[str, Any] = field(default_factory=dict)


__all__ = ["FlagDefinition", "FlagFile", "FlagSet"]
