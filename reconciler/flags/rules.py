"""Flags prepared for evaluation, once per flag set on each flag's first evaluation: ``$ref``s
substituted, the targeting checked and compiled to closures, and every resolution that does not
depend on the call made ahead."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler.flags import jsonlogic
from reconciler.flags.flagd_operations import OPERATIONS
from reconciler.flags.resolution import Reason, Resolution

if TYPE_CHECKING:
    from reconciler.flags import FlagSet
    from reconciler.flags.model import FlagDefinition


@dataclass(frozen=True, slots=True)
class Rule:
    """A flag ready to evaluate: its targeting with ``$ref``s substituted and compiled (``run`` None
    means no targeting), and the resolutions that depend on nothing but the flag, made once: they are
    immutable, so every evaluation may hand out the same ones."""

    flag: FlagDefinition
    run: jsonlogic.Compiled | None
    error: str | None  # why the targeting can never run
    matched: Mapping[str, Resolution]  # by variant, reason TARGETING_MATCH
    split: Mapping[str, Resolution]  # by variant, reason SPLIT
    static: Resolution | None  # the default variant, reason STATIC; None without a default variant
    fallback: Resolution | None  # the default variant, reason DEFAULT; None without a default variant


def _substitute(node: Any, evaluators: Mapping[str, Any], expanding: frozenset[str]) -> Any:
    """Replace every ``{"$ref": name}`` by its evaluator, recursively. A ref to no evaluator, or one
    that would expand itself, stays as it is and fails later as an unknown operation."""
    if isinstance(node, dict):
        name = node.get("$ref") if len(node) == 1 else None
        if isinstance(name, str):
            if name in evaluators and name not in expanding:
                return _substitute(evaluators[name], evaluators, expanding | {name})
            return node
        return {key: _substitute(value, evaluators, expanding) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute(item, evaluators, expanding) for item in node]
    return node


def _compile_targeting(
    flag: FlagDefinition, evaluators: Mapping[str, Any]
) -> tuple[jsonlogic.Compiled | None, str | None]:
    """The compiled targeting, or None and why it can never run; (None, None) without targeting."""
    if not flag.targeting:
        return None, None
    try:
        logic = _substitute(flag.targeting, evaluators, frozenset())
        jsonlogic.check(logic, OPERATIONS)
        return jsonlogic.compile_logic(logic, OPERATIONS), None
    except jsonlogic.UnknownOperation as exc:
        return None, f"targeting uses unknown operation {exc.args[0]!r}"
    except RecursionError:
        return None, "targeting is nested too deeply"


def _build_rule(key: str, flag: FlagDefinition, evaluators: Mapping[str, Any]) -> Rule:
    run, error = _compile_targeting(flag, evaluators)

    def resolution(variant: str, reason: Reason) -> Resolution:
        return Resolution(key, flag.variants[variant], variant, reason, flag_metadata=flag.metadata)

    default = flag.defaultVariant
    return Rule(
        flag,
        run,
        error,
        matched={variant: resolution(variant, Reason.TARGETING_MATCH) for variant in flag.variants},
        split={variant: resolution(variant, Reason.SPLIT) for variant in flag.variants},
        static=resolution(default, Reason.STATIC) if default is not None else None,
        fallback=resolution(default, Reason.DEFAULT) if default is not None else None,
    )


def prepared(flags: FlagSet, key: str) -> Rule | None:
    """The prepared flag ``key``, or None if there is no such flag."""
    rule = flags._rules.get(key)
    if rule is None:
        flag = flags.flags.get(key)
        if flag is None:
            return None
        rule = flags._rules[key] = _build_rule(key, flag, flags.evaluators)
    return rule


def targeting_errors(flags: FlagSet) -> dict[str, str]:
    """Flags whose targeting can never run (unknown operations, ``$ref`` to no evaluator), by key."""
    errors = {}
    for key in flags.flags:
        rule = prepared(flags, key)
        if rule is not None and rule.error is not None:
            errors[key] = rule.error
    return errors
