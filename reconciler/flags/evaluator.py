"""Flag evaluation with flagd's semantics, as its Go evaluator and the flagd-testbed gherkin suite define them.

- A missing flag is ERROR / FLAG_NOT_FOUND; a DISABLED one resolves to the caller's default with reason
  DISABLED and no variant.
- No targeting (absent or ``{}``) is STATIC with the default variant.
- Targeting runs as JsonLogic over the context plus ``$flagd.flagKey`` and ``$flagd.timestamp``. Its
  result names the variant (``true``/``false`` name "true"/"false", numbers their JavaScript text):
  TARGETING_MATCH, or SPLIT when a ``fractional`` took part. null means the default variant (reason
  DEFAULT); any other name is ERROR / GENERAL.
- A flag without a default variant falls back to the caller's default, reason DEFAULT, no variant.
- A custom operation given invalid input (a non-string to ``starts_with``, a malformed version, a
  fractional without a bucketing value, ...) makes the whole rule fall back to the default variant,
  reason DEFAULT, even when its null would otherwise steer an ``if`` (testbed ``@operator-errors``).
- An unknown operation, including a ``$ref`` to no evaluator, is ERROR / PARSE_ERROR, whichever branch
  it sits in, as flagd validates the rule before running it.

Each flag is prepared once per flag set, on its first evaluation: ``$ref``s substituted, the rule
checked and compiled to closures, and every resolution that does not depend on the call made ahead.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from reconciler.flags import jsonlogic
from reconciler.flags.jsonlogic import OperationFailed
from reconciler.flags.jsoperations import Operation
from reconciler.flags.jsvalues import to_js_string
from reconciler.flags.murmur import bucket
from reconciler.flags.semver import sem_ver

if TYPE_CHECKING:
    from reconciler.flags import FlagSet
    from reconciler.flags.model import FlagDefinition


class Reason(StrEnum):
    STATIC = "STATIC"
    TARGETING_MATCH = "TARGETING_MATCH"
    SPLIT = "SPLIT"
    DEFAULT = "DEFAULT"
    DISABLED = "DISABLED"
    ERROR = "ERROR"


class ErrorCode(StrEnum):
    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    PARSE_ERROR = "PARSE_ERROR"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    INVALID_CONTEXT = "INVALID_CONTEXT"
    GENERAL = "GENERAL"


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome of one evaluation. ``value`` and ``flag_metadata`` are shared with the flag
    definition, not copied: treat them as read-only."""

    key: str
    value: Any
    variant: str | None
    reason: str
    error_code: str | None = None
    error_message: str | None = None
    flag_metadata: dict[str, Any] = field(default_factory=dict)


# --- flagd's custom operations -----------------------------------------------------------------

_MAX_TOTAL_WEIGHT = 2**31 - 1  # flagd caps the sum of fractional weights at MaxInt32


class _Notes:
    """What custom operations report about one evaluation. A bare class: one is made per evaluation."""

    split = False  # a fractional took part


def _string_pair(name: str, args: list[Any]) -> tuple[str, str]:
    if len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], str):
        raise OperationFailed(f"{name} takes two strings, got {args!r}")
    return args[0], args[1]


def _starts_with(args: list[Any], _data: Any, _notes: _Notes) -> bool:
    text, prefix = _string_pair("starts_with", args)
    return text.startswith(prefix)


def _ends_with(args: list[Any], _data: Any, _notes: _Notes) -> bool:
    text, suffix = _string_pair("ends_with", args)
    return text.endswith(suffix)


def _targeting_bucketing_value(data: Any) -> str:
    """What flagd buckets on when the rule names nothing: flagKey + targetingKey."""
    context = data if isinstance(data, dict) else {}
    targeting_key = context.get("targetingKey")
    if not isinstance(targeting_key, str):
        raise OperationFailed("fractional has no bucketing value and the context no targetingKey")
    flagd = context.get("$flagd")
    flag_key = flagd.get("flagKey", "") if isinstance(flagd, dict) else ""
    return f"{flag_key}{targeting_key}"


def _bucketing(args: list[Any], data: Any) -> tuple[str, list[Any]]:
    """The bucketing value and the [variant, weight] entries. Without a string first argument
    (omitted, or an expression that came out null) flagd buckets on flagKey + targetingKey."""
    if not args:
        raise OperationFailed("fractional needs at least one [variant, weight] entry")
    if isinstance(args[0], str):
        return args[0], args[1:]
    return _targeting_bucketing_value(data), args[1:] if args[0] is None else args


def _entry(entry: Any) -> tuple[Any, int]:
    """One [variant, weight] entry; the weight defaults to 1 and a negative one counts as 0."""
    if not isinstance(entry, list) or not entry:
        raise OperationFailed(f"fractional entry {entry!r} is not a non-empty [variant, weight] list")
    variant = entry[0]
    if variant is not None and not isinstance(variant, str | bool | int | float):
        raise OperationFailed(f"fractional variant {variant!r} is not a string, boolean, number or null")
    weight = entry[1] if len(entry) > 1 and entry[1] is not None else 1
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise OperationFailed(f"fractional weight {weight!r} is not a number")
    if isinstance(weight, float) and not weight.is_integer():
        raise OperationFailed(f"fractional weight {weight!r} is not a whole number")
    if weight > _MAX_TOTAL_WEIGHT:
        raise OperationFailed(f"fractional weight {weight!r} exceeds {_MAX_TOTAL_WEIGHT}")
    return variant, max(int(weight), 0)


def _distribution(raw_entries: list[Any]) -> tuple[list[Any], list[int]]:
    """The entries' variants, and the running sums of their weights."""
    entries = [_entry(entry) for entry in raw_entries]
    bounds = list(itertools.accumulate(weight for _, weight in entries))
    total = bounds[-1] if bounds else 0
    if not 0 < total <= _MAX_TOTAL_WEIGHT:
        raise OperationFailed(f"fractional weights sum to {total}, outside 1..{_MAX_TOTAL_WEIGHT}")
    return [variant for variant, _ in entries], bounds


# Bucketing values repeat (a site, a user, evaluated again and again) and murmur3 in Python costs
# microseconds; the cache is bounded so that a stream of new keys cannot grow it.
_bucket = functools.lru_cache(maxsize=4096)(bucket)


def _pick(variants: list[Any], bounds: list[int], bucketing_value: str, notes: _Notes) -> Any:
    notes.split = True
    return variants[bisect.bisect_right(bounds, _bucket(bucketing_value, bounds[-1]))]


def _fractional(args: list[Any], data: Any, notes: _Notes) -> Any:
    bucketing_value, raw_entries = _bucketing(args, data)
    return _pick(*_distribution(raw_entries), bucketing_value, notes)


def _compile_fractional(
    args: list[Any], operations: Mapping[str, Operation]
) -> jsonlogic.Compiled | None:
    """Literal entries, the usual case, weighed once. What the first argument is only shows at run
    time: a string is the bucketing value, null asks for the targetingKey, anything else is an entry
    after all, for the general way. Invalid entries are left to the general way too, which fails on
    them at run time, after evaluating the first argument, as before."""
    if not args:
        return None
    # The shorthand (no bucketing argument) buckets exactly as a null bucketing value does.
    first, raw_entries = (None, args) if isinstance(args[0], list) else (args[0], args[1:])
    if not all(
        isinstance(entry, list) and not any(isinstance(item, dict | list) for item in entry)
        for entry in raw_entries
    ):
        return None
    try:
        variants, bounds = _distribution(raw_entries)
    except OperationFailed:
        return None
    bucketing = jsonlogic.compile_logic(first, operations)

    def fractional(data: Any, notes: _Notes) -> Any:
        value = bucketing(data, notes)
        if value is None:
            value = _targeting_bucketing_value(data)
        elif not isinstance(value, str):
            return _fractional([value, *(list(entry) for entry in raw_entries)], data, notes)
        return _pick(variants, bounds, value, notes)

    return fractional


_OPERATIONS: Mapping[str, Operation] = {
    **jsonlogic.OPERATIONS,
    "fractional": jsonlogic.Specializable(_fractional, _compile_fractional),
    "sem_ver": sem_ver,
    "starts_with": _starts_with,
    "ends_with": _ends_with,
}


# --- rules, prepared once per flag set ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
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
        jsonlogic.check(logic, _OPERATIONS)
        return jsonlogic.compile_logic(logic, _OPERATIONS), None
    except jsonlogic.UnknownOperation as exc:
        return None, f"targeting uses unknown operation {exc.args[0]!r}"
    except RecursionError:
        return None, "targeting is nested too deeply"


def _build_rule(key: str, flag: FlagDefinition, evaluators: Mapping[str, Any]) -> _Rule:
    run, error = _compile_targeting(flag, evaluators)

    def resolution(variant: str, reason: Reason) -> Resolution:
        return Resolution(key, flag.variants[variant], variant, reason, flag_metadata=flag.metadata)

    default = flag.defaultVariant
    return _Rule(
        flag,
        run,
        error,
        matched={variant: resolution(variant, Reason.TARGETING_MATCH) for variant in flag.variants},
        split={variant: resolution(variant, Reason.SPLIT) for variant in flag.variants},
        static=resolution(default, Reason.STATIC) if default is not None else None,
        fallback=resolution(default, Reason.DEFAULT) if default is not None else None,
    )


def _rule(flags: FlagSet, key: str) -> _Rule | None:
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
        rule = _rule(flags, key)
        if rule is not None and rule.error is not None:
            errors[key] = rule.error
    return errors


# --- evaluation --------------------------------------------------------------------------------

_JSON_SCALARS = frozenset({str, bool, int, type(None)})  # JSON without looking further
_STRING = frozenset({str})


def _is_json(value: Any) -> bool:
    if type(value) in _JSON_SCALARS or isinstance(value, str | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(name, str) and _is_json(item) for name, item in value.items())
    return False


def _context_problem(context: Mapping[str, Any]) -> str | None:
    # Contexts are mostly flat: a look at the types of keys and values, at C speed, settles the usual case.
    if _JSON_SCALARS.issuperset(map(type, context.values())) and _STRING.issuperset(map(type, context)):
        return None
    for name, value in context.items():
        if not isinstance(name, str):
            return f"context key {name!r} is not a string"
        if not _is_json(value):
            return f"context value of {name!r} is not JSON: {value!r}"
    return None


@functools.lru_cache(maxsize=64)
def _unix_seconds(now: datetime) -> int:
    """A naive ``now`` is taken as UTC: the evaluator must not depend on the host's timezone. Cached
    because callers evaluate many flags at one ``now``."""
    return int((now if now.tzinfo else now.replace(tzinfo=UTC)).timestamp())


def _variant_name(result: Any) -> str | None:
    if isinstance(result, str):
        return result
    if isinstance(result, bool | int | float):
        return to_js_string(result)
    return None


def _error(key: str, default: Any, code: ErrorCode, message: str, metadata: dict[str, Any]) -> Resolution:
    return Resolution(key, default, None, Reason.ERROR, code, message, metadata)


def _code_default(key: str, flag: FlagDefinition, default: Any) -> Resolution:
    """A flag without a default variant hands out the caller's default."""
    return Resolution(key, default, None, Reason.DEFAULT, flag_metadata=flag.metadata)


def _targeted(
    key: str, rule: _Rule, run: jsonlogic.Compiled, context: Mapping[str, Any], now: datetime, default: Any
) -> Resolution:
    flag = rule.flag
    problem = _context_problem(context)
    if problem is not None:
        return _error(key, default, ErrorCode.INVALID_CONTEXT, problem, flag.metadata)
    data = {**context, "$flagd": {"flagKey": key, "timestamp": _unix_seconds(now)}}
    notes = _Notes()
    try:
        result = run(data, notes)
    except OperationFailed:
        result = None
    except (ArithmeticError, ValueError, RecursionError) as exc:
        # A flag file is untrusted input: numbers too large to convert or rules nested too deeply
        # must cost one evaluation, not the agent.
        return _error(key, default, ErrorCode.GENERAL, f"targeting failed: {exc!r}", flag.metadata)
    if result is None:
        return rule.fallback if rule.fallback is not None else _code_default(key, flag, default)
    variant = _variant_name(result)
    resolutions = rule.split if notes.split else rule.matched
    resolution = resolutions.get(variant) if variant is not None else None
    if resolution is None:
        message = f"targeting returned {result!r}, which is not a variant of {key!r}"
        return _error(key, default, ErrorCode.GENERAL, message, flag.metadata)
    return resolution


def _matches(value: Any, expected: type) -> bool:
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, expected)  # bool, str, dict, list, object


def _typed(resolution: Resolution, expected: type | None, default: Any) -> Resolution:
    if expected is None or resolution.variant is None or type(resolution.value) is expected:
        return resolution  # errors and code defaults carry the caller's own default
    if not _matches(resolution.value, expected):
        message = f"flag {resolution.key!r} is {type(resolution.value).__name__}, not {expected.__name__}"
        return _error(resolution.key, default, ErrorCode.TYPE_MISMATCH, message, resolution.flag_metadata)
    if expected is float and not isinstance(resolution.value, float):
        return Resolution(
            resolution.key,
            float(resolution.value),
            resolution.variant,
            resolution.reason,
            flag_metadata=resolution.flag_metadata,
        )
    return resolution


def evaluate(
    flags: FlagSet,
    key: str,
    context: Mapping[str, Any],
    now: datetime,
    expected_type: type | None = None,
    default: Any = None,
) -> Resolution:
    """Resolve flag ``key`` for ``context`` at ``now``; never raises for anything a flag file or a
    context can contain. ``expected_type`` (bool, str, int, float, dict, list) is checked against the
    resolved value; int satisfies float and comes back as float."""
    rule = _rule(flags, key)
    if rule is None:
        return _error(key, default, ErrorCode.FLAG_NOT_FOUND, f"flag {key!r} not found", {})
    flag = rule.flag
    if flag.state == "DISABLED":
        return Resolution(key, default, None, Reason.DISABLED, flag_metadata=flag.metadata)
    if rule.error is not None:
        return _error(key, default, ErrorCode.PARSE_ERROR, rule.error, flag.metadata)
    if rule.run is None:
        resolution = rule.static if rule.static is not None else _code_default(key, flag, default)
    else:
        resolution = _targeted(key, rule, rule.run, context, now, default)
    return _typed(resolution, expected_type, default)


def evaluate_all(flags: FlagSet, context: Mapping[str, Any], now: datetime) -> dict[str, Resolution]:
    """Every enabled flag, as flagd's bulk evaluation (and so OFREP) returns them: disabled flags are
    left out."""
    return {
        key: evaluate(flags, key, context, now)
        for key, flag in flags.flags.items()
        if flag.state != "DISABLED"
    }


def site_context(site_name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """The context the agent evaluates with: the site is the targeting key, its labels the attributes."""
    return {"targetingKey": site_name, **labels, "site": site_name}
