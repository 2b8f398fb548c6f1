"""flagd-compatible feature flags: definitions, the set of one commit, and their evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconciler.flags.evaluator import evaluate, evaluate_all, site_context
from reconciler.flags.model import FlagDefinition, FlagFile
from reconciler.flags.murmur import bucket, murmur3_x86_32
from reconciler.flags.resolution import ErrorCode, Reason, Resolution
from reconciler.flags.rules import targeting_errors


@dataclass(frozen=True)
class FlagSet:
    """Every flag of one fleet commit. ``evaluators`` are the shared ``$evaluators`` that
    targeting rules reach with ``$ref``."""

    flags: dict[str, FlagDefinition] = field(default_factory=dict)
    evaluators: dict[str, Any] = field(default_factory=dict)
    # Each flag prepared for evaluation (targeting compiled, fixed resolutions made), filled on the
    # first evaluation of each flag; a FlagSet never changes, so neither does this.
    _rules: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)


__all__ = [
    "ErrorCode",
    "FlagDefinition",
    "FlagFile",
    "FlagSet",
    "Reason",
    "Resolution",
    "bucket",
    "evaluate",
    "evaluate_all",
    "murmur",  # the module: the canary's bucketing reads it directly
    "murmur3_x86_32",
    "site_context",
    "targeting_errors",
]
